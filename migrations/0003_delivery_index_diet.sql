-- Claims rewrite claimed_by, claimed_session and claim_until on every
-- delivery. With none of them indexed the update is HOT (no new index
-- entries), and every inserted row feeds three indexes instead of five.
-- What used these two now goes through delivery_session and
-- delivery_member: a session's claimed rows are its own rows plus its
-- member's rows, and a revoked member's rows are its presences' rows plus
-- its member rows.
DROP INDEX IF EXISTS delivery_claimed;
DROP INDEX IF EXISTS delivery_member_all;

-- Tokens the last group commit took from this bucket: lets one statement
-- take tokens for a whole batch and say how many sends it let through.
ALTER TABLE rate_bucket ADD COLUMN taken integer NOT NULL DEFAULT 0;

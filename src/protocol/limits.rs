//! Caps on client-supplied strings and lists. Every value here bounds what
//! one client can make the broker store per presence, so a hostile client
//! cannot grow rows or `peers_list` replies without limit.

/// Display names show in peer lists; 128 characters fits any real name.
pub const MAX_DISPLAY_NAME: usize = 128;
/// PROTOCOL.md fixes the summary cap at 1024 characters.
pub const MAX_SUMMARY: usize = 1024;
/// Linux PATH_MAX: no real working directory is longer.
pub const MAX_CWD: usize = 4096;
/// DNS names are at most 255 octets.
pub const MAX_HOSTNAME: usize = 255;
/// Session ids are client-made UUIDs or similar; 256 leaves ample room.
pub const MAX_SESSION_ID: usize = 256;
/// `peerType`, `channel`, `model`: short labels.
pub const MAX_LABEL: usize = 128;
/// A session in more than 64 groups is a bug or an attack.
pub const MAX_GROUPS: usize = 64;
/// Whole group path (`a/b/c`), in characters.
pub const MAX_GROUP_NAME: usize = 128;
/// Group roles (`lead`, `member`, …).
pub const MAX_GROUP_ROLE: usize = 64;
/// Profile `title`.
pub const MAX_TITLE: usize = 128;
/// Profile `bio`, as long as a summary.
pub const MAX_BIO: usize = 1024;
/// Profile `avatar`: a URL or an emoji, not an inline image.
pub const MAX_AVATAR: usize = 2048;
/// Profile `capabilities` entries and each entry's length.
pub const MAX_PROFILE_CAPS: usize = 32;
pub const MAX_PROFILE_CAP_LEN: usize = 64;
/// Hello `capabilities` entries (`client_ack`, …).
pub const MAX_HELLO_CAPS: usize = 16;
/// `set_stats` object, serialised.
pub const MAX_STATS_BYTES: usize = 4096;
/// `id`, `meshId`, `memberId` and other opaque ids.
pub const MAX_ID: usize = 128;
/// Allowed clock difference between a hello's timestamp and ours.
pub const HELLO_SKEW_MS: i64 = 60_000;

/// True when `name` is a valid group path: `/`-separated non-empty segments
/// of letters, digits, `-`, `_`, `.` or `:`. `@`, `*`, spaces and control
/// characters are refused because they collide with target specs.
pub fn valid_group_name(name: &str) -> bool {
    if name.is_empty() || name.chars().count() > MAX_GROUP_NAME {
        return false;
    }
    name.split('/').all(|seg| {
        !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    })
}

/// True when JSON text carries a NUL character (raw or as `\u0000`).
/// Postgres text and jsonb cannot hold NUL, so such input is refused up
/// front with a clear error instead of failing in the database.
pub fn has_nul(json_text: &[u8]) -> bool {
    json_text.contains(&0)
        || json_text
            .windows(6)
            .any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
}

/// Character count check that does not allocate.
pub fn within(s: &str, max: usize) -> bool {
    // Byte length bounds char count from above: cheap fast path.
    s.len() <= max || s.chars().count() <= max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        for ok in ["backend", "a/b/c", "team-1", "x_y.z", "ops:eu", "équipe"] {
            assert!(valid_group_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "@all",
            "*",
            "a b",
            "a\nb",
            &"x".repeat(129),
        ] {
            assert!(!valid_group_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn nul_in_any_form_is_found() {
        assert!(has_nul(br#"{"a":"x\u0000y"}"#));
        assert!(has_nul(br#"{"a":"x\U0000"}"#));
        assert!(has_nul(b"{\"a\":\"\0\"}"));
        assert!(!has_nul(br#"{"a":"x\u0001"}"#));
    }

    #[test]
    fn within_counts_chars() {
        assert!(within("ééé", 3));
        assert!(!within("éééé", 3));
    }
}

//! `send` validation and `targetSpec` parsing: pure, before any IO.

use super::crypto::is_pubkey_hex;
use super::limits::valid_group_name;

/// Message priority; gates delivery by the recipient's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Now,
    Next,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Now => "now",
            Priority::Next => "next",
            Priority::Low => "low",
        }
    }
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "now" => Some(Priority::Now),
            "next" => Some(Priority::Next),
            "low" => Some(Priority::Low),
            _ => None,
        }
    }
}

/// Where a `send` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// 64 hex: a member pubkey or a session pubkey (the broker decides).
    Key(String),
    /// `@name`: the group and its subgroups.
    Group(String),
    /// `@all` or `*`.
    All,
}

impl Target {
    pub fn parse(spec: &str) -> Option<Target> {
        match spec {
            "*" | "@all" => Some(Target::All),
            s if s.starts_with('@') => {
                let name = &s[1..];
                valid_group_name(name).then(|| Target::Group(name.to_string()))
            }
            s if is_pubkey_hex(s) => Some(Target::Key(s.to_ascii_lowercase())),
            _ => None,
        }
    }

    /// `kind` for logs, metrics and audit: never the key itself.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Key(_) => "direct",
            Target::Group(_) => "group",
            Target::All => "broadcast",
        }
    }
}

/// True when `group` is `name` or one of its subgroups (`a` covers `a`,
/// `a/b`, `a/b/c`, but not `ab`).
pub fn group_covers(name: &str, group: &str) -> bool {
    group == name
        || (group.len() > name.len()
            && group.starts_with(name)
            && group.as_bytes()[name.len()] == b'/')
}

/// Base64 (standard or URL-safe alphabet, padding optional). Checked by
/// alphabet only: decoding 64 KiB per message just to validate would cost
/// more than the routing itself, and the broker never needs the bytes.
pub fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("*"), Some(Target::All));
        assert_eq!(Target::parse("@all"), Some(Target::All));
        assert_eq!(Target::parse("@a/b"), Some(Target::Group("a/b".into())));
        let key = "AB".repeat(32);
        assert_eq!(
            Target::parse(&key),
            Some(Target::Key(key.to_ascii_lowercase()))
        );
        for bad in ["", "@", "@a b", "bob", &"a".repeat(63), "@/x"] {
            assert_eq!(Target::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn subgroups() {
        assert!(group_covers("a", "a"));
        assert!(group_covers("a", "a/b"));
        assert!(group_covers("a", "a/b/c"));
        assert!(group_covers("a/b", "a/b/c"));
        assert!(!group_covers("a", "ab"));
        assert!(!group_covers("a/b", "a"));
        assert!(!group_covers("a/b", "a/bc"));
    }

    #[test]
    fn base64_alphabet() {
        assert!(is_base64("aGVsbG8="));
        assert!(is_base64("aGVsbG8"));
        assert!(is_base64("a-_b"));
        assert!(is_base64(""));
        assert!(!is_base64("a b"));
        assert!(!is_base64("abc==="));
        assert!(!is_base64("ab=c"));
    }
}

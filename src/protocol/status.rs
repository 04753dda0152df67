//! The status model of PROTOCOL.md "Status model" as one pure function, so
//! both stores apply exactly the same rule inside their own atomic update.

use serde::{Deserialize, Serialize};

use super::types::Status;

/// Where a status came from, ranked `hook` > `manual` > `jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Jsonl = 1,
    Manual = 2,
    Hook = 3,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hook => "hook",
            Source::Manual => "manual",
            Source::Jsonl => "jsonl",
        }
    }
    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "hook" => Some(Source::Hook),
            "manual" => Some(Source::Manual),
            "jsonl" => Some(Source::Jsonl),
            _ => None,
        }
    }
}

/// The recorded status of a presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub status: Status,
    pub source: Source,
    /// Age of the recorded write, in milliseconds.
    pub age_ms: i64,
}

/// What a write does to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Record this status and source (and a fresh `updatedAt`).
    Record(Status, Source),
    /// Leave the record as it is.
    Keep,
}

/// Applies one status write. `fresh_window_ms` is
/// `hook_fresh_window_seconds` in milliseconds.
pub fn decide(rec: Recorded, status: Status, source: Source, fresh_window_ms: i64) -> Decision {
    if rec.status == Status::Dnd && status != Status::Dnd && source == Source::Hook {
        // Only set_status clears dnd: a hook firing at a turn's end must not
        // wake a user who asked not to be disturbed.
        return Decision::Keep;
    }
    if status != rec.status || source >= rec.source || rec.age_ms >= fresh_window_ms {
        return Decision::Record(status, source);
    }
    Decision::Keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use Source::*;
    use Status::*;

    fn rec(status: Status, source: Source, age_ms: i64) -> Recorded {
        Recorded {
            status,
            source,
            age_ms,
        }
    }

    #[test]
    fn change_always_wins_and_records_its_source() {
        assert_eq!(
            decide(rec(Idle, Hook, 0), Working, Jsonl, 30_000),
            Decision::Record(Working, Jsonl)
        );
        assert_eq!(
            decide(rec(Working, Hook, 0), Idle, Manual, 30_000),
            Decision::Record(Idle, Manual)
        );
    }

    #[test]
    fn same_status_higher_or_equal_rank_records_new_source() {
        assert_eq!(
            decide(rec(Idle, Manual, 0), Idle, Hook, 30_000),
            Decision::Record(Idle, Hook)
        );
        assert_eq!(
            decide(rec(Idle, Manual, 0), Idle, Manual, 30_000),
            Decision::Record(Idle, Manual)
        );
    }

    #[test]
    fn same_status_lower_rank_keeps_fresh_record() {
        assert_eq!(
            decide(rec(Working, Hook, 29_999), Working, Jsonl, 30_000),
            Decision::Keep
        );
        assert_eq!(
            decide(rec(Working, Hook, 30_000), Working, Jsonl, 30_000),
            Decision::Record(Working, Jsonl)
        );
    }

    #[test]
    fn dnd_is_never_cleared_by_a_hook() {
        assert_eq!(
            decide(rec(Dnd, Manual, 999_999), Idle, Hook, 30_000),
            Decision::Keep
        );
        assert_eq!(
            decide(rec(Dnd, Manual, 0), Working, Hook, 30_000),
            Decision::Keep
        );
        assert_eq!(
            decide(rec(Dnd, Manual, 0), Idle, Manual, 30_000),
            Decision::Record(Idle, Manual)
        );
        assert_eq!(
            decide(rec(Dnd, Manual, 0), Dnd, Hook, 30_000),
            Decision::Record(Dnd, Hook)
        );
    }
}

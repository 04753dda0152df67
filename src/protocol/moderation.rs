//! The moderation family (PROTOCOL-SESSIONS.md §9): `kick`, `disconnect`,
//! `ban`, `unban`, `list_bans`. Selection fields are read leniently, as
//! the reference broker does: one of the wrong type counts as absent.

use serde_json::Value;

use super::limits::within;
use super::wire::{Family, FrameSpec};

/// Longest ban `reason` kept in the audit payload.
pub const MAX_REASON: usize = 1024;

/// Which presences a `kick` or `disconnect` names, in the order the
/// fields are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Silent for longer than this many milliseconds.
    Stale(u64),
    Target(String),
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModerationFrame {
    Kick(Selection),
    Disconnect(Selection),
    /// `target` (empty when absent) and `reason`.
    Ban {
        target: String,
        reason: Option<String>,
    },
    Unban {
        target: String,
    },
    ListBans,
}

fn selection(v: &Value) -> Selection {
    if v.get("all").and_then(Value::as_bool) == Some(true) {
        return Selection::All;
    }
    if let Some(ms) = v.get("stale").and_then(Value::as_f64) {
        if ms.is_finite() && ms >= 1.0 {
            return Selection::Stale(ms as u64);
        }
    }
    match v.get("target").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => Selection::Target(t.to_string()),
        _ => Selection::None,
    }
}

fn target(v: &Value) -> String {
    v.get("target")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

impl Family for ModerationFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("kick"),
        FrameSpec::request("disconnect"),
        FrameSpec::request("ban"),
        FrameSpec::request("unban"),
        FrameSpec::request("list_bans"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "kick" => ModerationFrame::Kick(selection(&v)),
            "disconnect" => ModerationFrame::Disconnect(selection(&v)),
            "ban" => {
                let reason = match v.get("reason") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(r)) if within(r, MAX_REASON) => Some(r.clone()),
                    Some(_) => {
                        return Err(format!(
                            "`reason` must be a string of at most {MAX_REASON} characters"
                        ))
                    }
                };
                ModerationFrame::Ban {
                    target: target(&v),
                    reason,
                }
            }
            "unban" => ModerationFrame::Unban { target: target(&v) },
            "list_bans" => ModerationFrame::ListBans,
            other => unreachable!("`{other}` is not a moderation frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            ModerationFrame::Kick(_) => "kick",
            ModerationFrame::Disconnect(_) => "disconnect",
            ModerationFrame::Ban { .. } => "ban",
            ModerationFrame::Unban { .. } => "unban",
            ModerationFrame::ListBans => "list_bans",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kick(body: &str) -> Selection {
        match ModerationFrame::parse("kick", body).unwrap() {
            ModerationFrame::Kick(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn selections_are_read_in_order_and_leniently() {
        assert_eq!(kick(r#"{"all":true,"target":"bob"}"#), Selection::All);
        assert_eq!(
            kick(r#"{"stale":1800000,"target":"bob"}"#),
            Selection::Stale(1_800_000)
        );
        assert_eq!(
            kick(r#"{"stale":0,"target":"bob"}"#),
            Selection::Target("bob".into())
        );
        assert_eq!(
            kick(r#"{"all":"yes","stale":"x","target":7}"#),
            Selection::None
        );
        assert_eq!(kick(r#"{"target":""}"#), Selection::None);
    }

    #[test]
    fn ban_reasons_are_bounded() {
        let long = format!(
            r#"{{"target":"b","reason":"{}"}}"#,
            "r".repeat(MAX_REASON + 1)
        );
        assert!(ModerationFrame::parse("ban", &long).is_err());
        assert_eq!(
            ModerationFrame::parse("ban", r#"{"reason":"spam"}"#).unwrap(),
            ModerationFrame::Ban {
                target: String::new(),
                reason: Some("spam".into())
            }
        );
    }
}

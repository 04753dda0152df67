//! Scheduled messages (PROTOCOL-MESH.md §12): `schedule` (one-shot at
//! `deliverAt`, or a `cron` expression), `list_scheduled`,
//! `cancel_scheduled`.

use serde_json::Value;

use super::fields::{limited, non_empty, opt_string, string};
use super::target::Target;
use super::wire::{Family, FrameSpec};

/// Active entries per member.
pub const MAX_PER_MEMBER: usize = 100;
/// Longest cron text read; a longer one cannot be five small fields.
pub const MAX_CRON: usize = 256;
/// How far ahead `deliverAt` may be.
pub const MAX_AHEAD_DAYS: i64 = 366;

#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleFrame {
    Schedule {
        to: String,
        message: String,
        /// ms since the epoch; `None` only with a cron.
        deliver_at: Option<i64>,
        cron: Option<String>,
        /// Only `reminder` is kept.
        subtype: Option<String>,
    },
    List,
    Cancel {
        scheduled_id: String,
    },
}

impl Family for ScheduleFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("schedule"),
        FrameSpec::request("list_scheduled"),
        FrameSpec::request("cancel_scheduled"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "schedule" => {
                let to = non_empty(&v, "to")?;
                if to.starts_with('#') {
                    return Err("`to`: topics are not supported".into());
                }
                if Target::parse(&to).is_none() {
                    return Err("`to` must be a 64-hex pubkey, @group, @all or *".into());
                }
                let cron = opt_string(&v, "cron", MAX_CRON)?;
                let deliver_at = match v.get("deliverAt") {
                    Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
                    None | Some(Value::Null) => None,
                    Some(_) => return Err(DELIVER_AT.into()),
                };
                if cron.is_none() && deliver_at.is_none() {
                    return Err(DELIVER_AT.into());
                }
                ScheduleFrame::Schedule {
                    to,
                    message: string(&v, "message")?,
                    deliver_at,
                    cron,
                    subtype: opt_string(&v, "subtype", 64)?.filter(|s| s == "reminder"),
                }
            }
            "list_scheduled" => ScheduleFrame::List,
            "cancel_scheduled" => ScheduleFrame::Cancel {
                scheduled_id: limited(&v, "scheduledId", 128)?,
            },
            other => unreachable!("`{other}` is not a schedule frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            ScheduleFrame::Schedule { .. } => "schedule",
            ScheduleFrame::List => "list_scheduled",
            ScheduleFrame::Cancel { .. } => "cancel_scheduled",
        }
    }
}

const DELIVER_AT: &str = "`deliverAt` must be a number (ms since the epoch) unless `cron` is set";

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(t: &str) -> Result<ScheduleFrame, String> {
        ScheduleFrame::parse("schedule", t)
    }

    #[test]
    fn fields_are_checked() {
        assert_eq!(
            schedule(r#"{"to":"*","message":"hi","deliverAt":1781398591000,"subtype":"reminder"}"#)
                .unwrap(),
            ScheduleFrame::Schedule {
                to: "*".into(),
                message: "hi".into(),
                deliver_at: Some(1_781_398_591_000),
                cron: None,
                subtype: Some("reminder".into()),
            }
        );
        let cron = schedule(
            r#"{"to":"@backend","message":"m","deliverAt":0,"cron":"0 9 * * 1-5","subtype":"x"}"#,
        )
        .unwrap();
        assert!(matches!(
            cron,
            ScheduleFrame::Schedule {
                cron: Some(_),
                subtype: None,
                ..
            }
        ));
        for (bad, field) in [
            (r#"{"message":"m","deliverAt":1}"#, "`to`"),
            (r#"{"to":"","message":"m","deliverAt":1}"#, "`to`"),
            (
                r##"{"to":"#general","message":"m","deliverAt":1}"##,
                "topics",
            ),
            (r#"{"to":"bob","message":"m","deliverAt":1}"#, "`to`"),
            (r#"{"to":"*","deliverAt":1}"#, "`message`"),
            (r#"{"to":"*","message":5,"deliverAt":1}"#, "`message`"),
            (r#"{"to":"*","message":"m"}"#, "`deliverAt`"),
            (
                r#"{"to":"*","message":"m","deliverAt":"soon"}"#,
                "`deliverAt`",
            ),
            (r#"{"to":"*","message":"m","cron":5}"#, "`cron`"),
        ] {
            let e = schedule(bad).unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
        assert!(ScheduleFrame::parse("cancel_scheduled", "{}")
            .unwrap_err()
            .contains("`scheduledId`"));
    }
}

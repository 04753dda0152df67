//! Tasks (PROTOCOL-MESH.md §3): created by anyone, claimed by exactly one
//! presence however many race for it, completed with a result.
//! `claim_task` and `complete_task` are fire-and-forget.

use serde_json::Value;

use super::fields::{bounded, keys, limited, opt_string};
use super::wire::{Family, FrameSpec};

pub const MAX_TITLE: usize = 1024;
pub const MAX_ASSIGNEE: usize = 256;
pub const MAX_PRIORITY: usize = 32;
/// `list_tasks` and the `task_list` after a claim or complete.
pub const MAX_LISTED: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFrame {
    Create {
        title: String,
        assignee: Option<String>,
        priority: String,
        tags: Vec<String>,
    },
    /// The id as sent (decoded by the engine: an id that is not ours is
    /// simply unknown).
    Claim { task_id: String },
    Complete {
        task_id: String,
        result: Option<String>,
    },
    List {
        status: Option<String>,
        assignee: Option<String>,
    },
}

impl Family for TaskFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("create_task"),
        FrameSpec::fire_and_forget("claim_task"),
        FrameSpec::fire_and_forget("complete_task"),
        FrameSpec::request("list_tasks"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        let task_id = || limited(&v, "taskId", 128);
        Ok(match ty {
            "create_task" => TaskFrame::Create {
                title: bounded(&v, "title", MAX_TITLE)?,
                assignee: opt_string(&v, "assignee", MAX_ASSIGNEE)?,
                priority: opt_string(&v, "priority", MAX_PRIORITY)?
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "normal".into()),
                tags: keys(&v, "tags")?,
            },
            "claim_task" => TaskFrame::Claim {
                task_id: task_id()?,
            },
            // `result` is bounded by max_message_bytes, which the engine
            // knows; here only its type.
            "complete_task" => TaskFrame::Complete {
                task_id: task_id()?,
                result: opt_string(&v, "result", usize::MAX)?,
            },
            "list_tasks" => TaskFrame::List {
                status: opt_string(&v, "status", MAX_PRIORITY)?,
                assignee: opt_string(&v, "assignee", MAX_ASSIGNEE)?,
            },
            other => unreachable!("`{other}` is not a task frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            TaskFrame::Create { .. } => "create_task",
            TaskFrame::Claim { .. } => "claim_task",
            TaskFrame::Complete { .. } => "complete_task",
            TaskFrame::List { .. } => "list_tasks",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fields::MAX_ITEMS;

    fn create(t: &str) -> Result<TaskFrame, String> {
        TaskFrame::parse("create_task", t)
    }

    #[test]
    fn fields_are_checked_and_defaulted() {
        assert_eq!(
            create(r#"{"title":"Review","tags":["a"],"assignee":null}"#).unwrap(),
            TaskFrame::Create {
                title: "Review".into(),
                assignee: None,
                priority: "normal".into(),
                tags: vec!["a".into()],
            }
        );
        let long_title = "t".repeat(MAX_TITLE + 1);
        let many_tags = serde_json::to_string(&vec!["x"; MAX_ITEMS + 1]).unwrap();
        for (bad, field) in [
            (r#"{}"#.to_string(), "`title`"),
            (r#"{"title":""}"#.to_string(), "`title`"),
            (format!(r#"{{"title":"{long_title}"}}"#), "`title`"),
            (r#"{"title":"t","assignee":5}"#.to_string(), "`assignee`"),
            (
                format!(r#"{{"title":"t","priority":"{}"}}"#, "p".repeat(33)),
                "`priority`",
            ),
            (r#"{"title":"t","tags":"a"}"#.to_string(), "`tags`"),
            (r#"{"title":"t","tags":[""]}"#.to_string(), "`tags`"),
            (format!(r#"{{"title":"t","tags":{many_tags}}}"#), "`tags`"),
        ] {
            assert!(create(&bad).unwrap_err().contains(field), "{bad}");
        }
        assert!(TaskFrame::parse("claim_task", r#"{"taskId":7}"#)
            .unwrap_err()
            .contains("`taskId`"));
        assert!(
            TaskFrame::parse("complete_task", r#"{"taskId":"x","result":[1]}"#)
                .unwrap_err()
                .contains("`result`")
        );
        assert_eq!(
            TaskFrame::parse("list_tasks", r#"{"status":"open"}"#).unwrap(),
            TaskFrame::List {
                status: Some("open".into()),
                assignee: None
            }
        );
    }
}

//! Skills (PROTOCOL-MESH.md §4): named instructions a member shares with
//! the mesh; one per (mesh, name), updated in place.

use serde_json::Value;

use super::state::{key_of, MAX_KEY};
use super::tasks::tags;
use super::wire::{Family, FrameSpec};

pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_SKILLS_PER_MESH: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum SkillFrame {
    Share {
        name: String,
        description: String,
        instructions: String,
        tags: Vec<String>,
        manifest: Value,
    },
    Get {
        name: String,
    },
    List {
        query: Option<String>,
    },
    Remove {
        name: String,
    },
}

impl Family for SkillFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("share_skill"),
        FrameSpec::request("get_skill"),
        FrameSpec::request("list_skills"),
        FrameSpec::request("remove_skill"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let mut v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "share_skill" => SkillFrame::Share {
                name: key_of(&v, "name")?,
                description: match v.get("description") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(d)) if d.chars().count() <= MAX_DESCRIPTION => d.clone(),
                    Some(_) => {
                        return Err(format!(
                            "`description` must be a string of at most {MAX_DESCRIPTION} characters"
                        ))
                    }
                },
                // Bounded by max_message_bytes, which the engine knows.
                instructions: match v.get("instructions") {
                    Some(Value::String(i)) => i.clone(),
                    _ => return Err("`instructions` must be a string".into()),
                },
                tags: tags(&v, "tags")?,
                manifest: v
                    .get_mut("manifest")
                    .map(Value::take)
                    .unwrap_or(Value::Null),
            },
            "get_skill" => SkillFrame::Get {
                name: key_of(&v, "name")?,
            },
            "list_skills" => SkillFrame::List {
                query: match v.get("query") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(q)) if q.chars().count() <= MAX_KEY => Some(q.clone()),
                    Some(_) => {
                        return Err(format!(
                            "`query` must be a string of at most {MAX_KEY} characters"
                        ))
                    }
                },
            },
            "remove_skill" => SkillFrame::Remove {
                name: key_of(&v, "name")?,
            },
            other => unreachable!("`{other}` is not a skill frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            SkillFrame::Share { .. } => "share_skill",
            SkillFrame::Get { .. } => "get_skill",
            SkillFrame::List { .. } => "list_skills",
            SkillFrame::Remove { .. } => "remove_skill",
        }
    }
}

//! Skills (PROTOCOL-MESH.md §4): named instructions a member shares with
//! the mesh; one per (mesh, name), updated in place.

use serde_json::Value;

use super::fields::{key, keys, opt_string, string, MAX_KEY};
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
                name: key(&v, "name")?,
                description: opt_string(&v, "description", MAX_DESCRIPTION)?.unwrap_or_default(),
                // Bounded by max_message_bytes, which the engine knows.
                instructions: string(&v, "instructions")?,
                tags: keys(&v, "tags")?,
                manifest: v
                    .get_mut("manifest")
                    .map(Value::take)
                    .unwrap_or(Value::Null),
            },
            "get_skill" => SkillFrame::Get {
                name: key(&v, "name")?,
            },
            "list_skills" => SkillFrame::List {
                query: opt_string(&v, "query", MAX_KEY)?,
            },
            "remove_skill" => SkillFrame::Remove {
                name: key(&v, "name")?,
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

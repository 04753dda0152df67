//! Value types several frame families share: statuses, group memberships,
//! profiles.

use serde::{Deserialize, Serialize};

/// Presence status as the wire spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Idle,
    Working,
    Dnd,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Working => "working",
            Status::Dnd => "dnd",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "idle" => Some(Status::Idle),
            "working" => Some(Status::Working),
            "dnd" => Some(Status::Dnd),
            _ => None,
        }
    }
}

/// A group membership as carried in hello, presence and member state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Hello groups may be `{"name","role"}` objects or bare names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GroupEntry {
    Name(String),
    Ref(GroupRef),
}

/// Deserialises a group list given as names, `{"name","role"}` objects or both.
pub fn de_groups<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<GroupRef>>, D::Error> {
    let entries: Option<Vec<GroupEntry>> = Option::deserialize(d)?;
    Ok(entries.map(|v| {
        v.into_iter()
            .map(|e| match e {
                GroupEntry::Name(name) => GroupRef { name, role: None },
                GroupEntry::Ref(r) => r,
            })
            .collect()
    }))
}

/// Public profile fields of `set_profile`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bio: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

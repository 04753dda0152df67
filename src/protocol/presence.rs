//! The presence family (PROTOCOL.md "Presence and status"): `list_peers`,
//! status, summary, visibility, profile, stats and groups.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::limits::*;
use super::types::{GroupRef, Profile, Status};
use super::wire::{body, Family, FrameSpec};

#[derive(Debug, Clone, PartialEq)]
pub enum PresenceFrame {
    ListPeers,
    SetStatus(Status),
    SetSummary(String),
    SetVisible(bool),
    SetProfile(Profile),
    SetStats(Map<String, Value>),
    JoinGroup(GroupRef),
    LeaveGroup(String),
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}
#[derive(Deserialize)]
struct SummaryBody {
    summary: String,
}
#[derive(Deserialize)]
struct VisibleBody {
    visible: bool,
}
#[derive(Deserialize)]
struct StatsBody {
    stats: Map<String, Value>,
}
#[derive(Deserialize)]
struct GroupBody {
    name: String,
    #[serde(default)]
    role: Option<String>,
}

impl Family for PresenceFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("list_peers"),
        FrameSpec::request("set_status"),
        FrameSpec::request("set_summary"),
        FrameSpec::request("set_visible"),
        FrameSpec::request("set_profile"),
        FrameSpec::request("set_stats"),
        FrameSpec::request("join_group"),
        FrameSpec::request("leave_group"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        Ok(match ty {
            "list_peers" => PresenceFrame::ListPeers,
            "set_status" => {
                let b: StatusBody = body(text)?;
                let status =
                    Status::parse(&b.status).ok_or("`status` must be idle, working or dnd")?;
                PresenceFrame::SetStatus(status)
            }
            "set_summary" => {
                let b: SummaryBody = body(text)?;
                if !within(&b.summary, MAX_SUMMARY) {
                    return Err(format!("`summary` is over {MAX_SUMMARY} characters"));
                }
                PresenceFrame::SetSummary(b.summary)
            }
            "set_visible" => PresenceFrame::SetVisible(body::<VisibleBody>(text)?.visible),
            "set_profile" => {
                let p: Profile = body(text)?;
                validate_profile(&p)?;
                PresenceFrame::SetProfile(p)
            }
            "set_stats" => {
                let b: StatsBody = body(text)?;
                let size = serde_json::to_vec(&b.stats)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > MAX_STATS_BYTES {
                    return Err(format!("`stats` is over {MAX_STATS_BYTES} bytes"));
                }
                PresenceFrame::SetStats(b.stats)
            }
            "join_group" => {
                let b: GroupBody = body(text)?;
                let g = GroupRef {
                    name: b.name,
                    role: b.role,
                };
                validate_group(&g)?;
                PresenceFrame::JoinGroup(g)
            }
            "leave_group" => {
                let b: GroupBody = body(text)?;
                if !valid_group_name(&b.name) {
                    return Err("invalid group name".into());
                }
                PresenceFrame::LeaveGroup(b.name)
            }
            other => unreachable!("`{other}` is not a presence frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            PresenceFrame::ListPeers => "list_peers",
            PresenceFrame::SetStatus(_) => "set_status",
            PresenceFrame::SetSummary(_) => "set_summary",
            PresenceFrame::SetVisible(_) => "set_visible",
            PresenceFrame::SetProfile(_) => "set_profile",
            PresenceFrame::SetStats(_) => "set_stats",
            PresenceFrame::JoinGroup(_) => "join_group",
            PresenceFrame::LeaveGroup(_) => "leave_group",
        }
    }
}

pub fn validate_group(g: &GroupRef) -> Result<(), String> {
    if !valid_group_name(&g.name) {
        return Err(format!(
            "invalid group name (letters, digits, - _ . : in /-separated parts, at most {MAX_GROUP_NAME} characters)"
        ));
    }
    if let Some(role) = &g.role {
        if role.is_empty() || !within(role, MAX_GROUP_ROLE) {
            return Err(format!(
                "group role must be 1 to {MAX_GROUP_ROLE} characters"
            ));
        }
    }
    Ok(())
}

fn validate_profile(p: &Profile) -> Result<(), String> {
    let fields = [
        ("avatar", &p.avatar, MAX_AVATAR),
        ("title", &p.title, MAX_TITLE),
        ("bio", &p.bio, MAX_BIO),
    ];
    for (name, value, max) in fields {
        if let Some(v) = value {
            if !within(v, max) {
                return Err(format!("`{name}` is over {max} characters"));
            }
        }
    }
    if let Some(caps) = &p.capabilities {
        if caps.len() > MAX_PROFILE_CAPS || caps.iter().any(|c| !within(c, MAX_PROFILE_CAP_LEN)) {
            return Err(format!(
                "`capabilities`: at most {MAX_PROFILE_CAPS} entries of {MAX_PROFILE_CAP_LEN} characters"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PresenceFrame, String> {
        let ty = super::super::wire::head(text).unwrap().ty;
        PresenceFrame::parse(&ty, text)
    }

    #[test]
    fn status_summary_groups_are_checked() {
        assert!(parse(r#"{"type":"set_status","status":"sleepy"}"#).is_err());
        let long = format!(
            r#"{{"type":"set_summary","summary":"{}"}}"#,
            "x".repeat(1025)
        );
        assert!(parse(&long).is_err());
        assert!(parse(r#"{"type":"join_group","name":"@all"}"#).is_err());
        let ok = parse(r#"{"type":"join_group","name":"a/b","role":"lead","_reqId":"x"}"#);
        assert!(matches!(ok, Ok(PresenceFrame::JoinGroup(ref g)) if g.name == "a/b"));
        assert_eq!(ok.unwrap().ty(), "join_group");
    }

    #[test]
    fn every_frame_type_parses_to_itself() {
        let bodies = [
            r#"{"type":"list_peers"}"#,
            r#"{"type":"set_status","status":"dnd"}"#,
            r#"{"type":"set_summary","summary":"s"}"#,
            r#"{"type":"set_visible","visible":false}"#,
            r#"{"type":"set_profile","title":"t"}"#,
            r#"{"type":"set_stats","stats":{"n":1}}"#,
            r#"{"type":"join_group","name":"g"}"#,
            r#"{"type":"leave_group","name":"g"}"#,
        ];
        for (spec, text) in PresenceFrame::FRAMES.iter().zip(bodies) {
            assert_eq!(parse(text).unwrap().ty(), spec.ty);
        }
    }
}

//! The mesh as a whole (PROTOCOL-MESH.md §7, §8): `mesh_info`, a summary
//! of everything in it, and the audit log over WebSocket
//! (`audit_query`, `audit_verify`).

use serde_json::Value;

use super::wire::{Family, FrameSpec};

/// `audit_query`'s page size when not given, and its bounds.
pub const DEFAULT_AUDIT_LIMIT: usize = 50;
pub const MAX_AUDIT_LIMIT: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshFrame {
    Info,
    AuditQuery {
        limit: usize,
        offset: usize,
        event_type: Option<String>,
    },
    AuditVerify,
}

impl Family for MeshFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("mesh_info"),
        FrameSpec::request("audit_query"),
        FrameSpec::request("audit_verify"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        let number = |field: &str| match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x.min(1e15) as usize)),
                _ => Err(format!("`{field}` must be a non-negative number")),
            },
            Some(_) => Err(format!("`{field}` must be a number")),
        };
        Ok(match ty {
            "mesh_info" => MeshFrame::Info,
            "audit_query" => MeshFrame::AuditQuery {
                limit: number("limit")?
                    .unwrap_or(DEFAULT_AUDIT_LIMIT)
                    .clamp(1, MAX_AUDIT_LIMIT),
                offset: number("offset")?.unwrap_or(0),
                event_type: match v.get("eventType") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.len() <= 256 => Some(s.clone()),
                    Some(_) => {
                        return Err("`eventType` must be a string of at most 256 characters".into())
                    }
                },
            },
            "audit_verify" => MeshFrame::AuditVerify,
            other => unreachable!("`{other}` is not a mesh frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            MeshFrame::Info => "mesh_info",
            MeshFrame::AuditQuery { .. } => "audit_query",
            MeshFrame::AuditVerify => "audit_verify",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_paging_is_defaulted_and_clamped() {
        let q = |t: &str| MeshFrame::parse("audit_query", t);
        assert_eq!(
            q("{}").unwrap(),
            MeshFrame::AuditQuery {
                limit: 50,
                offset: 0,
                event_type: None
            }
        );
        assert_eq!(
            q(r#"{"limit":0,"offset":3,"eventType":"x"}"#).unwrap(),
            MeshFrame::AuditQuery {
                limit: 1,
                offset: 3,
                event_type: Some("x".into())
            }
        );
        assert!(matches!(
            q(r#"{"limit":9999}"#).unwrap(),
            MeshFrame::AuditQuery { limit: 500, .. }
        ));
        for bad in [r#"{"limit":"5"}"#, r#"{"offset":-1}"#, r#"{"eventType":3}"#] {
            assert!(q(bad).is_err(), "{bad}");
        }
    }
}

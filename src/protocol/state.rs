//! Shared state (PROTOCOL-MESH.md §1): one JSON value per (mesh, key),
//! last write wins. `set_state` is fire-and-forget and never answered on
//! success; `get_state` and `list_state` are requests.

use serde_json::Value;

use super::fields::key;
use super::wire::{Family, FrameSpec};

/// Distinct keys per mesh; refused (`limit`) only when adding a key.
pub const MAX_KEYS_PER_MESH: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum StateFrame {
    /// `value` null deletes the key.
    Set {
        key: String,
        value: Value,
    },
    Get {
        key: String,
    },
    List,
}

impl Family for StateFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::fire_and_forget("set_state"),
        FrameSpec::request("get_state"),
        FrameSpec::request("list_state"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let mut v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "set_state" => {
                let key = key(&v, "key")?;
                let value = v
                    .get_mut("value")
                    .map(Value::take)
                    .ok_or("`value` is required (null deletes the key)")?;
                StateFrame::Set { key, value }
            }
            "get_state" => StateFrame::Get {
                key: key(&v, "key")?,
            },
            "list_state" => StateFrame::List,
            other => unreachable!("`{other}` is not a state frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            StateFrame::Set { .. } => "set_state",
            StateFrame::Get { .. } => "get_state",
            StateFrame::List => "list_state",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fields::MAX_KEY;

    #[test]
    fn keys_and_values_are_checked() {
        let set = |t: &str| StateFrame::parse("set_state", t);
        assert_eq!(
            set(r#"{"type":"set_state","key":"a","value":{"x":[1]}}"#).unwrap(),
            StateFrame::Set {
                key: "a".into(),
                value: serde_json::json!({"x": [1]})
            }
        );
        assert_eq!(
            set(r#"{"type":"set_state","key":"a","value":null}"#).unwrap(),
            StateFrame::Set {
                key: "a".into(),
                value: Value::Null
            }
        );
        assert!(set(r#"{"type":"set_state","key":"a"}"#)
            .unwrap_err()
            .contains("`value` is required"));
        let long = "k".repeat(MAX_KEY + 1);
        for bad in [
            r#"{"type":"set_state","value":1}"#.to_string(),
            r#"{"type":"set_state","key":"","value":1}"#.to_string(),
            r#"{"type":"set_state","key":7,"value":1}"#.to_string(),
            format!(r#"{{"type":"set_state","key":"{long}","value":1}}"#),
        ] {
            assert!(set(&bad).unwrap_err().contains("`key`"), "{bad}");
        }
        let at_cap = "é".repeat(MAX_KEY);
        assert!(StateFrame::parse(
            "get_state",
            &format!(r#"{{"type":"get_state","key":"{at_cap}"}}"#)
        )
        .is_ok());
        assert_eq!(
            StateFrame::parse("list_state", r#"{"type":"list_state","x":1}"#).unwrap(),
            StateFrame::List
        );
    }
}

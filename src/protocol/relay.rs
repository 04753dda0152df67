//! Relays between peers (PROTOCOL-MESH.md §15–§16): the MCP registry and
//! calls, and file and directory requests. Requests are `mcp_register`,
//! `mcp_list`, `mcp_call`, `peer_file_request` and `peer_dir_request`;
//! the rest are fire-and-forget, the responses among them matched by the
//! id the broker put in the forward (`callId`, or the forward's `_reqId`).

use serde_json::{Map, Value};

use super::fields::{bounded, key, limited, opt_string, MAX_ITEMS, MAX_KEY};
use super::wire::{Family, FrameSpec};

/// Registry entries per mesh.
pub const MAX_MCP_SERVERS: usize = 100;
pub const MAX_DESCRIPTION: usize = 4096;
/// File and directory paths a request names.
pub const MAX_PATH: usize = 4096;

/// Which relay a response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayKind {
    Mcp,
    File,
    Dir,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RelayFrame {
    Register {
        server: String,
        description: String,
        /// `[{name, description, inputSchema}]`, normalised.
        tools: Vec<Value>,
        persistent: bool,
    },
    Unregister {
        server: String,
    },
    List,
    Call {
        server: String,
        tool: String,
        args: Value,
    },
    /// A host's answer to `mcp_call_forward` `call_id`: its `result`
    /// and/or `error`, as sent.
    CallResponse {
        call_id: String,
        fields: Map<String, Value>,
    },
    /// `peer_file_request` (`File`, `path` = `filePath`) or
    /// `peer_dir_request` (`Dir`, `dirPath`, with its `pattern`).
    PeerRequest {
        kind: RelayKind,
        target: String,
        path: String,
        pattern: Option<String>,
    },
    /// `peer_file_response` / `peer_dir_response`: every field but
    /// `type`, `_reqId` (the relay id, in the head) and `requesterPubkey`,
    /// passed on unchanged.
    PeerResponse {
        kind: RelayKind,
        fields: Map<String, Value>,
    },
}

impl RelayKind {
    /// The path field of its requests and answers.
    pub fn path_field(self) -> &'static str {
        match self {
            RelayKind::Dir => "dirPath",
            _ => "filePath",
        }
    }
}

fn tools(v: &Value) -> Result<Vec<Value>, String> {
    let bad = || {
        format!("`tools` must be an array of at most {MAX_ITEMS} objects with a `name` of 1-{MAX_KEY} characters")
    };
    let list = match v.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) if a.len() <= MAX_ITEMS => a,
        Some(_) => return Err(bad()),
    };
    list.iter()
        .map(|t| {
            let name = key(t, "name").map_err(|_| bad())?;
            let description = opt_string(t, "description", MAX_DESCRIPTION)
                .map_err(|_| format!("a tool's `description` must be a string of at most {MAX_DESCRIPTION} characters"))?
                .unwrap_or_default();
            let schema = t.get("inputSchema").cloned().unwrap_or(Value::Null);
            Ok(serde_json::json!({"name": name, "description": description, "inputSchema": schema}))
        })
        .collect()
}

/// The fields of a response, without those the broker reads itself.
fn answer_fields(v: Value, drop: &[&str]) -> Map<String, Value> {
    let mut m = match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for k in ["type", "_reqId"].iter().chain(drop) {
        m.remove(*k);
    }
    m
}

impl Family for RelayFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("mcp_register"),
        FrameSpec::fire_and_forget("mcp_unregister"),
        FrameSpec::request("mcp_list"),
        FrameSpec::request("mcp_call"),
        FrameSpec::fire_and_forget("mcp_call_response"),
        FrameSpec::request("peer_file_request"),
        FrameSpec::request("peer_dir_request"),
        FrameSpec::fire_and_forget("peer_file_response"),
        FrameSpec::fire_and_forget("peer_dir_response"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let mut v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "mcp_register" => RelayFrame::Register {
                server: key(&v, "serverName")?,
                description: opt_string(&v, "description", MAX_DESCRIPTION)?.unwrap_or_default(),
                tools: tools(&v)?,
                persistent: match v.get("persistent") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err("`persistent` must be a boolean".into()),
                },
            },
            "mcp_unregister" => RelayFrame::Unregister {
                server: key(&v, "serverName")?,
            },
            "mcp_list" => RelayFrame::List,
            "mcp_call" => RelayFrame::Call {
                server: key(&v, "serverName")?,
                tool: key(&v, "toolName")?,
                args: match v.get_mut("args").map(Value::take) {
                    None | Some(Value::Null) => Value::Object(Map::new()),
                    Some(a) => a,
                },
            },
            "mcp_call_response" => RelayFrame::CallResponse {
                call_id: key(&v, "callId")?,
                fields: answer_fields(v, &["callId"]),
            },
            "peer_file_request" | "peer_dir_request" => {
                let kind = if ty == "peer_file_request" {
                    RelayKind::File
                } else {
                    RelayKind::Dir
                };
                RelayFrame::PeerRequest {
                    kind,
                    target: key(&v, "targetPubkey")?,
                    path: match kind {
                        RelayKind::Dir => limited(&v, "dirPath", MAX_PATH)?,
                        _ => bounded(&v, "filePath", MAX_PATH)?,
                    },
                    pattern: match kind {
                        RelayKind::Dir => opt_string(&v, "pattern", MAX_KEY)?,
                        _ => None,
                    },
                }
            }
            "peer_file_response" | "peer_dir_response" => RelayFrame::PeerResponse {
                kind: if ty == "peer_file_response" {
                    RelayKind::File
                } else {
                    RelayKind::Dir
                },
                fields: answer_fields(v, &["requesterPubkey"]),
            },
            other => unreachable!("`{other}` is not a relay frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            RelayFrame::Register { .. } => "mcp_register",
            RelayFrame::Unregister { .. } => "mcp_unregister",
            RelayFrame::List => "mcp_list",
            RelayFrame::Call { .. } => "mcp_call",
            RelayFrame::CallResponse { .. } => "mcp_call_response",
            RelayFrame::PeerRequest {
                kind: RelayKind::Dir,
                ..
            } => "peer_dir_request",
            RelayFrame::PeerRequest { .. } => "peer_file_request",
            RelayFrame::PeerResponse {
                kind: RelayKind::Dir,
                ..
            } => "peer_dir_response",
            RelayFrame::PeerResponse { .. } => "peer_file_response",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registrations_are_normalised_and_bounded() {
        let f = RelayFrame::parse(
            "mcp_register",
            r#"{"serverName":"jira","tools":[{"name":"search","extra":1}],"persistent":true}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            RelayFrame::Register {
                server: "jira".into(),
                description: String::new(),
                tools: vec![json!({"name": "search", "description": "", "inputSchema": null})],
                persistent: true
            }
        );
        let many: Vec<Value> = (0..257).map(|i| json!({"name": format!("t{i}")})).collect();
        for (bad, field) in [
            (json!({}), "`serverName`"),
            (
                json!({"serverName": "s", "tools": [{"description": "x"}]}),
                "`tools`",
            ),
            (json!({"serverName": "s", "tools": many}), "`tools`"),
            (
                json!({"serverName": "s", "persistent": "yes"}),
                "`persistent`",
            ),
            (
                json!({"serverName": "s", "description": "d".repeat(4097)}),
                "`description`",
            ),
        ] {
            let e = RelayFrame::parse("mcp_register", &bad.to_string()).unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn responses_keep_what_they_answer_and_drop_what_routes_them() {
        let f = RelayFrame::parse(
            "peer_file_response",
            r#"{"type":"peer_file_response","requesterPubkey":"ab","filePath":"a.ts","content":"eA==","_reqId":"r"}"#,
        )
        .unwrap();
        let RelayFrame::PeerResponse { kind, fields } = f else {
            panic!()
        };
        assert_eq!(kind, RelayKind::File);
        assert_eq!(
            Value::Object(fields),
            json!({"filePath": "a.ts", "content": "eA=="})
        );
        let f = RelayFrame::parse(
            "mcp_call_response",
            r#"{"callId":"c","error":"boom","result":null}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            RelayFrame::CallResponse {
                call_id: "c".into(),
                fields: json!({"error": "boom", "result": null})
                    .as_object()
                    .unwrap()
                    .clone()
            }
        );
        assert!(RelayFrame::parse("mcp_call_response", r#"{"result":1}"#)
            .unwrap_err()
            .contains("`callId`"));
        assert!(
            RelayFrame::parse("peer_dir_request", r#"{"targetPubkey":"k"}"#)
                .unwrap_err()
                .contains("`dirPath`")
        );
        assert_eq!(
            RelayFrame::parse("mcp_call", r#"{"serverName":"s","toolName":"t"}"#).unwrap(),
            RelayFrame::Call {
                server: "s".into(),
                tool: "t".into(),
                args: json!({})
            }
        );
    }
}

//! Shared files' WebSocket frames (PROTOCOL-MESH.md §17): `get_file`,
//! `list_files`, `file_status` and `grant_file_access` are requests;
//! `delete_file` is fire-and-forget (answered with an `ack`). Uploads and
//! downloads are HTTP (`http::files`).

use serde_json::Value;

use super::fields::{bounded, key, opt_string, MAX_KEY};
use super::wire::{Family, FrameSpec};

/// Sealed keys per file.
pub const MAX_FILE_KEYS: usize = 256;
/// A sealed key's length, in characters.
pub const MAX_SEALED_KEY: usize = 1024;
/// Files a listing or an access report shows.
pub const MAX_LISTED: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub enum FileFrame {
    Get {
        id: String,
    },
    List {
        query: Option<String>,
        from: Option<String>,
    },
    Status {
        id: String,
    },
    Delete {
        id: String,
    },
    Grant {
        id: String,
        peer: String,
        sealed_key: String,
    },
}

impl Family for FileFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("get_file"),
        FrameSpec::request("list_files"),
        FrameSpec::request("file_status"),
        FrameSpec::fire_and_forget("delete_file"),
        FrameSpec::request("grant_file_access"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "get_file" => FileFrame::Get {
                id: key(&v, "fileId")?,
            },
            "list_files" => FileFrame::List {
                query: opt_string(&v, "query", MAX_KEY)?,
                from: opt_string(&v, "from", MAX_KEY)?,
            },
            "file_status" => FileFrame::Status {
                id: key(&v, "fileId")?,
            },
            "delete_file" => FileFrame::Delete {
                id: key(&v, "fileId")?,
            },
            "grant_file_access" => FileFrame::Grant {
                id: key(&v, "fileId")?,
                peer: key(&v, "peerPubkey")?,
                sealed_key: bounded(&v, "sealedKey", MAX_SEALED_KEY)?,
            },
            other => unreachable!("`{other}` is not a file frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            FileFrame::Get { .. } => "get_file",
            FileFrame::List { .. } => "list_files",
            FileFrame::Status { .. } => "file_status",
            FileFrame::Delete { .. } => "delete_file",
            FileFrame::Grant { .. } => "grant_file_access",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_when_missing_or_too_long() {
        assert_eq!(
            FileFrame::parse("list_files", "{}").unwrap(),
            FileFrame::List {
                query: None,
                from: None
            }
        );
        for (ty, bad, field) in [
            ("get_file", "{}".to_string(), "`fileId`"),
            ("file_status", r#"{"fileId":7}"#.to_string(), "`fileId`"),
            (
                "grant_file_access",
                r#"{"fileId":"f","peerPubkey":"p"}"#.to_string(),
                "`sealedKey`",
            ),
            (
                "grant_file_access",
                format!(
                    r#"{{"fileId":"f","peerPubkey":"p","sealedKey":"{}"}}"#,
                    "k".repeat(1025)
                ),
                "`sealedKey`",
            ),
            ("list_files", r#"{"query":5}"#.to_string(), "`query`"),
        ] {
            let e = FileFrame::parse(ty, &bad).unwrap_err();
            assert!(e.contains(field), "{ty} {bad}: {e}");
        }
    }
}

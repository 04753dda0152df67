//! The vault (PROTOCOL-MESH.md §10): opaque encrypted blobs per member,
//! snake_case fields, every reply matched by `_reqId` only.

use serde_json::Value;

use super::fields::{key, keys, opt_string, string};
use super::wire::{Family, FrameSpec};

pub const MAX_MOUNT_PATH: usize = 512;
pub const MAX_VAULT_DESCRIPTION: usize = 500;
pub const MAX_ENTRIES_PER_MEMBER: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultEntryIn {
    pub key: String,
    pub ciphertext: String,
    pub nonce: String,
    pub sealed_key: String,
    /// `env` or `file`.
    pub entry_type: String,
    pub mount_path: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultFrame {
    Set(VaultEntryIn),
    List,
    Delete { key: String },
    Get { keys: Vec<String> },
}

impl Family for VaultFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("vault_set"),
        FrameSpec::request("vault_list"),
        FrameSpec::request("vault_delete"),
        FrameSpec::request("vault_get"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            "vault_set" => {
                let entry_type = string(&v, "entry_type")?;
                if entry_type != "env" && entry_type != "file" {
                    return Err("`entry_type` must be \"env\" or \"file\"".into());
                }
                let mount_path = opt_string(&v, "mount_path", MAX_MOUNT_PATH)?;
                if mount_path.as_deref().is_some_and(|p| p.contains("..")) {
                    return Err("`mount_path` must not contain `..`".into());
                }
                VaultFrame::Set(VaultEntryIn {
                    key: key(&v, "key")?,
                    ciphertext: string(&v, "ciphertext")?,
                    nonce: string(&v, "nonce")?,
                    sealed_key: string(&v, "sealed_key")?,
                    entry_type,
                    mount_path,
                    description: opt_string(&v, "description", MAX_VAULT_DESCRIPTION)?,
                })
            }
            "vault_list" => VaultFrame::List,
            "vault_delete" => VaultFrame::Delete {
                key: key(&v, "key")?,
            },
            "vault_get" => VaultFrame::Get {
                keys: match v.get("keys") {
                    Some(Value::Array(_)) => keys(&v, "keys")?,
                    _ => return Err("`keys` must be an array of keys".into()),
                },
            },
            other => unreachable!("`{other}` is not a vault frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            VaultFrame::Set(_) => "vault_set",
            VaultFrame::List => "vault_list",
            VaultFrame::Delete { .. } => "vault_delete",
            VaultFrame::Get { .. } => "vault_get",
        }
    }
}

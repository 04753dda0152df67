//! The vault (PROTOCOL-MESH.md §10): each member's own encrypted entries,
//! stored and handed back, never decrypted. Storage failures answer
//! `vault_error`. Audited by key only.

use serde_json::{json, Value};

use super::audit::Actor;
use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::caller;
use crate::protocol::vault::{VaultFrame, MAX_ENTRIES_PER_MEMBER};
use crate::protocol::wire::Head;
use crate::store::{StoreError, VaultEntry};
use crate::time::iso;

fn failed(e: StoreError) -> Refusal {
    tracing::warn!(error = %e, "vault storage failed");
    Refusal::new(
        "vault_error",
        "the vault cannot be reached; nothing changed",
    )
}

pub async fn handle(s: &mut Session, frame: VaultFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    // Every storage failure of the family is `vault_error`, the caller's
    // own lookup included: the clients match vault replies by `_reqId`.
    let (_, member) = caller(ctx, me).await.map_err(|r| match r.code {
        "unavailable" => Refusal::new(
            "vault_error",
            "the vault cannot be reached; nothing changed",
        ),
        _ => r,
    })?;
    let (mesh_id, member_id) = (me.mesh_id.as_str(), member.id.as_str());
    let actor = Actor {
        member_id,
        name: &member.display_name,
    };
    match frame {
        VaultFrame::Set(e) => {
            let max = ctx.config.settings.max_message_bytes;
            let size = e.ciphertext.len() + e.nonce.len() + e.sealed_key.len();
            if size > max {
                return Err(Refusal::bad_request(format!(
                    "`ciphertext`, `nonce` and `sealed_key` are {size} bytes; at most {max} (max_message_bytes)"
                )));
            }
            let entry = VaultEntry {
                mesh_id: mesh_id.to_string(),
                member_id: member_id.to_string(),
                key: e.key,
                ciphertext: e.ciphertext,
                nonce: e.nonce,
                sealed_key: e.sealed_key,
                entry_type: e.entry_type,
                mount_path: e.mount_path,
                description: e.description,
                updated_at: ctx.now(),
            };
            let stored = bounded(ctx.store.vault_set(&entry, MAX_ENTRIES_PER_MEMBER))
                .await
                .map_err(failed)?;
            if !stored {
                return Err(Refusal::new(
                    "limit",
                    format!("a member holds at most {MAX_ENTRIES_PER_MEMBER} vault entries"),
                ));
            }
            ctx.audit
                .record(mesh_id, "vault_set", Some(actor), json!({"key": entry.key}));
            Ok(ack(&entry.key, "stored"))
        }
        VaultFrame::List => {
            let all = bounded(ctx.store.vault_list(mesh_id, member_id))
                .await
                .map_err(failed)?;
            let entries: Vec<Value> = all
                .iter()
                .map(|e| {
                    json!({"key": e.key, "entry_type": e.entry_type, "mount_path": e.mount_path,
                        "description": e.description, "updated_at": iso(e.updated_at)})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "vault_list_result", "entries": entries}).to_string(),
            ))
        }
        VaultFrame::Get { keys } => {
            let got = bounded(ctx.store.vault_get(mesh_id, member_id, &keys))
                .await
                .map_err(failed)?;
            let entries: Vec<Value> = got
                .iter()
                .map(|e| {
                    json!({"key": e.key, "ciphertext": e.ciphertext, "nonce": e.nonce,
                        "sealed_key": e.sealed_key, "entry_type": e.entry_type,
                        "mount_path": e.mount_path})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "vault_get_result", "entries": entries}).to_string(),
            ))
        }
        VaultFrame::Delete { key } => {
            let gone = bounded(ctx.store.vault_delete(mesh_id, member_id, &key))
                .await
                .map_err(failed)?;
            if gone {
                ctx.audit
                    .record(mesh_id, "vault_deleted", Some(actor), json!({"key": key}));
            }
            Ok(ack(&key, if gone { "deleted" } else { "not_found" }))
        }
    }
}

fn ack(key: &str, action: &str) -> Reply {
    Reply::Frame(json!({"type": "vault_ack", "key": key, "action": action}).to_string())
}

//! Inbound webhooks (PROTOCOL-MESH.md §9): members create, list and
//! delete them over WebSocket; `POST /hook/{meshId}/{secret}` from
//! anywhere pushes the body to every live presence of the mesh, on every
//! node. Secrets are kept hashed and checked in constant time.

use base64::Engine as _;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::audit::Actor;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::{caller, is_privileged};
use super::signal::{Signal, Skip};
use super::{bounded, Ctx};
use crate::protocol::ids;
use crate::protocol::webhooks::{WebhookFrame, MAX_ACTIVE_PER_MESH};
use crate::protocol::wire::Head;
use crate::store::{Bucket, PresenceState, Webhook, WebhookCreated, WebhookDeleted};
use crate::time::iso;

/// Rate buckets of inbound posts, one per webhook.
const BUCKET_SCOPE: &str = "webhook";

/// `public_url` as an HTTP base: `ws`→`http`, `wss`→`https`, a trailing
/// `/ws` dropped.
pub fn http_base(public_url: &str) -> String {
    let base = public_url.trim_end_matches('/');
    let base = base.strip_suffix("/ws").unwrap_or(base);
    if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        base.to_string()
    }
}

pub async fn handle(s: &mut Session, frame: WebhookFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    let (mesh, member) = caller(ctx, me).await?;
    let base = format!("{}/hook/{}", http_base(&ctx.node.public_url), me.mesh_id);
    let actor = Actor {
        member_id: &member.id,
        name: &member.display_name,
    };
    match frame {
        WebhookFrame::Create { name } => {
            let name = name.ok_or_else(|| {
                Refusal::new(
                    "invalid_webhook",
                    "a webhook name is 1-256 characters without control characters",
                )
            })?;
            let mut raw = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut raw);
            let secret = hex::encode(raw);
            let w = Webhook {
                id: crate::store::new_message_id(ctx.now()),
                mesh_id: me.mesh_id.clone(),
                name: name.clone(),
                secret_hash: Sha256::digest(secret.as_bytes()).to_vec(),
                secret_prefix: secret[..8].to_string(),
                created_by_member: member.id.clone(),
                created_at: ctx.now(),
            };
            match bounded(ctx.store.create_webhook(&w, MAX_ACTIVE_PER_MESH)).await? {
                WebhookCreated::Exists => Err(Refusal::new(
                    "webhook_exists",
                    format!("an active webhook is already named {name}"),
                )),
                WebhookCreated::Full => Err(Refusal::new(
                    "limit",
                    format!("a mesh has at most {MAX_ACTIVE_PER_MESH} active webhooks"),
                )),
                WebhookCreated::Created => {
                    ctx.audit.record(
                        &me.mesh_id,
                        "webhook_created",
                        Some(actor),
                        json!({"name": name}),
                    );
                    Ok(Reply::Frame(
                        json!({"type": "webhook_ack", "name": name,
                            "url": format!("{base}/{secret}"), "secret": secret})
                        .to_string(),
                    ))
                }
            }
        }
        WebhookFrame::List => {
            let hooks = bounded(ctx.store.list_webhooks(&me.mesh_id)).await?;
            let list: Vec<Value> = hooks
                .iter()
                .map(|w| {
                    json!({"name": w.name, "url": format!("{base}/{}…", w.secret_prefix),
                        "active": true, "createdAt": iso(w.created_at)})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "webhook_list", "webhooks": list}).to_string(),
            ))
        }
        WebhookFrame::Delete { name } => {
            let privileged = is_privileged(&mesh, &member);
            let d = ctx
                .store
                .delete_webhook(&me.mesh_id, &name, &member.id, privileged);
            match bounded(d).await? {
                WebhookDeleted::Forbidden => Err(Refusal::new(
                    "forbidden",
                    "only its creator, an admin or the mesh owner can delete a webhook",
                )),
                done => {
                    if done == WebhookDeleted::Deleted {
                        ctx.audit.record(
                            &me.mesh_id,
                            "webhook_deleted",
                            Some(actor),
                            json!({"name": name}),
                        );
                    }
                    Ok(Reply::Frame(
                        json!({"type": "webhook_ack", "name": name, "url": "", "secret": ""})
                            .to_string(),
                    ))
                }
            }
        }
    }
}

/// How an inbound post went: its HTTP status and body.
pub struct Inbound {
    pub status: u16,
    pub body: Value,
}

fn refused(status: u16, error: &str) -> Inbound {
    Inbound {
        status,
        body: json!({"ok": false, "error": error}),
    }
}

/// `POST /hook/{meshId}/{secret}`.
pub async fn inbound(ctx: &Ctx, mesh_id: &str, secret: &str, body: &[u8]) -> Inbound {
    let hooks = match bounded(ctx.store.list_webhooks(mesh_id)).await {
        Ok(h) => h,
        Err(_) => return refused(503, "unavailable"),
    };
    let presented = Sha256::digest(secret.as_bytes());
    // Every active webhook is compared, with no early exit, and an unknown
    // mesh against a dummy: the timing says nothing about the secret.
    let dummy = [Webhook {
        id: uuid::Uuid::nil(),
        mesh_id: String::new(),
        name: String::new(),
        secret_hash: vec![0xa5; 32],
        secret_prefix: String::new(),
        created_by_member: String::new(),
        created_at: chrono::DateTime::UNIX_EPOCH,
    }];
    let candidates = if hooks.is_empty() {
        &dummy[..]
    } else {
        &hooks[..]
    };
    let mut found: Option<&Webhook> = None;
    for w in candidates {
        let same: bool = w.secret_hash.as_slice().ct_eq(presented.as_slice()).into();
        if same && !hooks.is_empty() {
            found = Some(w);
        }
    }
    let Some(hook) = found else {
        return refused(401, "unauthorized");
    };
    if body.len() > ctx.config.settings.max_message_bytes {
        return refused(413, "payload too large");
    }
    let data: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return refused(400, "invalid JSON body"),
    };
    let rate = ctx.config.settings.webhook_rate_limit_per_min;
    let bucket = Bucket {
        key: hook.id.to_string(),
        rate_per_min: rate,
        burst: rate,
    };
    match bounded(ctx.store.take_token(BUCKET_SCOPE, &bucket, ctx.now())).await {
        Ok(true) => {}
        Ok(false) => return refused(429, "rate_limit"),
        Err(_) => return refused(503, "unavailable"),
    }
    let live = match bounded(ctx.store.list_presences(mesh_id)).await {
        Ok(ps) => ps
            .iter()
            .filter(|p| p.state == PresenceState::Online)
            .count(),
        Err(_) => return refused(503, "unavailable"),
    };
    let frame = json!({
        "type": "push",
        "subtype": "webhook",
        "event": hook.name,
        "eventData": data,
        "messageId": ids::encode(crate::store::new_message_id(ctx.now())),
        "meshId": mesh_id,
        "senderPubkey": format!("webhook:{}", hook.name),
        "priority": "next",
        "nonce": "",
        "ciphertext": base64::engine::general_purpose::STANDARD.encode(body),
        "createdAt": iso(ctx.now()),
    });
    ctx.signal_cluster(Signal::Event {
        mesh: mesh_id.to_string(),
        skip: Skip::Nobody,
        frame: frame.to_string(),
    });
    Inbound {
        status: 200,
        body: json!({"ok": true, "delivered": live}),
    }
}

#[cfg(test)]
mod tests {
    use super::http_base;

    #[test]
    fn the_http_base_comes_from_the_public_url() {
        assert_eq!(
            http_base("wss://mesh.example.com/ws"),
            "https://mesh.example.com"
        );
        assert_eq!(
            http_base("ws://127.0.0.1:7900/ws/"),
            "http://127.0.0.1:7900"
        );
        assert_eq!(
            http_base("wss://mesh.example.com"),
            "https://mesh.example.com"
        );
    }
}

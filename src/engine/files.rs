//! Shared files (PROTOCOL-MESH.md §17): who can read a file, signed
//! download links, and the WebSocket frames. Uploads and downloads are
//! HTTP (`http::files`); bytes are the blob store's.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::{caller, is_privileged, member_of};
use super::{bounded, Ctx};
use crate::protocol::files::{FileFrame, MAX_FILE_KEYS, MAX_LISTED};
use crate::protocol::ids;
use crate::protocol::wire::Head;
use crate::store::{FileDeleted, FileKey, Granted, Member, Presence, StoredFile};
use crate::time::iso;

/// Why a caller may not read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    NotTargeted,
    NoKey,
}

impl Unreadable {
    pub fn sentence(self) -> &'static str {
        match self {
            Unreadable::NotTargeted => "file not targeted at you",
            Unreadable::NoKey => "no decryption key for this file",
        }
    }
}

impl From<Unreadable> for Refusal {
    fn from(u: Unreadable) -> Refusal {
        Refusal::new("forbidden", u.sentence())
    }
}

fn same_key(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `p` (of `member`) is the file's owner: its session or member
/// pubkey is the owner pubkey, or, with none, its member uploaded it.
pub fn is_owner(f: &StoredFile, member: &Member, p: &Presence) -> bool {
    match &f.file.owner_pubkey {
        Some(o) => {
            same_key(o, &member.pubkey)
                || p.session_pubkey.as_deref().is_some_and(|s| same_key(o, s))
        }
        None => f.file.uploader_member == member.id,
    }
}

fn targets(spec: &str, member: &Member, p: &Presence) -> bool {
    if spec == "*" || same_key(spec, &member.pubkey) {
        return true;
    }
    if p.session_pubkey
        .as_deref()
        .is_some_and(|s| same_key(spec, s))
    {
        return true;
    }
    if let Some(group) = spec.strip_prefix('@') {
        return p.groups.iter().any(|g| {
            g.name == group
                || g.name
                    .strip_prefix(group)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
    }
    // ◆ `file share --to` sends what the user typed, often a name.
    spec.to_lowercase() == member.display_name.to_lowercase()
        || spec.to_lowercase() == p.display_name.to_lowercase()
}

/// The reading rules: `Ok` with the caller's sealed key (encrypted
/// files, where one is held for it).
pub fn can_read(
    f: &StoredFile,
    member: &Member,
    p: &Presence,
) -> Result<Option<String>, Unreadable> {
    if let Some(spec) = f.file.target_spec.as_deref() {
        if f.file.uploader_member != member.id && !targets(spec, member, p) {
            return Err(Unreadable::NotTargeted);
        }
    }
    if !f.file.encrypted {
        return Ok(None);
    }
    let key_for = |pubkey: &str| {
        f.keys
            .iter()
            .find(|k| same_key(&k.peer_pubkey, pubkey))
            .map(|k| k.sealed_key.clone())
    };
    let sealed = p
        .session_pubkey
        .as_deref()
        .and_then(key_for)
        .or_else(|| key_for(&member.pubkey));
    match sealed {
        Some(k) => Ok(Some(k)),
        None if is_owner(f, member, p) => Ok(None),
        None => Err(Unreadable::NoKey),
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], mesh: &str, file: &str, member: &str, exp: i64) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("claudemesh-download|{mesh}|{file}|{member}|{exp}").as_bytes());
    m
}

/// A download link's signature.
pub fn sign(key: &[u8], mesh: &str, file: &str, member: &str, exp: i64) -> String {
    let tag = mac(key, mesh, file, member, exp).finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
}

/// Whether `sig` signs exactly this link and it has not expired at `now`
/// (compared in constant time).
pub fn verify(
    key: &[u8],
    (mesh, file, member): (&str, &str, &str),
    exp: i64,
    sig: &str,
    now: DateTime<Utc>,
) -> bool {
    if exp <= now.timestamp() {
        return false;
    }
    let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    mac(key, mesh, file, member, exp).verify_slice(&tag).is_ok()
}

/// Where this broker's HTTP routes are, from its public WebSocket URL.
pub fn http_base(public_url: &str) -> String {
    let base = public_url
        .strip_prefix("wss://")
        .map(|r| format!("https://{r}"))
        .or_else(|| {
            public_url
                .strip_prefix("ws://")
                .map(|r| format!("http://{r}"))
        })
        .unwrap_or_else(|| public_url.to_string());
    let base = base.trim_end_matches('/');
    base.strip_suffix("/ws").unwrap_or(base).to_string()
}

/// The signed link to file `id` for `member`, valid `file_url_ttl_seconds`.
pub fn download_url(ctx: &Ctx, mesh: &str, id: &str, member: &str) -> String {
    let exp = ctx.now().timestamp() + ctx.config.settings.file_url_ttl_seconds as i64;
    let sig = sign(&ctx.download_key, mesh, id, member, exp);
    // Ids and member ids are URL-safe already; anything else is escaped.
    const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let q = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY).to_string();
    format!(
        "{}/download/{id}?mesh={}&m={}&exp={exp}&sig={sig}",
        http_base(&ctx.node.public_url),
        q(mesh),
        q(member)
    )
}

pub async fn handle(s: &mut Session, frame: FileFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    match frame {
        FileFrame::Get { id } => get(ctx, me, &id).await,
        FileFrame::List { query, from } => list(ctx, me, query, from).await,
        FileFrame::Status { id } => {
            member_of(ctx, me).await?;
            let accesses = match ids::decode(&id) {
                Some(uuid) => {
                    bounded(ctx.store.file_accesses(&me.mesh_id, uuid, MAX_LISTED)).await?
                }
                None => Vec::new(),
            };
            let accesses: Vec<Value> = accesses
                .iter()
                .map(|(name, at)| json!({"peerName": name, "accessedAt": iso(*at)}))
                .collect();
            Ok(Reply::Frame(
                json!({"type": "file_status_result", "fileId": id, "accesses": accesses})
                    .to_string(),
            ))
        }
        FileFrame::Delete { id } => delete(ctx, me, &id).await,
        FileFrame::Grant {
            id,
            peer,
            sealed_key,
        } => grant(ctx, me, &id, peer, sealed_key).await,
    }
}

fn not_found() -> Refusal {
    Refusal::new("not_found", "no such file in this mesh")
}

async fn readable(ctx: &Ctx, me: &Presence, id: &str) -> Result<(Member, StoredFile), Refusal> {
    let member = member_of(ctx, me).await?;
    let uuid = ids::decode(id).ok_or_else(not_found)?;
    let f = bounded(ctx.store.stored_file(&me.mesh_id, uuid, ctx.now()))
        .await?
        .ok_or_else(not_found)?;
    Ok((member, f))
}

async fn get(ctx: &Ctx, me: &Presence, id: &str) -> Handled {
    let (member, f) = readable(ctx, me, id).await?;
    let sealed = can_read(&f, &member, me)?;
    bounded(
        ctx.store
            .record_access(f.file.id, &me.display_name, ctx.now()),
    )
    .await?;
    let ttl = std::time::Duration::from_secs(ctx.config.settings.file_url_ttl_seconds);
    let presigned = if ctx.config.settings.s3_presign_public {
        ctx.blobs.presign_get(&f.file.blob_key(), ttl).await
    } else {
        None
    };
    let url = presigned.unwrap_or_else(|| download_url(ctx, &me.mesh_id, id, &member.id));
    let mut reply = json!({"type": "file_url", "fileId": id, "url": url, "name": f.file.name,
        "encrypted": f.file.encrypted});
    if let Some(k) = sealed {
        reply["sealedKey"] = k.into();
    }
    Ok(Reply::Frame(reply.to_string()))
}

/// What a listing shows of a file.
fn listed(f: &StoredFile) -> Value {
    json!({"id": ids::encode(f.file.id), "name": f.file.name, "size": f.file.size,
        "tags": f.file.tags, "uploadedBy": f.file.uploaded_by, "uploadedAt": iso(f.file.created_at),
        "persistent": f.file.persistent, "encrypted": f.file.encrypted})
}

/// How many of the newest files a listing looks through for readable ones.
const LIST_SCAN: usize = 1000;

async fn list(ctx: &Ctx, me: &Presence, query: Option<String>, from: Option<String>) -> Handled {
    let member = member_of(ctx, me).await?;
    let query = query.map(|q| q.to_lowercase());
    let files: Vec<Value> = bounded(ctx.store.list_files(&me.mesh_id, ctx.now(), LIST_SCAN))
        .await?
        .iter()
        .filter(|f| can_read(f, &member, me).is_ok())
        .filter(|f| {
            query
                .as_ref()
                .is_none_or(|q| f.file.name.to_lowercase().contains(q))
        })
        .filter(|f| from.as_ref().is_none_or(|n| f.file.uploaded_by == *n))
        .take(MAX_LISTED)
        .map(listed)
        .collect();
    Ok(Reply::Frame(
        json!({"type": "file_list", "files": files}).to_string(),
    ))
}

async fn delete(ctx: &Ctx, me: &Presence, id: &str) -> Handled {
    let ack = json!({"type": "ack", "id": id, "messageId": id, "queued": false}).to_string();
    let (mesh, member) = caller(ctx, me).await?;
    let Some(uuid) = ids::decode(id) else {
        return Ok(Reply::Frame(ack));
    };
    let privileged = is_privileged(&mesh, &member);
    match bounded(
        ctx.store
            .delete_file(&me.mesh_id, uuid, &member.id, privileged, ctx.now()),
    )
    .await?
    {
        FileDeleted::Deleted(f) => {
            if let Err(e) = ctx.blobs.delete(&f.blob_key()).await {
                tracing::warn!(file_id = %f.id, error = %e, "a deleted file's blob stays: the store refused");
            }
            Ok(Reply::Frame(ack))
        }
        FileDeleted::Missing => Ok(Reply::Frame(ack)),
        FileDeleted::Forbidden => Err(Refusal::new(
            "forbidden",
            "only the uploader or a mesh admin can delete this file",
        )),
    }
}

/// A pubkey as the clients write them: 64 hex characters.
pub fn valid_pubkey(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn grant(ctx: &Ctx, me: &Presence, id: &str, peer: String, sealed_key: String) -> Handled {
    if !valid_pubkey(&peer) {
        return Err(Refusal::bad_request(
            "`peerPubkey` must be 64 hex characters",
        ));
    }
    let (mesh, member) = caller(ctx, me).await?;
    let uuid = ids::decode(id).ok_or_else(not_found)?;
    let f = bounded(ctx.store.stored_file(&me.mesh_id, uuid, ctx.now()))
        .await?
        .ok_or_else(not_found)?;
    if !is_owner(&f, &member, me) && !is_privileged(&mesh, &member) {
        return Err(Refusal::new(
            "forbidden",
            "only the file owner can grant access",
        ));
    }
    let key = FileKey {
        peer_pubkey: peer.clone(),
        sealed_key,
    };
    match bounded(
        ctx.store
            .grant_file_key(&me.mesh_id, uuid, &key, MAX_FILE_KEYS, ctx.now()),
    )
    .await?
    {
        Granted::Granted => Ok(Reply::Frame(
            json!({"type": "grant_file_access_ok", "fileId": id, "peerPubkey": peer}).to_string(),
        )),
        Granted::Missing => Err(not_found()),
        Granted::Full => Err(Refusal::new(
            "limit",
            format!("the file holds {MAX_FILE_KEYS} keys"),
        )),
    }
}

/// The sweeper's step: expired ephemeral files and uploads abandoned by a
/// node that died lose their blobs.
pub async fn sweep(ctx: &Ctx) {
    let now = ctx.now();
    let stale = now - chrono::Duration::hours(1);
    match bounded(ctx.store.expire_files(now, stale)).await {
        Ok(keys) => {
            for k in keys {
                if let Err(e) = ctx.blobs.delete(&k).await {
                    tracing::warn!(blob = %k, error = %e, "an expired file's blob stays: the store refused");
                }
            }
        }
        Err(e) => tracing::warn!(node_id = %ctx.node_id, error = %e, "file expiry sweep failed"),
    }
}

#[cfg(test)]
mod tests;

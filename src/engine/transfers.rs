//! What `POST /upload` and `GET /download/{fileId}` do (PROTOCOL-MESH.md
//! §17; `http::files` routes them here). Bodies stream between the socket
//! and the blob store in chunks; an upload reserves its row (and its share
//! of the mesh quota) first, and anything that stops it short leaves
//! neither blob nor row.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::json;

use super::files::{can_read, valid_pubkey, verify};
use super::{bounded, Ctx};
use crate::blobs::BlobError;
use crate::config::{Config, UploadAuth};
use crate::protocol::fields::{MAX_ITEMS, MAX_KEY};
use crate::protocol::files::{MAX_FILE_KEYS, MAX_SEALED_KEY};
use crate::protocol::ids;
use crate::store::{FileKey, FileRow, Member, Presence, Reserved, StoreError};

fn fail(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"ok": false, "error": error}))).into_response()
}

fn unavailable() -> Response {
    fail(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
}

impl From<StoreError> for Response {
    fn from(e: StoreError) -> Response {
        tracing::warn!(error = %e, "file route: store failed");
        unavailable()
    }
}

/// The client's address: the TCP peer, or, when that peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not one.
pub fn client_addr(
    config: &Config,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<IpAddr> {
    let peer = peer?.ip();
    let trusted = |ip: &IpAddr| config.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .iter()
            .rev()
            .find(|ip| !trusted(ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer),
    )
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The caller of an HTTP file route: a bearer hook token's presence, or
/// (with `peer_address`) the mesh's most recently active presence at the
/// request's address, of `member_hint` when that names one of its members.
async fn identify(
    ctx: &Ctx,
    mesh_id: &str,
    member_hint: Option<&str>,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Option<(Presence, Member)>, StoreError> {
    let bearer = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    let presence = if let Some(token) = bearer {
        let hash = super::hello::hook_token_hash(token.trim());
        bounded(ctx.store.presence_by_hook_token(&hash))
            .await?
            .filter(|p| p.mesh_id == mesh_id)
    } else if ctx.config.upload_auth == UploadAuth::PeerAddress {
        let Some(addr) = addr else { return Ok(None) };
        let member = match member_hint {
            // The 2026-04 client sends the mesh slug here, not a member id.
            Some(m) => bounded(ctx.store.member_by_id(mesh_id, m))
                .await?
                .map(|m| m.id),
            None => None,
        };
        let found = bounded(ctx.store.presence_at_addr(
            mesh_id,
            &addr.to_string(),
            member.as_deref(),
        ))
        .await?;
        match found {
            Some(id) => bounded(ctx.store.presence_by_id(id)).await?,
            None => None,
        }
    } else {
        None
    };
    let Some(p) = presence else { return Ok(None) };
    match bounded(ctx.store.member_by_id(&p.mesh_id, &p.member_id)).await? {
        Some(m) if m.revoked_at.is_none() => Ok(Some((p, m))),
        _ => Ok(None),
    }
}

/// The last path segment of a client's file name, control characters
/// removed; `None` unless 1–255 characters remain.
fn file_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let n = clean.chars().count();
    (1..=255).contains(&n).then_some(clean)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyHeader {
    peer_pubkey: String,
    sealed_key: String,
}

/// An upload's headers, validated.
struct UploadHeaders {
    mesh_id: String,
    member_hint: String,
    name: String,
    tags: Vec<String>,
    persistent: bool,
    target: Option<String>,
    encrypted: bool,
    owner: Option<String>,
    keys: Vec<FileKey>,
    content_type: Option<String>,
    length: Option<u64>,
}

fn upload_headers(h: &HeaderMap) -> Result<UploadHeaders, &'static str> {
    const MISSING: &str = "missing X-Mesh-Id, X-Member-Id or X-File-Name";
    let required = |n: &str| header(h, n).filter(|v| !v.is_empty());
    let (Some(mesh_id), Some(member_hint), Some(raw_name)) = (
        required("x-mesh-id"),
        required("x-member-id"),
        required("x-file-name"),
    ) else {
        return Err(MISSING);
    };
    let name = file_name(raw_name).ok_or("invalid X-File-Name")?;
    let tags: Vec<String> = match header(h, "x-tags").filter(|v| !v.is_empty()) {
        None => Vec::new(),
        Some(t) => serde_json::from_str(t).map_err(|_| "invalid X-Tags")?,
    };
    if tags.len() > MAX_ITEMS
        || tags
            .iter()
            .any(|t| t.is_empty() || t.chars().count() > MAX_KEY)
    {
        return Err("invalid X-Tags");
    }
    let owner = match header(h, "x-owner-pubkey").filter(|v| !v.is_empty()) {
        Some(o) if valid_pubkey(o) => Some(o.to_ascii_lowercase()),
        Some(_) => return Err("invalid X-Owner-Pubkey"),
        None => None,
    };
    let keys: Vec<KeyHeader> = match header(h, "x-file-keys").filter(|v| !v.is_empty()) {
        None => Vec::new(),
        Some(k) => serde_json::from_str(k).map_err(|_| "invalid X-File-Keys")?,
    };
    if keys.len() > MAX_FILE_KEYS
        || keys.iter().any(|k| {
            !valid_pubkey(&k.peer_pubkey)
                || k.sealed_key.is_empty()
                || k.sealed_key.chars().count() > MAX_SEALED_KEY
        })
    {
        return Err("invalid X-File-Keys");
    }
    Ok(UploadHeaders {
        mesh_id: mesh_id.to_string(),
        member_hint: member_hint.to_string(),
        name,
        tags,
        persistent: header(h, "x-persistent") != Some("false"),
        target: header(h, "x-target-spec")
            .filter(|t| !t.is_empty())
            .map(String::from),
        encrypted: header(h, "x-encrypted") == Some("true"),
        owner,
        keys: keys
            .into_iter()
            .map(|k| FileKey {
                peer_pubkey: k.peer_pubkey.to_ascii_lowercase(),
                sealed_key: k.sealed_key,
            })
            .collect(),
        content_type: header(h, "content-type")
            .filter(|t| !t.is_empty() && t.len() <= 255)
            .map(String::from),
        length: header(h, "content-length").and_then(|l| l.parse().ok()),
    })
}

fn too_large(ctx: &Ctx) -> Response {
    let mb = ctx.config.settings.max_file_bytes / (1 << 20);
    fail(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("file too large (max {mb}MB)"),
    )
}

/// Whether sessions record the address their socket came from (only
/// `upload_auth = "peer_address"` reads it).
pub fn records_addresses(config: &Config) -> bool {
    config.upload_auth == UploadAuth::PeerAddress
}

/// `POST /upload` from TCP peer `peer`.
pub async fn upload(
    ctx: Arc<Ctx>,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The work runs on its own task: a client that goes away mid-body
    // drops the route's future, and the cleanup must still happen.
    let task = tokio::spawn(async move { upload_inner(&ctx, peer, headers, body).await });
    task.await.unwrap_or_else(|_| unavailable())
}

async fn upload_inner(
    ctx: &Ctx,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let h = match upload_headers(&headers) {
        Ok(h) => h,
        Err(e) => return fail(StatusCode::BAD_REQUEST, e),
    };
    let addr = client_addr(&ctx.config, peer, &headers);
    let (presence, member) =
        match identify(ctx, &h.mesh_id, Some(&h.member_hint), &headers, addr).await {
            Ok(Some(who)) => who,
            Ok(None) => return fail(StatusCode::UNAUTHORIZED, "unauthorized"),
            Err(e) => return e.into(),
        };
    let max = ctx.config.settings.max_file_bytes;
    match h.length {
        Some(0) => return fail(StatusCode::BAD_REQUEST, "empty body"),
        Some(n) if n > max => return too_large(ctx),
        _ => {}
    }
    let now = ctx.now();
    let row = FileRow {
        id: crate::store::new_message_id(now),
        mesh_id: presence.mesh_id.clone(),
        name: h.name,
        // What the quota holds for it until the body is in.
        size: h.length.unwrap_or(max) as i64,
        content_type: h.content_type,
        tags: h.tags,
        uploader_member: member.id.clone(),
        uploaded_by: member.display_name.clone(),
        persistent: h.persistent,
        expires_at: (!h.persistent).then(|| {
            now + chrono::Duration::seconds(ctx.config.settings.ephemeral_file_ttl_seconds as i64)
        }),
        target_spec: h.target,
        encrypted: h.encrypted,
        owner_pubkey: h.owner,
        created_at: now,
    };
    let quota = ctx.config.settings.max_mesh_file_bytes;
    match bounded(ctx.store.reserve_file(&row, &h.keys, quota)).await {
        Ok(Reserved::Reserved) => {}
        Ok(Reserved::OverQuota) => {
            return fail(StatusCode::PAYLOAD_TOO_LARGE, "mesh storage quota exceeded")
        }
        Err(e) => return e.into(),
    }
    let stream = body
        .into_data_stream()
        .map_err(|e| BlobError::Body(e.to_string()))
        .boxed();
    let key = row.blob_key();
    let stored = ctx.blobs.put(&key, stream, max).await;
    let put = stored.is_ok();
    let outcome = match stored {
        Ok(0) => Err(fail(StatusCode::BAD_REQUEST, "empty body")),
        Ok(n) => match bounded(ctx.store.finish_file(row.id, n as i64)).await {
            Ok(true) => Ok(()),
            // Swept as abandoned meanwhile (an upload longer than an hour).
            Ok(false) => Err(unavailable()),
            Err(e) => Err(e.into()),
        },
        Err(BlobError::TooLarge(_)) => Err(too_large(ctx)),
        Err(BlobError::Body(e)) => {
            tracing::info!(file_id = %row.id, error = %e, "upload cut off");
            Err(fail(
                StatusCode::BAD_REQUEST,
                "the body did not arrive whole",
            ))
        }
        Err(e) => {
            tracing::warn!(file_id = %row.id, error = %e, "blob store failed");
            Err(unavailable())
        }
    };
    match outcome {
        Ok(()) => {
            tracing::info!(file_id = %row.id, mesh_id = %row.mesh_id, "file stored");
            (
                StatusCode::OK,
                Json(json!({"ok": true, "fileId": ids::encode(row.id)})),
            )
                .into_response()
        }
        Err(resp) => {
            if put {
                let _ = ctx.blobs.delete(&key).await;
            }
            if let Err(e) = bounded(ctx.store.abandon_file(row.id)).await {
                // The sweeper drops the reservation within the hour.
                tracing::warn!(file_id = %row.id, error = %e, "could not drop a failed upload's reservation");
            }
            resp
        }
    }
}

/// A download's query: the mesh, and a signed link's member, expiry and
/// signature.
/// A download's query: the mesh, and a signed link's member, expiry and
/// signature.
#[derive(Deserialize)]
pub struct DownloadQuery {
    mesh: Option<String>,
    m: Option<String>,
    exp: Option<i64>,
    sig: Option<String>,
}

/// `GET /download/{file_id}` from TCP peer `peer`.
pub async fn download(
    ctx: &Ctx,
    peer: Option<SocketAddr>,
    file_id: String,
    q: DownloadQuery,
    headers: HeaderMap,
) -> Response {
    let Some(mesh) = q.mesh.filter(|m| !m.is_empty()) else {
        return fail(StatusCode::BAD_REQUEST, "mesh required");
    };
    let Some(uuid) = ids::decode(&file_id) else {
        return fail(StatusCode::NOT_FOUND, "not_found");
    };
    let now = ctx.now();
    let signed = match (&q.m, q.exp, &q.sig) {
        (Some(m), Some(exp), Some(sig)) => {
            if !verify(&ctx.download_key, (&mesh, &file_id, m), exp, sig, now) {
                return fail(StatusCode::FORBIDDEN, "forbidden");
            }
            Some(m.clone())
        }
        _ => None,
    };
    let file = match bounded(ctx.store.stored_file(&mesh, uuid, now)).await {
        Ok(f) => f,
        Err(e) => return e.into(),
    };
    match signed {
        Some(member) => match bounded(ctx.store.member_by_id(&mesh, &member)).await {
            Ok(Some(m)) if m.revoked_at.is_none() => {}
            Ok(_) => return fail(StatusCode::FORBIDDEN, "forbidden"),
            Err(e) => return e.into(),
        },
        None => {
            let addr = client_addr(&ctx.config, peer, &headers);
            let (p, m) = match identify(ctx, &mesh, None, &headers, addr).await {
                Ok(Some(who)) => who,
                Ok(None) => return fail(StatusCode::UNAUTHORIZED, "unauthorized"),
                Err(e) => return e.into(),
            };
            if let Some(f) = &file {
                if can_read(f, &m, &p).is_err() {
                    return fail(StatusCode::FORBIDDEN, "forbidden");
                }
            }
        }
    }
    let Some(f) = file else {
        return fail(StatusCode::NOT_FOUND, "not_found");
    };
    let stream = match ctx.blobs.get(&f.file.blob_key()).await {
        Ok(s) => s,
        Err(BlobError::NotFound) => return fail(StatusCode::NOT_FOUND, "not_found"),
        Err(e) => {
            tracing::warn!(file_id = %f.file.id, error = %e, "blob store failed");
            return unavailable();
        }
    };
    let name = f.file.name.replace(['"', '\\'], "_");
    let content_type = f
        .file
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, f.file.size)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        )
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| unavailable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_their_last_segment_without_control_characters() {
        assert_eq!(file_name("a/b/report.pdf").as_deref(), Some("report.pdf"));
        assert_eq!(file_name("C:\\x\\r.txt").as_deref(), Some("r.txt"));
        assert_eq!(file_name("re\u{7}port\n.md").as_deref(), Some("report.md"));
        assert_eq!(file_name("dir/"), None);
        assert_eq!(file_name(&"n".repeat(256)), None);
    }

    #[test]
    fn a_trusted_proxy_forwards_the_rightmost_untrusted_address() {
        let s = crate::config::Settings {
            trusted_proxy_cidrs: vec!["10.0.0.0/8".into()],
            ..Default::default()
        };
        let c = s.resolve(false);
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 1));
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.1.1.1, 2.2.2.2, 10.0.0.7".parse().unwrap(),
        );
        assert_eq!(
            client_addr(&c, peer("10.1.1.1"), &h),
            "2.2.2.2".parse().ok()
        );
        assert_eq!(
            client_addr(&c, peer("3.3.3.3"), &h),
            "3.3.3.3".parse().ok(),
            "an untrusted peer is the client"
        );
        assert_eq!(
            client_addr(&c, peer("10.1.1.1"), &HeaderMap::new()),
            "10.1.1.1".parse().ok()
        );
    }
}

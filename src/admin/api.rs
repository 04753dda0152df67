//! The admin HTTP API under `/admin` (ADMIN.md). Bearer-token guarded,
//! compared in constant time; answers 404 everywhere when no admin token
//! is configured, so an unconfigured node does not even admit it exists.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::engine::admin::{self, AdminError, Member, Mesh, NewInvite};
use crate::engine::presence::AdminPeerView;
use crate::engine::Engine;
use crate::http::{parse_body, ApiError};
use crate::protocol::types::de_groups;
use crate::protocol::GroupRef;
use crate::time::iso;

pub fn router(node: Arc<Engine>) -> Router<Arc<Engine>> {
    Router::new()
        .route("/meshes", post(create_mesh).get(list_meshes))
        .route("/meshes/{slug}/members", post(add_member).get(list_members))
        .route("/meshes/{slug}/members/{id}", delete(revoke_member))
        .route("/meshes/{slug}/invites", post(create_invite))
        .route("/invites/{token}", delete(revoke_invite))
        .route("/meshes/{slug}/peers", get(peers))
        .route("/meshes/{slug}/audit/verify", get(verify_audit))
        .route("/nodes", get(nodes))
        .layer(axum::middleware::from_fn_with_state(node, require_token))
}

async fn require_token(State(node): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let Some(expected) = node.node.admin_token.as_deref() else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "admin API is disabled")
            .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token",
        )
        .into_response();
    }
    next.run(req).await
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::BadRequest(m) => ApiError::bad_request(m),
            AdminError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            AdminError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AdminError::Unavailable(e) => {
                tracing::warn!(error = %e, "admin request failed on the store");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the broker cannot reach its database",
                )
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshJson {
    id: String,
    slug: String,
    name: String,
    owner_pubkey: String,
    root_key: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_secret_key: Option<String>,
}

impl MeshJson {
    fn of(m: Mesh, with_secret: bool) -> Self {
        MeshJson {
            id: m.id,
            slug: m.slug,
            name: m.name,
            owner_pubkey: m.owner_pubkey,
            root_key: m.root_key,
            created_at: iso(m.created_at),
            owner_secret_key: with_secret.then_some(m.owner_secret),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberJson {
    id: String,
    mesh_id: String,
    pubkey: String,
    display_name: String,
    role: &'static str,
    groups: Vec<String>,
    revoked_at: Option<String>,
}

impl MemberJson {
    fn of(m: Member) -> Self {
        MemberJson {
            id: m.id,
            mesh_id: m.mesh_id,
            pubkey: m.pubkey,
            display_name: m.display_name,
            role: m.role.as_str(),
            groups: m.default_groups.into_iter().map(|g| g.name).collect(),
            revoked_at: m.revoked_at.map(iso),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateMesh {
    slug: String,
    #[serde(default)]
    name: Option<String>,
    /// Include the owner's secret key in this one answer.
    #[serde(default)]
    show_owner_secret: bool,
}

async fn create_mesh(State(node): State<Arc<Engine>>, body: Bytes) -> Result<Response, ApiError> {
    let b: CreateMesh = parse_body(&body).map_err(ApiError::bad_request)?;
    let mesh = admin::create_mesh(&node, &b.slug, b.name.as_deref()).await?;
    Ok((
        StatusCode::CREATED,
        Json(MeshJson::of(mesh, b.show_owner_secret)),
    )
        .into_response())
}

async fn list_meshes(State(node): State<Arc<Engine>>) -> Result<Json<Vec<MeshJson>>, ApiError> {
    let meshes = admin::list_meshes(&node).await?;
    Ok(Json(
        meshes.into_iter().map(|m| MeshJson::of(m, false)).collect(),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddMember {
    pubkey: String,
    display_name: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default, deserialize_with = "de_groups")]
    groups: Option<Vec<GroupRef>>,
}

async fn add_member(
    State(node): State<Arc<Engine>>,
    Path(slug): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: AddMember = parse_body(&body).map_err(ApiError::bad_request)?;
    let member = admin::add_member(
        &node,
        &slug,
        &b.pubkey,
        &b.display_name,
        b.role.as_deref(),
        b.groups.unwrap_or_default(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(MemberJson::of(member))).into_response())
}

async fn list_members(
    State(node): State<Arc<Engine>>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<MemberJson>>, ApiError> {
    let members = admin::list_members(&node, &slug).await?;
    Ok(Json(members.into_iter().map(MemberJson::of).collect()))
}

async fn revoke_member(
    State(node): State<Arc<Engine>>,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    admin::revoke_member(&node, &slug, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInvite {
    #[serde(default)]
    max_uses: Option<i32>,
    #[serde(default)]
    ttl_seconds: Option<i64>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    broker_url: Option<String>,
}

async fn create_invite(
    State(node): State<Arc<Engine>>,
    Path(slug): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // An empty body means every default.
    let b: CreateInvite = if body.iter().all(u8::is_ascii_whitespace) {
        parse_body(&Bytes::from_static(b"{}"))
    } else {
        parse_body(&body)
    }
    .map_err(ApiError::bad_request)?;
    let created = admin::create_invite(
        &node,
        &slug,
        NewInvite {
            max_uses: b.max_uses,
            ttl_seconds: b.ttl_seconds,
            role: b.role,
            broker_url: b.broker_url,
        },
    )
    .await?;
    let inv = created.invite;
    let json = serde_json::json!({
        "link": created.link,
        "token": inv.token,
        "meshId": inv.mesh_id,
        "expiresAt": iso(inv.expires_at),
        "maxUses": inv.max_uses,
        "role": inv.role.as_str(),
    });
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

async fn revoke_invite(
    State(node): State<Arc<Engine>>,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin::revoke_invite(&node, &token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn peers(
    State(node): State<Arc<Engine>>,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    let all = admin::peers(&node, &slug).await?;
    let views: Vec<AdminPeerView> = all.iter().map(AdminPeerView::of).collect();
    Ok(Json(views).into_response())
}

async fn nodes(State(node): State<Arc<Engine>>) -> Result<Response, ApiError> {
    let now = node.now();
    let nodes = admin::nodes(&node).await?;
    let json: Vec<serde_json::Value> = nodes
        .into_iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id.to_string(),
                "addr": n.addr,
                "version": n.version,
                "startedAt": iso(n.started_at),
                "heartbeatAt": iso(n.heartbeat_at),
                "heartbeatAgeSeconds": (now - n.heartbeat_at).num_milliseconds() as f64 / 1000.0,
                "sockets": n.sockets,
                "draining": n.draining,
            })
        })
        .collect();
    Ok(Json(json).into_response())
}

async fn verify_audit(
    State(node): State<Arc<Engine>>,
    Path(slug): Path<String>,
) -> Result<Response, ApiError> {
    let v = admin::verify_audit(&node, &slug).await?;
    let mut body = serde_json::json!({"valid": v.valid, "entries": v.entries});
    if let Some(seq) = v.broken_at {
        body["brokenAt"] = serde_json::json!(seq);
    }
    Ok(Json(body).into_response())
}

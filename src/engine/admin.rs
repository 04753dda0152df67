//! Operator actions: meshes, members, invites, and what operators look at
//! (peers, nodes, audit verification). The admin API and `serve --dev`
//! call these; they validate, go through the store and close sockets a
//! change affects.

use chrono::Duration;
use serde_json::json;
use uuid::Uuid;

use super::Ctx;
use crate::audit::Verdict;
use crate::protocol::invite::InvitePayload;
use crate::protocol::limits::{within, MAX_DISPLAY_NAME, MAX_GROUPS};
use crate::protocol::presence::validate_group;
use crate::protocol::{crypto, GroupRef};
use crate::store::{Invite, Role, StoreError};
/// The rows the admin API shows, as the engine hands them out.
pub use crate::store::{Member, Mesh, NodeInfo, Presence};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("database unavailable")]
    Unavailable(#[source] StoreError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => AdminError::Conflict(what.to_string()),
            other => AdminError::Unavailable(other),
        }
    }
}

/// Longest invite lifetime: a year. Longer-lived links are a standing
/// credential nobody remembers to revoke.
pub const MAX_INVITE_TTL_SECONDS: i64 = 365 * 24 * 3600;
/// Default invite lifetime, as claudemesh's own CLI.
pub const DEFAULT_INVITE_TTL_SECONDS: i64 = 7 * 24 * 3600;
/// Uses one invite may grant at most.
pub const MAX_INVITE_USES: i32 = 10_000;
/// Expiry seconds tried when identical invites are minted at once.
const MAX_INVITE_TOKEN_ATTEMPTS: i64 = 64;
/// Longest `brokerUrl` an invite may name.
pub const MAX_BROKER_URL: usize = 1024;
/// Longest token: the token is the invite's primary key, and Postgres
/// refuses b-tree entries over 2704 bytes.
const MAX_INVITE_TOKEN: usize = 2400;

fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

pub struct NewInvite {
    pub max_uses: Option<i32>,
    pub ttl_seconds: Option<i64>,
    pub role: Option<String>,
    pub broker_url: Option<String>,
}

pub struct CreatedInvite {
    pub invite: Invite,
    pub link: String,
}

pub async fn create_mesh(ctx: &Ctx, slug: &str, name: Option<&str>) -> Result<Mesh, AdminError> {
    if !valid_slug(slug) {
        return Err(AdminError::BadRequest(
            "slug must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"
                .into(),
        ));
    }
    let name = name.unwrap_or(slug);
    if name.is_empty() || !within(name, MAX_DISPLAY_NAME) {
        return Err(AdminError::BadRequest(format!(
            "name must be 1 to {MAX_DISPLAY_NAME} characters"
        )));
    }
    let owner = crypto::KeyPair::generate();
    let mesh = Mesh {
        id: Uuid::now_v7().to_string(),
        slug: slug.to_string(),
        name: name.to_string(),
        owner_pubkey: owner.public_hex,
        owner_secret: owner.secret_hex,
        root_key: crypto::random_token(32),
        created_at: ctx.now(),
    };
    ctx.store.insert_mesh(&mesh).await.map_err(|e| match e {
        StoreError::Conflict(_) => AdminError::Conflict(format!("mesh `{slug}` already exists")),
        other => AdminError::Unavailable(other),
    })?;
    tracing::info!(mesh_id = %mesh.id, slug = %mesh.slug, "mesh created");
    Ok(mesh)
}

pub async fn mesh(ctx: &Ctx, slug: &str) -> Result<Mesh, AdminError> {
    ctx.store
        .mesh_by_slug(slug)
        .await?
        .ok_or(AdminError::NotFound("no such mesh"))
}

pub async fn add_member(
    ctx: &Ctx,
    slug: &str,
    pubkey: &str,
    display_name: &str,
    role: Option<&str>,
    groups: Vec<GroupRef>,
) -> Result<Member, AdminError> {
    if crypto::parse_pubkey(pubkey).is_none() {
        return Err(AdminError::BadRequest(
            "pubkey must be 64 hex characters of an ed25519 public key".into(),
        ));
    }
    if display_name.is_empty() || !within(display_name, MAX_DISPLAY_NAME) {
        return Err(AdminError::BadRequest(format!(
            "displayName must be 1 to {MAX_DISPLAY_NAME} characters"
        )));
    }
    let role = parse_role(role)?;
    if groups.len() > MAX_GROUPS {
        return Err(AdminError::BadRequest(format!(
            "at most {MAX_GROUPS} groups"
        )));
    }
    for g in &groups {
        validate_group(g).map_err(AdminError::BadRequest)?;
    }
    let mesh = mesh(ctx, slug).await?;
    let member = Member {
        id: Uuid::now_v7().to_string(),
        mesh_id: mesh.id.clone(),
        pubkey: pubkey.to_ascii_lowercase(),
        display_name: display_name.to_string(),
        role,
        default_groups: groups,
        revoked_at: None,
        created_at: ctx.now(),
    };
    ctx.store
        .insert_member(&member)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                AdminError::Conflict("pubkey is already a member of this mesh".into())
            }
            other => AdminError::Unavailable(other),
        })?;
    tracing::info!(mesh_id = %mesh.id, member_id = %member.id, "member added");
    ctx.audit.record(
        &mesh.id,
        "member_added",
        None,
        json!({"member_id": member.id, "display_name": member.display_name,
               "role": member.role.as_str(), "via": "admin"}),
    );
    Ok(member)
}

/// Revokes a member: each of its live sessions, on any node, gets the
/// `revoked` error and close 4002 `banned`; the mesh hears `peer_left`.
pub async fn revoke_member(ctx: &Ctx, slug: &str, member_id: &str) -> Result<(), AdminError> {
    let mesh = mesh(ctx, slug).await?;
    let ended = ctx
        .store
        .revoke_member(&mesh.id, member_id, ctx.now())
        .await?
        .ok_or(AdminError::NotFound("no such active member in this mesh"))?;
    super::moderation::end_revoked(ctx, &mesh, &ended);
    tracing::info!(mesh_id = %mesh.id, member_id, sessions = ended.len(), "member revoked");
    ctx.audit.record(
        &mesh.id,
        "member_revoked",
        None,
        json!({"member_id": member_id, "sessions_closed": ended.len()}),
    );
    Ok(())
}

pub async fn create_invite(
    ctx: &Ctx,
    slug: &str,
    req: NewInvite,
) -> Result<CreatedInvite, AdminError> {
    let max_uses = req.max_uses.unwrap_or(1);
    if !(1..=MAX_INVITE_USES).contains(&max_uses) {
        return Err(AdminError::BadRequest(format!(
            "maxUses must be 1 to {MAX_INVITE_USES}"
        )));
    }
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_INVITE_TTL_SECONDS);
    if !(1..=MAX_INVITE_TTL_SECONDS).contains(&ttl) {
        return Err(AdminError::BadRequest(format!(
            "ttlSeconds must be 1 to {MAX_INVITE_TTL_SECONDS}"
        )));
    }
    let role = parse_role(req.role.as_deref())?;
    let broker_url = req
        .broker_url
        .unwrap_or_else(|| ctx.node.public_url.clone());
    if !(broker_url.starts_with("ws://") || broker_url.starts_with("wss://"))
        || broker_url.len() > MAX_BROKER_URL
    {
        return Err(AdminError::BadRequest(format!(
            "brokerUrl must be a ws:// or wss:// URL of at most {MAX_BROKER_URL} bytes"
        )));
    }
    let mesh = mesh(ctx, slug).await?;
    let now = ctx.now();
    // Whole seconds: the signed payload carries unix seconds.
    let first_expiry = (now + Duration::seconds(ttl)).timestamp();
    // The v1 payload has no nonce and ed25519 is deterministic, so two
    // invites of one mesh with the same role, URL and expiry second
    // would be the same token. Such a collision moves the expiry on by
    // a second (never shortening the lifetime asked for) until unique.
    for bump in 0..MAX_INVITE_TOKEN_ATTEMPTS {
        let expires_at =
            chrono::DateTime::from_timestamp(first_expiry + bump, 0).expect("in range");
        let mut payload = InvitePayload {
            v: 1,
            mesh_id: mesh.id.clone(),
            mesh_slug: mesh.slug.clone(),
            broker_url: broker_url.clone(),
            expires_at: expires_at.timestamp(),
            mesh_root_key: mesh.root_key.clone(),
            role: role.as_str().to_string(),
            owner_pubkey: mesh.owner_pubkey.clone(),
            signature: String::new(),
        };
        payload
            .sign(&mesh.owner_secret)
            .ok_or_else(|| AdminError::BadRequest("mesh owner key is unusable".into()))?;
        let token = payload.to_token();
        if token.len() > MAX_INVITE_TOKEN {
            // Only a brokerUrl full of characters JSON escapes gets here.
            return Err(AdminError::BadRequest("brokerUrl is too long".into()));
        }
        let invite = Invite {
            token: token.clone(),
            mesh_id: mesh.id.clone(),
            role,
            max_uses,
            used_count: 0,
            expires_at,
            revoked_at: None,
            created_at: now,
        };
        match ctx.store.insert_invite(&invite).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => continue,
            Err(other) => return Err(AdminError::Unavailable(other)),
        }
        tracing::info!(mesh_id = %mesh.id, max_uses, "invite created");
        ctx.audit.record(
            &mesh.id,
            "invite_created",
            None,
            json!({"token_prefix": &token[..token.len().min(12)], "max_uses": max_uses,
                   "role": role.as_str(), "expires_at": crate::time::iso(expires_at)}),
        );
        return Ok(CreatedInvite {
            link: format!("ic://join/{token}"),
            invite,
        });
    }
    Err(AdminError::Conflict(
        "too many identical invites at once; try again".into(),
    ))
}

pub async fn revoke_invite(ctx: &Ctx, token: &str) -> Result<(), AdminError> {
    let token = token.strip_prefix("ic://join/").unwrap_or(token);
    let mesh_id = ctx
        .store
        .revoke_invite(token, ctx.now())
        .await?
        .ok_or(AdminError::NotFound("no such active invite"))?;
    // The token is a credential until now; the audit keeps a prefix.
    ctx.audit.record(
        &mesh_id,
        "invite_revoked",
        None,
        json!({"token_prefix": &token[..token.len().min(12)]}),
    );
    Ok(())
}

pub async fn list_meshes(ctx: &Ctx) -> Result<Vec<Mesh>, AdminError> {
    Ok(ctx.store.list_meshes().await?)
}

pub async fn list_members(ctx: &Ctx, slug: &str) -> Result<Vec<Member>, AdminError> {
    let mesh = mesh(ctx, slug).await?;
    Ok(ctx.store.list_members(&mesh.id).await?)
}

/// Live and in-grace presences of a mesh, cluster-wide, oldest first.
pub async fn peers(ctx: &Ctx, slug: &str) -> Result<Vec<Presence>, AdminError> {
    let mesh = mesh(ctx, slug).await?;
    Ok(ctx.store.list_presences(&mesh.id).await?)
}

pub async fn nodes(ctx: &Ctx) -> Result<Vec<NodeInfo>, AdminError> {
    Ok(ctx.store.list_nodes().await?)
}

pub async fn verify_audit(ctx: &Ctx, slug: &str) -> Result<Verdict, AdminError> {
    let mesh = mesh(ctx, slug).await?;
    Ok(super::audit::verify_chain(ctx, &mesh.id).await?)
}

fn parse_role(role: Option<&str>) -> Result<Role, AdminError> {
    match role {
        None => Ok(Role::Member),
        Some(r) => Role::parse(r)
            .ok_or_else(|| AdminError::BadRequest("role must be member or admin".into())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert!(super::valid_slug("demo"));
        assert!(super::valid_slug("a-1"));
        assert!(!super::valid_slug("-a"));
        assert!(!super::valid_slug("Demo"));
        assert!(!super::valid_slug(""));
        assert!(!super::valid_slug(&"a".repeat(64)));
    }
}

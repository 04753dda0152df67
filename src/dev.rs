//! `serve --dev`: a mesh `demo` with two members, ready for two clients
//! in the first minute. Uses the same engine calls as the admin API.

use serde::Serialize;

use crate::engine::admin::{self, AdminError};
use crate::engine::Ctx;
use crate::protocol::crypto::KeyPair;

/// What a claudemesh client keeps for a joined mesh.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    pub mesh_id: String,
    pub member_id: String,
    pub slug: String,
    pub pubkey: String,
    pub secret_key: String,
    pub broker_url: String,
}

/// Slug of the mesh `--dev` creates (or reuses, against a database).
pub const DEMO_SLUG: &str = "demo";

pub async fn bootstrap(node: &Ctx) -> Result<Vec<ClientConfig>, AdminError> {
    let mesh = match admin::create_mesh(node, DEMO_SLUG, Some("Demo mesh")).await {
        Ok(m) => m,
        Err(AdminError::Conflict(_)) => admin::mesh(node, DEMO_SLUG).await?,
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in ["alice", "bob"] {
        let keys = KeyPair::generate();
        let member =
            admin::add_member(node, DEMO_SLUG, &keys.public_hex, name, None, Vec::new()).await?;
        out.push(ClientConfig {
            mesh_id: mesh.id.clone(),
            member_id: member.id,
            slug: mesh.slug.clone(),
            pubkey: keys.public_hex,
            secret_key: keys.secret_hex,
            broker_url: node.node.public_url.clone(),
        });
    }
    Ok(out)
}

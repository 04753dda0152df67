//! Provisioning over the admin HTTP API (ADMIN.md): fresh meshes, one
//! member (and key pair) per simulated session.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use claudemesh_broker::protocol::crypto::KeyPair;
use rand::RngCore;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Member creations in flight at once.
const PROVISION_CONCURRENCY: usize = 32;
/// One admin request may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One broker node as named by `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl {
    /// `http://HOST:PORT`, for the admin API.
    pub http: String,
    /// `ws://HOST:PORT/ws`, for peers.
    pub ws: String,
}

/// Accepts `http://HOST:PORT[/…]`, `ws://HOST:PORT[/…]` (and the TLS
/// schemes) or a bare `HOST:PORT`; any path is dropped.
pub fn parse_node_url(url: &str) -> Result<NodeUrl> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if url.contains("://") {
        bail!("--url {url}: expected http://HOST:PORT");
    } else {
        (false, url)
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        bail!("--url {url}: no host");
    }
    let (http, ws) = if secure {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    Ok(NodeUrl {
        http: format!("{http}://{authority}"),
        ws: format!("{ws}://{authority}/ws"),
    })
}

/// A member enrolled for one simulated peer.
pub struct Member {
    pub id: String,
    pub keys: KeyPair,
}

/// One mesh of the run.
pub struct MeshInfo {
    pub slug: String,
    pub mesh_id: String,
}

/// The meshes and members a run uses.
pub struct Provisioned {
    /// Index m is mesh m.
    pub meshes: Vec<MeshInfo>,
    /// Index i is session slot i (see `run::Layout`).
    pub members: Arc<Vec<Member>>,
}

#[derive(Clone)]
struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}/admin{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("POST {url}"))?;
        if !status.is_success() {
            bail!("POST {url}: {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("POST {url}: answer is not JSON"))
    }
}

fn str_field(v: &Value, key: &str) -> Result<String> {
    v[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("admin answer lacks `{key}`: {v}"))
}

/// The slug of mesh `m` of `meshes`: `load-<8 hex>` for a single mesh,
/// `load-<8 hex>-<m>` when there are several.
fn mesh_slug(run: u32, m: usize, meshes: usize) -> String {
    if meshes == 1 {
        format!("load-{run:08x}")
    } else {
        format!("load-{run:08x}-{m}")
    }
}

/// Creates `meshes` meshes and one member per slot on the node at `base`:
/// slot i in mesh `mesh_of[i]`, named `names(i)`, each in `group` when
/// given. `on_member` is called as each member lands.
pub async fn provision(
    base: &str,
    token: &str,
    meshes: usize,
    mesh_of: &[usize],
    names: impl Fn(usize) -> String,
    group: Option<&str>,
    on_member: impl Fn(usize) + Send + Sync + 'static,
) -> Result<Provisioned> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let admin = Admin {
        http,
        base: base.to_string(),
        token: token.to_string(),
    };
    let limit = Arc::new(Semaphore::new(PROVISION_CONCURRENCY));
    let run = rand::thread_rng().next_u32();
    let mut tasks = JoinSet::new();
    for m in 0..meshes {
        let (admin, limit, slug) = (admin.clone(), limit.clone(), mesh_slug(run, m, meshes));
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let mesh = admin
                .post(
                    "/meshes",
                    json!({"slug": slug, "name": format!("loadgen {slug}")}),
                )
                .await
                .with_context(|| format!("creating mesh {slug}"))?;
            let mesh_id = str_field(&mesh, "id")?;
            anyhow::Ok((m, MeshInfo { slug, mesh_id }))
        });
    }
    let mut created: Vec<Option<MeshInfo>> = (0..meshes).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (m, info) = done.context("mesh task")??;
        created[m] = Some(info);
    }
    let meshes = created
        .into_iter()
        .map(|m| m.ok_or_else(|| anyhow!("a mesh was not created")))
        .collect::<Result<Vec<_>>>()?;

    let on_member = Arc::new(on_member);
    let groups: Vec<String> = group.map(|g| vec![g.to_string()]).unwrap_or_default();
    let mut tasks = JoinSet::new();
    for (i, &m) in mesh_of.iter().enumerate() {
        let (admin, limit, on_member) = (admin.clone(), limit.clone(), on_member.clone());
        let (path, groups) = (
            format!("/meshes/{}/members", meshes[m].slug),
            groups.clone(),
        );
        let name = names(i);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let keys = KeyPair::generate();
            let body = json!({"pubkey": keys.public_hex, "displayName": name, "groups": groups});
            let member = admin
                .post(&path, body)
                .await
                .with_context(|| format!("adding member {name}"))?;
            let id = str_field(&member, "id")?;
            on_member(i);
            anyhow::Ok((i, Member { id, keys }))
        });
    }
    let mut slots: Vec<Option<Member>> = (0..mesh_of.len()).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (i, m) = done.context("member task")??;
        slots[i] = Some(m);
    }
    let members = slots
        .into_iter()
        .map(|m| m.ok_or_else(|| anyhow!("a member was not created")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Provisioned {
        meshes,
        members: Arc::new(members),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_map_to_admin_and_ws() {
        let n = parse_node_url("http://127.0.0.1:7900").unwrap();
        assert_eq!(n.http, "http://127.0.0.1:7900");
        assert_eq!(n.ws, "ws://127.0.0.1:7900/ws");
        assert_eq!(
            parse_node_url("ws://h:1/ws").unwrap(),
            parse_node_url("h:1").unwrap()
        );
        assert_eq!(parse_node_url("https://h:2/x").unwrap().ws, "wss://h:2/ws");
        assert!(parse_node_url("ftp://h:1").is_err());
        assert!(parse_node_url("http://").is_err());
    }

    #[test]
    fn mesh_slugs_are_valid_and_distinct() {
        assert_eq!(mesh_slug(0xab, 0, 1), "load-000000ab");
        assert_eq!(mesh_slug(0xab, 0, 3), "load-000000ab-0");
        assert_eq!(mesh_slug(0xab, 99, 100), "load-000000ab-99");
    }
}

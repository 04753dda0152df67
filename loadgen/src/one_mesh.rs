//! What the `schedule` and `stream` workloads share: one fresh mesh with a
//! member per peer, peers connected round-robin over the nodes, and the
//! reader of frames of one type.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::admin::{self, Member, NodeUrl};
use crate::conn::{self, HelloCtx, Sink, Stream};

/// A one-mesh workload offered at a rate: `--rate` events a second in
/// total over `--peers`, for `--duration` (`stream`, `relay`).
pub struct RatePlan {
    pub nodes: Vec<NodeUrl>,
    pub admin_token: String,
    pub peers: usize,
    pub rate: f64,
    pub duration: Duration,
    pub progress: bool,
}

/// The connected peers of one mesh: peer i on node i % nodes.
pub struct Peers {
    pub socks: Vec<(Sink, Stream)>,
    /// Each peer's hook token (a bearer for HTTP routes).
    pub tokens: Vec<String>,
    pub mesh_id: String,
    pub members: std::sync::Arc<Vec<Member>>,
    pub hello_per_s: f64,
}

pub async fn connect(nodes: &[NodeUrl], token: &str, peers: usize, prefix: &str) -> Result<Peers> {
    let mesh_of = vec![0; peers];
    let names = |i: usize| format!("{prefix}-{i}");
    let prov = admin::provision(&nodes[0].http, token, 1, &mesh_of, names, None, |_| {}).await?;
    let ctx = HelloCtx {
        mesh_id: prov.meshes[0].mesh_id.clone(),
        slug: prov.meshes[0].slug.clone(),
    };
    let started = Instant::now();
    let mut socks = Vec::with_capacity(peers);
    let mut tokens = Vec::with_capacity(peers);
    for i in 0..peers {
        let node = &nodes[i % nodes.len()];
        let name = format!("{prefix}-{i}");
        let (sink, stream, token) =
            conn::greet_token(&node.ws, &ctx, i, &name, &prov.members[i]).await?;
        socks.push((sink, stream));
        tokens.push(token);
    }
    Ok(Peers {
        socks,
        tokens,
        mesh_id: ctx.mesh_id.clone(),
        members: prov.members,
        hello_per_s: peers as f64 / started.elapsed().as_secs_f64(),
    })
}

/// The next JSON frame of type `ty` within `limit` (`None`: none came);
/// an `error` frame fails.
pub async fn next_of(stream: &mut Stream, ty: &str, limit: Duration) -> Result<Option<Value>> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Ok(None),
            Ok(n) => n,
        };
        let msg = next.ok_or_else(|| anyhow!("socket closed waiting for `{ty}`"))??;
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).context("frame is not JSON")?;
        if v["type"] == ty {
            return Ok(Some(v));
        }
        if v["type"] == "error" {
            bail!("refused while waiting for `{ty}`: {v}");
        }
    }
}

//! The `tasks` workload (PROTOCOL-MESH.md §3): the peers create a backlog
//! of `--messages` tasks each, then race to claim it. The peers form
//! groups of one per node (at least two), peer i on node i % nodes, so a
//! group's members sit on different nodes; each group walks its share of
//! the backlog in the same order, every member claiming every task, one
//! claim in flight per peer. Exactly one claim of each task may win: a
//! second win is a double claim (`duplicates`), a task nobody won is
//! `lost`. Throughput is tasks claimed per second; latency is each claim's
//! round trip, won or refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::admin::NodeUrl;
use crate::conn::Stream;
use crate::one_mesh;
use crate::progress::Progress;
use crate::stats::{self, Report};

/// How long one reply may take before the run fails.
const REPLY: Duration = Duration::from_secs(30);
/// Creates in flight per peer while the backlog is built.
const WINDOW: usize = 50;

pub struct TasksPlan {
    pub nodes: Vec<NodeUrl>,
    pub admin_token: String,
    pub peers: usize,
    pub per_peer: u64,
    pub progress: bool,
}

/// What one claimer saw.
#[derive(Default)]
struct Claims {
    won: Vec<String>,
    refused: u64,
    errors: u64,
    round_trips_us: Vec<u64>,
}

pub async fn run(plan: TasksPlan) -> Result<Report> {
    let p = &plan;
    let progress = Progress::new(p.progress);
    let peers = one_mesh::connect(&p.nodes, &p.admin_token, p.peers, "tasks").await?;
    let n = p.peers;
    let mut socks = peers.socks;

    let total = plan.per_peer * n as u64;
    progress.phase("create", total);
    let made = socks.iter_mut().enumerate().map(|(i, (sink, stream))| {
        let progress = progress.clone();
        async move {
            let mut ids = Vec::with_capacity(plan.per_peer as usize);
            let mut k = 0;
            while k < plan.per_peer {
                let window = (plan.per_peer - k).min(WINDOW as u64);
                for j in k..k + window {
                    let f = json!({"type": "create_task", "title": format!("load {i}.{j}"),
                        "_reqId": j.to_string()});
                    sink.send(Message::Text(f.to_string().into())).await?;
                }
                for _ in 0..window {
                    let r = reply(stream).await?;
                    if r["type"] != "task_created" {
                        bail!("create_task refused: {r}");
                    }
                    let id = r["id"].as_str().ok_or_else(|| anyhow!("no id in {r}"))?;
                    ids.push(id.to_string());
                    progress.inc();
                }
                k += window;
            }
            anyhow::Ok(ids)
        }
    });
    let mut backlog = Vec::with_capacity(total as usize);
    for ids in futures_util::future::join_all(made).await {
        backlog.extend(ids?);
    }

    // Groups of one peer per node: peer i is in group i / size.
    let size = p.nodes.len().max(2).min(n);
    let groups = n.div_ceil(size);
    progress.phase("claim", total);
    let started = Instant::now();
    let backlog = &backlog;
    let claiming = socks.iter_mut().enumerate().map(|(i, (sink, stream))| {
        let progress = progress.clone();
        async move {
            let mine = backlog.iter().skip(i / size).step_by(groups);
            let mut c = Claims::default();
            for (k, id) in mine.enumerate() {
                let sent = Instant::now();
                let f = json!({"type": "claim_task", "taskId": id, "_reqId": k.to_string()});
                sink.send(Message::Text(f.to_string().into())).await?;
                let r = reply(stream).await?;
                c.round_trips_us
                    .push((sent.elapsed().as_micros() as u64).max(1));
                match (r["type"].as_str(), r["code"].as_str()) {
                    (Some("task_list"), _) => {
                        c.won.push(id.clone());
                        progress.inc();
                    }
                    (Some("error"), Some("task_not_claimable")) => c.refused += 1,
                    _ => c.errors += 1,
                }
            }
            anyhow::Ok(c)
        }
    });
    let results = futures_util::future::join_all(claiming).await;
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish();

    let mut h = stats::histogram();
    let mut wins: HashMap<&str, u64> = HashMap::new();
    let (mut attempts, mut refused, mut errors) = (0u64, 0u64, 0u64);
    let mut all = Vec::new();
    for r in results {
        all.push(r?);
    }
    for c in &all {
        attempts += c.round_trips_us.len() as u64;
        refused += c.refused;
        errors += c.errors;
        for &us in &c.round_trips_us {
            h.saturating_record(us);
        }
        for id in &c.won {
            *wins.entry(id.as_str()).or_default() += 1;
        }
    }
    let claimed = wins.len() as u64;
    let duplicates: u64 = wins.values().map(|w| w - 1).sum();
    if p.progress && errors > 0 {
        eprintln!("{errors} claims were answered with another error (rejected)");
    }
    for (mut sink, _) in socks {
        let _ = sink.close().await;
    }
    Ok(Report {
        peers: n,
        messages_per_peer: plan.per_peer,
        sent: attempts,
        acked: attempts - errors,
        rejected: errors,
        delivered: claimed,
        duplicates,
        lost: total - claimed,
        duration_s: stats::round3(elapsed),
        throughput_msgs_per_s: stats::round3(claimed as f64 / elapsed.max(1e-9)),
        latency_ms: stats::quantiles_ms(&h),
        hello_per_s: stats::round3(peers.hello_per_s),
        claims_refused: Some(refused),
        ..Report::one_mesh("tasks")
    })
}

/// The next reply frame (anything carrying a `_reqId`): one request is in
/// flight per window, and a socket's frames are answered in order.
async fn reply(stream: &mut Stream) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + REPLY;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| anyhow!("no reply within {} s", REPLY.as_secs()))?;
        let msg = next.ok_or_else(|| anyhow!("socket closed waiting for a reply"))??;
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).context("frame is not JSON")?;
        if v.get("_reqId").is_some() {
            return Ok(v);
        }
    }
}

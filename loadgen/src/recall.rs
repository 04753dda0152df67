//! The `recall` workload (PROTOCOL-MESH.md §2): seeds one mesh with
//! `--memories` memories through `remember`, then each of `--peers`
//! sessions runs `--messages` recalls one after another (closed loop) and
//! the round trip of each is measured. Queries are one or two words of the
//! seeded vocabulary, so each matches from a few to a few thousand
//! memories, ranked, 20 returned.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::admin;
use crate::conn::{self, HelloCtx, Sink, Stream};
use crate::stats::{self, Report};

/// Words memories are made of: each memory holds 8 of them.
const VOCABULARY: usize = 500;
const WORDS_PER_MEMORY: usize = 8;
/// `remember` frames in flight per socket while seeding.
const SEED_WINDOW: usize = 64;
/// Sessions that seed (beside the querying ones), each kept under the
/// broker's default per-socket frame budget of 1,000/s.
const SEEDERS: usize = 16;
const SEED_FRAMES_PER_S: f64 = 800.0;
/// A reply slower than this fails the run.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RecallPlan {
    pub node: admin::NodeUrl,
    pub admin_token: String,
    pub peers: usize,
    pub recalls_per_peer: u64,
    pub memories: u64,
    pub progress: bool,
}

fn word(rng: &mut StdRng) -> String {
    format!("w{}", rng.gen_range(0..VOCABULARY))
}

/// The next JSON frame of `stream` whose `type` is `ty`.
async fn next_of(stream: &mut Stream, ty: &str) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(REPLY_TIMEOUT, stream.next())
            .await
            .map_err(|_| anyhow!("no `{ty}` within {REPLY_TIMEOUT:?}"))?
            .ok_or_else(|| anyhow!("socket closed waiting for `{ty}`"))??;
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).context("frame is not JSON")?;
        if v["type"] == ty {
            return Ok(v);
        }
        if v["type"] == "error" {
            bail!("`{ty}` refused: {v}");
        }
    }
}

/// Sends `count` memories on one socket, `SEED_WINDOW` in flight.
async fn seed(sink: &mut Sink, stream: &mut Stream, count: u64, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut sent, mut stored) = (0u64, 0u64);
    let start = Instant::now();
    while stored < count {
        while sent < count && sent - stored < SEED_WINDOW as u64 {
            let due = Duration::from_secs_f64(sent as f64 / SEED_FRAMES_PER_S);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let content: Vec<String> = (0..WORDS_PER_MEMORY).map(|_| word(&mut rng)).collect();
            let f = json!({"type": "remember", "content": content.join(" "), "_reqId": format!("m{sent}")});
            sink.send(Message::Text(f.to_string().into())).await?;
            sent += 1;
        }
        next_of(stream, "memory_stored").await?;
        stored += 1;
    }
    Ok(())
}

pub async fn run(plan: RecallPlan) -> Result<Report> {
    let mesh_of = vec![0; plan.peers + SEEDERS];
    let prov = admin::provision(
        &plan.node.http,
        &plan.admin_token,
        1,
        &mesh_of,
        |i| format!("recall-{i}"),
        None,
        |_| {},
    )
    .await?;
    let ctx = HelloCtx {
        mesh_id: prov.meshes[0].mesh_id.clone(),
        slug: prov.meshes[0].slug.clone(),
    };
    let hello_start = Instant::now();
    let mut socks = Vec::with_capacity(plan.peers + SEEDERS);
    for i in 0..plan.peers + SEEDERS {
        let name = format!("recall-{i}");
        socks.push(conn::greet(&plan.node.ws, &ctx, i, &name, &prov.members[i]).await?);
    }
    let hello_per_s = socks.len() as f64 / hello_start.elapsed().as_secs_f64();
    let mut seeders = socks.split_off(plan.peers);

    let seeding = Instant::now();
    let per = plan.memories / SEEDERS as u64;
    let extra = plan.memories % SEEDERS as u64;
    let seeds = seeders.iter_mut().enumerate().map(|(i, (sink, stream))| {
        let n = per + u64::from((i as u64) < extra);
        seed(sink, stream, n, i as u64)
    });
    for r in futures_util::future::join_all(seeds).await {
        r?;
    }
    for (mut sink, _) in seeders {
        let _ = sink.close().await;
    }
    if plan.progress {
        eprintln!(
            "seeded {} memories in {:.1} s",
            plan.memories,
            seeding.elapsed().as_secs_f64()
        );
    }

    let started = Instant::now();
    let rounds = socks.iter_mut().enumerate().map(|(i, (sink, stream))| {
        let recalls = plan.recalls_per_peer;
        async move {
            let mut rng = StdRng::seed_from_u64(1_000 + i as u64);
            let mut took = Vec::with_capacity(recalls as usize);
            let mut found = 0u64;
            for k in 0..recalls {
                let words = if k % 2 == 0 { 1 } else { 2 };
                let query: Vec<String> = (0..words).map(|_| word(&mut rng)).collect();
                let f =
                    json!({"type": "recall", "query": query.join(" "), "_reqId": format!("q{k}")});
                let t = Instant::now();
                sink.send(Message::Text(f.to_string().into())).await?;
                let r = next_of(stream, "memory_results").await?;
                took.push(t.elapsed());
                found += r["memories"].as_array().map_or(0, |m| m.len() as u64);
                // The 1.37 alias that follows a request with `_reqId`.
                next_of(stream, "memory_recall_result").await?;
            }
            anyhow::Ok((took, found))
        }
    });
    let mut h = stats::histogram();
    let mut answered = 0u64;
    let mut found = 0u64;
    for r in futures_util::future::join_all(rounds).await {
        let (took, f) = r?;
        answered += took.len() as u64;
        found += f;
        for d in took {
            h.saturating_record((d.as_micros() as u64).max(1));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if found == 0 {
        bail!("no recall found anything: the search is broken or the seed did not land");
    }
    for (mut sink, _) in socks {
        let _ = sink.close().await;
    }
    let sent = plan.recalls_per_peer * plan.peers as u64;
    Ok(Report {
        peers: plan.peers,
        messages_per_peer: plan.recalls_per_peer,
        sent,
        acked: answered,
        delivered: answered,
        lost: sent - answered,
        duration_s: stats::round3(elapsed),
        throughput_msgs_per_s: stats::round3(answered as f64 / elapsed),
        latency_ms: stats::quantiles_ms(&h),
        hello_per_s: stats::round3(hello_per_s),
        ..Report::one_mesh("recall")
    })
}

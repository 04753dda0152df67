//! The `stream` workload (PROTOCOL-MESH.md §14): every peer subscribes to
//! one stream, then the peers publish `--rate` publishes a second in total
//! (each its share, paced) for `--duration` seconds; every publish should
//! reach every other peer once. Latency is publish → `stream_data` at a
//! subscriber on another node than the publisher (peer i is on node
//! i % nodes); with one node, every subscriber counts. A second copy of a
//! publish at one subscriber is a duplicate; one that never comes is lost
//! (streams are at most once: loss is what the broker dropped).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::one_mesh::{self, next_of, RatePlan};
use crate::payload::now_us;
use crate::progress::Progress;
use crate::stats::{self, Report};

const STREAM: &str = "load";
/// After the last publish, how long to wait for stragglers.
const DRAIN: Duration = Duration::from_secs(10);

pub async fn run(plan: RatePlan) -> Result<Report> {
    let progress = Progress::new(plan.progress);
    let peers = one_mesh::connect(&plan.nodes, &plan.admin_token, plan.peers, "stream").await?;
    let n = plan.peers;
    let nodes = plan.nodes.len();
    let per_peer = ((plan.rate * plan.duration.as_secs_f64()) / n as f64).floor() as u64;
    if per_peer == 0 {
        bail!("--rate × --duration gives each of the {n} peers no publish");
    }
    let (mut sinks, mut streams): (Vec<_>, Vec<_>) = peers.socks.into_iter().unzip();
    for (sink, stream) in sinks.iter_mut().zip(streams.iter_mut()) {
        let f = json!({"type": "subscribe", "stream": STREAM});
        sink.send(Message::Text(f.to_string().into())).await?;
        if next_of(stream, "subscribed", Duration::from_secs(30))
            .await?
            .is_none()
        {
            bail!("no `subscribed` within 30 s");
        }
    }
    let expected_each = per_peer * (n as u64 - 1);
    progress.phase("publish", expected_each * n as u64);

    let started = std::time::Instant::now();
    let rate = plan.rate;
    let publishing = sinks.iter_mut().enumerate().map(|(i, sink)| async move {
        for k in 0..per_peer {
            let due = Duration::from_secs_f64((k as f64 * n as f64 + i as f64) / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let f = json!({"type": "publish", "stream": STREAM,
                "data": {"s": i, "n": k, "t": now_us()}});
            sink.send(Message::Text(f.to_string().into())).await?;
        }
        anyhow::Ok(())
    });
    let reading = streams.iter_mut().enumerate().map(|(me, stream)| {
        let progress = progress.clone();
        let span = plan.duration;
        async move {
            let mut seen = HashSet::new();
            let (mut remote, mut local, mut dups) = (Vec::new(), Vec::new(), 0u64);
            while (seen.len() as u64) < expected_each {
                let limit = span.saturating_sub(started.elapsed()) + DRAIN;
                let Some(d) = next_of(stream, "stream_data", limit).await? else {
                    break;
                };
                let took = now_us()
                    .saturating_sub(d["data"]["t"].as_u64().unwrap_or(0))
                    .max(1);
                let from = d["data"]["s"].as_u64().unwrap_or(u64::MAX) as usize;
                if !seen.insert((from, d["data"]["n"].as_u64().unwrap_or(0))) {
                    dups += 1;
                    continue;
                }
                if nodes == 1 || from % nodes != me % nodes {
                    remote.push(took);
                } else {
                    local.push(took);
                }
                progress.inc();
            }
            anyhow::Ok((seen.len() as u64, remote, local, dups))
        }
    });
    let (published, read) = tokio::join!(
        futures_util::future::join_all(publishing),
        futures_util::future::join_all(reading)
    );
    for r in published {
        r?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut h = stats::histogram();
    let (mut delivered, mut duplicates, mut locals) = (0u64, 0u64, 0usize);
    for r in read {
        let (got, remote, local, dups) = r?;
        delivered += got;
        duplicates += dups;
        locals += local.len();
        for us in remote {
            h.saturating_record(us);
        }
    }
    progress.finish();
    if plan.progress {
        eprintln!(
            "{locals} deliveries to subscribers on the publisher's own node are not in the latency"
        );
    }
    for mut sink in sinks {
        let _ = sink.close().await;
    }
    let expected = expected_each * n as u64;
    let sent = per_peer * n as u64;
    Ok(Report {
        peers: n,
        messages_per_peer: per_peer,
        sent,
        acked: sent,
        delivered,
        duplicates,
        lost: expected - delivered,
        duration_s: stats::round3(elapsed),
        throughput_msgs_per_s: stats::round3(sent as f64 / plan.duration.as_secs_f64()),
        latency_ms: stats::quantiles_ms(&h),
        hello_per_s: stats::round3(peers.hello_per_s),
        ..Report::one_mesh("stream")
    })
}

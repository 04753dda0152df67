//! The fan-out workloads: the peers write `--rate` frames a second in
//! total (each its share, paced) for `--duration` seconds, and every
//! write should reach every other peer once as an event.
//!
//! - `stream` (PROTOCOL-MESH.md §14): every peer subscribes to one
//!   stream and publishes to it; the event is `stream_data`.
//! - `state` (§1): every peer sets its own key; the event is
//!   `state_change`, which goes to every other presence of the mesh.
//!
//! Latency is write → event at a peer on another node than the writer
//! (peer i is on node i % nodes); with one node, every peer counts. A
//! second copy of a write at one peer is a duplicate; one that never comes
//! is lost (both events are at most once: loss is what the broker dropped).

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

/// Which frame the peers write and which event carries it back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stream,
    State,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::State => "state",
        }
    }

    /// Peer `s`'s write number `n`, stamped `t`.
    fn write(self, s: usize, n: u64, t: u64) -> serde_json::Value {
        let body = json!({"s": s, "n": n, "t": t});
        match self {
            Kind::Stream => json!({"type": "publish", "stream": STREAM, "data": body}),
            Kind::State => json!({"type": "set_state", "key": format!("load.{s}"), "value": body}),
        }
    }

    /// The event's type and the field that holds the written body.
    fn event(self) -> (&'static str, &'static str) {
        match self {
            Kind::Stream => ("stream_data", "data"),
            Kind::State => ("state_change", "value"),
        }
    }
}
/// After the last publish, how long to wait for stragglers.
const DRAIN: Duration = Duration::from_secs(10);

pub async fn run(plan: RatePlan, kind: Kind) -> Result<Report> {
    let progress = Progress::new(plan.progress);
    let peers = one_mesh::connect(&plan.nodes, &plan.admin_token, plan.peers, kind.name()).await?;
    let n = plan.peers;
    let nodes = plan.nodes.len();
    let per_peer = ((plan.rate * plan.duration.as_secs_f64()) / n as f64).floor() as u64;
    if per_peer == 0 {
        bail!("--rate × --duration gives each of the {n} peers no write");
    }
    let (mut sinks, mut streams): (Vec<_>, Vec<_>) = peers.socks.into_iter().unzip();
    let subscribers = sinks.iter_mut().zip(streams.iter_mut());
    for (sink, stream) in subscribers.filter(|_| kind == Kind::Stream) {
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
    progress.phase(kind.name(), expected_each * n as u64);

    let started = std::time::Instant::now();
    let rate = plan.rate;
    let publishing = sinks.iter_mut().enumerate().map(|(i, sink)| async move {
        for k in 0..per_peer {
            let due = Duration::from_secs_f64((k as f64 * n as f64 + i as f64) / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let f = kind.write(i, k, now_us());
            sink.send(Message::Text(f.to_string().into())).await?;
        }
        anyhow::Ok(())
    });
    let reading = streams.iter_mut().enumerate().map(|(me, stream)| {
        let progress = progress.clone();
        let span = plan.duration;
        let (event, field) = kind.event();
        async move {
            let mut seen = HashSet::new();
            let (mut remote, mut local, mut dups) = (Vec::new(), Vec::new(), 0u64);
            while (seen.len() as u64) < expected_each {
                let limit = span.saturating_sub(started.elapsed()) + DRAIN;
                let Some(e) = next_of(stream, event, limit).await? else {
                    break;
                };
                let d = &e[field];
                let took = now_us().saturating_sub(d["t"].as_u64().unwrap_or(0)).max(1);
                let from = d["s"].as_u64().unwrap_or(u64::MAX) as usize;
                if !seen.insert((from, d["n"].as_u64().unwrap_or(0))) {
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
        eprintln!("{locals} deliveries to peers on the writer's own node are not in the latency");
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
        ..Report::one_mesh(kind.name())
    })
}

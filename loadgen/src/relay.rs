//! The `relay` workload (PROTOCOL-MESH.md §15): every peer registers an
//! MCP server and answers the calls forwarded to it; peer i calls the
//! server of peer i + 1, which sits on the next node (peer i is on node
//! i % nodes), so with several nodes every call crosses. The peers make
//! `--rate` calls a second in total for `--duration` seconds. Latency is
//! `mcp_call` sent → `mcp_call_result` read; a call without a result (or
//! with an error) is lost, a second result for one call a duplicate.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::one_mesh::{self, next_of, RatePlan};
use crate::payload::now_us;
use crate::progress::Progress;
use crate::stats::{self, Report};

/// After the last call, how long to wait for its result (the broker's
/// own timeout is 25 s).
const DRAIN: Duration = Duration::from_secs(30);

pub async fn run(plan: RatePlan) -> Result<Report> {
    let progress = Progress::new(plan.progress);
    let peers = one_mesh::connect(&plan.nodes, &plan.admin_token, plan.peers, "relay").await?;
    let n = plan.peers;
    let per_peer = ((plan.rate * plan.duration.as_secs_f64()) / n as f64).floor() as u64;
    if per_peer == 0 {
        bail!("--rate × --duration gives each of the {n} peers no call");
    }
    let (mut sinks, mut streams): (Vec<_>, Vec<_>) = peers.socks.into_iter().unzip();
    for (i, (sink, stream)) in sinks.iter_mut().zip(streams.iter_mut()).enumerate() {
        let f = json!({"type": "mcp_register", "serverName": format!("s{i}"), "description": "load",
            "tools": [{"name": "echo", "description": "returns its args"}], "_reqId": "r"});
        sink.send(Message::Text(f.to_string().into())).await?;
        if next_of(stream, "mcp_register_ack", Duration::from_secs(30))
            .await?
            .is_none()
        {
            bail!("no `mcp_register_ack` within 30 s");
        }
    }
    progress.phase("call", per_peer * n as u64);
    let started = std::time::Instant::now();
    let rate = plan.rate;
    let span = plan.duration;
    // A peer done calling is still a host: it answers until every peer
    // has its results, or its caller would hear "host disconnected".
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let all_done = tokio_util::sync::CancellationToken::new();
    let peers_io = sinks.into_iter().zip(streams).enumerate().map(|(i, (mut sink, mut stream))| {
        let progress = progress.clone();
        let (finished, all_done) = (finished.clone(), all_done.clone());
        async move {
            // One writer per socket: calls and answers share it.
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let writer = tokio::spawn(async move {
                while let Some(f) = rx.recv().await {
                    sink.send(Message::Text(f.into())).await?;
                }
                let _ = sink.close().await;
                anyhow::Ok(())
            });
            let calls = tx.clone();
            let target = format!("s{}", (i + 1) % n);
            let calling = async move {
                for k in 0..per_peer {
                    let due = Duration::from_secs_f64((k as f64 * n as f64 + i as f64) / rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                    let f = json!({"type": "mcp_call", "serverName": target, "toolName": "echo",
                        "args": {"t": now_us()}, "_reqId": k.to_string()});
                    let _ = calls.send(f.to_string());
                }
            };
            let reading = async {
                let mut seen = HashSet::new();
                let (mut h, mut dups, mut errors) = (Vec::new(), 0u64, 0u64);
                let mut counted = false;
                loop {
                    if !counted && seen.len() as u64 >= per_peer {
                        counted = true;
                        if finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n {
                            all_done.cancel();
                        }
                    }
                    let limit = span.saturating_sub(started.elapsed()) + DRAIN;
                    let next = tokio::select! {
                        _ = all_done.cancelled() => break,
                        r = tokio::time::timeout(limit, stream.next()) => r,
                    };
                    let Ok(Some(msg)) = next else {
                        if !counted && finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n {
                            all_done.cancel();
                        }
                        break;
                    };
                    let Message::Text(t) = msg? else { continue };
                    let v: Value = serde_json::from_str(&t)?;
                    match v["type"].as_str() {
                        Some("mcp_call_forward") => {
                            let answer = json!({"type": "mcp_call_response", "callId": v["callId"],
                                "result": v["args"]});
                            let _ = tx.send(answer.to_string());
                        }
                        Some("mcp_call_result") => {
                            let k = v["_reqId"].as_str().unwrap_or("").to_string();
                            if !seen.insert(k) {
                                dups += 1;
                                continue;
                            }
                            match v["result"]["t"].as_u64() {
                                Some(t) => h.push(now_us().saturating_sub(t).max(1)),
                                None => errors += 1,
                            }
                            progress.inc();
                        }
                        _ => {}
                    }
                }
                anyhow::Ok((h, dups, errors))
            };
            let ((), read) = tokio::join!(calling, reading);
            drop(tx);
            let _ = writer.await;
            read
        }
    });
    let results = futures_util::future::join_all(peers_io).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut h = stats::histogram();
    let (mut delivered, mut duplicates, mut errors) = (0u64, 0u64, 0u64);
    for r in results {
        let (lat, dups, errs) = r?;
        delivered += lat.len() as u64;
        duplicates += dups;
        errors += errs;
        for us in lat {
            h.saturating_record(us);
        }
    }
    progress.finish();
    if plan.progress && errors > 0 {
        eprintln!("{errors} calls came back with an error (counted as lost)");
    }
    let sent = per_peer * n as u64;
    Ok(Report {
        peers: n,
        messages_per_peer: per_peer,
        sent,
        acked: delivered + errors,
        rejected: errors,
        delivered,
        duplicates,
        lost: sent - delivered,
        duration_s: stats::round3(elapsed),
        throughput_msgs_per_s: stats::round3(delivered as f64 / elapsed.max(1e-9)),
        latency_ms: stats::quantiles_ms(&h),
        hello_per_s: stats::round3(peers.hello_per_s),
        ..Report::one_mesh("relay")
    })
}

//! The `schedule` workload (PROTOCOL-MESH.md §12): every peer schedules
//! `--messages` one-shot reminders (at most 100, the per-member cap) to
//! the next peer's member key, due at moments spread evenly over
//! `--duration` seconds that start `--lead` seconds after the run; every
//! peer stays connected and reads its pushes. Latency is lateness: the
//! push's arrival here minus its due time (same machine as the brokers,
//! so one clock). Each reminder carries its id: a second push of one is a
//! duplicate, one that never comes is lost.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Result};
use base64::Engine as _;
use futures_util::SinkExt;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::admin::NodeUrl;
use crate::conn::Stream;
use crate::one_mesh;
use crate::progress::Progress;
use crate::stats::{self, Report};

/// Active entries a member may hold (PROTOCOL-MESH.md §12).
pub const MAX_PER_PEER: u64 = 100;
/// After the last due time, how long to wait for stragglers.
const DRAIN: Duration = Duration::from_secs(15);

pub struct SchedulePlan {
    pub nodes: Vec<NodeUrl>,
    pub admin_token: String,
    pub peers: usize,
    pub per_peer: u64,
    pub window: Duration,
    pub lead: Duration,
    pub progress: bool,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One peer's reminders so far.
#[derive(Default)]
struct Received {
    seen: HashSet<String>,
    late_us: Vec<u64>,
    duplicates: u64,
    /// When this peer's last reminder was made (ms since the epoch).
    scheduled_at_ms: i64,
}

impl Received {
    /// Counts `v` if it is a reminder's push.
    fn note(&mut self, v: &Value, progress: &Progress) {
        if v["type"] != "push" || v["subtype"] != "reminder" {
            return;
        }
        let arrived = chrono::Utc::now().timestamp_micros();
        let text = base64::engine::general_purpose::STANDARD
            .decode(v["ciphertext"].as_str().unwrap_or(""))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let due: i64 = text
            .rsplit(':')
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        if !self.seen.insert(text) {
            self.duplicates += 1;
            return;
        }
        self.late_us.push((arrived - due * 1000).max(1) as u64);
        progress.inc();
    }
}

/// The next JSON frame within `limit` (`None`: none came); an `error`
/// frame fails the run.
async fn next_frame(stream: &mut Stream, limit: Duration) -> Result<Option<Value>> {
    let Ok(next) = tokio::time::timeout(limit, stream.next()).await else {
        return Ok(None);
    };
    let msg = next.ok_or_else(|| anyhow::anyhow!("socket closed"))??;
    let Message::Text(t) = msg else {
        return Ok(Some(Value::Null));
    };
    let v: Value = serde_json::from_str(&t)?;
    if v["type"] == "error" {
        bail!("refused: {v}");
    }
    Ok(Some(v))
}

pub async fn run(plan: SchedulePlan) -> Result<Report> {
    if plan.per_peer > MAX_PER_PEER {
        bail!(
            "--messages {} is over the broker's {MAX_PER_PEER} active reminders per member",
            plan.per_peer
        );
    }
    let progress = Progress::new(plan.progress);
    let mut peers = one_mesh::connect(&plan.nodes, &plan.admin_token, plan.peers, "sched").await?;
    let total = plan.per_peer * plan.peers as u64;
    let start = now_ms() + plan.lead.as_millis() as i64;
    let window = plan.window.as_millis() as i64;
    let n = plan.peers;
    let per_peer = plan.per_peer;

    // Each peer schedules its share and then reads its pushes; pushes that
    // arrive while it is still scheduling (a short --lead) count as well.
    progress.phase("fire", total);
    let members = peers.members.clone();
    let end = start + window;
    let rounds = peers.socks.iter_mut().enumerate().map(|(i, (sink, stream))| {
        let to = members[(i + 1) % n].keys.public_hex.clone();
        let progress = progress.clone();
        async move {
            let mut got = Received::default();
            for k in 0..per_peer {
                let slot = (k as i64 * n as i64 + i as i64) * window / total.max(1) as i64;
                let due = start + slot;
                let f = json!({"type": "schedule", "to": to, "message": format!("{i}:{k}:{due}"),
                    "deliverAt": due, "subtype": "reminder", "_reqId": format!("s{k}")});
                sink.send(Message::Text(f.to_string().into())).await?;
                loop {
                    let Some(v) = next_frame(stream, Duration::from_secs(30)).await? else {
                        bail!("no scheduled_ack within 30 s");
                    };
                    if v["type"] == "scheduled_ack" {
                        break;
                    }
                    got.note(&v, &progress);
                }
            }
            got.scheduled_at_ms = now_ms();
            while (got.seen.len() as u64) < per_peer {
                let left = (end - now_ms()).max(0) as u64;
                let Some(v) = next_frame(stream, Duration::from_millis(left) + DRAIN).await? else {
                    break;
                };
                got.note(&v, &progress);
            }
            anyhow::Ok(got)
        }
    });
    let results: Vec<Received> = futures_util::future::join_all(rounds)
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let made = results.iter().map(|r| r.scheduled_at_ms).max().unwrap_or(0);
    if made > start {
        eprintln!(
            "scheduling ended {} ms after the first due time (raise --lead): reminders made \
             late count as late from their due time",
            made - start
        );
    }
    let mut h = stats::histogram();
    let (mut delivered, mut duplicates) = (0u64, 0u64);
    for got in results {
        delivered += got.seen.len() as u64;
        duplicates += got.duplicates;
        for us in got.late_us {
            h.saturating_record(us);
        }
    }
    progress.finish();
    for (mut sink, _) in peers.socks {
        let _ = sink.close().await;
    }
    let duration_s = plan.window.as_secs_f64();
    Ok(Report {
        peers: plan.peers,
        messages_per_peer: plan.per_peer,
        sent: total,
        acked: total,
        delivered,
        duplicates,
        lost: total - delivered,
        duration_s: stats::round3(duration_s),
        throughput_msgs_per_s: stats::round3(delivered as f64 / duration_s.max(0.001)),
        latency_ms: stats::quantiles_ms(&h),
        hello_per_s: stats::round3(peers.hello_per_s),
        ..Report::one_mesh("schedule")
    })
}

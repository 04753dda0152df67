//! Group commit for `send`: every send of a node goes through one queue;
//! one task takes whatever is waiting (up to `MAX_BATCH`), routes it with
//! one presence read per mesh, stores the lot in one transaction (rate
//! tokens, envelopes, delivery rows), then answers each send and wakes the
//! recipients with one signal per node. Under load batches grow by
//! themselves: fewer, larger commits, which is what Postgres (and its
//! NOTIFY lock) wants. Jobs are handled in queue order, so one session's
//! sends keep their order and their rate-limit verdicts.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::messaging::{route, SendOutcome, SendRefusal, WakeRouter};
use super::Node;
use crate::protocol::frames::SendFrame;
use crate::protocol::target::{Priority, Target};
use crate::store::{Bucket, Outgoing, Presence, RouteTarget, SendResult, StoreError};

/// Sends per transaction at most: bounds one transaction's size and the
/// wait of the last send in it.
pub const MAX_BATCH: usize = 512;
/// Sends waiting for the batcher; past this, sessions wait to submit
/// (backpressure instead of memory).
pub const QUEUE: usize = 8_192;

/// One validated `send` waiting to be stored.
pub struct SendJob {
    pub sender: Arc<Presence>,
    pub frame: SendFrame,
    pub target: Target,
    pub priority: Priority,
    pub reply: oneshot::Sender<SendOutcome>,
}

pub type SendQueue = mpsc::Receiver<SendJob>;

pub fn channel() -> (mpsc::Sender<SendJob>, SendQueue) {
    mpsc::channel(QUEUE)
}

/// Stores batches until `stop`; what is queued then is refused.
pub async fn run(node: Arc<Node>, mut rx: SendQueue, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            biased;
            j = rx.recv() => match j { Some(j) => j, None => return },
            _ = stop.cancelled() => {
                rx.close();
                while let Ok(job) = rx.try_recv() {
                    let r = SendRefusal::from(StoreError::Unavailable("the node is shutting down".into()));
                    node.finish(&job.sender, Err(r), job.reply);
                }
                return;
            }
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        node.store_batch(jobs).await;
    }
}

impl Node {
    async fn store_batch(&self, jobs: Vec<SendJob>) {
        let started = std::time::Instant::now();
        // One presence read per mesh in the batch.
        let mut meshes: HashMap<String, Result<Vec<RouteTarget>, ()>> = HashMap::new();
        for job in &jobs {
            if !meshes.contains_key(&job.sender.mesh_id) {
                let read = super::bounded(self.store.route_targets(&job.sender.mesh_id)).await;
                meshes.insert(
                    job.sender.mesh_id.clone(),
                    read.map_err(|e| {
                        tracing::warn!(error = %e, "presence read failed during send");
                    }),
                );
            }
        }
        let now = self.now();
        let settings = &self.config.settings;
        let lease_until = now + chrono::Duration::seconds(settings.claim_lease_seconds as i64);
        let all = || meshes.values().filter_map(|r| r.as_ref().ok()).flatten();
        let takers = self.takers(all());
        let router = WakeRouter::new(all());
        let mut outgoing = Vec::with_capacity(jobs.len());
        let mut waiting = Vec::with_capacity(jobs.len());
        // Per stored send: its wake-ups for this node; those for other
        // nodes go out right after the commit (see `notices`).
        let mut local_wakes = Vec::with_capacity(jobs.len());
        let mut remote_wakes = Vec::new();
        for job in jobs {
            let presences = match &meshes[&job.sender.mesh_id] {
                Ok(p) => p,
                Err(()) => {
                    let r =
                        SendRefusal::from(StoreError::Unavailable("presence read failed".into()));
                    self.finish(&job.sender, Err(r), job.reply);
                    continue;
                }
            };
            let mut deliveries = route(&job.target, &job.sender, presences);
            if !takers.is_empty() {
                self.preclaim(&mut deliveries, &takers, job.priority, lease_until);
            }
            if deliveries.is_empty() && matches!(job.target, Target::Key(_)) {
                let r = SendRefusal {
                    code: "no_recipient",
                    sentence: "no live or in-grace session matches that key".into(),
                };
                self.finish(&job.sender, Err(r), job.reply);
                continue;
            }
            let message = self.new_message(&job, now);
            let mut local = Vec::new();
            for (node, signal) in router.signals(&job.sender.mesh_id, &deliveries) {
                if node == self.id {
                    local.push(signal);
                } else {
                    remote_wakes.push((node, signal, message.id));
                }
            }
            local_wakes.push(local);
            outgoing.push(Outgoing {
                message,
                deliveries,
                bucket: Bucket {
                    key: job.sender.member_id.clone(),
                    rate_per_min: settings.send_rate_per_min,
                    burst: settings.send_burst,
                },
            });
            waiting.push(job);
        }
        if outgoing.is_empty() {
            return;
        }
        self.metrics.send_batch.observe(outgoing.len() as f64);
        let notices = crate::cluster::bus::notices(self.id, remote_wakes.clone());
        let stored = self.store.insert_messages_and_notify(&outgoing, &notices);
        let results = match super::bounded(stored).await {
            Ok((r, notified)) => {
                match notified {
                    Ok(n) => {
                        self.metrics.notify_sent.inc_by(n);
                    }
                    Err(e) => {
                        // Through the bus instead, which retries; a wake-up
                        // for a rate-limited send costs only a claim.
                        tracing::warn!(error = %e, "notify after send failed; using the bus");
                        for (node, signal, _) in remote_wakes {
                            self.signal(node, signal);
                        }
                    }
                }
                r
            }
            Err(e) => {
                tracing::warn!(error = %e, sends = waiting.len(), "send batch failed; nothing stored");
                for job in waiting {
                    let r = SendRefusal::from(StoreError::Unavailable(e.to_string()));
                    self.finish(&job.sender, Err(r), job.reply);
                }
                return;
            }
        };
        self.metrics
            .send_commit
            .observe(started.elapsed().as_secs_f64());
        let mut handed = Vec::new();
        let mut woken = Vec::new();
        let sent = waiting.into_iter().zip(outgoing).zip(local_wakes);
        for (((job, out), local), result) in sent.zip(results) {
            match result {
                SendResult::Queued { claimed } => {
                    let id: Uuid = out.message.id;
                    self.audit_sent(&job, id, out.deliveries.len());
                    self.collect_handed(&out.message, &out.deliveries, claimed, &mut handed);
                    woken.extend(local);
                    self.finish(&job.sender, Ok(id), job.reply);
                }
                SendResult::RateLimited => {
                    let r = self.rate_limited();
                    self.finish(&job.sender, Err(r), job.reply);
                }
            }
        }
        self.hand_over(handed, &takers).await;
        for signal in woken {
            self.apply_signal(signal);
        }
    }
}

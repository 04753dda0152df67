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

use super::handoff::Takers;
use super::messaging::{route, SendOutcome, SendRefusal, WakeRouter};
use super::Node;
use crate::cluster::bus::Signal;
use crate::protocol::frames::SendFrame;
use crate::protocol::target::{Priority, Target};
use crate::store::{Bucket, Outgoing, Presence, Routes, SendResult, StoreError};

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

/// What one send in a batch comes to before the commit.
enum Verdict {
    /// Stored as `outgoing[i]` if its bucket lets it through.
    Store(usize),
    NoRecipient,
    Unavailable,
}

/// A batch routed from one view of its meshes, ready to store.
struct Plan {
    verdicts: Vec<Verdict>,
    outgoing: Vec<Outgoing>,
    /// Per outgoing send: its wake-ups for this node; those for other
    /// nodes go out right after the commit (see `notices`).
    local_wakes: Vec<Vec<Signal>>,
    remote_wakes: Vec<(Uuid, Signal, Uuid)>,
    takers: Takers,
}

impl Node {
    async fn store_batch(&self, jobs: Vec<SendJob>) {
        let started = std::time::Instant::now();
        let mut fresh = false;
        loop {
            let meshes = self.batch_routes(&jobs, fresh).await;
            let mut plan = self.plan(&jobs, &meshes);
            // A cached view may lack a session that just joined: only a
            // fresh read may answer `no_recipient`.
            if !fresh
                && plan
                    .verdicts
                    .iter()
                    .any(|v| matches!(v, Verdict::NoRecipient))
            {
                fresh = true;
                continue;
            }
            // Only a cached view is checked. A fresh read is used as a
            // read-then-insert always was: churn cannot starve a batch, and
            // a stale one costs a single round trip more than reading first.
            let checks: Vec<(&str, &str)> = if fresh {
                Vec::new()
            } else {
                meshes
                    .iter()
                    .filter_map(|(m, r)| Some((m.as_str(), r.as_ref().ok()?.version.as_deref()?)))
                    .collect()
            };
            if plan.outgoing.is_empty() {
                self.finish_batch(jobs, plan, Vec::new()).await;
                return;
            }
            let notices = crate::cluster::bus::notices(self.id, &plan.remote_wakes);
            let stored = self
                .store
                .insert_messages(&plan.outgoing, &notices, &checks);
            match super::bounded(stored).await {
                Ok(Some(stored)) => {
                    self.metrics.send_batch.observe(plan.outgoing.len() as f64);
                    self.metrics
                        .send_commit
                        .observe(started.elapsed().as_secs_f64());
                    match stored.notified {
                        Ok(n) => {
                            self.metrics.notify_sent.inc_by(n);
                        }
                        Err(e) => {
                            // Through the bus instead, which retries; a
                            // wake-up for a rate-limited send costs only a
                            // claim.
                            tracing::warn!(error = %e, "notify after send failed; using the bus");
                            for (node, signal, _) in std::mem::take(&mut plan.remote_wakes) {
                                self.signal(node, signal);
                            }
                        }
                    };
                    self.finish_batch(jobs, plan, stored.results).await;
                    return;
                }
                Ok(None) => {
                    tracing::debug!("routing view changed under the batch; re-reading");
                    fresh = true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, sends = jobs.len(), "send batch failed; nothing stored");
                    for job in jobs {
                        let r = SendRefusal::from(StoreError::Unavailable(e.to_string()));
                        self.finish(&job.sender, Err(r), job.reply);
                    }
                    return;
                }
            }
        }
    }

    /// One routing view per mesh in the batch.
    async fn batch_routes(
        &self,
        jobs: &[SendJob],
        fresh: bool,
    ) -> HashMap<String, Result<Routes, ()>> {
        let mut meshes: HashMap<String, Result<Routes, ()>> = HashMap::new();
        for job in jobs {
            if !meshes.contains_key(&job.sender.mesh_id) {
                let read = super::bounded(self.store.send_routes(&job.sender.mesh_id, fresh)).await;
                meshes.insert(
                    job.sender.mesh_id.clone(),
                    read.map_err(|e| {
                        tracing::warn!(error = %e, "presence read failed during send");
                    }),
                );
            }
        }
        meshes
    }

    /// Routes every send of the batch by `meshes`; writes nothing.
    fn plan(&self, jobs: &[SendJob], meshes: &HashMap<String, Result<Routes, ()>>) -> Plan {
        let now = self.now();
        let settings = &self.config.settings;
        let lease_until = now + chrono::Duration::seconds(settings.claim_lease_seconds as i64);
        let all = || {
            meshes
                .values()
                .filter_map(|r| r.as_ref().ok())
                .flat_map(|r| r.targets.iter())
        };
        let mut plan = Plan {
            verdicts: Vec::with_capacity(jobs.len()),
            outgoing: Vec::with_capacity(jobs.len()),
            local_wakes: Vec::with_capacity(jobs.len()),
            remote_wakes: Vec::new(),
            takers: self.takers(all()),
        };
        let router = WakeRouter::new(all());
        for job in jobs {
            let Ok(routes) = &meshes[&job.sender.mesh_id] else {
                plan.verdicts.push(Verdict::Unavailable);
                continue;
            };
            let mut deliveries = route(&job.target, &job.sender, &routes.targets);
            if !plan.takers.is_empty() {
                self.preclaim(&mut deliveries, &plan.takers, job.priority, lease_until);
            }
            if deliveries.is_empty() && matches!(job.target, Target::Key(_)) {
                plan.verdicts.push(Verdict::NoRecipient);
                continue;
            }
            let message = self.new_message(job, now);
            let mut local = Vec::new();
            for (node, signal) in router.signals(&job.sender.mesh_id, &deliveries) {
                if node == self.id {
                    local.push(signal);
                } else {
                    plan.remote_wakes.push((node, signal, message.id));
                }
            }
            plan.verdicts.push(Verdict::Store(plan.outgoing.len()));
            plan.local_wakes.push(local);
            plan.outgoing.push(Outgoing {
                message,
                deliveries,
                bucket: Bucket {
                    key: job.sender.member_id.clone(),
                    rate_per_min: settings.send_rate_per_min,
                    burst: settings.send_burst,
                },
            });
        }
        plan
    }

    /// Answers every send of a stored (or empty) batch, hands pre-claimed
    /// rows to their sessions and wakes this node's recipients.
    async fn finish_batch(&self, jobs: Vec<SendJob>, plan: Plan, results: Vec<SendResult>) {
        let Plan {
            verdicts,
            outgoing,
            local_wakes,
            takers,
            ..
        } = plan;
        let mut handed = Vec::new();
        let mut woken = Vec::new();
        let mut stored: Vec<Option<(Outgoing, Vec<Signal>, SendResult)>> = outgoing
            .into_iter()
            .zip(local_wakes)
            .zip(results)
            .map(|((o, w), r)| Some((o, w, r)))
            .collect();
        for (job, verdict) in jobs.into_iter().zip(verdicts) {
            let i = match verdict {
                Verdict::Store(i) => i,
                Verdict::NoRecipient => {
                    let r = SendRefusal {
                        code: "no_recipient",
                        sentence: "no live or in-grace session matches that key".into(),
                    };
                    self.finish(&job.sender, Err(r), job.reply);
                    continue;
                }
                Verdict::Unavailable => {
                    let r =
                        SendRefusal::from(StoreError::Unavailable("presence read failed".into()));
                    self.finish(&job.sender, Err(r), job.reply);
                    continue;
                }
            };
            let Some((out, local, result)) = stored[i].take() else {
                continue;
            };
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

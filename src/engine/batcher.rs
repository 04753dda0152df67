//! The send batcher: group commit for `send`. Every send of a node goes
//! through one queue ([`Sends`]); one task takes whatever is waiting (up to
//! `MAX_BATCH`), routes it with one presence read per mesh, stores the lot
//! in one transaction (rate tokens, envelopes, delivery rows), then answers
//! each send and wakes the recipients with one signal per node. Under load
//! batches grow by themselves: fewer, larger commits, which is what
//! Postgres (and its NOTIFY lock) wants. Jobs are handled in queue order,
//! so one session's sends keep their order and their rate-limit verdicts.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::audit::Actor;
use super::dispatch::Refusal;
use super::handoff::{collect_handed, hand_over, preclaim, takers, Takers};
use super::routing::{route, validate, Checked, WakeRouter};
use super::signal::Signal;
use super::Ctx;
use crate::protocol::ids;
use crate::protocol::messaging::SendFrame;
use crate::protocol::target::Target;
use crate::store::{
    Bucket, Echo, NewMessage, Outgoing, Presence, Routes, SendKey, SendResult, StoreError,
};

/// Sends per transaction at most: bounds one transaction's size and the
/// wait of the last send in it.
pub const MAX_BATCH: usize = 512;
/// Sends waiting for the batcher; past this, sessions wait to submit
/// (backpressure instead of memory).
pub const QUEUE: usize = 8_192;

/// What a `send` resolves to: the message id, or the refusal.
pub type SendOutcome = Result<Uuid, Refusal>;

/// One validated `send` waiting to be stored.
struct SendJob {
    sender: Arc<Presence>,
    frame: SendFrame,
    checked: Checked,
    reply: oneshot::Sender<SendOutcome>,
}

/// The batcher's queue.
#[derive(Clone)]
pub struct Sends {
    tx: mpsc::Sender<SendJob>,
}

impl Sends {
    /// Queues a `send` for the batcher. The receiver yields its outcome;
    /// outcomes of one session's sends resolve in submission order.
    pub async fn submit(
        &self,
        ctx: &Ctx,
        sender: Arc<Presence>,
        s: SendFrame,
    ) -> oneshot::Receiver<SendOutcome> {
        let (reply, rx) = oneshot::channel();
        match validate(&s, ctx.config.settings.max_message_bytes) {
            Err(r) => finish(ctx, &sender, Err(r), reply),
            Ok(checked) => {
                let job = SendJob {
                    sender,
                    frame: s,
                    checked,
                    reply,
                };
                if let Err(e) = self.tx.send(job).await {
                    // Only during shutdown: the batcher has stopped.
                    let job = e.0;
                    let refusal = Refusal::new("unavailable", "the node is shutting down");
                    finish(ctx, &job.sender, Err(refusal), job.reply);
                }
            }
        }
        rx
    }
}

pub struct Batcher {
    ctx: Arc<Ctx>,
    rx: mpsc::Receiver<SendJob>,
}

impl Batcher {
    pub fn new(ctx: Arc<Ctx>) -> (Sends, Batcher) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Sends { tx }, Batcher { ctx, rx })
    }

    /// Stores batches until `stop`; what is queued then is refused.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                j = self.rx.recv() => match j { Some(j) => j, None => return },
                _ = stop.cancelled() => {
                    self.rx.close();
                    while let Ok(job) = self.rx.try_recv() {
                        let r = Refusal::from(StoreError::Unavailable("the node is shutting down".into()));
                        finish(&self.ctx, &job.sender, Err(r), job.reply);
                    }
                    return;
                }
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.store_batch(jobs).await;
        }
    }

    async fn store_batch(&self, jobs: Vec<SendJob>) {
        let started = std::time::Instant::now();
        let jobs = self.answer_repeats(jobs).await;
        if jobs.is_empty() {
            return;
        }
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
            let notices = self.ctx.notices(&plan.remote_wakes);
            let stored = self
                .ctx
                .store
                .insert_messages(&plan.outgoing, &notices, &checks);
            match super::bounded(stored).await {
                Ok(Some(stored)) => {
                    self.ctx
                        .metrics
                        .send_batch
                        .observe(plan.outgoing.len() as f64);
                    self.ctx
                        .metrics
                        .send_commit
                        .observe(started.elapsed().as_secs_f64());
                    match stored.notified {
                        Ok(n) => {
                            self.ctx.metrics.notify_sent.inc_by(n);
                        }
                        Err(e) => {
                            // Through the bus instead, which retries; a
                            // wake-up for a rate-limited send costs only a
                            // claim.
                            tracing::warn!(error = %e, "notify after send failed; using the bus");
                            for (node, signal, _) in std::mem::take(&mut plan.remote_wakes) {
                                self.ctx.signal(node, signal);
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
                        let r = Refusal::from(StoreError::Unavailable(e.to_string()));
                        finish(&self.ctx, &job.sender, Err(r), job.reply);
                    }
                    return;
                }
            }
        }
    }

    /// Answers the sends that repeat a remembered (mesh, sender member,
    /// `client_message_id`) with the original message, before routing and
    /// before the rate limit (PROTOCOL-SESSIONS.md §6); returns the rest.
    /// Sends that race one another are caught by the store instead.
    async fn answer_repeats(&self, jobs: Vec<SendJob>) -> Vec<SendJob> {
        let keys: Vec<(usize, SendKey)> = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| {
                let cm = j.checked.client_message_id.as_deref()?;
                Some((
                    i,
                    (j.sender.mesh_id.as_str(), j.sender.member_id.as_str(), cm),
                ))
            })
            .collect();
        if keys.is_empty() {
            return jobs;
        }
        let just: Vec<SendKey> = keys.iter().map(|k| k.1).collect();
        let found = match super::bounded(self.ctx.store.remembered_sends(&just)).await {
            Ok(found) => found,
            Err(e) => {
                // The batch's own insert still refuses a repeat; it only
                // costs the repeat a token.
                tracing::warn!(error = %e, "could not look up repeated sends");
                return jobs;
            }
        };
        let mut originals: Vec<Option<Uuid>> = vec![None; jobs.len()];
        for ((i, _), f) in keys.iter().zip(found) {
            originals[*i] = f;
        }
        let mut rest = Vec::with_capacity(jobs.len());
        for (job, original) in jobs.into_iter().zip(originals) {
            match original {
                Some(id) => repeated(&self.ctx, id, job.reply),
                None => rest.push(job),
            }
        }
        rest
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
                let read =
                    super::bounded(self.ctx.store.send_routes(&job.sender.mesh_id, fresh)).await;
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
        let now = self.ctx.now();
        let settings = &self.ctx.config.settings;
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
            takers: takers(&self.ctx, all()),
        };
        let router = WakeRouter::new(all());
        for job in jobs {
            let Ok(routes) = &meshes[&job.sender.mesh_id] else {
                plan.verdicts.push(Verdict::Unavailable);
                continue;
            };
            let mut deliveries = route(
                &job.checked.target,
                job.checked.priority,
                &job.sender,
                &routes.targets,
            );
            if !plan.takers.is_empty() {
                preclaim(
                    &self.ctx,
                    &mut deliveries,
                    &plan.takers,
                    job.checked.priority,
                    lease_until,
                );
            }
            if deliveries.is_empty() && matches!(job.checked.target, Target::Key(_)) {
                plan.verdicts.push(Verdict::NoRecipient);
                continue;
            }
            let message = new_message(&self.ctx, job, now);
            let mut local = Vec::new();
            for (node, signal) in router.signals(&job.sender.mesh_id, &deliveries) {
                if node == self.ctx.node_id {
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
                    let r = Refusal::new(
                        "no_recipient",
                        "no live or in-grace session matches that key",
                    );
                    finish(&self.ctx, &job.sender, Err(r), job.reply);
                    continue;
                }
                Verdict::Unavailable => {
                    let r = Refusal::from(StoreError::Unavailable("presence read failed".into()));
                    finish(&self.ctx, &job.sender, Err(r), job.reply);
                    continue;
                }
            };
            let Some((out, local, result)) = stored[i].take() else {
                continue;
            };
            match result {
                SendResult::Queued { claimed } => {
                    let id: Uuid = out.message.id;
                    audit_sent(&self.ctx, &job, id, out.deliveries.len());
                    collect_handed(&out.message, &out.deliveries, claimed, &mut handed);
                    woken.extend(local);
                    finish(&self.ctx, &job.sender, Ok(id), job.reply);
                }
                SendResult::RateLimited => {
                    let r = rate_limited(&self.ctx);
                    finish(&self.ctx, &job.sender, Err(r), job.reply);
                }
                SendResult::Duplicate { original: Some(id) } => repeated(&self.ctx, id, job.reply),
                SendResult::Duplicate { original: None } => {
                    let r = Refusal::new(
                        "unavailable",
                        "a send with this client_message_id was just forgotten; try again",
                    );
                    finish(&self.ctx, &job.sender, Err(r), job.reply);
                }
            }
        }
        hand_over(&self.ctx, handed, &takers).await;
        for signal in woken {
            self.ctx.sessions.apply(signal);
        }
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

/// Records an outcome (metrics, audit of refusals) and hands it back.
fn finish(ctx: &Ctx, sender: &Presence, outcome: SendOutcome, reply: oneshot::Sender<SendOutcome>) {
    let label = match &outcome {
        Ok(_) => "queued",
        Err(r) => r.code,
    };
    ctx.metrics.message(label);
    if let Err(r) = &outcome {
        ctx.audit.record(
            &sender.mesh_id,
            "message_rejected",
            Some(Actor {
                member_id: &sender.member_id,
                name: &sender.display_name,
            }),
            json!({"code": r.code, "presence_id": sender.id}),
        );
    }
    let _ = reply.send(outcome);
}

/// Answers a repeated send with the message its first send stored: it
/// stores nothing, delivers nothing and is not audited again.
fn repeated(ctx: &Ctx, original: Uuid, reply: oneshot::Sender<SendOutcome>) {
    ctx.metrics.message("duplicate");
    let _ = reply.send(Ok(original));
}

/// The refusal for a member over its budget.
fn rate_limited(ctx: &Ctx) -> Refusal {
    let s = &ctx.config.settings;
    Refusal::new(
        "rate_limit",
        format!(
            "over the send budget of {} per minute (burst {})",
            s.send_rate_per_min, s.send_burst
        ),
    )
}

/// The stored form of a job's message.
fn new_message(ctx: &Ctx, job: &SendJob, now: DateTime<Utc>) -> NewMessage {
    let sender = &job.sender;
    NewMessage {
        id: crate::store::new_message_id(now),
        mesh_id: sender.mesh_id.clone(),
        sender_member_id: sender.member_id.clone(),
        sender_member_pubkey: sender.member_pubkey.clone(),
        sender_session_pubkey: sender.session_pubkey.clone(),
        target_spec: job.frame.target_spec.clone(),
        priority: job.checked.priority,
        nonce: job.frame.nonce.clone(),
        ciphertext: job.frame.ciphertext.clone(),
        created_at: now,
        expires_at: now + Duration::seconds(ctx.config.settings.queue_ttl_seconds as i64),
        echo: Echo {
            sender_name: sender.display_name.clone(),
            client_message_id: job.checked.client_message_id.clone(),
            request_fingerprint: job.checked.request_fingerprint.clone(),
            reply_to_id: job.checked.reply_to_id.clone(),
            subtype: None,
        },
    }
}

/// Audits a stored message: sizes only, never the envelope.
fn audit_sent(ctx: &Ctx, job: &SendJob, message_id: Uuid, recipients: usize) {
    let sender = &job.sender;
    ctx.audit.record(
        &sender.mesh_id,
        "message_sent",
        Some(Actor {
            member_id: &sender.member_id,
            name: &sender.display_name,
        }),
        json!({
            "message_id": ids::encode(message_id),
            "target_kind": job.checked.target.kind(),
            "target_spec": job.frame.target_spec,
            "priority": job.checked.priority.as_str(),
            "size_bytes": job.frame.nonce.len() + job.frame.ciphertext.len(),
            "recipients": recipients,
        }),
    );
}

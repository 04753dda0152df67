//! Audit events: recorded off the hot path into a bounded queue
//! ([`AuditLog`]), appended by one task per node in batches (one
//! transaction per batch, one chain per mesh serialised in the store).
//! Metadata only: never a nonce or a ciphertext.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use super::Ctx;
use crate::audit::{verify, Verdict};
use crate::store::{NewAuditEntry, StoreError};

/// Entries waiting for the appender. A database outage longer than this
/// many events drops the overflow (counted) rather than growing memory.
pub const AUDIT_QUEUE: usize = 100_000;
/// Entries per append transaction.
const AUDIT_BATCH: usize = 1_000;
/// How long a batch collects after its first entry: an append is a
/// durable transaction with a row lock per mesh, so under steady traffic
/// one every few dozen milliseconds, not one per send, keeps the database
/// free for the hot path. A crash loses at most this window.
const LINGER: Duration = Duration::from_millis(50);
/// Pause before retrying a failed append.
const RETRY: Duration = Duration::from_millis(500);

pub type AuditRx = mpsc::Receiver<NewAuditEntry>;

/// The appender's queue, shared by everything that audits.
pub struct AuditLog {
    tx: mpsc::Sender<NewAuditEntry>,
    clock: Arc<dyn Clock>,
    dropped: Counter<u64, AtomicU64>,
}

pub fn channel(clock: Arc<dyn Clock>, dropped: Counter<u64, AtomicU64>) -> (AuditLog, AuditRx) {
    let (tx, rx) = mpsc::channel(AUDIT_QUEUE);
    (AuditLog { tx, clock, dropped }, rx)
}

/// Who did it, for the entry's actor fields.
pub struct Actor<'a> {
    pub member_id: &'a str,
    pub name: &'a str,
}

impl AuditLog {
    /// Queues one audit entry; never waits.
    pub fn record(
        &self,
        mesh_id: &str,
        event_type: &'static str,
        actor: Option<Actor<'_>>,
        payload: Value,
    ) {
        let entry = NewAuditEntry {
            mesh_id: mesh_id.to_string(),
            event_type,
            actor_member_id: actor.as_ref().map(|a| a.member_id.to_string()),
            actor_name: actor.as_ref().map(|a| a.name.to_string()),
            payload,
            created_at: self.clock.now(),
        };
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
        }
    }
}

/// Walks a mesh's chain.
pub async fn verify_chain(ctx: &Ctx, mesh_id: &str) -> Result<Verdict, StoreError> {
    let (checkpoint, entries) = ctx.store.audit_chain(mesh_id).await?;
    Ok(verify(checkpoint.as_ref(), &entries))
}

/// Appends queued entries until `stop`, then flushes what is left.
pub async fn run_appender(ctx: Arc<Ctx>, mut rx: AuditRx, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    loop {
        if batch.is_empty() {
            // Biased: after `close`, `recv` yields what is left, then None.
            tokio::select! {
                biased;
                e = rx.recv() => match e {
                    Some(e) => batch.push(e),
                    None => return,
                },
                _ = stop.cancelled() => rx.close(),
            }
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < AUDIT_BATCH {
            if stop.is_cancelled() {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
                continue;
            }
            tokio::select! {
                biased;
                e = tokio::time::timeout_at(deadline, rx.recv()) => match e {
                    Ok(Some(e)) => batch.push(e),
                    Ok(None) | Err(_) => break,
                },
                _ = stop.cancelled() => rx.close(),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        match super::bounded(ctx.store.append_audit(&batch)).await {
            Ok(()) => {
                ctx.metrics
                    .audit_append
                    .observe(started.elapsed().as_secs_f64());
                batch.clear();
            }
            Err(e) => {
                tracing::warn!(node_id = %ctx.node_id, error = %e, entries = batch.len(), "audit append failed; retrying");
                if stop.is_cancelled() {
                    // Shutting down with the database gone: nothing to wait for.
                    ctx.metrics.audit_dropped.inc_by(batch.len() as u64);
                    return;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

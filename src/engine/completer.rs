//! The completer: completes written pushes (sessions without
//! `client_ack`) for the whole node in batches, one DELETE per short
//! window instead of one per push. A crash before a batch lands costs a
//! redelivery, never a loss; a session that ends flushes first, so its
//! re-attach does not see its written pushes again.
//!
//! A batch that fails (a squeezed pool, a database blip) is not dropped:
//! its rows are retried, coalesced with newer ones, until they land or a
//! while past their claim's lease. Meanwhile they are known as written: if the session's own claim takes one back (its lease
//! lapsed), the delivery loop does not push it again but queues it for
//! completion once more (that claim renewed its lease). A plain session is
//! not re-pushed what it already got.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Ctx;

/// How long a batch collects after its first row: completion is not on
/// anyone's latency path, the statement count is.
const LINGER: Duration = Duration::from_millis(10);
/// Rows per statement at most.
const MAX_ROWS: usize = 8_192;
pub const QUEUE: usize = 16_384;
/// First wait before retrying a failed batch; doubles up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A retried row is kept past its claim's lease by this much (and two
/// delivery polls): the session's own loop takes the lapsed row back in
/// that time, which renews the lease and queues the row again, so a long
/// failure does not end in a duplicate. A row another session claimed is
/// simply no longer ours to complete (its completion matches nothing).
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Leases a failing completion is retried for before its row is left to
/// lapse and be delivered again: a session starved of connections for a
/// while cannot take its rows back (and renew their mark) meanwhile.
const GIVE_UP_LEASES: u32 = 4;

enum Job {
    Done(Uuid, Vec<i64>),
    /// Answered once every row queued before it has been completed.
    Flush(oneshot::Sender<()>),
}

/// The completer's queue.
#[derive(Clone)]
pub struct Completions {
    tx: mpsc::Sender<Job>,
    /// For completing directly once the completer has stopped.
    ctx: Arc<Ctx>,
    unsettled: Unsettled,
}

/// Rows written to their socket whose completion failed, each with when to
/// give up retrying it. Empty unless the database misbehaves.
type Unsettled = Arc<Mutex<HashMap<(Uuid, i64), Instant>>>;

impl Completions {
    /// Queues written rows of `presence` for completion.
    pub async fn later(&self, presence: Uuid, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        if let Err(mpsc::error::SendError(Job::Done(p, ids))) =
            self.tx.send(Job::Done(presence, ids)).await
        {
            // Shutting down: complete directly.
            let rows: Vec<(Uuid, i64)> = ids.into_iter().map(|i| (p, i)).collect();
            let _ = complete_now(&self.ctx, &rows).await;
        }
    }

    /// Whether this row, just claimed back by `presence`, was written to
    /// its socket already with its completion still being retried: pushing
    /// it again would be a duplicate. The claim renewed the row's lease, so
    /// the retries go on for as long again: given up while the session
    /// still holds it, the row would lose its mark and be pushed twice.
    pub fn written(&self, presence: Uuid, id: i64) -> bool {
        let mut u = self.unsettled.lock().unwrap_or_else(|e| e.into_inner());
        if u.is_empty() {
            return false;
        }
        match u.get_mut(&(presence, id)) {
            Some(until) => {
                *until = give_up_at(&self.ctx, Instant::now());
                true
            }
            None => false,
        }
    }

    /// Waits until everything queued so far is completed (or, if the
    /// database refused, queued for a retry).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// One completion statement; `false` if it failed (the rows stay claimed).
async fn complete_now(ctx: &Ctx, rows: &[(Uuid, i64)]) -> bool {
    if rows.is_empty() {
        return true;
    }
    match super::bounded(ctx.store.complete_many(rows, ctx.retention())).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, rows = rows.len(), "could not complete deliveries; will retry");
            false
        }
    }
}

pub struct Completer {
    ctx: Arc<Ctx>,
    rx: mpsc::Receiver<Job>,
    unsettled: Unsettled,
}

impl Completer {
    pub fn new(ctx: Arc<Ctx>) -> (Completions, Completer) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let unsettled = Unsettled::default();
        let handle = Completions {
            tx,
            ctx: ctx.clone(),
            unsettled: unsettled.clone(),
        };
        (handle, Completer { ctx, rx, unsettled })
    }

    /// Completes batches until `stop`, then what is queued.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = RETRY_MIN;
        loop {
            // With rows waiting for a retry, wait for new ones only until
            // the retry is due.
            let first = tokio::select! {
                j = self.rx.recv() => match j { Some(j) => Some(j), None => return },
                _ = tokio::time::sleep(backoff), if self.retrying() => None,
                _ = stop.cancelled() => {
                    self.rx.close();
                    let mut rows = Vec::new();
                    let mut flushes = Vec::new();
                    while let Ok(j) = self.rx.try_recv() {
                        take(j, &mut rows, &mut flushes);
                    }
                    // One last try, for the retried rows too; what fails now
                    // is redelivered after its lease (never lost).
                    self.attempt(rows).await;
                    flushes.into_iter().for_each(|f| { let _ = f.send(()); });
                    return;
                }
            };
            let mut rows = Vec::new();
            let mut flushes = Vec::new();
            if let Some(first) = first {
                take(first, &mut rows, &mut flushes);
                let deadline = Instant::now() + LINGER;
                while flushes.is_empty() && rows.len() < MAX_ROWS {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(j)) => take(j, &mut rows, &mut flushes),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            if self.attempt(rows).await {
                backoff = RETRY_MIN;
            } else {
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            for f in flushes {
                let _ = f.send(());
            }
        }
    }

    fn unsettled(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, i64), Instant>> {
        self.unsettled.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retrying(&self) -> bool {
        !self.unsettled().is_empty()
    }

    /// Completes the rows waiting for a retry and `rows` in one statement.
    /// On failure every row waits for the next try, known as written.
    async fn attempt(&mut self, rows: Vec<(Uuid, i64)>) -> bool {
        let now = Instant::now();
        let mut all = {
            let mut u = self.unsettled();
            let before = u.len();
            u.retain(|_, until| *until > now);
            if u.len() < before {
                tracing::warn!(
                    rows = before - u.len(),
                    "gave up completing deliveries: their claims lapse and they are delivered again"
                );
            }
            u.keys().copied().collect::<Vec<_>>()
        };
        all.extend_from_slice(&rows);
        if complete_now(&self.ctx, &all).await {
            // Only this task changes the map: what it held is done.
            self.unsettled().clear();
            return true;
        }
        let until = give_up_at(&self.ctx, now);
        let mut u = self.unsettled();
        for r in rows {
            // A long outage: past the cap, rows lapse and are redelivered.
            if u.len() >= MAX_ROWS * 4 {
                break;
            }
            u.insert(r, until);
        }
        false
    }
}

/// When to stop retrying a row whose completion failed at `now`: past
/// its claim's lease and the polls that would take it back.
fn give_up_at(ctx: &Ctx, now: Instant) -> Instant {
    let s = &ctx.config.settings;
    let lease = Duration::from_secs(s.claim_lease_seconds + 2 * s.sweep_interval_seconds);
    now + GIVE_UP_LEASES * lease + LEASE_MARGIN
}

fn take(job: Job, rows: &mut Vec<(Uuid, i64)>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match job {
        Job::Done(p, ids) => rows.extend(ids.into_iter().map(|i| (p, i))),
        Job::Flush(f) => flushes.push(f),
    }
}

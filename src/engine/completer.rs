//! The completer: completes written pushes (sessions without
//! `client_ack`) for the whole node in batches, one DELETE per short
//! window instead of one per push. A crash before a batch lands costs a
//! redelivery, never a loss; a session that ends flushes first, so its
//! re-attach does not see its written pushes again.

use std::sync::Arc;
use std::time::Duration;

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
}

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
            complete_now(&self.ctx, &rows).await;
        }
    }

    /// Waits until everything queued so far is completed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn complete_now(ctx: &Ctx, rows: &[(Uuid, i64)]) {
    if rows.is_empty() {
        return;
    }
    if let Err(e) = super::bounded(ctx.store.complete_many(rows, ctx.retention())).await {
        // The rows stay claimed; their lease lapses and they are
        // delivered again: a duplicate, not a loss.
        tracing::warn!(error = %e, rows = rows.len(), "could not complete deliveries");
    }
}

pub struct Completer {
    ctx: Arc<Ctx>,
    rx: mpsc::Receiver<Job>,
}

impl Completer {
    pub fn new(ctx: Arc<Ctx>) -> (Completions, Completer) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = Completions {
            tx,
            ctx: ctx.clone(),
        };
        (handle, Completer { ctx, rx })
    }

    /// Completes batches until `stop`, then what is queued.
    pub async fn run(mut self, stop: CancellationToken) {
        let store = &*self.ctx;
        loop {
            let first = tokio::select! {
                j = self.rx.recv() => match j { Some(j) => j, None => return },
                _ = stop.cancelled() => {
                    self.rx.close();
                    let mut rows = Vec::new();
                    let mut flushes = Vec::new();
                    while let Ok(j) = self.rx.try_recv() {
                        take(j, &mut rows, &mut flushes);
                    }
                    complete_now(store, &rows).await;
                    flushes.into_iter().for_each(|f| { let _ = f.send(()); });
                    return;
                }
            };
            let mut rows = Vec::new();
            let mut flushes = Vec::new();
            take(first, &mut rows, &mut flushes);
            let deadline = tokio::time::Instant::now() + LINGER;
            while flushes.is_empty() && rows.len() < MAX_ROWS {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(j)) => take(j, &mut rows, &mut flushes),
                    Ok(None) | Err(_) => break,
                }
            }
            complete_now(store, &rows).await;
            for f in flushes {
                let _ = f.send(());
            }
        }
    }
}

fn take(job: Job, rows: &mut Vec<(Uuid, i64)>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match job {
        Job::Done(p, ids) => rows.extend(ids.into_iter().map(|i| (p, i))),
        Job::Flush(f) => flushes.push(f),
    }
}

//! Completes written pushes (sessions without `client_ack`) for the whole
//! node in batches: one DELETE per short window instead of one per push.
//! A crash before a batch lands costs a redelivery, never a loss; a
//! session that ends flushes first, so its re-attach does not see its
//! written pushes again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Node;

/// How long a batch collects after its first row: completion is not on
/// anyone's latency path, the statement count is.
const LINGER: Duration = Duration::from_millis(10);
/// Rows per statement at most.
const MAX_ROWS: usize = 8_192;
pub const QUEUE: usize = 16_384;

pub enum Job {
    Done(Uuid, Vec<i64>),
    /// Answered once every row queued before it has been completed.
    Flush(oneshot::Sender<()>),
}

pub type CompleteQueue = mpsc::Receiver<Job>;

pub fn channel() -> (mpsc::Sender<Job>, CompleteQueue) {
    mpsc::channel(QUEUE)
}

impl Node {
    /// Queues written rows of `presence` for completion.
    pub async fn complete_later(&self, presence: Uuid, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        if let Err(mpsc::error::SendError(Job::Done(p, ids))) =
            self.complete_queue.send(Job::Done(presence, ids)).await
        {
            // Shutting down: complete directly.
            self.complete_now(&ids.into_iter().map(|i| (p, i)).collect::<Vec<_>>())
                .await;
        }
    }

    /// Waits until everything queued so far is completed.
    pub async fn flush_completions(&self) {
        let (tx, rx) = oneshot::channel();
        if self.complete_queue.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn complete_now(&self, rows: &[(Uuid, i64)]) {
        if rows.is_empty() {
            return;
        }
        if let Err(e) = super::bounded(self.store.complete_many(rows)).await {
            // The rows stay claimed; their lease lapses and they are
            // delivered again: a duplicate, not a loss.
            tracing::warn!(error = %e, rows = rows.len(), "could not complete deliveries");
        }
    }
}

/// Completes batches until `stop`, then what is queued.
pub async fn run(node: Arc<Node>, mut rx: CompleteQueue, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            j = rx.recv() => match j { Some(j) => j, None => return },
            _ = stop.cancelled() => {
                rx.close();
                let mut rows = Vec::new();
                let mut flushes = Vec::new();
                while let Ok(j) = rx.try_recv() {
                    take(j, &mut rows, &mut flushes);
                }
                node.complete_now(&rows).await;
                flushes.into_iter().for_each(|f| { let _ = f.send(()); });
                return;
            }
        };
        let mut rows = Vec::new();
        let mut flushes = Vec::new();
        take(first, &mut rows, &mut flushes);
        let deadline = tokio::time::Instant::now() + LINGER;
        while flushes.is_empty() && rows.len() < MAX_ROWS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(j)) => take(j, &mut rows, &mut flushes),
                Ok(None) | Err(_) => break,
            }
        }
        node.complete_now(&rows).await;
        for f in flushes {
            let _ = f.send(());
        }
    }
}

fn take(job: Job, rows: &mut Vec<(Uuid, i64)>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match job {
        Job::Done(p, ids) => rows.extend(ids.into_iter().map(|i| (p, i))),
        Job::Flush(f) => flushes.push(f),
    }
}

//! The claim hub: one claim statement for many sessions. Each session's
//! delivery loop hands its claim to this node's hub ([`Claims`]), which
//! takes everything waiting and asks the store once. Under load that turns
//! hundreds of one-session claims a second into a few large ones; when idle
//! a lone claim goes straight through (a batch of one).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::store::{ClaimRequest, Claimed, StoreError, StoreResult};

/// Claims per statement at most.
const MAX_CLAIMS: usize = 128;
/// Claims waiting for the hub; one per session at most, so this is ample.
pub const QUEUE: usize = 16_384;

struct ClaimJob {
    req: ClaimRequest,
    reply: oneshot::Sender<StoreResult<Vec<Claimed>>>,
}

/// The hub's queue.
#[derive(Clone)]
pub struct Claims {
    tx: mpsc::Sender<ClaimJob>,
}

impl Claims {
    /// Claims for one session through the hub.
    pub async fn claim(&self, req: ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(ClaimJob { req, reply }).await.is_err() {
            return Err(StoreError::Unavailable("the node is shutting down".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("claim dropped".into())))
    }
}

pub struct ClaimHub {
    ctx: Arc<Ctx>,
    rx: mpsc::Receiver<ClaimJob>,
}

impl ClaimHub {
    pub fn new(ctx: Arc<Ctx>) -> (Claims, ClaimHub) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Claims { tx }, ClaimHub { ctx, rx })
    }

    /// Serves claims until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                j = self.rx.recv() => match j { Some(j) => j, None => return },
                _ = stop.cancelled() => return,
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_CLAIMS {
                match self.rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.ctx.metrics.claims.inc();
            let started = std::time::Instant::now();
            let (reqs, replies): (Vec<ClaimRequest>, Vec<_>) =
                jobs.into_iter().map(|j| (j.req, j.reply)).unzip();
            let r = super::bounded(self.ctx.store.claim_many(&reqs)).await;
            self.ctx
                .metrics
                .claim_duration
                .observe(started.elapsed().as_secs_f64());
            match r {
                Ok(results) => {
                    for (reply, claimed) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(claimed));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                    }
                }
            }
        }
    }
}

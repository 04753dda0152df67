//! The heartbeat: this node's row in the registry kept fresh, the
//! database's health recorded as it goes, a lost lease (another node
//! declared us dead) answered by registering again, and the sockets'
//! activity recorded for moderation.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::sessions::close;
use super::Ctx;
use crate::store::NodeRow;

/// Refreshes `broker_node.heartbeat_at` until `stop`; records db health.
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let every = Duration::from_secs(ctx.config.settings.node_heartbeat_seconds);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let beat = super::bounded(ctx.store.heartbeat_node(
            ctx.node_id,
            ctx.now(),
            ctx.node.is_draining(),
        ))
        .await;
        let ok = beat.is_ok();
        if let Ok(false) = beat {
            lease_lost(&ctx).await;
        }
        if ok {
            record_activity(&ctx).await;
        }
        let was = ctx.node.set_db_up(ok);
        if was != ok {
            if ok {
                tracing::info!(node_id = %ctx.node_id, "database reachable again");
            } else {
                tracing::warn!(node_id = %ctx.node_id, "database unreachable");
            }
        }
    }
}

/// Writes when each local socket was last heard from: what `kick` and
/// `disconnect` by `stale` read, on any node. One statement per beat.
async fn record_activity(ctx: &Ctx) {
    let heard = ctx.sessions.take_activity();
    if heard.is_empty() {
        return;
    }
    if let Err(e) = super::bounded(ctx.store.record_activity(&heard)).await {
        // Lost for this beat only: an active socket is heard again soon.
        tracing::warn!(node_id = %ctx.node_id, error = %e, sessions = heard.len(),
            "could not record socket activity");
    }
}

/// Our row was reaped (we were silent past the lease, e.g. a long database
/// outage): other nodes have moved our sessions to grace. Register again
/// and close our sockets so clients re-attach cleanly (1012: restart).
async fn lease_lost(ctx: &Ctx) {
    tracing::warn!(node_id = %ctx.node_id, "node lease lost: re-registering and closing sockets");
    let row = NodeRow {
        id: ctx.node_id,
        addr: ctx.node.listen_addr.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: ctx.now(),
    };
    if let Err(e) = ctx.store.register_node(&row).await {
        tracing::warn!(node_id = %ctx.node_id, error = %e, "could not re-register");
    }
    ctx.sessions
        .close_every(close::SERVICE_RESTART, "node lease lost");
}

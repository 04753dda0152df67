//! The heartbeat: this node's row in the registry kept fresh, the
//! database's health recorded as it goes, a lost lease (another node
//! declared us dead) answered by registering again and taking back the
//! sessions still ours, and the sockets' activity recorded for moderation.

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
        let beat = super::bounded(
            ctx.store
                .heartbeat_node(ctx.node_id, ctx.node.is_draining()),
        )
        .await;
        let ok = match beat {
            Ok(true) => true,
            Ok(false) => lease_lost(&ctx).await,
            Err(_) => false,
        };
        ctx.node.beat(ok);
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

/// Our row was reaped: another node judged us silent past the lease (a
/// partition of this node alone; after an outage of the whole database
/// nobody judges, see the sweeper) and moved our sessions to grace. We
/// register again and take back, silently, every session still ours; only
/// sockets whose presence was ended or taken over meanwhile close (1012),
/// so their clients re-attach. `true` once registered again.
async fn lease_lost(ctx: &Ctx) -> bool {
    tracing::warn!(node_id = %ctx.node_id, "node lease lost: re-registering");
    let row = NodeRow {
        id: ctx.node_id,
        addr: ctx.node.listen_addr.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: ctx.now(),
    };
    if let Err(e) = super::bounded(ctx.store.register_node(&row)).await {
        tracing::warn!(node_id = %ctx.node_id, error = %e, "could not re-register");
        return false;
    }
    let local = ctx.sessions.presences();
    match super::bounded(ctx.store.readopt_presences(ctx.node_id, &local)).await {
        Ok(back) => {
            let back: std::collections::HashSet<_> = back.into_iter().collect();
            let lost = ctx
                .sessions
                .close_unless(&back, close::SERVICE_RESTART, "node lease lost");
            tracing::warn!(node_id = %ctx.node_id, kept = back.len(), closed = lost,
                "registered again: sessions still ours taken back");
            // Their claims were released with our row: claim them again.
            ctx.sessions.wake_all();
        }
        Err(e) => {
            // Not knowing which are ours, every client re-attaches.
            tracing::warn!(node_id = %ctx.node_id, error = %e, "could not take sessions back");
            ctx.sessions
                .close_every(close::SERVICE_RESTART, "node lease lost");
        }
    }
    true
}

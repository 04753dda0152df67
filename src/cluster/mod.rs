//! Periodic work that keeps the shared tables honest: this node's
//! heartbeat in the node registry and the grace-expiry sweep. (The NOTIFY
//! bus and dead-node takeover join this module with the cluster issue.)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::Node;

/// Refreshes `broker_node.heartbeat_at` until `stop`; records db health.
pub async fn run_heartbeat(node: Arc<Node>, stop: CancellationToken) {
    let every = Duration::from_secs(node.config.settings.node_heartbeat_seconds);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = node
            .store
            .heartbeat_node(node.id, node.now(), node.is_draining())
            .await
            .is_ok();
        let was = node.db_up.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!(node_id = %node.id, "database reachable again");
            } else {
                tracing::warn!(node_id = %node.id, "database unreachable");
            }
        }
    }
}

/// Ends presences whose grace ran out, every `sweep_interval_seconds`.
pub async fn run_sweeper(node: Arc<Node>, stop: CancellationToken) {
    let every = Duration::from_secs(node.config.settings.sweep_interval_seconds);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match node.store.expire_grace(node.now()).await {
            Ok(ended) if !ended.is_empty() => {
                tracing::info!(node_id = %node.id, ended = ended.len(), "grace expired");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(node_id = %node.id, error = %e, "grace sweep failed"),
        }
    }
}

//! Periodic work that keeps the shared tables honest: this node's
//! heartbeat in the node registry and the grace-expiry sweep. (The NOTIFY
//! bus and dead-node takeover join this module with the cluster issue.)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::events::PeerEvent;
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

/// Every `sweep_interval_seconds`: ends presences whose grace ran out
/// (announcing `peer_left`), deletes expired and fully delivered messages,
/// and samples the queue depth.
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
            Ok(ended) => {
                for p in &ended {
                    tracing::info!(node_id = %node.id, presence_id = %p.id, mesh_id = %p.mesh_id, "grace expired");
                    node.announce(PeerEvent::Left, p, None);
                }
            }
            Err(e) => tracing::warn!(node_id = %node.id, error = %e, "grace sweep failed"),
        }
        if let Err(e) = node.sweep_status().await {
            tracing::warn!(node_id = %node.id, error = %e, "status sweep failed");
        }
        if let Err(e) = node.store.sweep_messages(node.now()).await {
            tracing::warn!(node_id = %node.id, error = %e, "message sweep failed");
        }
        if let Ok(depth) = node.store.queue_depth().await {
            node.metrics.queue_depth.set(depth);
        }
    }
}

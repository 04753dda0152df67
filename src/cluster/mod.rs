//! What makes nodes one cluster: the NOTIFY bus (`bus`), this node's
//! heartbeat in the node registry, and the sweepers that keep the shared
//! tables honest (grace expiry, dead nodes, messages, status TTL).

pub mod bus;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::audit::Actor;
use crate::engine::events::PeerEvent;
use crate::engine::sessions::close;
use crate::engine::Node;
use crate::store::NodeRow;

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
        let beat = crate::engine::bounded(node.store.heartbeat_node(
            node.id,
            node.now(),
            node.is_draining(),
        ))
        .await;
        let ok = beat.is_ok();
        if let Ok(false) = beat {
            lease_lost(&node).await;
        }
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

/// Our row was reaped (we were silent past the lease, e.g. a long database
/// outage): other nodes have moved our sessions to grace. Register again
/// and close our sockets so clients re-attach cleanly (1012: restart).
async fn lease_lost(node: &Node) {
    tracing::warn!(node_id = %node.id, "node lease lost: re-registering and closing sockets");
    let row = NodeRow {
        id: node.id,
        addr: node.public_url.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: node.now(),
    };
    if let Err(e) = node.store.register_node(&row).await {
        tracing::warn!(node_id = %node.id, error = %e, "could not re-register");
    }
    node.sessions
        .close_every(close::SERVICE_RESTART, "node lease lost");
}

/// Retention is in days: pruning hourly keeps the table within an hour of
/// its limit at a negligible cost.
const AUDIT_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every `sweep_interval_seconds`: ends presences whose grace ran out
/// (announcing `peer_left`), deletes expired and fully delivered messages,
/// and samples the queue depth.
pub async fn run_sweeper(node: Arc<Node>, stop: CancellationToken) {
    let every = Duration::from_secs(node.config.settings.sweep_interval_seconds);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = std::time::Instant::now() - AUDIT_PRUNE_EVERY;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        let now = node.now();
        let settings = &node.config.settings;
        let lease = chrono::Duration::seconds(settings.node_lease_seconds as i64);
        let grace = chrono::Duration::seconds(settings.presence_grace_seconds as i64);
        match node
            .store
            .reap_dead_nodes(node.id, now - lease, now + grace, now)
            .await
        {
            Ok(dead) if !dead.is_empty() => {
                tracing::warn!(node_id = %node.id, ?dead, "dead nodes reaped: their sessions are in grace");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(node_id = %node.id, error = %e, "dead-node sweep failed"),
        }
        match node.store.expire_grace(node.now()).await {
            Ok(ended) => {
                for p in &ended {
                    tracing::info!(node_id = %node.id, presence_id = %p.id, mesh_id = %p.mesh_id, "grace expired");
                    node.announce(PeerEvent::Left, p, None);
                    node.audit(
                        &p.mesh_id,
                        "peer_left",
                        Some(Actor {
                            member_id: &p.member_id,
                            name: &p.display_name,
                        }),
                        serde_json::json!({"presence_id": p.id, "session_id": p.session_id}),
                    );
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
        if last_prune.elapsed() >= AUDIT_PRUNE_EVERY {
            last_prune = std::time::Instant::now();
            let days = chrono::Duration::days(node.config.settings.audit_retention_days as i64);
            match node.store.prune_audit(node.now() - days).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(node_id = %node.id, pruned = n, "audit entries past retention pruned")
                }
                Err(e) => tracing::warn!(node_id = %node.id, error = %e, "audit prune failed"),
            }
        }
        if let Ok(depth) = node.store.queue_depth().await {
            node.metrics.queue_depth.set(depth);
        }
        node.metrics.sweeps.inc();
        node.metrics
            .sweep_duration
            .observe(started.elapsed().as_secs_f64());
    }
}

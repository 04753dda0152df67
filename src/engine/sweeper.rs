//! The sweeper: every `sweep_interval_seconds` it keeps the shared tables
//! honest. Dead nodes are reaped (their sessions to grace), presences whose
//! grace ran out end with `peer_left`, stuck statuses and stale hooks and
//! buckets go, expired and delivered messages go, spent hello signatures
//! past their window go, the audit log is pruned
//! past its retention, and the queue depth is sampled. Every node sweeps;
//! the store makes each step safe to run on several at once. Each step is
//! bounded by the database deadline: one that stalls on a dead link is
//! given up, and the next pass tries again on a fresh connection.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::audit::Actor;
use super::events::{announce, PeerEvent};
use super::status::sweep_status;
use super::{bounded, Ctx};

/// Retention is in days: pruning hourly keeps the table within an hour of
/// its limit at a negligible cost.
const AUDIT_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every `sweep_interval_seconds`: ends presences whose grace ran out
/// (announcing `peer_left`), deletes expired and fully delivered messages,
/// and samples the queue depth.
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let every = Duration::from_secs(ctx.config.settings.sweep_interval_seconds);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = std::time::Instant::now() - AUDIT_PRUNE_EVERY;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            // A pass stalled on an unreachable database must not hold up
            // shutdown: what it did not finish, the next pass (or node) does.
            _ = stop.cancelled() => return,
            _ = pass(&ctx, &mut last_prune) => {}
        }
    }
}

/// One sweep of the shared tables (see the module's text).
async fn pass(ctx: &Ctx, last_prune: &mut std::time::Instant) {
    let started = std::time::Instant::now();
    let now = ctx.now();
    let settings = &ctx.config.settings;
    let lease = Duration::from_secs(settings.node_lease_seconds);
    let grace = chrono::Duration::seconds(settings.presence_grace_seconds as i64);
    // A node that has not been beating for a whole lease cannot tell a
    // dead node from one that, like itself, could not reach the
    // database a moment ago: it leaves the judging to steadier nodes.
    let steady = ctx.node.steady_for() >= lease;
    // Our own beat must be this fresh when the statement runs (see the
    // store): two beats and a second of latency.
    let fresh = Duration::from_secs(2 * settings.node_heartbeat_seconds + 1);
    let reaped = if steady {
        bounded(
            ctx.store
                .reap_dead_nodes(ctx.node_id, lease, fresh, now + grace, now),
        )
        .await
    } else {
        Ok(Vec::new())
    };
    match reaped {
        Ok(dead) if !dead.is_empty() => {
            tracing::warn!(node_id = %ctx.node_id, ?dead, "dead nodes reaped: their sessions are in grace");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(node_id = %ctx.node_id, error = %e, "dead-node sweep failed"),
    }
    match bounded(ctx.store.expire_grace(ctx.now())).await {
        Ok(ended) => {
            for p in &ended {
                tracing::info!(node_id = %ctx.node_id, presence_id = %p.id, mesh_id = %p.mesh_id, "grace expired");
                announce(ctx, PeerEvent::Left, p, None);
                ctx.audit.record(
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
        Err(e) => tracing::warn!(node_id = %ctx.node_id, error = %e, "grace sweep failed"),
    }
    super::relay::sweep(ctx).await;
    super::files::sweep(ctx).await;
    if let Err(e) = bounded(sweep_status(ctx)).await {
        tracing::warn!(node_id = %ctx.node_id, error = %e, "status sweep failed");
    }
    if let Err(e) = bounded(ctx.store.sweep_messages(ctx.retention())).await {
        tracing::warn!(node_id = %ctx.node_id, error = %e, "message sweep failed");
    }
    if let Err(e) = bounded(ctx.store.sweep_signatures(ctx.now())).await {
        tracing::warn!(node_id = %ctx.node_id, error = %e, "signature sweep failed");
    }
    if last_prune.elapsed() >= AUDIT_PRUNE_EVERY {
        *last_prune = std::time::Instant::now();
        let days = chrono::Duration::days(ctx.config.settings.audit_retention_days as i64);
        match bounded(ctx.store.prune_audit(ctx.now() - days)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(node_id = %ctx.node_id, pruned = n, "audit entries past retention pruned")
            }
            Err(e) => tracing::warn!(node_id = %ctx.node_id, error = %e, "audit prune failed"),
        }
    }
    if let Ok(depth) = bounded(ctx.store.queue_depth()).await {
        ctx.metrics.queue_depth.set(depth);
    }
    ctx.metrics.sweeps.inc();
    ctx.metrics
        .sweep_duration
        .observe(started.elapsed().as_secs_f64());
}

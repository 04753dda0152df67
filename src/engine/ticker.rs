//! The ticker: every node runs one; it ticks the mesh clocks it owns
//! (PROTOCOL-MESH.md §13), takes over those whose owner left the node
//! registry, and pauses those whose mesh has no live presence. It sleeps
//! until its earliest next tick, at most [`POLL`], and wakes early when any
//! node changes a clock. Each tick goes to every live presence of the mesh
//! on every node.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::events::system_frame;
use super::signal::{Signal, Skip};
use super::{bounded, Ctx};
use crate::store::MeshClock;
use crate::time::iso;

/// Longest sleep between passes: how soon a dead owner's clocks are
/// taken over once it is reaped, and a changed clock is seen without a
/// wake-up.
pub const POLL: Duration = Duration::from_millis(500);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    loop {
        let now = ctx.now();
        let wait = match bounded(ctx.store.tick_clocks(ctx.node_id, now)).await {
            Ok(t) => {
                for c in &t.ticked {
                    emit(&ctx, c);
                }
                for mesh in &t.paused {
                    tracing::info!(mesh_id = %mesh, "mesh clock paused: no live presence");
                }
                match t.next_due {
                    Some(at) => (at - ctx.now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(POLL),
                    None => POLL,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ticking mesh clocks failed");
                RETRY_AFTER_ERROR
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.clocks.notified() => {}
        }
    }
}

/// The tick event, to every live presence of the mesh, the caller's
/// included, on every node.
fn emit(ctx: &Ctx, c: &MeshClock) {
    ctx.metrics.fanout.clock_ticks.inc();
    let data = json!({"tick": c.tick, "simTime": iso(c.sim_time), "speed": c.speed});
    let frame = system_frame(&c.mesh_id, "tick", data, ctx.now());
    ctx.signal_cluster(Signal::Event {
        mesh: c.mesh_id.clone(),
        skip: Skip::Nobody,
        frame,
    });
}

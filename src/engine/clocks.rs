//! The mesh clock's frames (PROTOCOL-MESH.md §13). Ticks are the
//! ticker's (`engine::ticker`); a change here wakes every node's ticker so
//! the owner reschedules at once.

use serde_json::json;

use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::member_of;
use super::signal::Signal;
use crate::protocol::clocks::ClockFrame;
use crate::protocol::wire::Head;
use crate::store::{ClockChange, MeshClock};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: ClockFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    member_of(ctx, me).await?;
    let now = ctx.now();
    let change = match frame {
        ClockFrame::Get => {
            let status = match bounded(ctx.store.get_clock(&me.mesh_id)).await? {
                Some(c) => status(&c),
                // No clock: the zero status, as the reference answers.
                None => json!({"type": "clock_status", "speed": 0, "paused": true, "tick": 0,
                    "simTime": iso(now), "startedAt": iso(now)}),
            };
            return Ok(Reply::Frame(status.to_string()));
        }
        ClockFrame::Set { speed } => ClockChange::Set {
            speed,
            node: ctx.node_id,
        },
        ClockFrame::Pause => ClockChange::Pause,
        ClockFrame::Resume => ClockChange::Resume,
    };
    let Some(c) = bounded(ctx.store.change_clock(&me.mesh_id, change, now)).await? else {
        return Err(Refusal::new("no_clock", "No clock running for this mesh"));
    };
    ctx.signal_cluster(Signal::Clock);
    Ok(Reply::Frame(status(&c).to_string()))
}

fn status(c: &MeshClock) -> serde_json::Value {
    json!({"type": "clock_status", "speed": c.speed, "paused": c.paused, "tick": c.tick,
        "simTime": iso(c.sim_time), "startedAt": iso(c.started_at)})
}

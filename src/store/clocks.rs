//! The mesh clock (PROTOCOL-MESH.md §13): one per mesh, ticked by a single
//! owner node. Every tick is one conditional update of the row, made only
//! by its owner, so tick numbers never repeat; an owner that left the node
//! registry (reaped as dead) loses its clocks to whichever node ticks next.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::StoreResult;

/// Real time between two ticks at `speed`: a simulated minute.
pub fn tick_interval(speed: i32) -> Duration {
    Duration::milliseconds(60_000 / i64::from(speed.clamp(1, 100)))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshClock {
    pub mesh_id: String,
    pub speed: i32,
    pub paused: bool,
    pub tick: i64,
    pub sim_time: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// `None` while paused.
    pub next_tick_at: Option<DateTime<Utc>>,
    pub owner_node: Option<Uuid>,
}

impl MeshClock {
    /// A new clock at `now`, running, owned by `node`.
    pub fn start(mesh_id: &str, speed: i32, node: Uuid, now: DateTime<Utc>) -> MeshClock {
        MeshClock {
            mesh_id: mesh_id.to_string(),
            speed,
            paused: false,
            tick: 0,
            sim_time: now,
            started_at: now,
            next_tick_at: Some(now + tick_interval(speed)),
            owner_node: Some(node),
        }
    }

    /// The clock after its next tick at `now`: one tick, one simulated
    /// minute, whatever was missed (ticks due in a gap are skipped).
    pub fn ticked(&self, now: DateTime<Utc>) -> MeshClock {
        let step = tick_interval(self.speed);
        let mut next = self.next_tick_at.unwrap_or(now) + step;
        if next <= now {
            next = now + step;
        }
        MeshClock {
            tick: self.tick + 1,
            sim_time: self.sim_time + Duration::seconds(60),
            next_tick_at: Some(next),
            ..self.clone()
        }
    }
}

/// What a clock change finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockChange {
    /// `set_clock` with no clock: `speed`, running, owned by `node`.
    Set {
        speed: i32,
        node: Uuid,
    },
    Pause,
    Resume,
}

/// One pass of a node's ticker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticks {
    /// Clocks this node ticked, as they are now.
    pub ticked: Vec<MeshClock>,
    /// Clocks paused because their mesh has no live presence.
    pub paused: Vec<String>,
    /// The earliest next tick of this node's running clocks.
    pub next_due: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait ClockStore: Send + Sync + 'static {
    async fn get_clock(&self, mesh_id: &str) -> StoreResult<Option<MeshClock>>;

    /// Applies a change at `now`; `None` when pausing or resuming a mesh
    /// with no clock. `set_clock` on an existing clock changes its speed
    /// (a paused clock stays paused); a running clock's next tick is then
    /// one interval of the new speed from `now`, as after a resume.
    async fn change_clock(
        &self,
        mesh_id: &str,
        change: ClockChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<MeshClock>>;

    /// `node`'s ticker at `now`: takes over clocks whose owner is gone from
    /// the node registry, pauses its running clocks whose mesh has no live
    /// presence, and ticks (see [`MeshClock::ticked`]) those due.
    async fn tick_clocks(&self, node: Uuid, now: DateTime<Utc>) -> StoreResult<Ticks>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_780_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_tick_is_a_simulated_minute_every_60000_over_speed_ms() {
        for (speed, ms) in [
            (1, 60_000),
            (10, 6_000),
            (7, 8_571),
            (100, 600),
            (0, 60_000),
            (500, 600),
        ] {
            assert_eq!(
                tick_interval(speed),
                Duration::milliseconds(ms),
                "speed {speed}"
            );
        }
        let c = MeshClock::start("m", 10, Uuid::nil(), at(0));
        assert_eq!((c.tick, c.next_tick_at), (0, Some(at(6_000))));
        // On time: the next one is one interval after the last schedule,
        // not after the (slightly late) moment it ran.
        let t1 = c.ticked(at(6_040));
        assert_eq!((t1.tick, t1.next_tick_at), (1, Some(at(12_000))));
        assert_eq!(t1.sim_time - c.sim_time, Duration::seconds(60));
        assert_eq!(t1.started_at, c.started_at);
        // After a gap (a dead owner): one tick, then from now; the ticks
        // due in the gap are skipped, never replayed.
        let t2 = t1.ticked(at(40_000));
        assert_eq!((t2.tick, t2.next_tick_at), (2, Some(at(46_000))));
        assert_eq!(t2.sim_time - t1.sim_time, Duration::seconds(60));
    }
}

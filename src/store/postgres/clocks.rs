//! Mesh clocks in Postgres. A ticker pass is one transaction on the
//! durable pool: a tick whose commit a crash could undo would be emitted
//! again after recovery.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

fn clock(r: &tokio_postgres::Row) -> MeshClock {
    MeshClock {
        mesh_id: r.get(0),
        speed: r.get(1),
        paused: r.get(2),
        tick: r.get(3),
        sim_time: r.get(4),
        started_at: r.get(5),
        next_tick_at: r.get(6),
        owner_node: r.get(7),
    }
}

/// One interval of `speed` as SQL: integer ms, as `tick_interval`.
macro_rules! step {
    ($speed:literal) => {
        concat!("((60000 / ", $speed, ") * interval '1 millisecond')")
    };
}

const GET: &str =
    "SELECT mesh_id, speed, paused, tick, sim_time, started_at, next_tick_at, owner_node
    FROM mesh_clock WHERE mesh_id = $1";

const SET: &str = concat!(
    "INSERT INTO mesh_clock AS c (mesh_id, speed, paused, tick, sim_time, started_at, next_tick_at, owner_node)
     VALUES ($1, $2, false, 0, $3::timestamptz, $3::timestamptz, $4, $5)
     ON CONFLICT (mesh_id) DO UPDATE SET speed = excluded.speed,
       next_tick_at = CASE WHEN c.paused THEN NULL ELSE $3::timestamptz + ",
    step!("excluded.speed"),
    " END
     RETURNING mesh_id, speed, paused, tick, sim_time, started_at, next_tick_at, owner_node"
);

const PAUSE: &str = "UPDATE mesh_clock SET paused = true, next_tick_at = NULL WHERE mesh_id = $1
    RETURNING mesh_id, speed, paused, tick, sim_time, started_at, next_tick_at, owner_node";

const RESUME: &str = concat!(
    "UPDATE mesh_clock SET paused = false, next_tick_at = $2::timestamptz + ",
    step!("speed"),
    " WHERE mesh_id = $1
     RETURNING mesh_id, speed, paused, tick, sim_time, started_at, next_tick_at, owner_node"
);

/// Clocks whose owner is not a registered node. Racing nodes serialize on
/// the row; the second finds a live owner and takes nothing.
const TAKE_OVER: &str = "UPDATE mesh_clock c SET owner_node = $1
    WHERE c.owner_node IS NULL
       OR NOT EXISTS (SELECT 1 FROM broker_node n WHERE n.id = c.owner_node)";

const AUTO_PAUSE: &str = "UPDATE mesh_clock c SET paused = true, next_tick_at = NULL
    WHERE c.owner_node = $1 AND NOT c.paused
      AND NOT EXISTS (SELECT 1 FROM presence p WHERE p.mesh_id = c.mesh_id AND p.state = 'online')
    RETURNING c.mesh_id";

/// A tick: one step on from the last schedule, or from now if that is
/// past already (missed ticks are skipped).
const TICK: &str = concat!(
    "UPDATE mesh_clock SET tick = tick + 1, sim_time = sim_time + interval '60 seconds',
       next_tick_at = CASE WHEN next_tick_at + ",
    step!("speed"),
    " > $2::timestamptz THEN next_tick_at + ",
    step!("speed"),
    " ELSE $2::timestamptz + ",
    step!("speed"),
    " END
     WHERE owner_node = $1 AND NOT paused AND next_tick_at <= $2
     RETURNING mesh_id, speed, paused, tick, sim_time, started_at, next_tick_at, owner_node"
);

const NEXT_DUE: &str =
    "SELECT min(next_tick_at) FROM mesh_clock WHERE owner_node = $1 AND NOT paused";

#[async_trait]
impl ClockStore for PgStore {
    async fn get_clock(&self, mesh_id: &str) -> StoreResult<Option<MeshClock>> {
        let c = self.client().await?;
        let row = c.query_opt(GET, &[&mesh_id]).await.map_err(map_err)?;
        Ok(row.as_ref().map(clock))
    }

    async fn change_clock(
        &self,
        mesh_id: &str,
        change: ClockChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<MeshClock>> {
        let c = self.client().await?;
        let row = match change {
            ClockChange::Set { speed, node } => {
                let next = now + tick_interval(speed);
                c.query_opt(SET, &[&mesh_id, &speed, &now, &next, &node])
                    .await
            }
            ClockChange::Pause => c.query_opt(PAUSE, &[&mesh_id]).await,
            ClockChange::Resume => c.query_opt(RESUME, &[&mesh_id, &now]).await,
        }
        .map_err(map_err)?;
        Ok(row.as_ref().map(clock))
    }

    async fn tick_clocks(&self, node: Uuid, now: DateTime<Utc>) -> StoreResult<Ticks> {
        let mut c = self.client().await?;
        // Most clusters run no clock: one read, no transaction.
        let any: bool = c
            .query_one("SELECT EXISTS (SELECT 1 FROM mesh_clock)", &[])
            .await
            .map_err(map_err)?
            .get(0);
        if !any {
            return Ok(Ticks::default());
        }
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(TAKE_OVER, &[&node]).await.map_err(map_err)?;
        let paused = tx.query(AUTO_PAUSE, &[&node]).await.map_err(map_err)?;
        let ticked = tx.query(TICK, &[&node, &now]).await.map_err(map_err)?;
        let next: Option<DateTime<Utc>> = tx
            .query_one(NEXT_DUE, &[&node])
            .await
            .map_err(map_err)?
            .get(0);
        tx.commit().await.map_err(map_err)?;
        Ok(Ticks {
            ticked: ticked.iter().map(clock).collect(),
            paused: paused.iter().map(|r| r.get(0)).collect(),
            next_due: next,
        })
    }
}

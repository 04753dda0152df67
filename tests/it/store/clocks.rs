//! Mesh clocks: created by `set_clock`, changed in place, ticked only by
//! their owner when due, taken over when the owner leaves the registry,
//! paused when the mesh has nobody live.

use claudemesh_broker::store::*;

use super::*;

async fn node(s: &dyn Store) -> Uuid {
    let id = Uuid::now_v7();
    s.register_node(&NodeRow {
        id,
        addr: "127.0.0.1:1".into(),
        version: "t".into(),
        started_at: t0(),
    })
    .await
    .unwrap();
    id
}

async fn changes_apply_in_place(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let n = node(s).await;
    assert_eq!(s.get_clock(&m.id).await.unwrap(), None);
    assert_eq!(
        s.change_clock(&m.id, ClockChange::Pause, t0())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.change_clock(&m.id, ClockChange::Resume, t0())
            .await
            .unwrap(),
        None
    );
    let set = ClockChange::Set { speed: 10, node: n };
    let c = s.change_clock(&m.id, set, t0()).await.unwrap().unwrap();
    assert_eq!(c, MeshClock::start(&m.id, 10, n, t0()));
    let paused = s
        .change_clock(&m.id, ClockChange::Pause, t0() + secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((paused.paused, paused.next_tick_at), (true, None));
    let faster = ClockChange::Set {
        speed: 20,
        node: Uuid::now_v7(),
    };
    let c = s
        .change_clock(&m.id, faster, t0() + secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.speed, c.paused, c.owner_node),
        (20, true, Some(n)),
        "stays paused and owned"
    );
    let resumed = s
        .change_clock(&m.id, ClockChange::Resume, t0() + secs(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (resumed.paused, resumed.next_tick_at),
        (false, Some(t0() + secs(6)))
    );
    assert_eq!(s.get_clock(&m.id).await.unwrap(), Some(resumed));
}

async fn only_the_owner_ticks_and_only_when_due(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let (mine, theirs) = (node(s).await, node(s).await);
    attach(s, &hello(&alice, "a", theirs, t0())).await;
    let set = ClockChange::Set {
        speed: 10,
        node: mine,
    };
    s.change_clock(&m.id, set, t0()).await.unwrap();
    let early = s.tick_clocks(mine, t0() + secs(5)).await.unwrap();
    assert!(early.ticked.is_empty());
    assert_eq!(early.next_due, Some(t0() + secs(6)));
    let other = s.tick_clocks(theirs, t0() + secs(7)).await.unwrap();
    assert_eq!(other, Ticks::default(), "a live owner keeps its clock");
    let t = s.tick_clocks(mine, t0() + secs(7)).await.unwrap();
    assert_eq!(t.ticked.len(), 1);
    assert_eq!((t.ticked[0].tick, t.next_due), (1, Some(t0() + secs(12))));
    assert!(
        s.tick_clocks(mine, t0() + secs(7))
            .await
            .unwrap()
            .ticked
            .is_empty(),
        "once"
    );
    // A long gap: one tick, the missed ones skipped.
    let t = s.tick_clocks(mine, t0() + secs(60)).await.unwrap();
    assert_eq!((t.ticked[0].tick, t.next_due), (2, Some(t0() + secs(66))));
}

async fn a_gone_owners_clock_is_taken_over_and_continues(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let (dead, alive) = (node(s).await, node(s).await);
    attach(s, &hello(&alice, "a", alive, t0())).await;
    s.change_clock(
        &m.id,
        ClockChange::Set {
            speed: 60,
            node: dead,
        },
        t0(),
    )
    .await
    .unwrap();
    let t = s.tick_clocks(dead, t0() + secs(1)).await.unwrap();
    assert_eq!(t.ticked[0].tick, 1);
    s.remove_node(dead).await.unwrap();
    let t = s.tick_clocks(alive, t0() + secs(5)).await.unwrap();
    assert_eq!(t.ticked.len(), 1, "taken over and due");
    assert_eq!((t.ticked[0].tick, t.ticked[0].owner_node), (2, Some(alive)));
    assert!(
        s.tick_clocks(dead, t0() + secs(9))
            .await
            .unwrap()
            .ticked
            .is_empty(),
        "no longer its"
    );
}

async fn a_mesh_with_nobody_live_pauses_its_clock(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let n = node(s).await;
    let a = attach(s, &hello(&alice, "a", n, t0())).await;
    s.change_clock(&m.id, ClockChange::Set { speed: 60, node: n }, t0())
        .await
        .unwrap();
    s.release_presence(a.id, a.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    let t = s.tick_clocks(n, t0() + secs(2)).await.unwrap();
    assert_eq!(
        (t.ticked.len(), t.paused.clone()),
        (0, vec![m.id.clone()]),
        "grace is not live"
    );
    let c = s.get_clock(&m.id).await.unwrap().unwrap();
    assert_eq!((c.paused, c.tick, c.next_tick_at), (true, 0, None));
    assert_eq!(
        s.tick_clocks(n, t0() + secs(9)).await.unwrap(),
        Ticks::default(),
        "stays paused"
    );
}

crate::conformance!(
    changes_apply_in_place,
    only_the_owner_ticks_and_only_when_due,
    a_gone_owners_clock_is_taken_over_and_continues,
    a_mesh_with_nobody_live_pauses_its_clock,
);

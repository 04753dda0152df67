//! The node registry and dead-node takeover.

use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

fn row(id: Uuid, addr: &str, at: chrono::DateTime<chrono::Utc>) -> NodeRow {
    NodeRow {
        id,
        addr: addr.to_string(),
        version: "v".into(),
        started_at: at,
    }
}

async fn node(s: &dyn Store, id: Uuid) -> Option<NodeInfo> {
    s.list_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id == id)
}

/// Leases are judged on the store's clock; a test waits this long so a
/// heartbeat falls out of a one-second lease.
const PAST_A_LEASE: std::time::Duration = std::time::Duration::from_millis(1_200);
const LEASE: std::time::Duration = std::time::Duration::from_secs(1);
/// How fresh the reaper's own heartbeat must be.
const FRESH: std::time::Duration = std::time::Duration::from_millis(800);

/// A node that registers again (its lease was lost) replaces its row.
async fn registering_again_replaces_the_row(s: &dyn Store) {
    let id = Uuid::now_v7();
    s.register_node(&row(id, "first:1", t0())).await.unwrap();
    let first = node(s, id).await.unwrap().heartbeat_at;
    assert!(s.heartbeat_node(id, true).await.unwrap());
    assert!(node(s, id).await.unwrap().draining);
    let later = t0() + secs(10);
    s.register_node(&row(id, "second:2", later)).await.unwrap();
    let n = node(s, id).await.unwrap();
    assert_eq!(n.addr, "second:2");
    assert_eq!(n.started_at, later);
    assert!(n.heartbeat_at >= first, "stamped by the store's clock");
    assert!(!n.draining);
    assert_eq!(s.list_nodes().await.unwrap().len(), 1);
}

/// Heartbeats are stamped by the store's clock, whatever the node's: a
/// node started "in 2020" still beats now.
async fn heartbeats_tell_a_node_its_row_is_gone(s: &dyn Store) {
    let id = Uuid::now_v7();
    let before = chrono::Utc::now() - secs(60);
    s.register_node(&row(id, "a:1", t0())).await.unwrap();
    let n = node(s, id).await.unwrap();
    assert_eq!((n.started_at, n.draining, n.sockets), (t0(), false, 0));
    assert!(
        n.heartbeat_at > before,
        "{} is the store's now",
        n.heartbeat_at
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(s.heartbeat_node(id, false).await.unwrap());
    assert!(node(s, id).await.unwrap().heartbeat_at > n.heartbeat_at);
    s.remove_node(id).await.unwrap();
    assert!(!s.heartbeat_node(id, false).await.unwrap());
    assert!(node(s, id).await.is_none());
}

async fn nodes_are_listed_oldest_first_with_their_online_sockets(s: &dyn Store) {
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    s.register_node(&row(new, "b:2", t0() + secs(1)))
        .await
        .unwrap();
    s.register_node(&row(old, "a:1", t0())).await.unwrap();
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let p = attach(s, &hello(&alice, "s1", old, t0())).await;
    attach(s, &hello(&alice, "s2", old, t0())).await;
    attach(s, &hello(&alice, "s3", new, t0())).await;
    s.release_presence(p.id, p.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    let listed: Vec<(Uuid, i64)> = s
        .list_nodes()
        .await
        .unwrap()
        .iter()
        .map(|n| (n.id, n.sockets))
        .collect();
    assert_eq!(listed, [(old, 1), (new, 1)], "in grace is not a socket");
}

/// A silent node's online sessions go to grace (saving member state),
/// its claims are freed so another session takes its rows at once, and
/// the asking node is never reaped, however late its own heartbeat.
async fn dead_nodes_are_reaped_their_sessions_to_grace_and_claims_freed(s: &dyn Store) {
    let (me, dead, alive) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for id in [me, dead, alive] {
        s.register_node(&row(id, "x:1", t0())).await.unwrap();
    }
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let a = attach(s, &hello(&alice, "a1", alive, t0())).await;
    let b = attach(s, &hello(&bob, "b1", dead, t0())).await;
    let mid = store_all(s, &[outgoing(&a, t0(), vec![to_member(&b)])]).await;
    assert_eq!(claim_ids(s, claim_for(&b, t0(), 300, 10)).await, mid);
    assert!(
        s.reap_dead_nodes(me, LEASE, FRESH, t0(), t0())
            .await
            .unwrap()
            .is_empty(),
        "every heartbeat is fresh"
    );

    tokio::time::sleep(PAST_A_LEASE).await;
    assert!(s.heartbeat_node(alive, false).await.unwrap());
    let now = t0() + secs(30);
    let grace_until = now + secs(90);
    assert!(
        s.reap_dead_nodes(me, LEASE, FRESH, grace_until, now)
            .await
            .unwrap()
            .is_empty(),
        "a reaper whose own beat is stale (a stalled request) judges nobody"
    );
    assert!(s.heartbeat_node(me, false).await.unwrap());
    let reaped = s
        .reap_dead_nodes(me, LEASE, FRESH, grace_until, now)
        .await
        .unwrap();
    assert_eq!(reaped, [dead], "only the silent other node");
    assert!(node(s, me).await.is_some(), "never the reaper itself");
    let b_now = s.presence_by_id(b.id).await.unwrap().unwrap();
    assert_eq!(b_now.state, PresenceState::Grace);
    assert_eq!(b_now.grace_until, Some(grace_until));
    let a_now = s.presence_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(a_now.state, PresenceState::Online, "a live node's session");
    let saved = s.member_state(&m.id, &bob.id).await.unwrap().unwrap();
    assert_eq!(saved.last_seen_at, now);
    assert_eq!(saved.groups, b.groups);
    // Bob's next session claims the freed row long before the lease.
    let b2 = attach(s, &hello(&bob, "b2", alive, now)).await;
    let claimed = s
        .claim_many(&[claim_for(&b2, now, 30, 10)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claimed.len(), 1);
    assert!(claimed[0].redelivery, "it was pushed once already");
    assert!(s
        .reap_dead_nodes(me, LEASE, FRESH, grace_until, now)
        .await
        .unwrap()
        .is_empty());
}

/// A reaped node takes back the sessions still its own (online, out of
/// grace), not one another node took over, nor one of another node.
async fn a_reaped_node_takes_back_its_sessions_still_in_grace(s: &dyn Store) {
    let (me, reaped, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for id in [me, reaped, other] {
        s.register_node(&row(id, "x:1", t0())).await.unwrap();
    }
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let kept = attach(s, &hello(&alice, "kept", reaped, t0())).await;
    let moved = attach(s, &hello(&alice, "moved", reaped, t0())).await;
    let foreign = attach(s, &hello(&alice, "foreign", other, t0())).await;
    tokio::time::sleep(PAST_A_LEASE).await;
    assert!(s.heartbeat_node(other, false).await.unwrap());
    assert!(s.heartbeat_node(me, false).await.unwrap());
    let grace_until = t0() + secs(90);
    assert_eq!(
        s.reap_dead_nodes(me, LEASE, FRESH, grace_until, t0())
            .await
            .unwrap(),
        [reaped]
    );
    // The "moved" session re-attached on the other node meanwhile.
    match s
        .attach_presence(&hello(&alice, "moved", other, t0() + secs(1)), 100)
        .await
        .unwrap()
    {
        Attach::Reattached(p) => assert_eq!(p.id, moved.id),
        x => panic!("expected a re-attach, got {x:?}"),
    }
    assert!(!s.heartbeat_node(reaped, false).await.unwrap());
    s.register_node(&row(reaped, "x:1", t0())).await.unwrap();
    let back = s
        .readopt_presences(reaped, &[kept.id, moved.id, foreign.id])
        .await
        .unwrap();
    assert_eq!(back, [kept.id]);
    let k = s.presence_by_id(kept.id).await.unwrap().unwrap();
    assert_eq!((k.state, k.grace_until), (PresenceState::Online, None));
    assert_eq!(k.node_id, reaped);
    let listed = s.list_nodes().await.unwrap();
    let mine = listed.iter().find(|n| n.id == reaped).unwrap();
    assert_eq!(mine.sockets, 1);
    assert!(s.readopt_presences(reaped, &[]).await.unwrap().is_empty());
}

crate::conformance!(
    registering_again_replaces_the_row,
    heartbeats_tell_a_node_its_row_is_gone,
    nodes_are_listed_oldest_first_with_their_online_sockets,
    dead_nodes_are_reaped_their_sessions_to_grace_and_claims_freed,
    a_reaped_node_takes_back_its_sessions_still_in_grace,
);

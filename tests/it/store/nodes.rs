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

/// A node that registers again (its lease was lost) replaces its row.
async fn registering_again_replaces_the_row(s: &dyn Store) {
    let id = Uuid::now_v7();
    s.register_node(&row(id, "first:1", t0())).await.unwrap();
    assert!(s.heartbeat_node(id, t0() + secs(5), true).await.unwrap());
    assert!(node(s, id).await.unwrap().draining);
    let later = t0() + secs(10);
    s.register_node(&row(id, "second:2", later)).await.unwrap();
    let n = node(s, id).await.unwrap();
    assert_eq!(n.addr, "second:2");
    assert_eq!(n.started_at, later);
    assert_eq!(n.heartbeat_at, later);
    assert!(!n.draining);
    assert_eq!(s.list_nodes().await.unwrap().len(), 1);
}

async fn heartbeats_tell_a_node_its_row_is_gone(s: &dyn Store) {
    let id = Uuid::now_v7();
    s.register_node(&row(id, "a:1", t0())).await.unwrap();
    let n = node(s, id).await.unwrap();
    assert_eq!((n.heartbeat_at, n.draining, n.sockets), (t0(), false, 0));
    assert!(s.heartbeat_node(id, t0() + secs(3), false).await.unwrap());
    assert_eq!(node(s, id).await.unwrap().heartbeat_at, t0() + secs(3));
    s.remove_node(id).await.unwrap();
    assert!(!s.heartbeat_node(id, t0() + secs(6), false).await.unwrap());
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
    assert!(s
        .heartbeat_node(alive, t0() + secs(20), false)
        .await
        .unwrap());
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let a = attach(s, &hello(&alice, "a1", alive, t0())).await;
    let b = attach(s, &hello(&bob, "b1", dead, t0())).await;
    let mid = store_all(s, &[outgoing(&a, t0(), vec![to_member(&b)])]).await;
    assert_eq!(claim_ids(s, claim_for(&b, t0(), 300, 10)).await, mid);

    let now = t0() + secs(30);
    let grace_until = now + secs(90);
    let reaped = s
        .reap_dead_nodes(me, t0() + secs(15), grace_until, now)
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
        .reap_dead_nodes(me, t0() + secs(15), grace_until, now)
        .await
        .unwrap()
        .is_empty());
}

crate::conformance!(
    registering_again_replaces_the_row,
    heartbeats_tell_a_node_its_row_is_gone,
    nodes_are_listed_oldest_first_with_their_online_sockets,
    dead_nodes_are_reaped_their_sessions_to_grace_and_claims_freed,
);

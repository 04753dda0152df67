//! Presences: attach, release, patches, the status model, grace expiry.

use claudemesh_broker::protocol::{GroupRef, Source, Status};
use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

async fn attach_creates_reattaches_replaces_and_stops_at_capacity(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let (n1, n2) = (Uuid::now_v7(), Uuid::now_v7());
    let first = hello(&alice, "s1", n1, t0());
    let p = attach(s, &first).await;
    assert_eq!(
        (p.id, p.state, p.status),
        (first.id, PresenceState::Online, Status::Idle)
    );
    assert_eq!(s.presence_by_id(p.id).await.unwrap(), Some(p.clone()));

    // Live elsewhere: taken over, same id, the old socket named.
    let mut again = hello(&alice, "s1", n2, t0() + secs(1));
    again.display_name = "renamed".into();
    match s.attach_presence(&again, 100).await.unwrap() {
        Attach::Replaced {
            presence,
            old_node,
            old_conn,
        } => {
            assert_eq!((presence.id, old_node, old_conn), (p.id, n1, p.conn_id));
            assert_eq!((presence.node_id, presence.conn_id), (n2, again.conn_id));
            assert_eq!(presence.display_name, "renamed");
            assert_eq!(presence.connected_at, p.connected_at, "identity kept");
        }
        other => panic!("expected a replacement, got {other:?}"),
    }
    // In grace: re-attached silently.
    assert!(s
        .release_presence(p.id, again.conn_id, t0() + secs(60), t0() + secs(2))
        .await
        .unwrap());
    let back = hello(&alice, "s1", n1, t0() + secs(3));
    match s.attach_presence(&back, 100).await.unwrap() {
        Attach::Reattached(x) => {
            assert_eq!(
                (x.id, x.state, x.grace_until),
                (p.id, PresenceState::Online, None)
            );
        }
        other => panic!("expected a re-attach, got {other:?}"),
    }
    // A mesh at capacity takes no new session, but still its own again.
    attach(s, &hello(&alice, "s2", n1, t0())).await;
    let third = hello(&alice, "s3", n1, t0());
    assert!(matches!(
        s.attach_presence(&third, 2).await.unwrap(),
        Attach::Capacity
    ));
    assert_eq!(s.presence_by_id(third.id).await.unwrap(), None);
    assert!(matches!(
        s.attach_presence(&hello(&alice, "s2", n2, t0()), 2)
            .await
            .unwrap(),
        Attach::Replaced { .. }
    ));
}

async fn release_needs_the_attached_socket_and_saves_member_state(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let p = attach(s, &hello(&alice, "s1", Uuid::now_v7(), t0())).await;
    s.update_presence(p.id, &PresencePatch::Summary("busy".into()))
        .await
        .unwrap();
    s.update_presence(p.id, &PresencePatch::Visible(false))
        .await
        .unwrap();
    assert_eq!(s.member_state(&m.id, &alice.id).await.unwrap(), None);
    let until = t0() + secs(90);
    assert!(
        !s.release_presence(p.id, Uuid::now_v7(), until, t0())
            .await
            .unwrap(),
        "another socket's close releases nothing"
    );
    assert!(s
        .release_presence(p.id, p.conn_id, until, t0())
        .await
        .unwrap());
    assert!(
        !s.release_presence(p.id, p.conn_id, until, t0())
            .await
            .unwrap(),
        "once"
    );
    let now = s.presence_by_id(p.id).await.unwrap().unwrap();
    assert_eq!(
        (now.state, now.grace_until),
        (PresenceState::Grace, Some(until))
    );
    let saved = s.member_state(&m.id, &alice.id).await.unwrap().unwrap();
    assert_eq!(saved.last_summary.as_deref(), Some("busy"));
    assert!(!saved.visible);
    assert_eq!(saved.groups, p.groups);
    assert_eq!(saved.last_seen_at, t0());
}

async fn patches_apply_refuse_past_the_group_cap_and_miss_ended_presences(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let p = attach(s, &hello(&alice, "s1", Uuid::now_v7(), t0())).await;
    let group = |name: &str, role: Option<&str>| GroupRef {
        name: name.into(),
        role: role.map(String::from),
    };
    let join = |g| PresencePatch::JoinGroup(g);
    let PatchResult::Applied(after) = s
        .update_presence(p.id, &join(group("g", Some("lead"))))
        .await
        .unwrap()
    else {
        panic!("applied")
    };
    assert_eq!(
        after.groups,
        [group("g", Some("lead"))],
        "a role change, not a second entry"
    );
    let cap = claudemesh_broker::protocol::limits::MAX_GROUPS;
    for i in 1..cap {
        let r = s
            .update_presence(p.id, &join(group(&format!("x{i}"), None)))
            .await;
        assert!(matches!(r.unwrap(), PatchResult::Applied(_)));
    }
    assert_eq!(
        s.update_presence(p.id, &join(group("one-too-many", None)))
            .await
            .unwrap(),
        PatchResult::Refused
    );
    let stored = s.presence_by_id(p.id).await.unwrap().unwrap();
    assert_eq!(stored.groups.len(), cap, "a refused patch changes nothing");
    let r = s
        .update_presence(p.id, &PresencePatch::LeaveGroup("g".into()))
        .await
        .unwrap();
    let PatchResult::Applied(after) = r else {
        panic!("applied")
    };
    assert!(after.groups.iter().all(|g| g.name != "g"));
    assert_eq!(
        s.update_presence(Uuid::now_v7(), &PresencePatch::Visible(false))
            .await
            .unwrap(),
        PatchResult::Gone
    );
}

/// PROTOCOL.md's status model, as recorded by the store.
async fn status_writes_follow_the_status_model(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let node = Uuid::now_v7();
    let p = attach(s, &hello(&alice, "s1", node, t0())).await;
    let fresh_ms = 30_000;
    let write = |status, source, at| s.write_status(p.id, status, source, at, fresh_ms);
    let w = write(Status::Working, Source::Hook, t0() + secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        w,
        StatusWrite {
            status: Status::Working,
            source: Source::Hook,
            changed: true,
            node_id: node
        }
    );
    // Same status, lower rank, while the hook is fresh: the hook stays.
    let w = write(Status::Working, Source::Manual, t0() + secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w.source, w.changed), (Source::Hook, false));
    // Once stale, the lower source is recorded.
    let w = write(Status::Working, Source::Manual, t0() + secs(40))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w.source, w.changed), (Source::Manual, false));
    // dnd is never cleared by a hook.
    write(Status::Dnd, Source::Manual, t0() + secs(41))
        .await
        .unwrap();
    let w = write(Status::Idle, Source::Hook, t0() + secs(42))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w.status, w.changed), (Status::Dnd, false));
    let stored = s.presence_by_id(p.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.status_source),
        (Status::Dnd, Source::Manual)
    );
    assert_eq!(stored.status_updated_at, t0() + secs(41));
    assert_eq!(
        s.write_status(Uuid::now_v7(), Status::Idle, Source::Hook, t0(), fresh_ms)
            .await
            .unwrap(),
        None
    );
}

async fn stuck_working_flips_to_idle(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let node = Uuid::now_v7();
    let stuck = attach(s, &hello(&alice, "s1", node, t0())).await;
    let recent = attach(s, &hello(&alice, "s2", node, t0())).await;
    s.write_status(stuck.id, Status::Working, Source::Hook, t0(), 0)
        .await
        .unwrap();
    s.write_status(recent.id, Status::Working, Source::Hook, t0() + secs(50), 0)
        .await
        .unwrap();
    let now = t0() + secs(70);
    let flipped = s.expire_working(now - secs(60), now).await.unwrap();
    assert_eq!(
        flipped,
        [PresenceRef {
            id: stuck.id,
            node_id: node,
            conn_id: stuck.conn_id
        }]
    );
    let p = s.presence_by_id(stuck.id).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.status_source, p.status_updated_at),
        (Status::Idle, Source::Jsonl, now)
    );
    let r = s.presence_by_id(recent.id).await.unwrap().unwrap();
    assert_eq!(r.status, Status::Working);
}

/// Ended presences are returned once; rows waiting for them become their
/// member's, so the member's next session gets them.
async fn grace_expiry_ends_presences_and_hands_their_rows_to_the_member(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let node = Uuid::now_v7();
    let a = attach(s, &hello(&alice, "a1", node, t0())).await;
    let b = attach(s, &hello(&bob, "b1", node, t0())).await;
    let kept = attach(s, &hello(&bob, "b-kept", node, t0())).await;
    let mid = store_all(s, &[outgoing(&a, t0(), vec![to_session(&b)])]).await;
    s.release_presence(b.id, b.conn_id, t0() + secs(10), t0())
        .await
        .unwrap();
    s.release_presence(kept.id, kept.conn_id, t0() + secs(100), t0())
        .await
        .unwrap();
    assert!(s.expire_grace(t0() + secs(5)).await.unwrap().is_empty());
    let ended = s.expire_grace(t0() + secs(10)).await.unwrap();
    assert_eq!(ended.iter().map(|p| p.id).collect::<Vec<_>>(), [b.id]);
    assert_eq!(s.presence_by_id(b.id).await.unwrap(), None);
    assert!(s.expire_grace(t0() + secs(10)).await.unwrap().is_empty());
    let b2 = attach(s, &hello(&bob, "b2", node, t0() + secs(11))).await;
    assert_eq!(
        claim_ids(s, claim_for(&b2, t0() + secs(11), 30, 10)).await,
        mid
    );
}

async fn routes_and_listings_are_oldest_first(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let other = mesh(s, "other").await;
    let alice = member(s, &m, "alice").await;
    let carol = member(s, &other, "carol").await;
    let node = Uuid::now_v7();
    let late = attach(s, &hello(&alice, "late", node, t0() + secs(2))).await;
    let early = attach(s, &hello(&alice, "early", node, t0())).await;
    attach(s, &hello(&carol, "c", node, t0())).await;
    s.release_presence(late.id, late.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    let ids: Vec<Uuid> = s
        .list_presences(&m.id)
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        ids,
        [early.id, late.id],
        "in grace counts; another mesh does not"
    );
    let routes = s.route_targets(&m.id).await.unwrap();
    let late = s.presence_by_id(late.id).await.unwrap().unwrap();
    assert_eq!(routes, [RouteTarget::of(&early), RouteTarget::of(&late)]);
    assert!(!routes[1].online, "in grace");
    let view = s.send_routes(&m.id, true).await.unwrap();
    assert_eq!(*view.targets, routes);
}

/// A `hello` and a `session_hello` with one `sessionId` are two presences:
/// the one-live rule holds within a role.
async fn roles_never_collide(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let node = Uuid::now_v7();
    let mut session = hello(&alice, "shared", node, t0());
    session.role = PeerRole::Session;
    let launched = attach(s, &session).await;
    assert_eq!(launched.role, PeerRole::Session);
    let verb = attach(s, &hello(&alice, "shared", node, t0())).await;
    assert_ne!(
        verb.id, launched.id,
        "a CLI verb's hello does not replace the session"
    );
    assert_eq!(verb.role, PeerRole::ControlPlane);
    let mut again = hello(&alice, "shared", node, t0());
    again.role = PeerRole::Session;
    match s.attach_presence(&again, 100).await.unwrap() {
        Attach::Replaced { presence, .. } => assert_eq!(presence.id, launched.id),
        other => panic!("expected the session presence replaced, got {other:?}"),
    }
    let roles: Vec<PeerRole> = s
        .list_presences(&m.id)
        .await
        .unwrap()
        .iter()
        .map(|p| p.role)
        .collect();
    assert_eq!(roles.len(), 2);
    assert!(roles.contains(&PeerRole::Session) && roles.contains(&PeerRole::ControlPlane));
}

/// At-least-once mode is set once and kept by every re-attach.
async fn at_least_once_mode_is_kept_across_reattach(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let node = Uuid::now_v7();
    let p = attach(s, &hello(&alice, "s1", node, t0())).await;
    assert!(!p.at_least_once);
    assert!(s.enter_at_least_once(p.id).await.unwrap());
    assert!(!s.enter_at_least_once(Uuid::now_v7()).await.unwrap());
    s.release_presence(p.id, p.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    let Attach::Reattached(back) = s
        .attach_presence(&hello(&alice, "s1", node, t0()), 100)
        .await
        .unwrap()
    else {
        panic!("re-attached")
    };
    assert!(
        back.at_least_once,
        "a hello without the capability keeps it"
    );
    let mut asks = hello(&alice, "s2", node, t0());
    asks.at_least_once = true;
    assert!(attach(s, &asks).await.at_least_once);
}

fn session(member: &Member, key: &str, id: &str, node: Uuid) -> NewPresence {
    let mut p = hello(member, id, node, t0());
    p.role = PeerRole::Session;
    p.session_pubkey = Some(key.to_string());
    p.at_least_once = true;
    p
}

/// `attach_session`: by key first (re-attach, take-over, or another
/// member's: refused), then a session id held by another key (superseded),
/// then new under the cap; a session presence saves no member state.
async fn session_hellos_attach_by_key_then_by_session_id(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let (n1, n2) = (Uuid::now_v7(), Uuid::now_v7());
    let first = session(&alice, "k1", "sess", n1);
    let Attach::Created(p) = s.attach_session(&first, 10).await.unwrap() else {
        panic!("created")
    };
    s.update_presence(
        p.id,
        &PresencePatch::JoinGroup(GroupRef {
            name: "kept".into(),
            role: None,
        }),
    )
    .await
    .unwrap();
    let mut moved = session(&alice, "k1", "sess-2", n2);
    moved.groups = vec![];
    match s.attach_session(&moved, 10).await.unwrap() {
        Attach::Replaced {
            presence,
            old_node,
            old_conn,
        } => {
            assert_eq!((presence.id, old_node, old_conn), (p.id, n1, p.conn_id));
            assert_eq!(presence.session_id, "sess-2", "refreshed");
            assert!(
                presence.groups.iter().any(|g| g.name == "kept"),
                "groups kept"
            );
        }
        other => panic!("expected a take-over, got {other:?}"),
    }
    assert!(matches!(
        s.attach_session(&session(&bob, "k1", "b", n1), 10)
            .await
            .unwrap(),
        Attach::Foreign
    ));
    s.release_presence(p.id, moved.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    assert_eq!(
        s.member_state(&m.id, &alice.id).await.unwrap(),
        None,
        "a session saves nothing"
    );
    assert!(matches!(
        s.attach_session(&session(&alice, "k1", "sess-3", n1), 10).await.unwrap(),
        Attach::Reattached(x) if x.id == p.id
    ));
    let relaunched = session(&alice, "k2", "sess-3", n2);
    match s.attach_session(&relaunched, 10).await.unwrap() {
        Attach::Superseded { presence, old } => {
            assert_ne!(presence.id, p.id);
            assert_eq!(old.id, p.id);
        }
        other => panic!("expected the old key superseded, got {other:?}"),
    }
    assert_eq!(s.presence_by_id(p.id).await.unwrap(), None);
    assert!(matches!(
        s.attach_session(&session(&alice, "k3", "other", n1), 1)
            .await
            .unwrap(),
        Attach::Capacity
    ));
    // Superseding frees the slot it takes.
    assert!(matches!(
        s.attach_session(&session(&alice, "k4", "sess-3", n1), 1)
            .await
            .unwrap(),
        Attach::Superseded { .. }
    ));
}

/// Activity moves forward only, and only for presences that exist.
async fn activity_is_recorded_forward_only(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let p = attach(s, &hello(&alice, "s1", Uuid::now_v7(), t0())).await;
    assert_eq!(p.last_active_at, None);
    assert_eq!(p.last_active(), t0(), "the attach counts");
    s.record_activity(&[(p.id, t0() + secs(5)), (Uuid::now_v7(), t0())])
        .await
        .unwrap();
    let read = s.presence_by_id(p.id).await.unwrap().unwrap();
    assert_eq!(read.last_active_at, Some(t0() + secs(5)));
    s.record_activity(&[(p.id, t0() + secs(2))]).await.unwrap();
    let read = s.presence_by_id(p.id).await.unwrap().unwrap();
    assert_eq!(read.last_active(), t0() + secs(5), "never backwards");
    s.record_activity(&[]).await.unwrap();
    let listed = s.list_presences(&p.mesh_id).await.unwrap();
    assert_eq!(listed[0].last_active_at, Some(t0() + secs(5)));
}

/// Only live presences count toward the mesh's cap: ghosts of crashed
/// sessions in grace do not lock a full mesh out, and a re-attach within
/// grace is admitted even when the mesh has filled meanwhile.
async fn capacity_counts_live_presences_not_ghosts(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let node = Uuid::now_v7();
    let g1 = attach(s, &hello(&alice, "ghost1", node, t0())).await;
    let g2 = attach(s, &hello(&alice, "ghost2", node, t0())).await;
    for g in [&g1, &g2] {
        s.release_presence(g.id, g.conn_id, t0() + secs(90), t0())
            .await
            .unwrap();
    }
    // Two ghosts in a mesh of two: new sessions still get in.
    attach_capped(s, &hello(&alice, "live1", node, t0()), 2).await;
    attach_capped(s, &hello(&alice, "live2", node, t0()), 2).await;
    assert!(matches!(
        s.attach_presence(&hello(&alice, "live3", node, t0()), 2)
            .await
            .unwrap(),
        Attach::Capacity
    ));
    // The mesh is full of live ones; a ghost's own session comes back.
    assert!(matches!(
        s.attach_presence(&hello(&alice, "ghost1", node, t0() + secs(5)), 2)
            .await
            .unwrap(),
        Attach::Reattached(x) if x.id == g1.id
    ));
    // A 1.37 session's ghost does not count either, nor block its relaunch.
    let k = session(&alice, "k1", "sess", node);
    let ghost = match s.attach_session(&k, 10).await.unwrap() {
        Attach::Created(p) => p,
        x => panic!("{x:?}"),
    };
    s.release_presence(ghost.id, ghost.conn_id, t0() + secs(90), t0())
        .await
        .unwrap();
    assert!(
        matches!(
            s.attach_session(&session(&alice, "k2", "other", node), 3)
                .await
                .unwrap(),
            Attach::Capacity
        ),
        "three live: ghost1, live1, live2"
    );
    assert!(matches!(
        s.attach_session(&session(&alice, "k3", "sess", node), 4)
            .await
            .unwrap(),
        Attach::Superseded { .. }
    ));
}

async fn attach_capped(s: &dyn Store, p: &NewPresence, cap: u32) {
    match s.attach_presence(p, cap).await.unwrap() {
        Attach::Created(_) => {}
        x => panic!("expected a new presence under the cap, got {x:?}"),
    }
}

crate::conformance!(
    capacity_counts_live_presences_not_ghosts,
    activity_is_recorded_forward_only,
    session_hellos_attach_by_key_then_by_session_id,
    at_least_once_mode_is_kept_across_reattach,
    roles_never_collide,
    attach_creates_reattaches_replaces_and_stops_at_capacity,
    release_needs_the_attached_socket_and_saves_member_state,
    patches_apply_refuse_past_the_group_cap_and_miss_ended_presences,
    status_writes_follow_the_status_model,
    stuck_working_flips_to_idle,
    grace_expiry_ends_presences_and_hands_their_rows_to_the_member,
    routes_and_listings_are_oldest_first,
);

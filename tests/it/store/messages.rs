//! Sends, claims, completion, acks and expiry.

use claudemesh_broker::protocol::target::Priority;
use claudemesh_broker::protocol::{Source, Status};
use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

/// Remembers sends for an hour as of `at`.
fn hour(at: chrono::DateTime<chrono::Utc>) -> Retention {
    Retention::new(at, 3600)
}

/// Two sessions of bob and alice sending: (alice, bob1, bob2).
async fn trio(s: &dyn Store) -> (Presence, Presence, Presence) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let node = Uuid::now_v7();
    (
        attach(s, &hello(&alice, "a1", node, t0())).await,
        attach(s, &hello(&bob, "b1", node, t0())).await,
        attach(s, &hello(&bob, "b2", node, t0())).await,
    )
}

async fn claims_are_oldest_first_gated_by_status_and_skip_excluded_sessions(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let mut low = outgoing(&a, t0(), vec![to_session(&b1)]);
    low.message.priority = Priority::Low;
    let mut excluded = outgoing(&a, t0(), vec![to_member(&b1)]);
    excluded.deliveries[0].exclude_session = Some(b1.id);
    let ids = store_all(
        s,
        &[
            low,
            outgoing(&a, t0(), vec![to_member(&b1)]),
            excluded,
            outgoing(&a, t0(), vec![to_session(&b1)]),
        ],
    )
    .await;
    s.write_status(b1.id, Status::Working, Source::Manual, t0(), 0)
        .await
        .unwrap();
    // Working: `now` only; the excluded member row is not b1's to take.
    assert_eq!(
        claim_ids(s, claim_for(&b1, t0(), 30, 10)).await,
        [ids[1], ids[3]]
    );
    s.write_status(b1.id, Status::Idle, Source::Manual, t0(), 0)
        .await
        .unwrap();
    assert_eq!(claim_ids(s, claim_for(&b1, t0(), 30, 10)).await, [ids[0]]);
    assert_eq!(
        claim_ids(s, claim_for(&b2, t0(), 30, 10)).await,
        [ids[2]],
        "a sibling session takes the excluded row"
    );
    assert!(claim_ids(s, claim_for(&b1, t0(), 30, 10)).await.is_empty());
}

/// Each request of a claim batch has its own limit, time and lease.
async fn each_claim_request_keeps_its_own_limit_time_and_lease(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let batch: Vec<Outgoing> = (0..6)
        .map(|i| {
            let to = if i % 2 == 0 { &b1 } else { &b2 };
            outgoing(&a, t0(), vec![to_session(to)])
        })
        .collect();
    store_all(s, &batch).await;
    let short = claim_for(&b1, t0(), 10, 1);
    let long = claim_for(&b2, t0() + secs(1), 100, 3);
    let got = s.claim_many(&[short, long]).await.unwrap();
    assert_eq!((got[0].len(), got[1].len()), (1, 3), "each its own limit");
    // At t0 + 50 b1's lease (10 s) has lapsed, b2's (100 s) has not.
    let later = t0() + secs(50);
    let again = s
        .claim_many(&[claim_for(&b1, later, 10, 10), claim_for(&b2, later, 10, 10)])
        .await
        .unwrap();
    assert_eq!(again[0].len(), 3, "b1's lapsed row and its two others");
    assert_eq!(
        again[0].iter().filter(|c| c.redelivery).count(),
        1,
        "the lapsed one is a redelivery"
    );
    assert!(again[1].is_empty(), "b2's rows are still leased to it");
}

/// A bucket lets through as many sends of a batch as it has tokens, in
/// order; a refused send stores nothing.
async fn a_batch_takes_tokens_in_order_and_refused_sends_store_nothing(s: &dyn Store) {
    let (a, b1, _) = trio(s).await;
    let mut batch: Vec<Outgoing> = (0..3)
        .map(|_| outgoing(&a, t0(), vec![to_session(&b1)]))
        .collect();
    for o in &mut batch {
        o.bucket.burst = 2;
    }
    let stored = s.insert_messages(&batch, &[], &[]).await.unwrap().unwrap();
    assert_eq!(
        stored.results,
        [
            SendResult::Queued { claimed: vec![] },
            SendResult::Queued { claimed: vec![] },
            SendResult::RateLimited
        ]
    );
    assert_eq!(s.queue_depth().await.unwrap(), 2);
    let claimed = claim_ids(s, claim_for(&b1, t0(), 30, 10)).await;
    assert_eq!(claimed, [batch[0].message.id, batch[1].message.id]);
}

/// A row stored pre-claimed comes back with its id, is nobody else's until
/// released, and can be completed by its holder.
async fn preclaimed_rows_are_held_until_released(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let mut held = outgoing(&a, t0(), vec![to_member(&b1), to_session(&b2)]);
    held.deliveries[0].claim = Some(PreClaim {
        session: b1.id,
        node: b1.node_id,
        until: t0() + secs(30),
    });
    let stored = s.insert_messages(&[held], &[], &[]).await.unwrap().unwrap();
    let SendResult::Queued { claimed } = &stored.results[0] else {
        panic!("queued")
    };
    assert_eq!(claimed.len(), 1, "only the pre-claimed row");
    assert!(claim_ids(s, claim_for(&b1, t0(), 30, 10)).await.is_empty());
    s.release_rows(b2.id, claimed).await.unwrap();
    assert!(
        claim_ids(s, claim_for(&b1, t0(), 30, 10)).await.is_empty(),
        "another session cannot release it"
    );
    s.release_rows(b1.id, claimed).await.unwrap();
    let again = s
        .claim_many(&[claim_for(&b1, t0(), 30, 10)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, claimed[0]);
    assert!(again[0].redelivery);
    assert_eq!(s.queue_depth().await.unwrap(), 2);
}

async fn completion_and_acks_touch_only_the_sessions_own_rows(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let ids = store_all(
        s,
        &[
            outgoing(&a, t0(), vec![to_session(&b1)]),
            outgoing(&a, t0(), vec![to_session(&b1)]),
            outgoing(&a, t0(), vec![to_session(&b2)]),
        ],
    )
    .await;
    let rows = s
        .claim_many(&[claim_for(&b1, t0(), 30, 10), claim_for(&b2, t0(), 30, 10)])
        .await
        .unwrap();
    let (b1_rows, b2_rows) = (&rows[0], &rows[1]);
    // Completing b2's row as b1 does nothing; as b2 it goes.
    s.complete_many(&[(b1.id, b2_rows[0].delivery_id)], hour(t0()))
        .await
        .unwrap();
    assert_eq!(s.queue_depth().await.unwrap(), 3);
    s.complete_many(
        &[
            (b2.id, b2_rows[0].delivery_id),
            (b1.id, b1_rows[0].delivery_id),
        ],
        hour(t0()),
    )
    .await
    .unwrap();
    assert_eq!(s.queue_depth().await.unwrap(), 1);
    assert!(
        !s.ack_delivery(b2.id, ids[1], hour(t0())).await.unwrap(),
        "not b2's"
    );
    assert!(!s
        .ack_delivery(b1.id, Uuid::now_v7(), hour(t0()))
        .await
        .unwrap());
    assert!(s.ack_delivery(b1.id, ids[1], hour(t0())).await.unwrap());
    assert!(
        !s.ack_delivery(b1.id, ids[1], hour(t0())).await.unwrap(),
        "once"
    );
    assert_eq!(s.queue_depth().await.unwrap(), 0);
}

/// Delivered messages go without being counted; expired ones go with
/// their rows and are counted.
async fn sweeps_count_only_undelivered_expired_messages(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let soon = |o: Outgoing| Outgoing {
        message: NewMessage {
            expires_at: t0() + secs(60),
            ..o.message
        },
        ..o
    };
    store_all(
        s,
        &[
            soon(outgoing(&a, t0(), vec![to_session(&b1), to_session(&b2)])),
            soon(outgoing(&a, t0(), vec![to_session(&b2)])),
            outgoing(&a, t0(), vec![to_session(&b2)]),
        ],
    )
    .await;
    // b2 gets everything; only the first message still has a reader (b1).
    let got = s
        .claim_many(&[claim_for(&b2, t0(), 30, 10)])
        .await
        .unwrap()
        .remove(0);
    let done: Vec<(Uuid, i64)> = got.iter().map(|c| (b2.id, c.delivery_id)).collect();
    s.complete_many(&done, hour(t0())).await.unwrap();
    assert_eq!(s.sweep_messages(hour(t0())).await.unwrap(), 0);
    assert_eq!(s.queue_depth().await.unwrap(), 1);
    assert_eq!(s.sweep_messages(hour(t0() + secs(60))).await.unwrap(), 1);
    assert_eq!(s.queue_depth().await.unwrap(), 0);
    assert!(claim_ids(s, claim_for(&b1, t0() + secs(61), 30, 10))
        .await
        .is_empty());
}

/// A batch routed by a versioned (cached) view whose mesh changed since
/// is refused whole, writing nothing.
async fn a_stale_routing_view_writes_nothing(s: &dyn Store) {
    let (a, b1, _) = trio(s).await;
    let view = s.send_routes(&a.mesh_id, false).await.unwrap();
    let Some(version) = view.version.clone() else {
        // A store that never caches has no stale view to refuse.
        return;
    };
    let checks = [(a.mesh_id.as_str(), &*version)];
    let send = [outgoing(&a, t0(), vec![to_session(&b1)])];
    assert!(s
        .insert_messages(&send, &[], &checks)
        .await
        .unwrap()
        .is_some());
    s.update_presence(b1.id, &PresencePatch::Summary("moved on".into()))
        .await
        .unwrap();
    let again = [outgoing(&a, t0(), vec![to_session(&b1)])];
    assert!(s
        .insert_messages(&again, &[], &checks)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.queue_depth().await.unwrap(),
        1,
        "nothing of the refused batch"
    );
    let fresh = s.send_routes(&a.mesh_id, true).await.unwrap();
    assert_ne!(fresh.version, view.version);
}

/// After an unknown claim outcome a session may take back rows it already
/// holds; without asking, a held row is not claimable.
async fn a_session_may_reclaim_rows_it_holds(s: &dyn Store) {
    let (a, b1, _) = trio(s).await;
    let ids = store_all(s, &[outgoing(&a, t0(), vec![to_session(&b1)])]).await;
    assert_eq!(claim_ids(s, claim_for(&b1, t0(), 30, 10)).await, ids);
    assert!(claim_ids(s, claim_for(&b1, t0(), 30, 10)).await.is_empty());
    let mut unsure = claim_for(&b1, t0(), 30, 10);
    unsure.reclaim_own = true;
    assert_eq!(claim_ids(s, unsure).await, ids);
}

/// An ack by client id settles only this presence's row of that message.
async fn client_ids_settle_this_presences_rows(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let mut sent = outgoing(&a, t0(), vec![to_session(&b1), to_session(&b2)]);
    sent.message.echo.client_message_id = Some("cm-1".into());
    store_all(s, &[sent]).await;
    s.claim_many(&[claim_for(&b1, t0(), 30, 10), claim_for(&b2, t0(), 30, 10)])
        .await
        .unwrap();
    assert!(!s
        .ack_client_message(b1.id, &b1.mesh_id, "cm-2", hour(t0()))
        .await
        .unwrap());
    assert!(!s
        .ack_client_message(b1.id, "other-mesh", "cm-1", hour(t0()))
        .await
        .unwrap());
    assert!(s
        .ack_client_message(b1.id, &b1.mesh_id, "cm-1", hour(t0()))
        .await
        .unwrap());
    assert!(
        !s.ack_client_message(b1.id, &b1.mesh_id, "cm-1", hour(t0()))
            .await
            .unwrap(),
        "once"
    );
    assert_eq!(s.queue_depth().await.unwrap(), 1, "b2's row stays");
}

crate::conformance!(
    client_ids_settle_this_presences_rows,
    claims_are_oldest_first_gated_by_status_and_skip_excluded_sessions,
    each_claim_request_keeps_its_own_limit_time_and_lease,
    a_batch_takes_tokens_in_order_and_refused_sends_store_nothing,
    preclaimed_rows_are_held_until_released,
    completion_and_acks_touch_only_the_sessions_own_rows,
    sweeps_count_only_undelivered_expired_messages,
    a_stale_routing_view_writes_nothing,
    a_session_may_reclaim_rows_it_holds,
);

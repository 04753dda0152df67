//! What is remembered of a send: its key (idempotency) and the record of
//! its deliveries (`message_status`), for `delivered_retention_seconds`.

use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

fn hour(at: DateTime<Utc>) -> Retention {
    Retention::new(at, 3600)
}

/// (alice, bob1, bob2) in one mesh, bob with two sessions.
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

fn keyed(o: Outgoing, cm: &str) -> Outgoing {
    let mut o = o;
    o.message.echo.client_message_id = Some(cm.into());
    o
}

async fn insert(s: &dyn Store, batch: &[Outgoing]) -> Vec<SendResult> {
    s.insert_messages(batch, &[], &[])
        .await
        .expect("batch stored")
        .expect("no routing check")
        .results
}

/// A key taken earlier in the batch or by an earlier batch stores nothing
/// and names the first send's message; the key is per mesh and sender
/// member.
async fn a_repeated_client_message_id_stores_one_message(s: &dyn Store) {
    let (a, b1, _) = trio(s).await;
    let first = keyed(outgoing(&a, t0(), vec![to_session(&b1)]), "cm-1");
    let again = keyed(outgoing(&a, t0(), vec![to_session(&b1)]), "cm-1");
    let other = keyed(outgoing(&a, t0(), vec![to_session(&b1)]), "cm-2");
    let r = insert(s, &[first.clone(), again, other.clone()]).await;
    assert!(matches!(r[0], SendResult::Queued { .. }), "{r:?}");
    assert_eq!(
        r[1],
        SendResult::Duplicate {
            original: Some(first.message.id)
        }
    );
    assert!(matches!(r[2], SendResult::Queued { .. }), "{r:?}");
    let later = keyed(outgoing(&a, t0() + secs(5), vec![to_session(&b1)]), "cm-1");
    assert_eq!(
        insert(s, &[later]).await,
        [SendResult::Duplicate {
            original: Some(first.message.id)
        }]
    );
    assert_eq!(
        claim_ids(s, claim_for(&b1, t0(), 30, 10)).await,
        [first.message.id, other.message.id],
        "the repeats stored no rows"
    );
    // bob may use alice's client id: keys are per sender member.
    let from_bob = keyed(outgoing(&b1, t0(), vec![to_session(&a)]), "cm-1");
    assert!(matches!(
        insert(s, std::slice::from_ref(&from_bob)).await[..],
        [SendResult::Queued { .. }]
    ));
    let found = s
        .remembered_sends(&[
            (&a.mesh_id, &a.member_id, "cm-1"),
            (&a.mesh_id, &b1.member_id, "cm-1"),
            (&a.mesh_id, &a.member_id, "cm-3"),
            ("other-mesh", &a.member_id, "cm-1"),
        ])
        .await
        .unwrap();
    assert_eq!(
        found,
        [
            Some(first.message.id),
            Some(from_bob.message.id),
            None,
            None
        ]
    );
    assert!(s.remembered_sends(&[]).await.unwrap().is_empty());
}

/// A refused (rate-limited) send leaves no key; a send to nobody does.
async fn only_accepted_sends_are_remembered(s: &dyn Store) {
    let (a, b1, _) = trio(s).await;
    let mut batch = vec![
        keyed(outgoing(&a, t0(), vec![to_session(&b1)]), "ok"),
        keyed(outgoing(&a, t0(), vec![to_session(&b1)]), "refused"),
    ];
    for o in &mut batch {
        o.bucket.burst = 1;
    }
    let r = insert(s, &batch).await;
    assert!(matches!(
        r[..],
        [SendResult::Queued { .. }, SendResult::RateLimited]
    ));
    // Two seconds on: the bucket has refilled.
    let nobody = keyed(outgoing(&a, t0() + secs(2), vec![]), "to-nobody");
    assert!(matches!(
        insert(s, std::slice::from_ref(&nobody)).await[..],
        [SendResult::Queued { .. }]
    ));
    let found = s
        .remembered_sends(&[
            (&a.mesh_id, &a.member_id, "ok"),
            (&a.mesh_id, &a.member_id, "refused"),
            (&a.mesh_id, &a.member_id, "to-nobody"),
        ])
        .await
        .unwrap();
    assert_eq!(
        found,
        [Some(batch[0].message.id), None, Some(nobody.message.id)]
    );
    assert_eq!(
        s.queue_depth().await.unwrap(),
        1,
        "the send to nobody has no rows"
    );
}

/// Each delivery that ends is recorded: to whom (the presence that took
/// it), when, with the message's own fields and never its envelope.
async fn ended_deliveries_are_recorded_per_recipient(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let mut sent = keyed(
        outgoing(&a, t0(), vec![to_session(&b1), to_member(&b2)]),
        "cm-r",
    );
    sent.message.target_spec = "@team".into();
    // The member row is b2's to take.
    sent.deliveries[1].exclude_session = Some(b1.id);
    let id = store_all(s, &[sent]).await[0];
    assert!(s.delivery_records(&a.mesh_id, id).await.unwrap().is_empty());
    let got = s
        .claim_many(&[claim_for(&b1, t0(), 30, 10), claim_for(&b2, t0(), 30, 10)])
        .await
        .unwrap();
    let r1 = got[0][0].delivery_id;
    assert_eq!(got[1].len(), 1, "b2 holds the member row");
    s.complete_many(&[(b1.id, r1)], hour(t0() + secs(1)))
        .await
        .unwrap();
    let recs = s.delivery_records(&a.mesh_id, id).await.unwrap();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.message_id, id);
    assert_eq!(r.mesh_id, a.mesh_id);
    assert_eq!(r.sender_member_id, a.member_id);
    assert_eq!(r.target_spec, "@team");
    assert_eq!(r.client_message_id.as_deref(), Some("cm-r"));
    assert_eq!(r.created_at, t0());
    assert_eq!(r.recipient_member_id, b1.member_id);
    assert_eq!(r.recipient_name, b1.display_name);
    assert_eq!(r.recipient_pubkey, b1.member_pubkey);
    assert_eq!(r.delivered_at, Some(t0() + secs(1)));
    assert!(s
        .ack_delivery(b2.id, id, hour(t0() + secs(2)))
        .await
        .unwrap());
    let recs = s.delivery_records(&a.mesh_id, id).await.unwrap();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[1].recipient_name, b2.display_name);
    assert_eq!(recs[1].delivered_at, Some(t0() + secs(2)));
    assert!(
        s.delivery_records("other-mesh", id)
            .await
            .unwrap()
            .is_empty(),
        "another mesh's message is not found"
    );
}

/// Acks by client id are recorded too; with no retention nothing is.
async fn acks_are_recorded_and_zero_retention_records_nothing(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let one = keyed(outgoing(&a, t0(), vec![to_session(&b1)]), "cm-a");
    let two = keyed(outgoing(&a, t0(), vec![to_session(&b2)]), "cm-b");
    let ids = store_all(s, &[one, two]).await;
    s.claim_many(&[claim_for(&b1, t0(), 30, 10), claim_for(&b2, t0(), 30, 10)])
        .await
        .unwrap();
    assert!(s
        .ack_client_message(b1.id, &a.mesh_id, "cm-a", hour(t0()))
        .await
        .unwrap());
    assert_eq!(
        s.delivery_records(&a.mesh_id, ids[0]).await.unwrap().len(),
        1
    );
    assert!(s
        .ack_client_message(b2.id, &a.mesh_id, "cm-b", Retention::new(t0(), 0))
        .await
        .unwrap());
    assert!(s
        .delivery_records(&a.mesh_id, ids[1])
        .await
        .unwrap()
        .is_empty());
}

/// Past retention keys and records go; within it they stay, and an
/// expired row of a remembered send is recorded as undelivered.
async fn sweeps_forget_sends_past_retention(s: &dyn Store) {
    let (a, b1, b2) = trio(s).await;
    let mut soon = keyed(
        outgoing(&a, t0(), vec![to_session(&b1), to_member(&b2)]),
        "cm-s",
    );
    soon.message.expires_at = t0() + secs(60);
    let id = store_all(s, &[soon]).await[0];
    let got = s
        .claim_many(&[claim_for(&b1, t0(), 30, 10)])
        .await
        .unwrap()
        .remove(0);
    s.complete_many(&[(b1.id, got[0].delivery_id)], hour(t0()))
        .await
        .unwrap();
    assert_eq!(s.sweep_messages(hour(t0() + secs(60))).await.unwrap(), 1);
    let recs = s.delivery_records(&a.mesh_id, id).await.unwrap();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs[0].delivered_at.is_some());
    assert_eq!(recs[1].delivered_at, None, "expired undelivered");
    assert_eq!(recs[1].recipient_member_id, b2.member_id);
    assert_eq!(
        recs[1].recipient_pubkey, b2.member_pubkey,
        "the member's own key"
    );
    let key = (a.mesh_id.as_str(), a.member_id.as_str(), "cm-s");
    assert_eq!(s.remembered_sends(&[key]).await.unwrap(), [Some(id)]);
    // 59 minutes after the send: still remembered.
    s.sweep_messages(hour(t0() + secs(3540))).await.unwrap();
    assert_eq!(s.remembered_sends(&[key]).await.unwrap(), [Some(id)]);
    assert_eq!(s.delivery_records(&a.mesh_id, id).await.unwrap().len(), 2);
    // 61 minutes: forgotten, and the key is free again.
    s.sweep_messages(hour(t0() + secs(3660))).await.unwrap();
    assert_eq!(s.remembered_sends(&[key]).await.unwrap(), [None]);
    assert!(s.delivery_records(&a.mesh_id, id).await.unwrap().is_empty());
    let anew = keyed(
        outgoing(&a, t0() + secs(3660), vec![to_session(&b1)]),
        "cm-s",
    );
    assert!(matches!(
        insert(s, &[anew]).await[..],
        [SendResult::Queued { .. }]
    ));
}

crate::conformance!(
    a_repeated_client_message_id_stores_one_message,
    only_accepted_sends_are_remembered,
    ended_deliveries_are_recorded_per_recipient,
    acks_are_recorded_and_zero_retention_records_nothing,
    sweeps_forget_sends_past_retention,
);

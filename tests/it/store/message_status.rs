//! Message status: one entry per delivery, from live rows and records;
//! held while someone is there to take it, disconnected otherwise.

use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

fn hour(at: DateTime<Utc>) -> Retention {
    Retention::new(at, 3600)
}

async fn statuses_follow_each_delivery(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob, carol) = (
        member(s, &m, "alice").await,
        member(s, &m, "bob").await,
        member(s, &m, "carol").await,
    );
    let node = Uuid::now_v7();
    let a = attach(s, &hello(&alice, "a1", node, t0())).await;
    let b = attach(s, &hello(&bob, "b1", node, t0())).await;
    let c = attach(s, &hello(&carol, "c1", node, t0())).await;
    let mut sent = outgoing(&a, t0(), vec![to_session(&b), to_member(&c)]);
    sent.message.target_spec = "*".into();
    let id = store_all(s, &[sent]).await[0];
    let one = |v: Vec<MessageStatus>| {
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap()
    };
    let st = one(s.message_status(&m.id, id, id, 2).await.unwrap());
    assert_eq!((st.id, st.target_spec.as_str()), (id, "*"));
    let mut got: Vec<(String, String, Outcome)> = st
        .recipients
        .iter()
        .map(|r| (r.name.clone(), r.pubkey.clone(), r.outcome))
        .collect();
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        got,
        [
            (
                b.display_name.clone(),
                b.member_pubkey.clone(),
                Outcome::Held
            ),
            ("carol".into(), carol.pubkey.clone(), Outcome::Held),
        ],
        "the session by its name, an unclaimed member row by the member's"
    );
    // bob's row delivered; carol's presence ends: nobody to take hers.
    let rows = s.claim_many(&[claim_for(&b, t0(), 30, 10)]).await.unwrap();
    s.complete_many(&[(b.id, rows[0][0].delivery_id)], hour(t0() + secs(3)))
        .await
        .unwrap();
    s.end_presences(&[c.id]).await.unwrap();
    let st = one(s.message_status(&m.id, id, id, 2).await.unwrap());
    assert_eq!(st.recipients.len(), 2, "{st:?}");
    assert_eq!(st.recipients[0].outcome, Outcome::Delivered(t0() + secs(3)));
    assert_eq!(st.recipients[0].name, b.display_name);
    assert_eq!(st.recipients[1].outcome, Outcome::Disconnected);
    assert_eq!(st.recipients[1].name, "carol");
    // A range finds both of two ids; another mesh finds nothing.
    let other = outgoing(&a, t0(), vec![to_session(&b)]);
    let id2 = store_all(s, &[other]).await[0];
    let (lo, hi) = if id < id2 { (id, id2) } else { (id2, id) };
    assert_eq!(s.message_status(&m.id, lo, hi, 2).await.unwrap().len(), 2);
    assert_eq!(s.message_status(&m.id, lo, hi, 1).await.unwrap().len(), 1);
    assert!(s
        .message_status("other", id, id, 2)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .message_status(&m.id, Uuid::nil(), Uuid::nil(), 2)
        .await
        .unwrap()
        .is_empty());
    // A row claimed but not yet acked is held, named after its taker.
    let rows = s.claim_many(&[claim_for(&b, t0(), 30, 10)]).await.unwrap();
    assert_eq!(rows[0].len(), 1);
    let st = one(s.message_status(&m.id, id2, id2, 2).await.unwrap());
    assert_eq!(st.recipients[0].outcome, Outcome::Held);
    assert_eq!(st.recipients[0].name, b.display_name);
}

async fn a_delivered_message_is_found_by_its_record(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let node = Uuid::now_v7();
    let a = attach(s, &hello(&alice, "a1", node, t0())).await;
    let b = attach(s, &hello(&bob, "b1", node, t0())).await;
    let id = store_all(s, &[outgoing(&a, t0(), vec![to_session(&b)])]).await[0];
    let rows = s.claim_many(&[claim_for(&b, t0(), 30, 10)]).await.unwrap();
    s.complete_many(&[(b.id, rows[0][0].delivery_id)], hour(t0()))
        .await
        .unwrap();
    s.sweep_messages(hour(t0() + secs(1))).await.unwrap();
    let st = s.message_status(&m.id, id, id, 2).await.unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].recipients[0].outcome, Outcome::Delivered(t0()));
    s.sweep_messages(hour(t0() + secs(3700))).await.unwrap();
    assert!(
        s.message_status(&m.id, id, id, 2).await.unwrap().is_empty(),
        "past retention: as unknown"
    );
}

crate::conformance!(
    statuses_follow_each_delivery,
    a_delivered_message_is_found_by_its_record
);

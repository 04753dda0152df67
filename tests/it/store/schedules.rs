//! Scheduled entries: created under a per-member cap, listed by next fire
//! time, cancelled only by whom the rule allows, and fired exactly once,
//! however many fires race, with the message stored in the same step.

use std::collections::HashSet;
use std::sync::Arc;

use claudemesh_broker::store::*;

use super::*;

fn entry(by: &Member, to: &str, at: DateTime<Utc>, cron: Option<&str>) -> Schedule {
    Schedule {
        id: Uuid::now_v7(),
        mesh_id: by.mesh_id.clone(),
        member_id: by.id.clone(),
        member_pubkey: by.pubkey.clone(),
        member_name: by.display_name.clone(),
        to: to.into(),
        to_member_id: None,
        message: "stand-up".into(),
        subtype: Some("reminder".into()),
        cron: cron.map(Into::into),
        next_at: at,
        created_at: t0(),
        fired_count: 0,
    }
}

/// A plan that sends to every session the store routes by and advances
/// cron entries by a minute.
fn to_everyone(s: &Schedule, targets: &[RouteTarget]) -> Fire {
    let mut message = outgoing_message(s);
    message.echo.subtype = s.subtype.clone();
    Fire {
        send: Some((
            message,
            targets.iter().map(NewDelivery::to_session).collect(),
        )),
        next_at: s.cron.as_ref().map(|_| s.next_at + secs(60)),
    }
}

fn outgoing_message(s: &Schedule) -> NewMessage {
    NewMessage {
        id: new_message_id(s.next_at),
        mesh_id: s.mesh_id.clone(),
        sender_member_id: s.member_id.clone(),
        sender_member_pubkey: s.member_pubkey.clone(),
        sender_session_pubkey: Some(String::new()),
        target_spec: s.to.clone(),
        priority: Priority::Now,
        nonce: String::new(),
        ciphertext: "c3RhbmQtdXA=".into(),
        created_at: s.next_at,
        expires_at: s.next_at + Duration::days(1),
        echo: Default::default(),
    }
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(10);

async fn entries_are_capped_per_member_and_listed_by_next_fire(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let bob = member(s, &m, "bob").await;
    let late = entry(&alice, "*", t0() + secs(20), None);
    let soon = entry(&alice, "*", t0() + secs(10), Some("* * * * *"));
    assert!(s.create_schedule(&late, 2).await.unwrap());
    assert!(s.create_schedule(&soon, 2).await.unwrap());
    let over = entry(&alice, "*", t0(), None);
    assert!(!s.create_schedule(&over, 2).await.unwrap(), "the cap");
    assert!(
        s.create_schedule(&entry(&bob, "*", t0(), None), 2)
            .await
            .unwrap(),
        "another member has its own"
    );
    let listed = s.list_schedules(&m.id, &alice.id).await.unwrap();
    assert_eq!(listed, vec![soon.clone(), late.clone()]);
    assert_eq!(s.list_schedules(&m.id, &bob.id).await.unwrap().len(), 1);
    assert_eq!(s.next_schedule_due().await.unwrap(), Some(t0()));
}

async fn a_cancel_takes_only_what_the_rule_allows(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let other = mesh(s, "o").await;
    let alice = member(s, &m, "alice").await;
    let bob = member(s, &m, "bob").await;
    let e = entry(&alice, "*", t0() + secs(10), None);
    s.create_schedule(&e, 100).await.unwrap();
    assert!(!s.cancel_schedule(&m.id, e.id, Some(&bob.id)).await.unwrap());
    assert!(!s.cancel_schedule(&other.id, e.id, None).await.unwrap());
    assert!(!s
        .cancel_schedule(&m.id, Uuid::now_v7(), None)
        .await
        .unwrap());
    assert!(s
        .cancel_schedule(&m.id, e.id, Some(&alice.id))
        .await
        .unwrap());
    assert!(
        !s.cancel_schedule(&m.id, e.id, Some(&alice.id))
            .await
            .unwrap(),
        "once"
    );
    let e2 = entry(&alice, "*", t0() + secs(10), None);
    s.create_schedule(&e2, 100).await.unwrap();
    assert!(
        s.cancel_schedule(&m.id, e2.id, None).await.unwrap(),
        "privileged"
    );
    assert!(s.list_schedules(&m.id, &alice.id).await.unwrap().is_empty());
    assert_eq!(s.next_schedule_due().await.unwrap(), None);
}

async fn a_fire_stores_the_message_and_advances_or_retires(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let bob = member(s, &m, "bob").await;
    let node = Uuid::now_v7();
    let b = attach(s, &hello(&bob, "b", node, t0())).await;
    let once = entry(&alice, "*", t0(), None);
    let cron = entry(&alice, "*", t0() + secs(1), Some("* * * * *"));
    let later = entry(&alice, "*", t0() + secs(30), None);
    for e in [&once, &cron, &later] {
        s.create_schedule(e, 100).await.unwrap();
    }
    let fired = s
        .fire_due(t0() + secs(5), 100, LEASE, &to_everyone)
        .await
        .unwrap();
    let ids: Vec<Uuid> = fired.iter().map(|f| f.schedule.id).collect();
    assert_eq!(ids, vec![once.id, cron.id], "due ones, oldest first");
    assert_eq!(fired[0].targets.len(), 1, "routed by the mesh's presences");
    assert_eq!(fired[0].targets[0].id, b.id);

    let claimed = s
        .claim_many(&[claim_for(&b, t0() + secs(5), 30, 10)])
        .await
        .unwrap();
    let pushed: Vec<&StoredMessage> = claimed[0].iter().map(|c| &*c.message).collect();
    assert_eq!(pushed.len(), 2);
    assert_eq!(pushed[0].echo.subtype.as_deref(), Some("reminder"));
    assert_eq!(pushed[0].sender_session_pubkey.as_deref(), Some(""));
    assert_eq!(pushed[0].nonce, "");

    let left = s.list_schedules(&m.id, &alice.id).await.unwrap();
    assert_eq!(left.len(), 2, "the one-shot is gone");
    let advanced = left.iter().find(|e| e.id == cron.id).unwrap();
    assert_eq!(
        (advanced.next_at, advanced.fired_count),
        (t0() + secs(61), 1)
    );
    assert!(
        !s.cancel_schedule(&m.id, once.id, None).await.unwrap(),
        "fired"
    );
    let none = s
        .fire_due(t0() + secs(5), 100, LEASE, &to_everyone)
        .await
        .unwrap();
    assert!(none.is_empty(), "nothing is due twice");
}

async fn a_fire_into_nothing_retires_the_entry_and_stores_nothing(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let e = entry(&alice, "@nobody", t0(), None);
    s.create_schedule(&e, 100).await.unwrap();
    let fired = s.fire_due(t0(), 10, LEASE, &to_everyone).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert!(fired[0].fire.send.as_ref().unwrap().1.is_empty());
    assert!(s.list_schedules(&m.id, &alice.id).await.unwrap().is_empty());
    assert_eq!(s.queue_depth().await.unwrap(), 0);
}

async fn a_fire_takes_at_most_its_limit(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    for i in 0..5 {
        s.create_schedule(&entry(&alice, "*", t0() + secs(i), None), 100)
            .await
            .unwrap();
    }
    let first = s
        .fire_due(t0() + secs(9), 3, LEASE, &to_everyone)
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let rest = s
        .fire_due(t0() + secs(9), 3, LEASE, &to_everyone)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(first[2].schedule.next_at, t0() + secs(2));
}

async fn racing_fires_fire_each_entry_once(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let mut want = HashSet::new();
    for i in 0..60 {
        let e = entry(&alice, "*", t0() + Duration::milliseconds(i), None);
        want.insert(e.id);
        s.create_schedule(&e, 100).await.unwrap();
    }
    // The store is shared by reference; spawn needs it owned.
    let shared: Arc<&dyn Store> = Arc::new(s);
    let fires = (0..4).map(|_| {
        let s = shared.clone();
        async move {
            let mut got = Vec::new();
            loop {
                let fired = s
                    .fire_due(t0() + secs(1), 7, LEASE, &to_everyone)
                    .await
                    .unwrap();
                if fired.is_empty() {
                    return got;
                }
                got.extend(fired.into_iter().map(|f| f.schedule.id));
            }
        }
    });
    let all: Vec<Uuid> = futures_util::future::join_all(fires)
        .await
        .into_iter()
        .flatten()
        .collect();
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), 60, "no entry fired twice");
    assert_eq!(distinct, want, "none missing");
}

crate::conformance!(
    entries_are_capped_per_member_and_listed_by_next_fire,
    a_cancel_takes_only_what_the_rule_allows,
    a_fire_stores_the_message_and_advances_or_retires,
    a_fire_into_nothing_retires_the_entry_and_stores_nothing,
    a_fire_takes_at_most_its_limit,
    racing_fires_fire_each_entry_once,
);

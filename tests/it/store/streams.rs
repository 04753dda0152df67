//! Streams: a registry with a cap, created once per name; subscriptions
//! that belong to a presence (kept while it is in grace, gone when it
//! ends).

use claudemesh_broker::store::*;

use super::*;

fn row(by: &Member, name: &str, at: DateTime<Utc>) -> StreamRow {
    StreamRow {
        id: Uuid::now_v7(),
        mesh_id: by.mesh_id.clone(),
        name: name.into(),
        created_by: by.display_name.clone(),
        created_by_member: by.id.clone(),
        created_at: at,
    }
}

async fn the_registry_is_capped_and_created_once_per_name(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let builds = row(&alice, "builds", t0() + secs(1));
    assert_eq!(
        s.create_stream(&builds, 2).await.unwrap(),
        StreamCreated::Created
    );
    let again = row(&alice, "builds", t0() + secs(5));
    assert_eq!(
        s.create_stream(&again, 2).await.unwrap(),
        StreamCreated::Existing(builds.id)
    );
    let logs = row(&alice, "logs", t0());
    assert_eq!(
        s.create_stream(&logs, 2).await.unwrap(),
        StreamCreated::Created
    );
    assert_eq!(
        s.create_stream(&row(&alice, "third", t0()), 2)
            .await
            .unwrap(),
        StreamCreated::Full
    );
    assert_eq!(
        s.create_stream(&again, 2).await.unwrap(),
        StreamCreated::Existing(builds.id),
        "an existing name is found even at the cap"
    );
    let listed: Vec<StreamRow> = s
        .list_streams(&m.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.stream)
        .collect();
    assert_eq!(listed, vec![logs, builds], "by creation time");
    let other = mesh(s, "o").await;
    assert!(s.list_streams(&other.id).await.unwrap().is_empty());
}

async fn subscriptions_belong_to_presences(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let bob = member(s, &m, "bob").await;
    let (n1, n2) = (Uuid::now_v7(), Uuid::now_v7());
    let a = attach(s, &hello(&alice, "a", n1, t0())).await;
    let b = attach(s, &hello(&bob, "b", n2, t0())).await;
    s.create_stream(&row(&alice, "builds", t0()), 10)
        .await
        .unwrap();
    assert!(s.subscribe(&m.id, "builds", a.id).await.unwrap());
    assert!(
        s.subscribe(&m.id, "builds", a.id).await.unwrap(),
        "again: nothing new"
    );
    assert!(s.subscribe(&m.id, "builds", b.id).await.unwrap());
    assert!(s.subscribe(&m.id, "adhoc", b.id).await.unwrap(), "any name");
    assert!(
        !s.subscribe(&m.id, "builds", Uuid::now_v7()).await.unwrap(),
        "no such presence"
    );
    let other = mesh(s, "o").await;
    assert!(
        !s.subscribe(&other.id, "builds", a.id).await.unwrap(),
        "another mesh's"
    );
    let count = |l: Vec<ListedStream>| l[0].subscribers;
    assert_eq!(count(s.list_streams(&m.id).await.unwrap()), 2);

    assert_eq!(s.presence_streams(a.id).await.unwrap(), ["builds"]);
    assert_eq!(s.presence_streams(b.id).await.unwrap(), ["adhoc", "builds"]);

    // In grace: still counted, but no socket to write to.
    s.release_presence(b.id, b.conn_id, t0() + secs(60), t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(count(s.list_streams(&m.id).await.unwrap()), 2);
    assert_eq!(
        s.presence_streams(b.id).await.unwrap().len(),
        2,
        "kept for a re-attach"
    );
    // Ended: gone from every stream.
    s.expire_grace(t0() + secs(61)).await.unwrap();
    assert_eq!(count(s.list_streams(&m.id).await.unwrap()), 1);
    assert!(
        s.presence_streams(b.id).await.unwrap().is_empty(),
        "ended with it"
    );
    s.unsubscribe(&m.id, "builds", a.id).await.unwrap();
    s.unsubscribe(&m.id, "builds", a.id).await.unwrap();
    assert_eq!(count(s.list_streams(&m.id).await.unwrap()), 0);
}

crate::conformance!(
    the_registry_is_capped_and_created_once_per_name,
    subscriptions_belong_to_presences,
);

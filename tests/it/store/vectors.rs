//! Vectors: literal case-insensitive substring search, oldest first;
//! collections listed while they hold points; caps; the storer rule.

use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

fn point(mesh: &Mesh, by: &Member, coll: &str, text: &str, at: DateTime<Utc>) -> Point {
    Point {
        id: new_message_id(at),
        mesh_id: mesh.id.clone(),
        collection: coll.into(),
        text: text.into(),
        metadata: serde_json::json!({"source": "pr-42"})
            .as_object()
            .unwrap()
            .clone(),
        stored_by_member: by.id.clone(),
        stored_by_pubkey: by.pubkey.clone(),
        stored_at: at,
    }
}

async fn points_are_found_by_substring_and_deleted_by_their_storer(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    assert!(s.list_collections(&m.id).await.unwrap().is_empty());
    let a = point(&m, &alice, "notes", "Retry with JITTER", t0());
    let b = point(&m, &alice, "notes", "50% of calls_fail", t0() + secs(1));
    let c = point(&m, &bob, "b_other", "jitter again", t0() + secs(2));
    for p in [&a, &b, &c] {
        assert_eq!(s.store_point(p, 2, 3).await.unwrap(), PointStored::Stored);
    }
    assert_eq!(
        s.store_point(&point(&m, &bob, "third", "x", t0()), 5, 3)
            .await
            .unwrap(),
        PointStored::Full,
        "points cap"
    );
    assert_eq!(
        s.store_point(&point(&m, &bob, "third", "x", t0()), 2, 10)
            .await
            .unwrap(),
        PointStored::Full,
        "collections cap"
    );
    assert_eq!(
        s.list_collections(&m.id).await.unwrap(),
        ["b_other", "notes"]
    );
    let ids = |v: Vec<Point>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.search_points(&m.id, "notes", "jitter", 10).await.unwrap()),
        [a.id]
    );
    assert_eq!(
        ids(s.search_points(&m.id, "notes", "", 10).await.unwrap()),
        [a.id, b.id],
        "oldest first"
    );
    assert_eq!(
        ids(s.search_points(&m.id, "notes", "", 1).await.unwrap()),
        [a.id]
    );
    assert_eq!(
        ids(s.search_points(&m.id, "notes", "0% of", 10).await.unwrap()),
        [b.id]
    );
    assert!(
        s.search_points(&m.id, "notes", "a_l", 10)
            .await
            .unwrap()
            .is_empty(),
        "`_` is literal"
    );
    assert_eq!(
        ids(s.search_points(&m.id, "notes", "s_fail", 10).await.unwrap()),
        [b.id]
    );
    assert!(s
        .search_points(&m.id, "nothing", "a", 10)
        .await
        .unwrap()
        .is_empty());
    let got = &s.search_points(&m.id, "notes", "retry", 10).await.unwrap()[0];
    assert_eq!(got, &a);
    assert_eq!(
        s.delete_point(&m.id, "notes", a.id, &bob.id, false)
            .await
            .unwrap(),
        PointDeleted::Forbidden
    );
    assert_eq!(
        s.delete_point(&m.id, "b_other", a.id, &alice.id, false)
            .await
            .unwrap(),
        PointDeleted::NotFound,
        "another collection"
    );
    assert_eq!(
        s.delete_point(&m.id, "notes", Uuid::now_v7(), &alice.id, true)
            .await
            .unwrap(),
        PointDeleted::NotFound
    );
    assert_eq!(
        s.delete_point(&m.id, "notes", a.id, &alice.id, false)
            .await
            .unwrap(),
        PointDeleted::Deleted
    );
    assert_eq!(
        s.delete_point(&m.id, "b_other", c.id, &alice.id, true)
            .await
            .unwrap(),
        PointDeleted::Deleted,
        "privileged"
    );
    assert_eq!(
        s.list_collections(&m.id).await.unwrap(),
        ["notes"],
        "listed while it holds points"
    );
}

crate::conformance!(points_are_found_by_substring_and_deleted_by_their_storer);

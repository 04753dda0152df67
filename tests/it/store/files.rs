//! Shared files' metadata: reservations that hold quota until stored or
//! dropped, the reading views (stored, live, newest first), accesses,
//! deletes and grants by their rules, expiry, the one download key, and
//! where sessions' sockets came from.

use claudemesh_broker::store::*;

use super::*;

fn row(by: &Member, name: &str, size: i64, at: DateTime<Utc>) -> FileRow {
    FileRow {
        id: Uuid::now_v7(),
        mesh_id: by.mesh_id.clone(),
        name: name.into(),
        size,
        content_type: Some("text/plain".into()),
        tags: vec!["q2".into()],
        uploader_member: by.id.clone(),
        uploaded_by: by.display_name.clone(),
        persistent: true,
        expires_at: None,
        target_spec: None,
        encrypted: false,
        owner_pubkey: None,
        created_at: at,
    }
}

fn key(peer: &str, sealed: &str) -> FileKey {
    FileKey {
        peer_pubkey: peer.into(),
        sealed_key: sealed.into(),
    }
}

async fn stored(s: &dyn Store, f: &FileRow, keys: &[FileKey]) {
    assert_eq!(
        s.reserve_file(f, keys, u64::MAX).await.unwrap(),
        Reserved::Reserved
    );
    assert!(s.finish_file(f.id, f.size).await.unwrap());
}

async fn reservations_hold_quota_until_stored_or_dropped(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let a = row(&alice, "a.txt", 60, t0());
    assert_eq!(
        s.reserve_file(&a, &[key("k1", "s1")], 100).await.unwrap(),
        Reserved::Reserved
    );
    assert!(
        s.stored_file(&m.id, a.id, t0()).await.unwrap().is_none(),
        "not readable while uploading"
    );
    let b = row(&alice, "b.txt", 50, t0());
    assert_eq!(
        s.reserve_file(&b, &[], 100).await.unwrap(),
        Reserved::OverQuota,
        "60 reserved + 50"
    );
    // Stored smaller than reserved: the quota counts what it holds.
    assert!(s.finish_file(a.id, 40).await.unwrap());
    assert!(!s.finish_file(a.id, 40).await.unwrap(), "once");
    assert_eq!(
        s.reserve_file(&b, &[], 100).await.unwrap(),
        Reserved::Reserved
    );
    s.abandon_file(b.id).await.unwrap();
    let c = row(&alice, "c.txt", 60, t0());
    assert_eq!(
        s.reserve_file(&c, &[], 100).await.unwrap(),
        Reserved::Reserved,
        "b's reservation freed"
    );
    s.abandon_file(a.id).await.unwrap();
    let got = s.stored_file(&m.id, a.id, t0()).await.unwrap().unwrap();
    assert_eq!(
        (got.file.size, got.keys.clone()),
        (40, vec![key("k1", "s1")]),
        "a stored file is not abandoned"
    );
    assert_eq!(got.file.name, "a.txt");
    // Another mesh's quota is its own.
    let other = mesh(s, "o").await;
    let olga = member(s, &other, "olga").await;
    assert_eq!(
        s.reserve_file(&row(&olga, "x", 100, t0()), &[], 100)
            .await
            .unwrap(),
        Reserved::Reserved
    );
    assert!(
        s.stored_file(&other.id, a.id, t0())
            .await
            .unwrap()
            .is_none(),
        "not in another mesh"
    );
}

async fn listings_show_live_files_newest_first(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let old = row(&alice, "old", 1, t0());
    let new = row(&alice, "new", 1, t0() + secs(10));
    let mut brief = row(&alice, "brief", 1, t0() + secs(5));
    brief.persistent = false;
    brief.expires_at = Some(t0() + secs(60));
    for f in [&old, &new, &brief] {
        stored(s, f, &[]).await;
    }
    let uploading = row(&alice, "uploading", 1, t0() + secs(20));
    s.reserve_file(&uploading, &[], u64::MAX).await.unwrap();
    let names = |v: Vec<StoredFile>| v.into_iter().map(|f| f.file.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.list_files(&m.id, t0() + secs(30), 10).await.unwrap()),
        ["new", "brief", "old"]
    );
    assert_eq!(
        names(s.list_files(&m.id, t0() + secs(30), 1).await.unwrap()),
        ["new"]
    );
    assert_eq!(
        names(s.list_files(&m.id, t0() + secs(60), 10).await.unwrap()),
        ["new", "old"],
        "expired at its time"
    );
    assert!(s
        .stored_file(&m.id, brief.id, t0() + secs(60))
        .await
        .unwrap()
        .is_none());
}

async fn deletes_and_grants_follow_their_rules(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let f = row(&alice, "f", 1, t0());
    stored(s, &f, &[key("k1", "s1")]).await;
    assert_eq!(
        s.grant_file_key(&m.id, f.id, &key("k2", "s2"), 2, t0())
            .await
            .unwrap(),
        Granted::Granted
    );
    assert_eq!(
        s.grant_file_key(&m.id, f.id, &key("k3", "s3"), 2, t0())
            .await
            .unwrap(),
        Granted::Full
    );
    assert_eq!(
        s.grant_file_key(&m.id, f.id, &key("k1", "new"), 2, t0())
            .await
            .unwrap(),
        Granted::Granted,
        "replacing one at the cap"
    );
    let keys = s
        .stored_file(&m.id, f.id, t0())
        .await
        .unwrap()
        .unwrap()
        .keys;
    assert_eq!(keys, [key("k1", "new"), key("k2", "s2")]);
    let other = mesh(s, "o").await;
    assert_eq!(
        s.grant_file_key(&other.id, f.id, &key("k4", "s4"), 9, t0())
            .await
            .unwrap(),
        Granted::Missing
    );
    assert_eq!(
        s.delete_file(&m.id, f.id, &bob.id, false, t0())
            .await
            .unwrap(),
        FileDeleted::Forbidden
    );
    assert_eq!(
        s.delete_file(&other.id, f.id, &alice.id, true, t0())
            .await
            .unwrap(),
        FileDeleted::Missing
    );
    match s
        .delete_file(&m.id, f.id, &bob.id, true, t0())
        .await
        .unwrap()
    {
        FileDeleted::Deleted(d) => assert_eq!(d.id, f.id),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.delete_file(&m.id, f.id, &alice.id, false, t0())
            .await
            .unwrap(),
        FileDeleted::Missing
    );
    assert!(s.stored_file(&m.id, f.id, t0()).await.unwrap().is_none());
    assert_eq!(
        s.grant_file_key(&m.id, f.id, &key("k5", "s5"), 9, t0())
            .await
            .unwrap(),
        Granted::Missing,
        "deleted"
    );
    // A deleted file's bytes no longer count.
    assert_eq!(
        s.reserve_file(&row(&alice, "g", 1, t0()), &[], 1)
            .await
            .unwrap(),
        Reserved::Reserved
    );
}

async fn accesses_are_recorded_per_file(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let f = row(&alice, "f", 1, t0());
    stored(s, &f, &[]).await;
    for (i, who) in ["bob", "carol", "dave"].iter().enumerate() {
        s.record_access(f.id, who, t0() + secs(i as i64))
            .await
            .unwrap();
    }
    s.record_access(Uuid::now_v7(), "nobody", t0())
        .await
        .unwrap();
    let got = s.file_accesses(&m.id, f.id, 2).await.unwrap();
    assert_eq!(
        got,
        [
            ("dave".to_string(), t0() + secs(2)),
            ("carol".to_string(), t0() + secs(1))
        ]
    );
    let other = mesh(s, "o").await;
    assert!(s
        .file_accesses(&other.id, f.id, 9)
        .await
        .unwrap()
        .is_empty());
}

async fn expiry_ends_ephemeral_files_and_stale_reservations(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let mut brief = row(&alice, "brief", 1, t0());
    brief.persistent = false;
    brief.expires_at = Some(t0() + secs(60));
    stored(s, &brief, &[]).await;
    let kept = row(&alice, "kept", 1, t0());
    stored(s, &kept, &[]).await;
    let stuck = row(&alice, "stuck", 1, t0());
    s.reserve_file(&stuck, &[], u64::MAX).await.unwrap();
    let fresh = row(&alice, "fresh", 1, t0() + secs(100));
    s.reserve_file(&fresh, &[], u64::MAX).await.unwrap();
    assert!(s
        .expire_files(t0() + secs(30), t0() - secs(1))
        .await
        .unwrap()
        .is_empty());
    let mut gone = s
        .expire_files(t0() + secs(60), t0() + secs(50))
        .await
        .unwrap();
    gone.sort();
    let mut want = vec![brief.blob_key(), stuck.blob_key()];
    want.sort();
    assert_eq!(gone, want);
    assert!(
        s.expire_files(t0() + secs(61), t0() + secs(51))
            .await
            .unwrap()
            .is_empty(),
        "once"
    );
    assert!(
        !s.finish_file(stuck.id, 1).await.unwrap(),
        "the stale reservation is gone"
    );
    assert!(s.finish_file(fresh.id, 1).await.unwrap());
    assert!(s
        .stored_file(&m.id, kept.id, t0() + secs(61))
        .await
        .unwrap()
        .is_some());
}

async fn the_download_key_is_made_once(s: &dyn Store) {
    let first = s
        .download_key(b"first-candidate-key-0123456789ab")
        .await
        .unwrap();
    assert_eq!(first, b"first-candidate-key-0123456789ab");
    let again = s
        .download_key(b"second-candidate-key-0123456789a")
        .await
        .unwrap();
    assert_eq!(again, first);
}

async fn sessions_are_found_by_the_address_they_came_from(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let node = Uuid::now_v7();
    let a = attach(s, &hello(&alice, "a", node, t0())).await;
    let b = attach(s, &hello(&bob, "b", node, t0() + secs(5))).await;
    s.record_presence_addr(a.id, "10.0.0.1").await.unwrap();
    s.record_presence_addr(b.id, "10.0.0.1").await.unwrap();
    s.record_presence_addr(Uuid::now_v7(), "10.0.0.1")
        .await
        .unwrap();
    assert_eq!(
        s.presence_at_addr(&m.id, "10.0.0.1", None).await.unwrap(),
        Some(b.id),
        "the latest"
    );
    assert_eq!(
        s.presence_at_addr(&m.id, "10.0.0.1", Some(&alice.id))
            .await
            .unwrap(),
        Some(a.id)
    );
    assert_eq!(
        s.presence_at_addr(&m.id, "10.0.0.2", None).await.unwrap(),
        None
    );
    s.release_presence(b.id, b.conn_id, t0() + secs(60), t0() + secs(6))
        .await
        .unwrap();
    assert_eq!(
        s.presence_at_addr(&m.id, "10.0.0.1", None).await.unwrap(),
        Some(a.id),
        "online only"
    );
    let other = mesh(s, "o").await;
    assert_eq!(
        s.presence_at_addr(&other.id, "10.0.0.1", None)
            .await
            .unwrap(),
        None
    );
}

crate::conformance!(
    reservations_hold_quota_until_stored_or_dropped,
    listings_show_live_files_newest_first,
    deletes_and_grants_follow_their_rules,
    accesses_are_recorded_per_file,
    expiry_ends_ephemeral_files_and_stale_reservations,
    the_download_key_is_made_once,
    sessions_are_found_by_the_address_they_came_from,
);

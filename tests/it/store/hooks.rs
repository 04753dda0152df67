//! Hook lookups, pending hooks, shared token buckets and single-use hello
//! signatures.

use claudemesh_broker::protocol::Status;
use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

async fn hooks_find_presences_by_token_and_by_pid_and_cwd(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let node = Uuid::now_v7();
    let at = |pid: Option<i64>, cwd: &str, session: &str, when| {
        let mut h = hello(&alice, session, node, when);
        h.pid = pid;
        h.cwd = Some(cwd.to_string());
        h
    };
    let exact = attach(s, &at(Some(7), "/p", "s1", t0())).await;
    let older = attach(s, &at(Some(8), "/q", "s2", t0())).await;
    let newer = attach(s, &at(Some(9), "/q", "s3", t0() + secs(1))).await;

    let found = s
        .presence_by_hook_token(&exact.hook_token_hash)
        .await
        .unwrap();
    assert_eq!(found.map(|p| p.id), Some(exact.id));
    assert_eq!(s.presence_by_hook_token(b"nope").await.unwrap(), None);
    assert_eq!(s.hook_targets(Some(7), "/p").await.unwrap(), [exact.id]);
    assert_eq!(
        s.hook_targets(Some(8), "/q").await.unwrap(),
        [older.id],
        "(pid, cwd) first"
    );
    assert_eq!(
        s.hook_targets(Some(1), "/q").await.unwrap(),
        [newer.id],
        "else the newest with that cwd"
    );
    assert!(s.hook_targets(Some(7), "/none").await.unwrap().is_empty());
    // A session in grace has no socket to report on.
    s.release_presence(exact.id, exact.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    assert!(s.hook_targets(Some(7), "/p").await.unwrap().is_empty());
    let in_grace = s
        .presence_by_hook_token(&exact.hook_token_hash)
        .await
        .unwrap();
    assert_eq!(
        in_grace.map(|p| p.id),
        Some(exact.id),
        "its token still works"
    );
}

async fn pending_hooks_are_taken_once_and_only_while_fresh(s: &dyn Store) {
    s.insert_pending_status(1, "/a", Status::Working, t0())
        .await
        .unwrap();
    // A second hook for the same (pid, cwd) replaces the first.
    s.insert_pending_status(1, "/a", Status::Dnd, t0() + secs(1))
        .await
        .unwrap();
    s.insert_pending_status(2, "/b", Status::Working, t0())
        .await
        .unwrap();
    s.insert_pending_status(3, "/c", Status::Idle, t0() + secs(20))
        .await
        .unwrap();
    assert_eq!(
        s.take_pending_status(1, "/a", t0()).await.unwrap(),
        Some(Status::Dnd)
    );
    assert_eq!(s.take_pending_status(1, "/a", t0()).await.unwrap(), None);
    assert_eq!(
        s.take_pending_status(2, "/b", t0() + secs(5))
            .await
            .unwrap(),
        None,
        "too old for this hello"
    );
    assert_eq!(s.sweep_pending_status(t0() + secs(10)).await.unwrap(), 0);
    assert_eq!(s.sweep_pending_status(t0() + secs(30)).await.unwrap(), 1);
    assert_eq!(s.take_pending_status(3, "/c", t0()).await.unwrap(), None);
}

/// Buckets are keyed by (scope, key), start full, refill at their rate up
/// to their burst, and an idle bucket may be swept (it would be full).
async fn buckets_refill_at_their_rate_up_to_their_burst(s: &dyn Store) {
    let b = Bucket {
        key: "k".into(),
        rate_per_min: 60,
        burst: 2,
    };
    let take = |scope: &'static str, at| s.take_token(scope, &b, at);
    assert!(take("hook", t0()).await.unwrap());
    assert!(take("hook", t0()).await.unwrap());
    assert!(!take("hook", t0()).await.unwrap(), "burst spent");
    assert!(take("other", t0()).await.unwrap(), "another scope");
    assert!(take("hook", t0() + secs(1)).await.unwrap(), "one a second");
    assert!(!take("hook", t0() + secs(1)).await.unwrap());
    // An hour of refill is still only the burst.
    assert!(take("hook", t0() + secs(3600)).await.unwrap());
    assert!(take("hook", t0() + secs(3600)).await.unwrap());
    assert!(!take("hook", t0() + secs(3600)).await.unwrap());
    assert_eq!(s.sweep_rate_buckets(t0() + secs(1)).await.unwrap(), 1);
    assert_eq!(s.sweep_rate_buckets(t0() + secs(4000)).await.unwrap(), 1);
    assert!(take("hook", t0() + secs(4000)).await.unwrap(), "full again");
}

/// A signature is accepted once until swept; one given back may be used.
async fn signatures_are_single_use_until_swept(s: &dyn Store) {
    let (a, b) = (b"sig-a".as_slice(), b"sig-b".as_slice());
    assert!(s.use_signature(a, t0() + secs(65)).await.unwrap());
    assert!(
        !s.use_signature(a, t0() + secs(65)).await.unwrap(),
        "replayed"
    );
    assert!(s.use_signature(b, t0() + secs(10)).await.unwrap());
    s.release_signature(b).await.unwrap();
    assert!(
        s.use_signature(b, t0() + secs(10)).await.unwrap(),
        "given back"
    );
    assert_eq!(s.sweep_signatures(t0() + secs(30)).await.unwrap(), 1);
    assert!(s.use_signature(b, t0() + secs(40)).await.unwrap(), "swept");
    assert!(
        !s.use_signature(a, t0() + secs(65)).await.unwrap(),
        "not yet swept"
    );
}

crate::conformance!(
    signatures_are_single_use_until_swept,
    hooks_find_presences_by_token_and_by_pid_and_cwd,
    pending_hooks_are_taken_once_and_only_while_fresh,
    buckets_refill_at_their_rate_up_to_their_burst,
);

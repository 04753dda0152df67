//! Contexts: one per member, replaced keeping its id; found by summary
//! substring or exact tag, newest first.

use claudemesh_broker::store::*;

use super::*;

fn ctx_of(mesh: &Mesh, by: &Member, summary: &str, tags: &[&str], at: DateTime<Utc>) -> Context {
    Context {
        id: new_message_id(at),
        mesh_id: mesh.id.clone(),
        member_id: by.id.clone(),
        peer_name: by.display_name.clone(),
        summary: summary.into(),
        files_read: vec!["src/auth.ts".into()],
        key_findings: vec!["tokens never expire".into()],
        tags: tags.iter().map(|t| t.to_string()).collect(),
        updated_at: at,
    }
}

async fn contexts_are_one_per_member_found_by_summary_or_tag(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let other = mesh(s, "o").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    assert!(s.find_contexts(&m.id, "", 20).await.unwrap().is_empty());
    let first = s
        .share_context(&ctx_of(&m, &alice, "Mapped the AUTH flow", &["auth"], t0()))
        .await
        .unwrap();
    let replaced = s
        .share_context(&ctx_of(
            &m,
            &alice,
            "Mapped the auth flow, twice",
            &["security"],
            t0() + secs(2),
        ))
        .await
        .unwrap();
    assert_eq!(replaced.id, first.id, "the member's context keeps its id");
    s.share_context(&ctx_of(
        &m,
        &bob,
        "Billing 100% done_",
        &["auth"],
        t0() + secs(1),
    ))
    .await
    .unwrap();
    s.share_context(&ctx_of(&other, &bob, "auth elsewhere", &[], t0()))
        .await
        .unwrap();
    let names = |v: Vec<Context>| v.into_iter().map(|c| c.peer_name).collect::<Vec<_>>();
    assert_eq!(
        names(s.find_contexts(&m.id, "", 20).await.unwrap()),
        ["alice", "bob"],
        "newest first"
    );
    assert_eq!(
        names(s.find_contexts(&m.id, "", 1).await.unwrap()),
        ["alice"]
    );
    assert_eq!(
        names(s.find_contexts(&m.id, "auth", 20).await.unwrap()),
        ["alice", "bob"],
        "summary or tag"
    );
    assert_eq!(
        names(s.find_contexts(&m.id, "AUTH FLOW", 20).await.unwrap()),
        ["alice"]
    );
    assert_eq!(
        names(s.find_contexts(&m.id, "security", 20).await.unwrap()),
        ["alice"]
    );
    assert_eq!(
        names(s.find_contexts(&m.id, "secur", 20).await.unwrap()),
        Vec::<String>::new(),
        "tags match whole"
    );
    assert_eq!(
        names(s.find_contexts(&m.id, "100%", 20).await.unwrap()),
        ["bob"],
        "no wildcards"
    );
    assert_eq!(
        names(s.find_contexts(&m.id, "0% d", 20).await.unwrap()),
        ["bob"]
    );
    assert!(
        s.find_contexts(&m.id, "g_1", 20).await.unwrap().is_empty(),
        "`_` is literal"
    );
    let got = &s.find_contexts(&m.id, "twice", 20).await.unwrap()[0];
    assert_eq!(got, &replaced);
}

crate::conformance!(contexts_are_one_per_member_found_by_summary_or_tag);

//! Memory: the same plain-word and websearch queries give the same
//! memories in both modes; forgetting is the author's or a privileged
//! member's.

use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

fn note(mesh: &Mesh, by: &Member, content: &str, at: DateTime<Utc>) -> Memory {
    Memory {
        id: new_message_id(at),
        mesh_id: mesh.id.clone(),
        content: content.into(),
        tags: vec!["ops".into()],
        remembered_by: by.display_name.clone(),
        remembered_by_member: by.id.clone(),
        remembered_at: at,
    }
}

async fn ids(s: &dyn Store, mesh: &str, q: &str) -> Vec<Uuid> {
    let got = s.recall(mesh, q, 20).await.unwrap();
    got.into_iter().map(|m| m.id).collect()
}

async fn recall_matches_every_word_stemmed(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let other = mesh(s, "o").await;
    let alice = member(s, &m, "alice").await;
    let notes = [
        note(
            &m,
            &alice,
            "Staging DB is reset every Sunday 02:00 UTC",
            t0(),
        ),
        note(&m, &alice, "Production deploys need two reviewers", t0()),
        note(
            &m,
            &alice,
            "The staging cluster was resized on Monday",
            t0(),
        ),
        note(
            &m,
            &alice,
            "Deploy, deploy, deploy: the release train leaves on Fridays",
            t0(),
        ),
    ];
    for n in &notes {
        s.remember(n).await.unwrap();
    }
    s.remember(&note(&other, &alice, "staging reset elsewhere", t0()))
        .await
        .unwrap();
    assert_eq!(ids(s, &m.id, "staging reset").await, [notes[0].id]);
    assert_eq!(
        ids(s, &m.id, "resetting STAGED databases").await,
        Vec::<Uuid>::new(),
        "every word"
    );
    assert_eq!(
        ids(s, &m.id, "staged").await.len(),
        2,
        "stems: staging, staged"
    );
    assert_eq!(
        ids(s, &m.id, "deploy").await,
        [notes[3].id, notes[1].id],
        "three occurrences first"
    );
    assert_eq!(
        ids(s, &m.id, "the of and").await,
        Vec::<Uuid>::new(),
        "stop words only"
    );
    assert_eq!(ids(s, &m.id, "").await, Vec::<Uuid>::new());
    assert_eq!(ids(s, &m.id, "monday or sunday").await.len(), 2);
    assert_eq!(ids(s, &m.id, "staging -sunday").await, [notes[2].id]);
    assert_eq!(ids(s, &m.id, "\"release train\"").await, [notes[3].id]);
    assert_eq!(
        ids(s, &m.id, "\"train release\"").await,
        Vec::<Uuid>::new(),
        "phrase order"
    );
    assert_eq!(
        ids(s, &m.id, "-staging").await,
        [notes[3].id, notes[1].id],
        "a negation alone: every other memory, newest first"
    );
    let got = s.recall(&m.id, "reviewers", 20).await.unwrap();
    assert_eq!(got, [notes[1].clone()], "stored as given");
}

async fn recall_is_capped_newest_first_and_skips_forgotten(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let mut all = Vec::new();
    for i in 0..25 {
        let n = note(&m, &alice, "the nightly backup ran", t0() + secs(i));
        s.remember(&n).await.unwrap();
        all.push(n.id);
    }
    let got = s.recall(&m.id, "backup", 20).await.unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(got[0].id, all[24], "newest first among equals");
    assert_eq!(
        s.forget(&m.id, all[24], &alice.id, false).await.unwrap(),
        Forgot::Done
    );
    let got = s.recall(&m.id, "backup", 20).await.unwrap();
    assert_eq!(got[0].id, all[23], "forgotten ones skipped");
}

async fn only_the_author_or_a_privileged_member_forgets(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let n = note(&m, &alice, "alice's note", t0());
    let n2 = note(&m, &alice, "another note", t0());
    s.remember(&n).await.unwrap();
    s.remember(&n2).await.unwrap();
    assert_eq!(
        s.forget(&m.id, Uuid::now_v7(), &alice.id, true)
            .await
            .unwrap(),
        Forgot::NotFound
    );
    assert_eq!(
        s.forget("other", n.id, &alice.id, true).await.unwrap(),
        Forgot::NotFound
    );
    assert_eq!(
        s.forget(&m.id, n.id, &bob.id, false).await.unwrap(),
        Forgot::Forbidden
    );
    assert_eq!(
        s.recall(&m.id, "alice", 20).await.unwrap().len(),
        1,
        "still there"
    );
    assert_eq!(s.count_memories(&m.id).await.unwrap(), 2);
    assert_eq!(
        s.forget(&m.id, n.id, &alice.id, false).await.unwrap(),
        Forgot::Done
    );
    assert_eq!(
        s.count_memories(&m.id).await.unwrap(),
        1,
        "forgotten ones do not count"
    );
    assert_eq!(s.count_memories("other").await.unwrap(), 0);
    assert_eq!(
        s.forget(&m.id, n.id, &alice.id, false).await.unwrap(),
        Forgot::NotFound,
        "once"
    );
    assert_eq!(
        s.forget(&m.id, n2.id, &bob.id, true).await.unwrap(),
        Forgot::Done,
        "privileged"
    );
    assert!(s.recall(&m.id, "note", 20).await.unwrap().is_empty());
}

crate::conformance!(
    recall_matches_every_word_stemmed,
    recall_is_capped_newest_first_and_skips_forgotten,
    only_the_author_or_a_privileged_member_forgets,
);

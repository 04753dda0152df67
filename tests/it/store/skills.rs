//! Skills: one per name, updated in place keeping `created_at`; the
//! author rule; the cap; listing by name with a substring query.

use claudemesh_broker::store::*;
use serde_json::json;

use super::*;

fn skill(mesh: &Mesh, by: &Member, name: &str, at: DateTime<Utc>) -> Skill {
    Skill {
        mesh_id: mesh.id.clone(),
        name: name.into(),
        description: format!("About {name}"),
        instructions: "1. Bump version".into(),
        tags: vec!["Release".into()],
        manifest: json!({"version": 1}),
        author: by.display_name.clone(),
        author_member: by.id.clone(),
        created_at: at,
    }
}

async fn skills_are_shared_listed_and_removed_by_their_authors(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    assert_eq!(s.get_skill(&m.id, "x").await.unwrap(), None);
    assert!(s.list_skills(&m.id, None, 500).await.unwrap().is_empty());
    let first = skill(&m, &alice, "release-checklist", t0());
    assert_eq!(
        s.share_skill(&first, false, 2).await.unwrap(),
        SkillWrite::Shared
    );
    let mut update = skill(&m, &alice, "release-checklist", t0() + secs(9));
    update.manifest = serde_json::Value::Null;
    update.description = "Steps before tagging".into();
    assert_eq!(
        s.share_skill(&update, false, 2).await.unwrap(),
        SkillWrite::Shared
    );
    let got = s
        .get_skill(&m.id, "release-checklist")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.created_at, t0(), "created_at kept");
    assert_eq!(got.description, "Steps before tagging");
    assert_eq!(got.manifest, serde_json::Value::Null);
    // bob may not overwrite alice's; a privileged member may.
    let by_bob = skill(&m, &bob, "release-checklist", t0());
    assert_eq!(
        s.share_skill(&by_bob, false, 2).await.unwrap(),
        SkillWrite::Forbidden
    );
    assert_eq!(
        s.get_skill(&m.id, "release-checklist")
            .await
            .unwrap()
            .unwrap()
            .author,
        "alice"
    );
    assert_eq!(
        s.share_skill(&by_bob, true, 2).await.unwrap(),
        SkillWrite::Shared
    );
    assert_eq!(
        s.share_skill(&skill(&m, &bob, "B-skill", t0()), false, 2)
            .await
            .unwrap(),
        SkillWrite::Shared
    );
    assert_eq!(
        s.share_skill(&skill(&m, &bob, "c", t0()), false, 2)
            .await
            .unwrap(),
        SkillWrite::Full
    );
    let names = |v: Vec<Skill>| v.into_iter().map(|k| k.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.list_skills(&m.id, None, 500).await.unwrap()),
        ["B-skill", "release-checklist"]
    );
    assert_eq!(
        names(s.list_skills(&m.id, Some("CHECK"), 500).await.unwrap()),
        ["release-checklist"]
    );
    assert_eq!(
        names(s.list_skills(&m.id, Some("about b"), 500).await.unwrap()),
        ["B-skill"],
        "description"
    );
    assert_eq!(
        names(s.list_skills(&m.id, Some("leas"), 500).await.unwrap()).len(),
        2,
        "tags"
    );
    assert_eq!(
        names(s.list_skills(&m.id, None, 1).await.unwrap()),
        ["B-skill"]
    );
    assert_eq!(
        s.remove_skill(&m.id, "B-skill", &alice.id, false)
            .await
            .unwrap(),
        SkillRemoval::Forbidden
    );
    assert_eq!(
        s.remove_skill(&m.id, "B-skill", &bob.id, false)
            .await
            .unwrap(),
        SkillRemoval::Removed
    );
    assert_eq!(
        s.remove_skill(&m.id, "B-skill", &bob.id, false)
            .await
            .unwrap(),
        SkillRemoval::NotFound
    );
    assert_eq!(
        s.remove_skill(&m.id, "release-checklist", &alice.id, true)
            .await
            .unwrap(),
        SkillRemoval::Removed
    );
    assert!(s.list_skills(&m.id, None, 500).await.unwrap().is_empty());
}

crate::conformance!(skills_are_shared_listed_and_removed_by_their_authors);

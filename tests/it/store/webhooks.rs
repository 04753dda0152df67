//! Inbound webhooks: unique active names, a cap, the creator rule, a
//! deleted name free again.

use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

fn hook(mesh: &Mesh, by: &Member, name: &str) -> Webhook {
    Webhook {
        id: Uuid::now_v7(),
        mesh_id: mesh.id.clone(),
        name: name.into(),
        secret_hash: vec![7; 32],
        secret_prefix: "3f9a01bc".into(),
        created_by_member: by.id.clone(),
        created_at: t0(),
    }
}

async fn webhooks_are_named_capped_and_deleted_by_their_creators(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    assert!(s.list_webhooks(&m.id).await.unwrap().is_empty());
    let ci = hook(&m, &alice, "ci");
    assert_eq!(
        s.create_webhook(&ci, 2).await.unwrap(),
        WebhookCreated::Created
    );
    assert_eq!(
        s.create_webhook(&hook(&m, &bob, "ci"), 2).await.unwrap(),
        WebhookCreated::Exists
    );
    assert_eq!(
        s.create_webhook(&hook(&m, &bob, "deploy"), 2)
            .await
            .unwrap(),
        WebhookCreated::Created
    );
    assert_eq!(
        s.create_webhook(&hook(&m, &bob, "third"), 2).await.unwrap(),
        WebhookCreated::Full
    );
    let listed = s.list_webhooks(&m.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["ci", "deploy"]
    );
    assert_eq!(listed[0], ci);
    assert_eq!(
        s.delete_webhook(&m.id, "ci", &bob.id, false).await.unwrap(),
        WebhookDeleted::Forbidden
    );
    assert_eq!(
        s.delete_webhook(&m.id, "ci", &alice.id, false)
            .await
            .unwrap(),
        WebhookDeleted::Deleted
    );
    assert_eq!(
        s.delete_webhook(&m.id, "ci", &alice.id, false)
            .await
            .unwrap(),
        WebhookDeleted::NotFound
    );
    assert_eq!(
        s.create_webhook(&hook(&m, &bob, "ci"), 2).await.unwrap(),
        WebhookCreated::Created,
        "a deleted name is free"
    );
    assert_eq!(
        s.delete_webhook(&m.id, "deploy", &alice.id, true)
            .await
            .unwrap(),
        WebhookDeleted::Deleted,
        "privileged"
    );
    assert!(s.list_webhooks("other").await.unwrap().is_empty());
}

crate::conformance!(webhooks_are_named_capped_and_deleted_by_their_creators);

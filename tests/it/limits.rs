//! The per-mesh and per-member caps of the mesh-data families answer
//! `limit` on the wire (PROTOCOL-MESH.md §0), and change nothing. The
//! stores are filled directly; the cap itself is tested at the trait.

use serde_json::json;

use claudemesh_broker::protocol::skills::MAX_SKILLS_PER_MESH;
use claudemesh_broker::protocol::vault::MAX_ENTRIES_PER_MEMBER;
use claudemesh_broker::protocol::vectors::{MAX_COLLECTIONS, MAX_POINTS};
use claudemesh_broker::protocol::webhooks::MAX_ACTIVE_PER_MESH;
use claudemesh_broker::store::{Point, Skill, VaultEntry, Webhook};

use crate::both_stores;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Peer};

async fn full_families_answer_limit(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    let store = w.node.engine.store.clone();
    let (mesh, member) = (w.alice.mesh_id.clone(), w.alice.id.clone());
    let now = chrono::Utc::now();
    for i in 0..MAX_SKILLS_PER_MESH {
        let sk = Skill {
            mesh_id: mesh.clone(),
            name: format!("s{i}"),
            description: String::new(),
            instructions: "x".into(),
            tags: vec![],
            manifest: serde_json::Value::Null,
            author: "alice".into(),
            author_member: member.clone(),
            created_at: now,
        };
        store
            .share_skill(&sk, false, MAX_SKILLS_PER_MESH)
            .await
            .unwrap();
    }
    for i in 0..MAX_ENTRIES_PER_MEMBER {
        let e = VaultEntry {
            mesh_id: mesh.clone(),
            member_id: member.clone(),
            key: format!("k{i}"),
            ciphertext: "c".into(),
            nonce: "n".into(),
            sealed_key: "s".into(),
            entry_type: "env".into(),
            mount_path: None,
            description: None,
            updated_at: now,
        };
        store.vault_set(&e, MAX_ENTRIES_PER_MEMBER).await.unwrap();
    }
    for i in 0..MAX_ACTIVE_PER_MESH {
        let h = Webhook {
            id: uuid::Uuid::now_v7(),
            mesh_id: mesh.clone(),
            name: format!("h{i}"),
            secret_hash: vec![1; 32],
            secret_prefix: "00000000".into(),
            created_by_member: member.clone(),
            created_at: now,
        };
        store.create_webhook(&h, MAX_ACTIVE_PER_MESH).await.unwrap();
    }
    for i in 0..MAX_COLLECTIONS {
        let p = Point {
            id: uuid::Uuid::now_v7(),
            mesh_id: mesh.clone(),
            collection: format!("c{i}"),
            text: "t".into(),
            metadata: Default::default(),
            stored_by_member: member.clone(),
            stored_by_pubkey: w.alice.keys.public_hex.clone(),
            stored_at: now,
        };
        store
            .store_point(&p, MAX_COLLECTIONS, MAX_POINTS)
            .await
            .unwrap();
    }
    for f in [
        json!({"type": "vector_store", "collection": "one-more", "text": "t", "_reqId": "l"}),
        json!({"type": "share_skill", "name": "one-more", "instructions": "x", "_reqId": "l"}),
        json!({"type": "vault_set", "key": "one-more", "ciphertext": "c", "nonce": "n",
                "sealed_key": "s", "entry_type": "env", "_reqId": "l"}),
        json!({"type": "create_webhook", "name": "one-more", "_reqId": "l"}),
    ] {
        let e = a.request(f).await;
        assert_error(&e, "limit", "l");
    }
    let sk = a
        .request(json!({"type": "get_skill", "name": "one-more", "_reqId": "g"}))
        .await;
    assert_eq!(sk["skill"], serde_json::Value::Null, "nothing written");
    let v = a
        .request(json!({"type": "vault_get", "keys": ["one-more"], "_reqId": "g"}))
        .await;
    assert_eq!(v["entries"], json!([]));
    // Replacing what exists is never refused.
    let r = a
        .request(json!({"type": "share_skill", "name": "s7", "instructions": "y", "_reqId": "r"}))
        .await;
    assert_eq!(r["action"], "shared", "{r}");
}

both_stores!(full_families_answer_limit);

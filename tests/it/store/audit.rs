//! Audit chains: one per mesh, in append order, verifiable after pruning.

use claudemesh_broker::audit::{verify, Checkpoint, GENESIS};
use claudemesh_broker::store::*;
use serde_json::json;

use super::*;

fn entry(mesh: &str, event: &'static str, at: chrono::DateTime<chrono::Utc>) -> NewAuditEntry {
    NewAuditEntry {
        mesh_id: mesh.to_string(),
        event_type: event,
        actor_member_id: Some("m1".into()),
        actor_name: None,
        payload: json!({"n": event, "nested": {"b": 1, "a": [true, null]}}),
        created_at: at,
    }
}

async fn appends_chain_each_mesh_in_order(s: &dyn Store) {
    let (a, b) = (mesh(s, "a").await, mesh(s, "b").await);
    s.append_audit(&[
        entry(&a.id, "one", t0()),
        entry(&b.id, "other", t0()),
        entry(&a.id, "two", t0()),
    ])
    .await
    .unwrap();
    s.append_audit(&[entry(&a.id, "three", t0())])
        .await
        .unwrap();
    s.append_audit(&[]).await.unwrap();
    let (cp, chain) = s.audit_chain(&a.id).await.unwrap();
    assert_eq!(cp, None);
    let events: Vec<(i64, &str)> = chain
        .iter()
        .map(|e| (e.seq, e.event_type.as_str()))
        .collect();
    assert_eq!(events, [(1, "one"), (2, "two"), (3, "three")]);
    assert_eq!(chain[0].prev_hash, GENESIS);
    assert_eq!(chain[1].prev_hash, chain[0].hash);
    assert_eq!(chain[0].payload["nested"]["a"], json!([true, null]));
    assert_eq!(chain[0].actor_member_id.as_deref(), Some("m1"));
    assert!(verify(None, &chain).valid);
    let (_, other) = s.audit_chain(&b.id).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].seq, 1, "every mesh has its own sequence");
}

/// Pruning keeps the last pruned entry as the checkpoint the rest of the
/// chain (and later appends) verify from.
async fn pruned_chains_continue_from_their_checkpoint(s: &dyn Store) {
    let m = mesh(s, "m").await;
    s.append_audit(&[
        entry(&m.id, "old1", t0()),
        entry(&m.id, "old2", t0() + secs(1)),
        entry(&m.id, "new", t0() + secs(10)),
    ])
    .await
    .unwrap();
    let (_, before) = s.audit_chain(&m.id).await.unwrap();
    assert_eq!(s.prune_audit(t0() + secs(5)).await.unwrap(), 2);
    let (cp, chain) = s.audit_chain(&m.id).await.unwrap();
    assert_eq!(
        cp,
        Some(Checkpoint {
            seq: 2,
            hash: before[1].hash.clone()
        })
    );
    assert_eq!(chain.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    assert!(verify(cp.as_ref(), &chain).valid);
    assert_eq!(s.prune_audit(t0() + secs(5)).await.unwrap(), 0);
    // Everything pruned: appends go on from the checkpoint.
    assert_eq!(s.prune_audit(t0() + secs(60)).await.unwrap(), 1);
    s.append_audit(&[entry(&m.id, "after", t0() + secs(70))])
        .await
        .unwrap();
    let (cp, chain) = s.audit_chain(&m.id).await.unwrap();
    assert_eq!(cp.as_ref().map(|c| c.seq), Some(3));
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].seq, 4);
    assert_eq!(chain[0].prev_hash, before[2].hash);
    assert!(verify(cp.as_ref(), &chain).valid);
}

crate::conformance!(
    appends_chain_each_mesh_in_order,
    pruned_chains_continue_from_their_checkpoint,
);

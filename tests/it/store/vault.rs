//! The vault: per-member entries, replaced by key, listed by key, fetched
//! in request order, capped per member.

use claudemesh_broker::store::*;

use super::*;

fn entry(mesh: &Mesh, by: &Member, key: &str, at: DateTime<Utc>) -> VaultEntry {
    VaultEntry {
        mesh_id: mesh.id.clone(),
        member_id: by.id.clone(),
        key: key.into(),
        ciphertext: "Y3Q=".into(),
        nonce: "bm9uY2U=".into(),
        sealed_key: "c2s=".into(),
        entry_type: "env".into(),
        mount_path: None,
        description: Some("prod key".into()),
        updated_at: at,
    }
}

async fn each_member_has_its_own_vault(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    assert!(s.vault_list(&m.id, &alice.id).await.unwrap().is_empty());
    for k in ["b", "A", "a"] {
        assert!(s.vault_set(&entry(&m, &alice, k, t0()), 3).await.unwrap());
    }
    assert!(
        !s.vault_set(&entry(&m, &alice, "c", t0()), 3).await.unwrap(),
        "full"
    );
    let mut again = entry(&m, &alice, "a", t0() + secs(1));
    again.entry_type = "file".into();
    again.mount_path = Some("/etc/x".into());
    assert!(
        s.vault_set(&again, 3).await.unwrap(),
        "replacing is never refused"
    );
    let keys: Vec<String> = s
        .vault_list(&m.id, &alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["A", "a", "b"]);
    let got = s
        .vault_get(
            &m.id,
            &alice.id,
            &["b".into(), "missing".into(), "a".into()],
        )
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["b", "a"],
        "request order"
    );
    assert_eq!(got[1], again);
    assert!(
        s.vault_list(&m.id, &bob.id).await.unwrap().is_empty(),
        "bob sees none of alice's"
    );
    assert!(s
        .vault_get(&m.id, &bob.id, &["a".into()])
        .await
        .unwrap()
        .is_empty());
    assert!(!s.vault_delete(&m.id, &bob.id, "a").await.unwrap());
    assert!(s.vault_delete(&m.id, &alice.id, "a").await.unwrap());
    assert!(!s.vault_delete(&m.id, &alice.id, "a").await.unwrap());
    assert!(
        s.vault_set(&entry(&m, &alice, "c", t0()), 3).await.unwrap(),
        "a slot freed"
    );
}

crate::conformance!(each_member_has_its_own_vault);

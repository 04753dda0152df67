//! Shared state: one value per (mesh, key), listed in key order, a key
//! cap that only adding a key can hit.

use claudemesh_broker::store::*;
use serde_json::json;

use super::*;

fn write<'a>(
    mesh: &'a str,
    key: &'a str,
    value: Option<&'a serde_json::Value>,
    by: &'a Member,
    at: DateTime<Utc>,
) -> StateWrite<'a> {
    StateWrite {
        mesh_id: mesh,
        key,
        value,
        member_id: &by.id,
        member_name: &by.display_name,
        at,
        max_keys: 3,
    }
}

async fn state_is_one_value_per_key_in_key_order(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let other = mesh(s, "o").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    assert!(s.list_state(&m.id).await.unwrap().is_empty());
    assert_eq!(s.get_state(&m.id, "a").await.unwrap(), None);
    let v1 = json!({"deep": [1, 2, {"x": null}]});
    let v2 = json!("two");
    for (key, v, by, at) in [
        ("b", &v1, &alice, t0()),
        ("a", &v2, &alice, t0()),
        ("B", &v2, &bob, t0()),
    ] {
        assert_eq!(
            s.write_state(&write(&m.id, key, Some(v), by, at))
                .await
                .unwrap(),
            StateWritten::Stored
        );
    }
    let keys: Vec<String> = s
        .list_state(&m.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["B", "a", "b"], "byte order");
    // Full: a fourth key is refused, replacing one is not.
    let v3 = json!(3);
    assert_eq!(
        s.write_state(&write(&m.id, "c", Some(&v3), &bob, t0()))
            .await
            .unwrap(),
        StateWritten::Full
    );
    assert_eq!(
        s.get_state(&m.id, "c").await.unwrap(),
        None,
        "nothing half-written"
    );
    assert_eq!(
        s.write_state(&write(&m.id, "b", Some(&v3), &bob, t0() + secs(1)))
            .await
            .unwrap(),
        StateWritten::Stored
    );
    let b = s.get_state(&m.id, "b").await.unwrap().unwrap();
    assert_eq!(
        (b.value, b.updated_by.as_str(), b.updated_at),
        (v3.clone(), bob.display_name.as_str(), t0() + secs(1)),
        "last write wins, attributed to its writer"
    );
    assert_eq!(
        s.get_state(&m.id, "b").await.unwrap().unwrap().value,
        json!(3)
    );
    // Deleting frees a slot; deleting a missing key says so.
    assert_eq!(
        s.write_state(&write(&m.id, "a", None, &bob, t0()))
            .await
            .unwrap(),
        StateWritten::Deleted(true)
    );
    assert_eq!(
        s.write_state(&write(&m.id, "a", None, &bob, t0()))
            .await
            .unwrap(),
        StateWritten::Deleted(false)
    );
    assert_eq!(
        s.write_state(&write(&m.id, "c", Some(&v3), &bob, t0()))
            .await
            .unwrap(),
        StateWritten::Stored
    );
    let got = s.get_state(&m.id, "b").await.unwrap().unwrap();
    assert_eq!(got.key, "b");
    // Meshes do not share state.
    assert!(s.list_state(&other.id).await.unwrap().is_empty());
    assert_eq!(s.get_state(&other.id, "b").await.unwrap(), None);
    let nested = s.get_state(&m.id, "B").await.unwrap().unwrap();
    assert_eq!(nested.value, v2);
}

/// Writers racing to add keys never pass the cap together.
async fn racing_adds_never_pass_the_cap(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let v = json!(true);
    let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    let ws: Vec<StateWrite> = keys
        .iter()
        .map(|k| write(&m.id, k, Some(&v), &alice, t0()))
        .collect();
    let writes = ws.iter().map(|w| s.write_state(w));
    let results = futures_util::future::join_all(writes).await;
    let stored = results
        .iter()
        .filter(|r| matches!(r, Ok(StateWritten::Stored)))
        .count();
    assert_eq!(stored, 3, "{results:?}");
    assert_eq!(s.list_state(&m.id).await.unwrap().len(), 3);
}

crate::conformance!(
    state_is_one_value_per_key_in_key_order,
    racing_adds_never_pass_the_cap,
);

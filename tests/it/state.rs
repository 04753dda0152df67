//! Shared state over the wire (PROTOCOL-MESH.md §1): `set_state` is never
//! answered on success and never refused without `_reqId`; `get_state`
//! answers `state_result` (and `state_value` for the 1.37 daemon);
//! `state_change` reaches every other live presence of the mesh, on every
//! node, the writer's other sessions included.

use std::time::Duration;

use serde_json::{json, Value};

use claudemesh_broker::protocol::state::MAX_KEYS_PER_MESH;
use claudemesh_broker::store::StateWrite;

use crate::both_stores;
use crate::cluster::cluster;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Peer};

async fn quiet(p: &mut Peer) -> bool {
    p.quiet_for(Duration::from_millis(300)).await
}

/// The next `state_change` on `p`.
async fn change(p: &mut Peer) -> Value {
    let v = p.recv().await;
    assert_eq!(v["type"], "state_change", "{v}");
    v
}

async fn get(p: &mut Peer, key: &str, req: &str) -> (Value, Value) {
    p.send(json!({"type": "get_state", "key": key, "_reqId": req}))
        .await;
    let result = p.recv().await;
    assert_eq!(result["type"], "state_result", "{result}");
    assert_eq!(result["_reqId"], req);
    let value = p.recv().await;
    assert_eq!(value["type"], "state_value", "{value}");
    assert_eq!(value["_reqId"], req);
    (result, value)
}

async fn set_get_list_and_delete(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut a2, _) = Peer::join(&url, &w.alice, "a2").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;

    let (missing, none) = get(&mut b, "deploy.frozen", "g0").await;
    assert_eq!(
        (
            &missing["value"],
            &missing["updatedBy"],
            &missing["updatedAt"]
        ),
        (&Value::Null, &json!(""), &json!("")),
        "{missing}"
    );
    assert_eq!(none["state"], Value::Null);
    let l = b
        .request(json!({"type": "list_state", "_reqId": "l0"}))
        .await;
    assert_eq!(
        l,
        json!({"type": "state_list", "entries": [], "_reqId": "l0"})
    );

    a.send(json!({"type": "set_state", "key": "deploy.frozen", "value": {"until": 5}}))
        .await;
    for p in [&mut b, &mut a2] {
        let c = change(p).await;
        assert_eq!(
            c,
            json!({"type": "state_change", "key": "deploy.frozen", "value": {"until": 5},
                   "updatedBy": "alice"})
        );
    }
    assert!(quiet(&mut a).await, "no reply and no event to the writer");

    let (r, v) = get(&mut b, "deploy.frozen", "g1").await;
    assert_eq!(r["value"], json!({"until": 5}));
    assert_eq!(r["updatedBy"], "alice");
    let at = r["updatedAt"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    assert_eq!(
        v["state"],
        json!({"key": "deploy.frozen", "value": {"until": 5}, "updatedBy": "alice",
               "updatedAt": at})
    );
    // Without `_reqId` only the plain reply: nobody could match the alias.
    let plain = b
        .request(json!({"type": "get_state", "key": "deploy.frozen"}))
        .await;
    assert_eq!(plain["type"], "state_result");
    assert!(plain.get("_reqId").is_none());
    assert!(quiet(&mut b).await);

    b.send(json!({"type": "set_state", "key": "a.first", "value": [1, "x"]}))
        .await;
    change(&mut a).await;
    let l = a
        .request(json!({"type": "list_state", "_reqId": "l1"}))
        .await;
    let keys: Vec<&str> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a.first", "deploy.frozen"], "{l}");
    assert_eq!(l["entries"][0]["updatedBy"], "bob");

    // null deletes, and says so.
    b.send(json!({"type": "set_state", "key": "deploy.frozen", "value": null}))
        .await;
    let c = change(&mut a).await;
    assert_eq!(c["value"], Value::Null);
    let (gone, _) = get(&mut a, "deploy.frozen", "g2").await;
    assert_eq!(gone["updatedBy"], "");
}

/// Refusals: with `_reqId` an error carrying it; without, nothing at all
/// (the client would hand it to an unrelated request), only a count.
async fn bad_writes_are_refused_quietly_without_a_req_id(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let big = "x".repeat(70_000);
    let bad = [
        json!({"type": "set_state", "value": 1}),
        json!({"type": "set_state", "key": "", "value": 1}),
        json!({"type": "set_state", "key": "k".repeat(257), "value": 1}),
        json!({"type": "set_state", "key": "k"}),
        json!({"type": "set_state", "key": "k", "value": big}),
    ];
    for f in &bad {
        a.send(f.clone()).await;
    }
    assert!(quiet(&mut a).await, "no error without _reqId");
    assert!(quiet(&mut b).await, "and nothing written");
    let refused = w.node.metrics().await;
    assert!(
        refused.contains("broker_ws_refused_total{type=\"set_state\",code=\"bad_request\"} 5"),
        "{refused}"
    );
    for (i, f) in bad.iter().enumerate() {
        let mut f = f.clone();
        f["_reqId"] = json!(format!("s{i}"));
        let e = a.request(f).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{e}"
        );
        assert_eq!(e["_reqId"], format!("s{i}"));
    }
    let e = a
        .request(json!({"type": "get_state", "key": 3, "_reqId": "g"}))
        .await;
    assert_error(&e, "bad_request", "g");
    for f in [
        json!({"type": "set_state", "key": "a\u{0}b", "value": 1, "_reqId": "nul"}),
        json!({"type": "set_state", "key": "k", "value": "v\u{0}", "_reqId": "nul"}),
    ] {
        let e = a.request(f).await;
        assert_error(&e, "bad_request", "nul");
    }
    let l = a
        .request(json!({"type": "list_state", "_reqId": "l"}))
        .await;
    assert_eq!(l["entries"], json!([]), "nothing half-written");

    // The key cap: replacing works, adding the next key is `limit`.
    let store = &w.node.engine.store;
    let v = json!(1);
    for i in 0..MAX_KEYS_PER_MESH {
        let key = format!("k{i}");
        store
            .write_state(&StateWrite {
                mesh_id: &w.alice.mesh_id,
                key: &key,
                value: Some(&v),
                member_id: &w.alice.id,
                member_name: "alice",
                at: chrono::Utc::now(),
                max_keys: MAX_KEYS_PER_MESH,
            })
            .await
            .unwrap();
    }
    let full = a
        .request(json!({"type": "set_state", "key": "one.more", "value": 1, "_reqId": "f"}))
        .await;
    assert_error(&full, "limit", "f");
    a.send(json!({"type": "set_state", "key": "k7", "value": 2}))
        .await;
    assert_eq!(
        change(&mut b).await["value"],
        2,
        "replacing is never refused"
    );
}

/// A CLI verb sends `set_state` and closes at once: the write still lands.
async fn a_write_survives_its_socket_closing(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let (mut a, _) = Peer::join(&url, &w.alice, "cli").await;
    a.send(json!({"type": "set_state", "key": "k", "value": "v"}))
        .await;
    a.close().await;
    assert_eq!(change(&mut b).await["value"], "v");
    let (r, _) = get(&mut b, "k", "g").await;
    assert_eq!(r["value"], "v");
}

/// Writes are audited by key and size, never by value.
async fn writes_are_audited_without_values(backend: Backend) {
    let w = world(backend).await;
    let (mut a, _) = Peer::join(&w.node.ws_url(), &w.alice, "a1").await;
    a.send(json!({"type": "set_state", "key": "secret.k", "value": "hunter2"}))
        .await;
    a.send(json!({"type": "set_state", "key": "secret.k", "value": null}))
        .await;
    let l = a
        .request(json!({"type": "list_state", "_reqId": "l"}))
        .await;
    assert_eq!(l["entries"], json!([]));
    let mesh = &w.alice.mesh_id;
    let entries = loop {
        let (_, entries) = w.node.engine.store.audit_chain(mesh).await.unwrap();
        let sets: Vec<_> = entries
            .into_iter()
            .filter(|e| e.event_type == "state_set")
            .collect();
        if sets.len() == 2 {
            break sets;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entries[0].payload["key"], "secret.k");
    assert_eq!(entries[0].payload["deleted"], false);
    assert_eq!(entries[1].payload["deleted"], true);
    for e in &entries {
        assert!(!e.payload.to_string().contains("hunter2"), "{}", e.payload);
    }
}

/// Sessions on three nodes: each write reaches the others once, the
/// writer's socket not at all, a value too large for NOTIFY included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_state_changes_reach_every_node() {
    let c = cluster(3, |_| {}).await;
    let (mut a, _) = Peer::join(&c.nodes[0].ws_url(), &c.alice, "a1").await;
    let (mut a2, _) = Peer::join(&c.nodes[1].ws_url(), &c.alice, "a2").await;
    let (mut b, _) = Peer::join(&c.nodes[2].ws_url(), &c.bob, "b1").await;
    let big = "v".repeat(20_000);
    for (i, value) in [json!(1), json!(big), json!({"last": true})]
        .iter()
        .enumerate()
    {
        a.send(json!({"type": "set_state", "key": format!("k{i}"), "value": value}))
            .await;
        for p in [&mut a2, &mut b] {
            let got = change(p).await;
            assert_eq!(got["key"], format!("k{i}"));
            assert_eq!(&got["value"], value);
        }
    }
    assert!(quiet(&mut a).await);
    assert!(quiet(&mut b).await && quiet(&mut a2).await, "each once");
    let (r, _) = get(&mut b, "k1", "g").await;
    assert_eq!(r["value"].as_str().map(str::len), Some(20_000));
}

both_stores!(
    set_get_list_and_delete,
    bad_writes_are_refused_quietly_without_a_req_id,
    a_write_survives_its_socket_closing,
    writes_are_audited_without_values
);

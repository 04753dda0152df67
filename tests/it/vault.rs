//! The vault over the wire (PROTOCOL-MESH.md §10).

use serde_json::json;

use crate::both_stores;
use crate::harness::{world, Backend, Peer};

async fn set_list_get_delete(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let set = json!({"type": "vault_set", "key": "OPENAI_API_KEY", "ciphertext": "Y3Q=",
        "nonce": "bm9uY2U=", "sealed_key": "c2s=", "entry_type": "env", "mount_path": null,
        "description": "prod key", "_reqId": "vset_1"});
    assert_eq!(
        a.request(set).await,
        json!({"type": "vault_ack", "key": "OPENAI_API_KEY", "action": "stored", "_reqId": "vset_1"})
    );
    let l = a
        .request(json!({"type": "vault_list", "_reqId": "vlist_2"}))
        .await;
    assert_eq!(l["type"], "vault_list_result");
    assert_eq!(l["_reqId"], "vlist_2");
    let e = &l["entries"][0];
    assert_eq!(
        (
            &e["key"],
            &e["entry_type"],
            &e["mount_path"],
            &e["description"]
        ),
        (
            &json!("OPENAI_API_KEY"),
            &json!("env"),
            &serde_json::Value::Null,
            &json!("prod key")
        )
    );
    assert!(e["updated_at"].as_str().unwrap().ends_with('Z'));
    assert!(e.get("ciphertext").is_none(), "listing shows no blobs");
    let g = a
        .request(
            json!({"type": "vault_get", "keys": ["nope", "OPENAI_API_KEY"], "_reqId": "vget_4"}),
        )
        .await;
    assert_eq!(
        g,
        json!({"type": "vault_get_result", "entries": [{"key": "OPENAI_API_KEY", "ciphertext": "Y3Q=",
               "nonce": "bm9uY2U=", "sealed_key": "c2s=", "entry_type": "env", "mount_path": null}],
               "_reqId": "vget_4"})
    );
    // Nobody else sees it.
    let other = b
        .request(json!({"type": "vault_list", "_reqId": "x"}))
        .await;
    assert_eq!(other["entries"], json!([]));
    let d = b
        .request(json!({"type": "vault_delete", "key": "OPENAI_API_KEY", "_reqId": "vdel"}))
        .await;
    assert_eq!(d["action"], "not_found");
    let d = a
        .request(json!({"type": "vault_delete", "key": "OPENAI_API_KEY", "_reqId": "vdel"}))
        .await;
    assert_eq!(
        (d["action"].as_str(), d["_reqId"].as_str()),
        (Some("deleted"), Some("vdel"))
    );
    a.expect_bad_requests(&[
        (
            json!({"type": "vault_set", "key": "k", "nonce": "n", "sealed_key": "s", "entry_type": "env", "_reqId": "r"}),
            "ciphertext",
        ),
        (
            json!({"type": "vault_set", "key": "k", "ciphertext": "c", "nonce": "n", "sealed_key": "s", "entry_type": "dir", "_reqId": "r"}),
            "entry_type",
        ),
        (
            json!({"type": "vault_set", "key": "k", "ciphertext": "c", "nonce": "n", "sealed_key": "s", "entry_type": "file", "mount_path": "../etc", "_reqId": "r"}),
            "mount_path",
        ),
        (
            json!({"type": "vault_set", "key": "k", "ciphertext": "c", "nonce": "n", "sealed_key": "s", "entry_type": "file", "description": "d".repeat(501), "_reqId": "r"}),
            "description",
        ),
        (
            json!({"type": "vault_set", "key": "k", "ciphertext": "c".repeat(70_000), "nonce": "n", "sealed_key": "s", "entry_type": "env", "_reqId": "r"}),
            "ciphertext",
        ),
        (
            json!({"type": "vault_get", "keys": "k", "_reqId": "r"}),
            "keys",
        ),
    ])
    .await;
    let l = a
        .request(json!({"type": "vault_list", "_reqId": "l"}))
        .await;
    assert_eq!(l["entries"], json!([]), "nothing half-written");
}

both_stores!(set_list_get_delete);

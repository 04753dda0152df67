//! Skills over the wire (PROTOCOL-MESH.md §4).

use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::client::assert_error;
use crate::harness::{world, Backend, Peer};

async fn share_get_list_remove(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let share = json!({"type": "share_skill", "name": "release-checklist",
        "description": "Steps before tagging", "instructions": "1. Bump version",
        "tags": ["release"], "manifest": {"version": 1}, "_reqId": "k1"});
    let r = a.request(share.clone()).await;
    assert_eq!(
        r,
        json!({"type": "skill_ack", "name": "release-checklist", "action": "shared", "_reqId": "k1"})
    );
    let got = b
        .request(json!({"type": "get_skill", "name": "release-checklist", "_reqId": "g"}))
        .await;
    let sk = &got["skill"];
    assert_eq!(
        (
            &sk["name"],
            &sk["description"],
            &sk["instructions"],
            &sk["tags"],
            &sk["author"],
            &sk["manifest"]
        ),
        (
            &json!("release-checklist"),
            &json!("Steps before tagging"),
            &json!("1. Bump version"),
            &json!(["release"]),
            &json!("alice"),
            &json!({"version": 1})
        )
    );
    assert_eq!(got["_reqId"], "g");
    let none = b
        .request(json!({"type": "get_skill", "name": "nope", "_reqId": "g"}))
        .await;
    assert_eq!(none["skill"], Value::Null);
    let l = b
        .request(json!({"type": "list_skills", "query": "RELEASE", "_reqId": "l"}))
        .await;
    assert_eq!(l["skills"].as_array().unwrap().len(), 1);
    assert!(l["skills"][0].get("instructions").is_none());
    // bob may not overwrite or remove alice's skill.
    let mut by_bob = share.clone();
    by_bob["_reqId"] = json!("k2");
    let e = b.request(by_bob).await;
    assert_error(&e, "forbidden", "k2");
    let e = b
        .request(json!({"type": "remove_skill", "name": "release-checklist", "_reqId": "k3"}))
        .await;
    assert_eq!(e["code"], "forbidden");
    let r = a
        .request(json!({"type": "remove_skill", "name": "release-checklist", "_reqId": "k4"}))
        .await;
    assert_eq!(r["action"], "removed");
    let r = a
        .request(json!({"type": "remove_skill", "name": "release-checklist", "_reqId": "k5"}))
        .await;
    assert_eq!(r["action"], "not_found");
    a.expect_bad_requests(&[
        (
            json!({"type": "share_skill", "instructions": "x", "_reqId": "r"}),
            "name",
        ),
        (
            json!({"type": "share_skill", "name": "n", "_reqId": "r"}),
            "instructions",
        ),
        (
            json!({"type": "share_skill", "name": "n", "instructions": "x", "description": "d".repeat(4097), "_reqId": "r"}),
            "description",
        ),
        (
            json!({"type": "share_skill", "name": "n", "instructions": "x".repeat(70_000), "_reqId": "r"}),
            "instructions",
        ),
        (
            json!({"type": "list_skills", "query": 1, "_reqId": "r"}),
            "query",
        ),
    ])
    .await;
    let l = a
        .request(json!({"type": "list_skills", "_reqId": "l"}))
        .await;
    assert_eq!(l["skills"], json!([]), "nothing half-written");
}

both_stores!(share_get_list_remove);

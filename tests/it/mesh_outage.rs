//! Mesh-data frames while the node's database link is cut: each family
//! answers its own storage error (`vault_error`, `vector_error`,
//! `audit_query_error`, `audit_verify_error`) or `unavailable`, with the
//! request's `_reqId`, and the socket stays open.

use std::sync::Arc;

use claudemesh_broker::store::postgres::PgStore;
use serde_json::json;

use crate::harness::client::assert_error;
use crate::harness::proxy::{Link, Proxy};
use crate::harness::{test_settings, Peer, TestDb, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_answers_a_storage_failure() {
    let db = TestDb::migrated().await;
    let proxy = Proxy::in_front_of(&db.url).await;
    let mut s = test_settings();
    s.database_url = Some(proxy.url(&db.url));
    let node = TestNode::start_on(
        Arc::new(PgStore::connect(&proxy.url(&db.url), 4).unwrap()),
        s,
    )
    .await;
    node.create_mesh("m").await;
    let alice = node.add_member("m", "alice", &[]).await;
    let (mut a, _) = Peer::join(&node.ws_url(), &alice, "a1").await;
    proxy.set(Link::Cut);
    let cases = [
        (json!({"type": "vault_list"}), "vault_error"),
        (json!({"type": "vault_get", "keys": ["k"]}), "vault_error"),
        (
            json!({"type": "vector_store", "collection": "c", "text": "t"}),
            "vector_error",
        ),
        (json!({"type": "audit_query"}), "audit_query_error"),
        (json!({"type": "audit_verify"}), "audit_verify_error"),
        (json!({"type": "get_state", "key": "k"}), "unavailable"),
        (
            json!({"type": "set_state", "key": "k", "value": 1}),
            "unavailable",
        ),
        (json!({"type": "recall", "query": "q"}), "unavailable"),
        (json!({"type": "list_tasks"}), "unavailable"),
        (json!({"type": "list_skills"}), "unavailable"),
        (json!({"type": "get_context", "query": "q"}), "unavailable"),
        (json!({"type": "mesh_info"}), "unavailable"),
        (json!({"type": "list_webhooks"}), "unavailable"),
        (
            json!({"type": "message_status", "messageId": "0357S7tR8aKksslUdH6nUq0000000000"}),
            "unavailable",
        ),
    ];
    for (i, (mut f, code)) in cases.into_iter().enumerate() {
        let req = format!("r{i}");
        f["_reqId"] = json!(req);
        a.send(f).await;
        // A cut link fails fast; a stalled one after the 5 s database
        // timeout: either way within this.
        let e = a.recv_any_within(std::time::Duration::from_secs(12)).await;
        assert_error(&e, code, &req);
    }
    proxy.set(Link::Pass);
}

//! Shared files over HTTP and the wire (PROTOCOL-MESH.md §17): uploads
//! and their refusals, signed links that cannot be forged, stretched or
//! reused, the reading rules (targets, sealed keys, owners), accesses,
//! deletes and grants, ephemeral expiry, `peer_address` uploads, and an
//! upload cut off mid-body that leaves nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::client::assert_error;
use crate::harness::{world_with, Backend, Member, Peer, TestNode};

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

/// `POST /upload` as the clients send it, with `extra` headers on top.
pub async fn upload(
    node: &TestNode,
    member: &Member,
    token: Option<&str>,
    name: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let defaults = [
        ("Content-Type", "application/octet-stream"),
        ("X-Mesh-Id", member.mesh_id.as_str()),
        ("X-Member-Id", member.id.as_str()),
        ("X-File-Name", name),
        ("X-Tags", "[]"),
        ("X-Persistent", "true"),
        ("X-Target-Spec", ""),
        ("X-Encrypted", "false"),
    ];
    let mut req = node.http.post(node.url("/upload"));
    for (k, v) in defaults {
        if !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)) {
            req = req.header(k, v);
        }
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.body(body).send().await.expect("upload request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON body"))
}

pub async fn uploaded(
    node: &TestNode,
    m: &Member,
    token: &str,
    name: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> String {
    let (status, v) = upload(node, m, Some(token), name, body, extra).await;
    assert_eq!((status, &v["ok"]), (200, &json!(true)), "{v}");
    let id = v["fileId"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    id
}

pub async fn join(node: &TestNode, m: &Member, session: &str) -> (Peer, String) {
    let (p, ack) = Peer::join(&node.ws_url(), m, session).await;
    (p, ack["hookToken"].as_str().unwrap().to_string())
}

pub async fn file_url(p: &mut Peer, id: &str) -> Value {
    let r = p
        .request(json!({"type": "get_file", "fileId": id, "_reqId": "g"}))
        .await;
    assert_eq!(
        (r["type"].as_str(), r["_reqId"].as_str()),
        (Some("file_url"), Some("g")),
        "{r}"
    );
    r
}

async fn get(node: &TestNode, url: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = node.http.get(url).send().await.unwrap();
    (
        r.status().as_u16(),
        r.headers().clone(),
        r.bytes().await.unwrap().to_vec(),
    )
}

async fn listed(p: &mut Peer, query: Value) -> Vec<String> {
    let mut q = json!({"type": "list_files", "_reqId": "l"});
    for (k, v) in query.as_object().unwrap() {
        q[k] = v.clone();
    }
    let r = p.request(q).await;
    assert_eq!(r["type"], "file_list", "{r}");
    r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

async fn upload_link_download_and_delete(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let (mut a, a_token) = join(&w.node, &w.alice, "a").await;
    let (mut b, b_token) = join(&w.node, &w.bob, "b").await;
    let body = pattern((3 << 20) + 17);
    let id = uploaded(
        &w.node,
        &w.alice,
        &a_token,
        "dir/report.pdf",
        body.clone(),
        &[("X-Tags", r#"["q2"]"#)],
    )
    .await;
    let other = uploaded(
        &w.node,
        &w.alice,
        &a_token,
        "other.txt",
        b"other".to_vec(),
        &[],
    )
    .await;

    let r = file_url(&mut b, &id).await;
    assert_eq!(
        (&r["name"], &r["encrypted"], &r["fileId"]),
        (&json!("report.pdf"), &json!(false), &json!(id))
    );
    assert!(r.get("sealedKey").is_none(), "{r}");
    let url = r["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&w.node.url(&format!("/download/{id}?mesh="))),
        "{url}"
    );
    let (status, headers, got) = get(&w.node, &url).await;
    assert_eq!(status, 200);
    assert!(got == body, "the bytes, whole");
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-length"], body.len().to_string().as_str());
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"report.pdf\""
    );

    // A link is for its file, its member and its expiry only.
    for forged in [
        url.replace(&id, &other),
        url.replace(&format!("m={}", w.bob.id), &format!("m={}", w.alice.id)),
        url.replace("&exp=", "&exp=9"),
        format!("{}x", &url[..url.len() - 1]),
    ] {
        assert_eq!(get(&w.node, &forged).await.0, 403, "{forged}");
    }
    // Without a link, the caller shows who it is.
    let plain = w
        .node
        .url(&format!("/download/{id}?mesh={}", w.alice.mesh_id));
    let r = w
        .node
        .http
        .get(&plain)
        .bearer_auth(&b_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), body.len());
    assert_eq!(get(&w.node, &plain).await.0, 401);
    assert_eq!(
        get(&w.node, &w.node.url(&format!("/download/{id}")))
            .await
            .0,
        400
    );
    let unknown = w.node.url(&format!(
        "/download/{}?mesh={}",
        "0".repeat(32),
        w.alice.mesh_id
    ));
    assert_eq!(
        w.node
            .http
            .get(&unknown)
            .bearer_auth(&b_token)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    assert_eq!(
        listed(&mut b, json!({"query": "REP"})).await,
        ["report.pdf"]
    );
    assert_eq!(
        listed(&mut b, json!({"from": "alice"})).await,
        ["other.txt", "report.pdf"]
    );
    assert!(listed(&mut b, json!({"from": "bob"})).await.is_empty());
    let r = b
        .request(json!({"type": "list_files", "_reqId": "l2"}))
        .await;
    let f = &r["files"][1];
    assert_eq!(
        (
            &f["id"],
            &f["size"],
            &f["tags"],
            &f["uploadedBy"],
            &f["persistent"],
            &f["encrypted"]
        ),
        (
            &json!(id),
            &json!(body.len()),
            &json!(["q2"]),
            &json!("alice"),
            &json!(true),
            &json!(false)
        )
    );
    let r = a
        .request(json!({"type": "file_status", "fileId": id, "_reqId": "s"}))
        .await;
    assert_eq!(r["accesses"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["accesses"][0]["peerName"], "bob");
    let r = a
        .request(json!({"type": "file_status", "fileId": "nope", "_reqId": "s"}))
        .await;
    assert_eq!(
        r,
        json!({"type": "file_status_result", "fileId": "nope", "accesses": [], "_reqId": "s"})
    );

    // Only the uploader deletes (refused in silence without `_reqId`).
    let r = b
        .request(json!({"type": "delete_file", "fileId": id, "_reqId": "d"}))
        .await;
    assert_error(&r, "forbidden", "d");
    b.send(json!({"type": "delete_file", "fileId": id})).await;
    assert!(b.quiet_for(Duration::from_millis(300)).await);
    let ack = json!({"type": "ack", "id": id, "messageId": id, "queued": false});
    a.send(json!({"type": "delete_file", "fileId": id})).await;
    assert_eq!(a.recv().await, ack);
    a.send(json!({"type": "delete_file", "fileId": id})).await;
    assert_eq!(a.recv().await, ack, "the same ack for a file that is gone");
    let r = b
        .request(json!({"type": "get_file", "fileId": id, "_reqId": "g"}))
        .await;
    assert_error(&r, "not_found", "g");
    assert_eq!(get(&w.node, &url).await.0, 404, "the link outlives nothing");
}

async fn targets_sealed_keys_and_grants(backend: Backend) {
    let w = world_with(backend, |_| {}).await;
    let carol = w.node.add_member("m", "carol", &[]).await;
    let (_a, a_token) = join(&w.node, &w.alice, "a").await;
    let (mut a, _) = join(&w.node, &w.alice, "a2").await;
    let (mut b, _) = join(&w.node, &w.bob, "b").await;
    let (mut c, _) = join(&w.node, &carol, "c").await;
    let bob_key = w.bob.keys.public_hex.clone();
    uploaded(
        &w.node,
        &w.alice,
        &a_token,
        "for-bob.txt",
        b"x".to_vec(),
        &[("X-Target-Spec", &bob_key)],
    )
    .await;
    let for_backend = uploaded(
        &w.node,
        &w.alice,
        &a_token,
        "backend.txt",
        b"x".to_vec(),
        &[("X-Target-Spec", "@backend")],
    )
    .await;
    let by_name = uploaded(
        &w.node,
        &w.alice,
        &a_token,
        "named.txt",
        b"x".to_vec(),
        &[("X-Target-Spec", "CAROL")],
    )
    .await;
    let keys = json!([{"peerPubkey": bob_key, "sealedKey": "c2VhbGVkLWZvci1ib2I="}]).to_string();
    let secret = uploaded(
        &w.node,
        &w.alice,
        &a_token,
        "secret.bin",
        b"nonce+ciphertext".to_vec(),
        &[
            ("X-Encrypted", "true"),
            ("X-Owner-Pubkey", &w.alice.keys.public_hex),
            ("X-File-Keys", &keys),
        ],
    )
    .await;
    assert_eq!(
        listed(&mut b, json!({})).await,
        ["secret.bin", "for-bob.txt"]
    );
    assert_eq!(listed(&mut c, json!({})).await, ["named.txt"]);
    assert_eq!(
        listed(&mut a, json!({})).await.len(),
        4,
        "the uploader reads all"
    );
    let r = c
        .request(json!({"type": "get_file", "fileId": for_backend, "_reqId": "g"}))
        .await;
    assert_error(&r, "forbidden", "g");
    assert_eq!(r["message"], "file not targeted at you");
    file_url(&mut c, &by_name).await;
    let r = file_url(&mut b, &secret).await;
    assert_eq!(
        (&r["encrypted"], &r["sealedKey"]),
        (&json!(true), &json!("c2VhbGVkLWZvci1ib2I="))
    );
    let r = c
        .request(json!({"type": "get_file", "fileId": secret, "_reqId": "g"}))
        .await;
    assert_eq!(r["message"], "no decryption key for this file", "{r}");
    assert!(
        file_url(&mut a, &secret).await.get("sealedKey").is_none(),
        "the owner needs none"
    );
    // Grants: only the owner (or a privileged member).
    let carol_key = carol.keys.public_hex.clone();
    let grant = |req: &str| {
        json!({"type": "grant_file_access", "fileId": secret, "peerPubkey": carol_key,
            "sealedKey": "Zm9yLWNhcm9s", "_reqId": req})
    };
    let r = b.request(grant("g1")).await;
    assert_error(&r, "forbidden", "g1");
    assert_eq!(r["message"], "only the file owner can grant access");
    let r = a.request(grant("g2")).await;
    assert_eq!(
        r,
        json!({"type": "grant_file_access_ok", "fileId": secret, "peerPubkey": carol_key, "_reqId": "g2"})
    );
    assert_eq!(file_url(&mut c, &secret).await["sealedKey"], "Zm9yLWNhcm9s");
    let r = a
        .request(
            json!({"type": "grant_file_access", "fileId": "x".repeat(32), "peerPubkey": carol_key,
            "sealedKey": "k", "_reqId": "g3"}),
        )
        .await;
    assert_error(&r, "not_found", "g3");
    a.expect_bad_requests(&[
        (json!({"type": "grant_file_access", "fileId": secret, "peerPubkey": "short", "sealedKey": "k", "_reqId": "r"}), "`peerPubkey`"),
        (json!({"type": "get_file", "_reqId": "r"}), "`fileId`"),
    ])
    .await;
}

async fn uploads_are_refused_clearly_and_leave_nothing(backend: Backend) {
    let w = world_with(backend, |s| {
        s.max_file_bytes = 1 << 20;
        s.max_mesh_file_bytes = 2 << 20;
    })
    .await;
    let (mut a, token) = join(&w.node, &w.alice, "a").await;
    let n = &w.node;
    let t = Some(token.as_str());
    /// (bearer, body, headers changed, status, error)
    type Case<'a> = (
        Option<&'a str>,
        Vec<u8>,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            t,
            b"x".to_vec(),
            vec![("X-File-Name", "")],
            400,
            "missing X-Mesh-Id, X-Member-Id or X-File-Name",
        ),
        (t, Vec::new(), vec![], 400, "empty body"),
        (
            t,
            b"x".to_vec(),
            vec![("X-Tags", "not json")],
            400,
            "invalid X-Tags",
        ),
        (
            t,
            b"x".to_vec(),
            vec![("X-File-Keys", r#"[{"peerPubkey":"ab"}]"#)],
            400,
            "invalid X-File-Keys",
        ),
        (
            t,
            b"x".to_vec(),
            vec![("X-Owner-Pubkey", "xyz")],
            400,
            "invalid X-Owner-Pubkey",
        ),
        (None, b"x".to_vec(), vec![], 401, "unauthorized"),
        (
            Some("not-a-token"),
            b"x".to_vec(),
            vec![],
            401,
            "unauthorized",
        ),
        (
            t,
            b"x".to_vec(),
            vec![("X-Mesh-Id", "another-mesh")],
            401,
            "unauthorized",
        ),
        (
            t,
            pattern((1 << 20) + 1),
            vec![],
            413,
            "file too large (max 1MB)",
        ),
    ];
    for (token, body, extra, status, error) in cases {
        let (got, v) = upload(n, &w.alice, token, "f.txt", body, &extra).await;
        assert_eq!(
            (got, v),
            (status, json!({"ok": false, "error": error})),
            "{extra:?}"
        );
    }
    uploaded(n, &w.alice, &token, "one.bin", pattern(1 << 20), &[]).await;
    uploaded(n, &w.alice, &token, "two.bin", pattern((1 << 20) - 10), &[]).await;
    let (got, v) = upload(n, &w.alice, t, "three.bin", pattern(11), &[]).await;
    assert_eq!(
        (got, v),
        (
            413,
            json!({"ok": false, "error": "mesh storage quota exceeded"})
        )
    );
    assert_eq!(
        listed(&mut a, json!({})).await,
        ["two.bin", "one.bin"],
        "no refused upload left a row"
    );
}

async fn ephemeral_files_expire_with_their_blobs(backend: Backend) {
    let w = world_with(backend, |s| {
        s.ephemeral_file_ttl_seconds = 1;
        s.sweep_interval_seconds = 1;
        s.file_url_ttl_seconds = 1;
    })
    .await;
    let (mut a, token) = join(&w.node, &w.alice, "a").await;
    let brief = uploaded(
        &w.node,
        &w.alice,
        &token,
        "brief.txt",
        b"soon gone".to_vec(),
        &[("X-Persistent", "false")],
    )
    .await;
    let kept = uploaded(&w.node, &w.alice, &token, "kept.txt", b"kept".to_vec(), &[]).await;
    let url = file_url(&mut a, &brief).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let kept_url = file_url(&mut a, &kept).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get(&w.node, &kept_url).await.0, 403, "an expired link");
    let r = a
        .request(json!({"type": "get_file", "fileId": brief, "_reqId": "g"}))
        .await;
    assert_error(&r, "not_found", "g");
    assert_eq!(get(&w.node, &url).await.0, 403, "its link expired too");
    let plain = w
        .node
        .url(&format!("/download/{brief}?mesh={}", w.alice.mesh_id));
    let r = w
        .node
        .http
        .get(&plain)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        w.node
            .engine
            .blobs
            .get(&format!("{}/{}", w.alice.mesh_id, uuid_of(&brief)))
            .await
            .is_err(),
        "the blob went too"
    );
    let fresh = file_url(&mut a, &kept).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(&w.node, &fresh).await.0, 200);
}

fn uuid_of(id: &str) -> String {
    claudemesh_broker::protocol::ids::decode(id)
        .unwrap()
        .simple()
        .to_string()
}

async fn peer_address_uploads_need_an_online_session_there(backend: Backend) {
    let w = world_with(backend, |s| {
        s.upload_auth = Some(claudemesh_broker::config::UploadAuth::PeerAddress)
    })
    .await;
    let (status, v) = upload(&w.node, &w.alice, None, "f.txt", b"x".to_vec(), &[]).await;
    assert_eq!(
        (status, v),
        (401, json!({"ok": false, "error": "unauthorized"})),
        "nobody online"
    );
    let (mut b, _) = join(&w.node, &w.bob, "b").await;
    let (_a, _) = join(&w.node, &w.alice, "a").await;
    // The address is recorded just after the hello.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = upload(&w.node, &w.alice, None, "mine.txt", b"x".to_vec(), &[]).await;
    assert_eq!(status, 200, "{v}");
    // The 2026-04 client names the mesh slug, not a member: the most
    // recently active session at that address uploads.
    let (status, v) = upload(
        &w.node,
        &w.alice,
        None,
        "slug.txt",
        b"y".to_vec(),
        &[("X-Member-Id", "m")],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = b
        .request(json!({"type": "list_files", "_reqId": "l"}))
        .await;
    let by: Vec<&str> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["uploadedBy"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["alice", "alice"], "{r}");
}

both_stores!(
    upload_link_download_and_delete,
    targets_sealed_keys_and_grants,
    uploads_are_refused_clearly_and_leave_nothing,
    ephemeral_files_expire_with_their_blobs,
    peer_address_uploads_need_an_online_session_there,
);

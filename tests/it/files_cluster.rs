//! Files beyond one process: a file uploaded on one node is listed, linked
//! and downloaded on the others; an upload cut off mid-body leaves no row,
//! no blob and no quota behind; a 50 MB upload streams through the real
//! binary without its memory growing by the file; and the S3 backend
//! serves a node end to end, presigned links included.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::both_stores;
use crate::cluster::cluster;
use crate::files::{file_url, join, pattern, upload, uploaded};
use crate::harness::{cluster_node, node_with, s3, world_with, Backend, Peer, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_on_one_node_is_read_on_the_others() {
    let c = cluster(3, |_| {}).await;
    let (_a, a_token) = join(&c.nodes[0], &c.alice, "a").await;
    let (mut b, b_token) = join(&c.nodes[2], &c.bob, "b").await;
    let body = pattern((2 << 20) + 5);
    let id = uploaded(
        &c.nodes[0],
        &c.alice,
        &a_token,
        "shared.bin",
        body.clone(),
        &[],
    )
    .await;
    let r = file_url(&mut b, &id).await;
    let url = r["url"].as_str().unwrap();
    assert!(
        url.starts_with(&c.nodes[2].url("/download/")),
        "the asking node's link: {url}"
    );
    let got = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert!(got.to_vec() == body);
    // The same link, and a bearer download, from the third node.
    let there = url.replace(&c.nodes[2].url(""), &c.nodes[1].url(""));
    assert_eq!(
        reqwest::get(&there)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        body.len()
    );
    let plain = c.nodes[1].url(&format!("/download/{id}?mesh={}", c.alice.mesh_id));
    let r = c.nodes[1]
        .http
        .get(&plain)
        .bearer_auth(&b_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), body.len());
}

/// Counts of (file rows, blob chunks) in the world's database.
async fn rows(db: &TestDb) -> (i64, i64) {
    let c = db.client().await;
    let n = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    (
        n("SELECT count(*) FROM file").await,
        n("SELECT count(*) FROM file_blob").await,
    )
}

async fn an_upload_cut_off_mid_body_leaves_nothing(backend: Backend) {
    let w = world_with(backend, |s| s.max_mesh_file_bytes = 9 << 20).await;
    let (mut a, token) = join(&w.node, &w.alice, "a").await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", w.node.port))
        .await
        .unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n\
         X-Mesh-Id: {}\r\nX-Member-Id: {}\r\nX-File-Name: cut.bin\r\nContent-Length: {}\r\n\r\n",
        w.alice.mesh_id,
        w.alice.id,
        8 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&pattern(3 << 20)).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(db) = &w._db {
        assert_eq!(rows(db).await.0, 1, "reserved while the body arrives");
    }
    // While it is reserved, the quota is taken.
    let (status, _) = upload(
        &w.node,
        &w.alice,
        Some(&token),
        "meanwhile.bin",
        pattern(2 << 20),
        &[],
    )
    .await;
    assert_eq!(status, 413);
    drop(tcp);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, v) = upload(
            &w.node,
            &w.alice,
            Some(&token),
            "after.bin",
            pattern(8 << 20),
            &[],
        )
        .await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cut-off upload still holds the quota: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = a
        .request(json!({"type": "list_files", "_reqId": "l"}))
        .await;
    let names: Vec<&str> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["after.bin"]);
    if let Some(db) = &w._db {
        assert_eq!(
            rows(db).await,
            (1, 8),
            "only the whole upload's row and its eight chunks"
        );
    }
}

both_stores!(an_upload_cut_off_mid_body_leaves_nothing);

fn kib(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc status"))
}

fn peak_rss_kib(pid: u32) -> u64 {
    kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap(),
        "VmHWM:",
    )
}

const TOKEN: &str = "files-cluster-admin-token";

/// The real binary, Postgres blobs: its peak RSS grows by less than 8 MiB
/// over a 50 MB upload and its download (the body is never whole in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_upload_streams_through_the_broker() {
    let db = TestDb::migrated().await;
    let node = cluster_node(&db, TOKEN).await;
    let members = node.mesh_with(TOKEN, &["alice"]).await;
    let (_p, ack) = Peer::join(&node.ws_url(), &members[0], "a").await;
    let token = ack["hookToken"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let send = |name: &str, body: Vec<u8>| {
        http.post(node.url("/upload"))
            .bearer_auth(&token)
            .header("Content-Type", "application/octet-stream")
            .header("X-Mesh-Id", &members[0].mesh_id)
            .header("X-Member-Id", &members[0].id)
            .header("X-File-Name", name)
            .body(body)
            .send()
    };
    // Warm up pools and buffers with a small file first.
    let r = send("warm.bin", pattern(2 << 20)).await.unwrap();
    assert_eq!(r.status(), 200);
    let before = peak_rss_kib(node.pid());
    let body = pattern(50 << 20);
    let r = send("big.bin", body.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().await.unwrap()["fileId"]
        .as_str()
        .unwrap()
        .to_string();
    let after_up = peak_rss_kib(node.pid());
    let url = node.url(&format!("/download/{id}?mesh={}", members[0].mesh_id));
    let mut got = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let mut n = 0usize;
    let mut same = true;
    while let Some(piece) = got.chunk().await.unwrap() {
        same &= piece[..] == body[n..n + piece.len()];
        n += piece.len();
    }
    assert!(same && n == body.len(), "the bytes come back whole ({n})");
    let after_down = peak_rss_kib(node.pid());
    eprintln!("peak RSS: {before} KiB before, {after_up} after the 50 MB upload, {after_down} after its download");
    assert!(
        after_up - before < 8 << 10,
        "upload: +{} KiB",
        after_up - before
    );
    assert!(
        after_down - before < 8 << 10,
        "download: +{} KiB",
        after_down - before
    );
}

/// A node on the S3 backend: uploads land in the bucket, links are the
/// broker's or, with `s3_presign_public`, the bucket's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_s3_serves_files_end_to_end() {
    let Some(server) = s3::or_skip("a_node_on_s3_serves_files_end_to_end") else {
        return;
    };
    let bucket = server.bucket().await;
    let endpoint = server.endpoint.clone();
    for presign in [false, true] {
        let (node, _db) = node_with(Backend::Postgres, |s| {
            s.file_store = Some(claudemesh_broker::config::FileStoreKind::S3);
            s.s3_endpoint = Some(endpoint.clone());
            s.s3_bucket = Some(bucket.clone());
            s.s3_region = Some("us-east-1".into());
            s.s3_access_key = Some("test".into());
            s.s3_secret_key = Some("test".into());
            s.s3_path_style = true;
            s.s3_presign_public = presign;
        })
        .await;
        node.create_mesh("m").await;
        let alice = node.add_member("m", "alice", &[]).await;
        let (mut a, token) = join(&node, &alice, "a").await;
        let body = pattern((6 << 20) + 3);
        let id = uploaded(&node, &alice, &token, "s3.bin", body.clone(), &[]).await;
        let url = file_url(&mut a, &id).await["url"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(url.starts_with(&endpoint), presign, "{url}");
        let got = reqwest::get(&url).await.unwrap();
        assert_eq!(got.status(), 200, "{url}");
        assert!(got.bytes().await.unwrap().to_vec() == body);
        a.send(json!({"type": "delete_file", "fileId": id})).await;
        assert_eq!(a.recv().await["type"], "ack");
        let gone = reqwest::Client::new()
            .get(format!(
                "{endpoint}/{bucket}/{}/{}",
                alice.mesh_id,
                claudemesh_broker::protocol::ids::decode(&id)
                    .unwrap()
                    .simple()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 404, "the object went with the file");
    }
}

//! The `upload` workload (PROTOCOL-MESH.md §17): each peer uploads
//! `--messages` files of `--payload-bytes` over `POST /upload` (to its own
//! node, one at a time; the peers at once), then downloads each from the
//! next node and checks its bytes. Throughput is in MB/s both ways; the
//! latency is one upload's, request to response. A failed upload, or a
//! download that differs, is lost.

use std::time::Instant;

use anyhow::{bail, Result};
use bytes::Bytes;

use crate::admin::NodeUrl;
use crate::one_mesh;
use crate::progress::Progress;
use crate::stats::{self, Report};

pub struct UploadPlan {
    pub nodes: Vec<NodeUrl>,
    pub admin_token: String,
    pub peers: usize,
    pub files: u64,
    pub bytes: usize,
    pub progress: bool,
}

pub async fn run(plan: UploadPlan) -> Result<Report> {
    let progress = Progress::new(plan.progress);
    let peers = one_mesh::connect(&plan.nodes, &plan.admin_token, plan.peers, "upload").await?;
    if plan.files == 0 || plan.bytes == 0 {
        bail!(
            "--workload upload needs --messages (files per peer) and --payload-bytes of at least 1"
        );
    }
    let body = Bytes::from(
        (0..plan.bytes)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let http = reqwest::Client::new();
    let nodes = &plan.nodes;
    let mesh_id = &peers.mesh_id;
    progress.phase("upload", plan.files * plan.peers as u64);
    let started = Instant::now();
    let uploads = peers.tokens.iter().enumerate().map(|(i, token)| {
        let (http, body, progress) = (http.clone(), body.clone(), progress.clone());
        let member = peers.members[i].id.clone();
        async move {
            let mut ids = Vec::new();
            let mut took = Vec::new();
            for k in 0..plan.files {
                let t = Instant::now();
                let r = http
                    .post(format!("{}/upload", nodes[i % nodes.len()].http))
                    .bearer_auth(token)
                    .header("Content-Type", "application/octet-stream")
                    .header("X-Mesh-Id", mesh_id)
                    .header("X-Member-Id", &member)
                    .header("X-File-Name", format!("load-{i}-{k}.bin"))
                    .body(body.clone())
                    .send()
                    .await?;
                let ok = r.status().is_success();
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if ok {
                    took.push(t.elapsed().as_micros() as u64);
                    ids.push(v["fileId"].as_str().unwrap_or("").to_string());
                }
                progress.inc();
            }
            anyhow::Ok((ids, took))
        }
    });
    let uploaded = futures_util::future::join_all(uploads).await;
    let up_s = started.elapsed().as_secs_f64();
    let mut h = stats::histogram();
    let mut ids: Vec<Vec<String>> = Vec::new();
    for r in uploaded {
        let (got, took) = r?;
        ids.push(got);
        for us in took {
            h.saturating_record(us.max(1));
        }
    }
    let stored: u64 = ids.iter().map(|v| v.len() as u64).sum();
    progress.phase("download", stored);
    let started = Instant::now();
    let downloads = ids.iter().enumerate().map(|(i, files)| {
        let (http, body, progress) = (http.clone(), body.clone(), progress.clone());
        let token = &peers.tokens[i];
        async move {
            let mut same = 0u64;
            for id in files {
                let url = format!(
                    "{}/download/{id}?mesh={mesh_id}",
                    nodes[(i + 1) % nodes.len()].http
                );
                let r = http.get(url).bearer_auth(token).send().await?;
                if r.status().is_success() && r.bytes().await? == body {
                    same += 1;
                }
                progress.inc();
            }
            anyhow::Ok(same)
        }
    });
    let mut whole = 0u64;
    for r in futures_util::future::join_all(downloads).await {
        whole += r?;
    }
    let down_s = started.elapsed().as_secs_f64();
    progress.finish();
    let mb =
        |files: u64, s: f64| stats::round3(files as f64 * plan.bytes as f64 / 1e6 / s.max(1e-9));
    let sent = plan.files * plan.peers as u64;
    Ok(Report {
        peers: plan.peers,
        messages_per_peer: plan.files,
        payload_bytes: plan.bytes,
        sent,
        acked: stored,
        rejected: sent - stored,
        delivered: whole,
        lost: sent - whole,
        duration_s: stats::round3(up_s + down_s),
        throughput_msgs_per_s: stats::round3(stored as f64 / up_s.max(1e-9)),
        latency_ms: stats::quantiles_ms(&h),
        hello_per_s: stats::round3(peers.hello_per_s),
        upload_mb_per_s: Some(mb(stored, up_s)),
        download_mb_per_s: Some(mb(whole, down_s)),
        ..Report::one_mesh("upload")
    })
}

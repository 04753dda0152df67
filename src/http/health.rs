//! Liveness, readiness and metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::engine::Node;

/// A readiness probe must answer well inside Kubernetes' 1 s default
/// timeout even when the database hangs.
const DB_PROBE_TIMEOUT: Duration = Duration::from_millis(800);

async fn db_up(node: &Node) -> bool {
    let up = matches!(
        tokio::time::timeout(DB_PROBE_TIMEOUT, node.store.ping()).await,
        Ok(Ok(()))
    );
    node.db_up.store(up, Ordering::Relaxed);
    up
}

/// 200 while the process serves, whatever the database says.
pub async fn live(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let db = if db_up(&node).await { "up" } else { "down" };
    Json(json!({
        "status": "ok",
        "db": db,
        "version": env!("CARGO_PKG_VERSION"),
        "nodeId": node.id.to_string(),
        "store": node.store.backend(),
        "draining": node.is_draining(),
    }))
}

/// 200 only when the database answers and the node is not draining.
pub async fn ready(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let draining = node.is_draining();
    let db = db_up(&node).await;
    let status = if db && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": status == StatusCode::OK,
            "db": if db { "up" } else { "down" },
            "draining": draining,
        })),
    )
}

pub async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    if let Some((in_use, idle, waiting)) = node.store.pool_status() {
        use crate::metrics::StateLabel;
        let pool = &node.metrics.db_pool;
        pool.get_or_create(&StateLabel { state: "in_use" })
            .set(in_use);
        pool.get_or_create(&StateLabel { state: "idle" }).set(idle);
        pool.get_or_create(&StateLabel { state: "waiting" })
            .set(waiting);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.render(),
    )
}

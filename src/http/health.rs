//! Liveness, readiness and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::engine::{node, Engine};

/// 200 while the process serves, whatever the database says.
pub async fn live(State(node): State<Arc<Engine>>) -> impl IntoResponse {
    let db = if node::probe_db(&node).await {
        "up"
    } else {
        "down"
    };
    Json(json!({
        "status": "ok",
        "db": db,
        "version": env!("CARGO_PKG_VERSION"),
        "nodeId": node.node_id.to_string(),
        "store": node::store_backend(&node),
        "draining": node.node.is_draining(),
    }))
}

/// 200 only when the database answers (as it has for a few seconds:
/// readiness does not flap with a squeezed pool) and the node is not
/// draining; 503 at once when draining.
pub async fn ready(State(node): State<Arc<Engine>>) -> impl IntoResponse {
    let draining = node.node.is_draining();
    let db = node::probe_db(&node).await;
    let settled = node.node.db_settled();
    let status = if settled && !draining {
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

pub async fn metrics(State(node): State<Arc<Engine>>) -> impl IntoResponse {
    node::sample_pools(&node);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.render(),
    )
}

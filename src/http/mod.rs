//! The HTTP surface of one node: routes, JSON bodies, request metrics.

pub mod files;
pub mod health;
pub mod hook;
pub mod join;
pub mod server;
pub mod webhook;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::engine::Engine;
use crate::metrics::HttpLabels;

/// The node's routes; `admin` is nested under `/admin` (the admin API is
/// its own module, which builds on this one's error shape).
pub fn router(node: Arc<Engine>, admin: Router<Arc<Engine>>) -> Router {
    // Routes that wait on the database answer within one deadline, as a
    // WebSocket request does, however many statements they run.
    let deadline = || {
        tower::ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(timed_out))
            .timeout(crate::engine::db_timeout())
    };
    Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/join", post(join::join).layer(deadline()))
        .route("/hook/set-status", post(hook::set_status))
        .route(
            "/hook/{mesh_id}/{secret}",
            post(webhook::inbound).layer(deadline()),
        )
        .nest("/admin", admin.layer(deadline()))
        .fallback(not_found)
        // No route takes more than a frame but uploads (below): hooks,
        // joins and webhooks check their own, smaller limit; admin bodies
        // are small JSON.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            node.config.settings.max_frame_bytes,
        ))
        // Uploads stream to the blob store and count their own bytes
        // against `max_file_bytes`; downloads stream out.
        .route("/upload", post(files::upload))
        .route("/download/{file_id}", get(files::download))
        .layer(axum::middleware::map_response(json_too_large))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            count_requests,
        ))
        .layer(axum::middleware::from_fn(clean_path))
        // Every request gets an id (the caller's `x-request-id`, else a new
        // UUID), logged with it and echoed back for correlation.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            log_request,
        ))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .with_state(node)
}

/// Unmatched routes answer JSON: the 1.37 client parses every response
/// body as JSON, and axum's default 404 has an empty body.
async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"ok": false, "error": "not_found"})),
    )
        .into_response()
}

/// A request past its deadline (the database stalled), in both error
/// shapes: `/join` clients read `ok`/`error`, admin clients
/// `error`/`message`.
async fn timed_out(_: tower::BoxError) -> Response {
    both_shapes(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the broker cannot reach its database; retry",
    )
}

fn both_shapes(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"ok": false, "error": code, "message": message})),
    )
        .into_response()
}

/// The body limit's own 413 is plain text; every client of ours parses
/// JSON (the 1.37 client every body). Both error shapes in one: hooks read
/// `ok`/`error`, admin clients `error`/`message`.
async fn json_too_large(resp: Response) -> Response {
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if resp.status() != StatusCode::PAYLOAD_TOO_LARGE || json {
        return resp;
    }
    both_shapes(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        "the body is over max_frame_bytes",
    )
}

/// A path whose decoded form holds a NUL or is not UTF-8 is refused
/// before any route sees it: a path parameter reaches the database as
/// text, where a NUL is an error (it answered 503 "cannot reach its
/// database" before), and no name we store can hold one.
async fn clean_path(req: Request, next: Next) -> Response {
    if !path_is_clean(req.uri().path()) {
        return ApiError::bad_request("the path holds a NUL or invalid UTF-8").into_response();
    }
    next.run(req).await
}

fn path_is_clean(path: &str) -> bool {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    !decoded.contains(&0) && std::str::from_utf8(&decoded).is_ok()
}

static REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// One log line per HTTP request (WebSocket sessions log their own).
async fn log_request(State(node): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let method = req.method().clone();
    // The route template, never the raw path: paths can carry invite tokens.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        node_id = %node.node_id,
        request_id,
        %method,
        route,
        status = resp.status().as_u16(),
        duration_ms = started.elapsed().as_millis() as u64,
        "http request"
    );
    resp
}

/// Counts every request by matched route (not raw path: bounded labels).
async fn count_requests(State(node): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    node.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// An HTTP error as `{"error","message"}` (admin) with its status.
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

/// Parses a JSON body ourselves so a bad one gets our error shape, not
/// axum's plain-text rejection.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    if crate::protocol::limits::has_nul(body) {
        return Err("NUL characters are not allowed".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_with_nul_or_bad_utf8_are_not_clean() {
        use super::path_is_clean;
        assert!(path_is_clean("/admin/meshes/m%20x/peers"));
        assert!(path_is_clean("/admin/meshes/caf%C3%A9"));
        assert!(path_is_clean("/a%2"), "a stray % is left as is");
        assert!(!path_is_clean("/admin/meshes/%00/peers"));
        assert!(!path_is_clean("/admin/meshes/%ff"));
        assert!(!path_is_clean("/admin/meshes/%C3"));
    }
}

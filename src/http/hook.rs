//! `POST /hook/set-status`: Claude Code hook scripts report a session's
//! status to any node. Body and replies are v1's snake_case shapes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::engine::status::{self, HookError, HookOutcome, HookRequest};
use crate::engine::Engine;
use crate::protocol::limits::{within, MAX_CWD, MAX_SESSION_ID};
use crate::protocol::Status;

#[derive(Deserialize)]
struct HookBody {
    cwd: String,
    pid: i64,
    status: String,
    #[serde(default)]
    session_id: Option<String>,
}

fn reply(
    node: &Engine,
    status: StatusCode,
    result: &'static str,
    body: serde_json::Value,
) -> Response {
    node.metrics.hook(result);
    (status, Json(body)).into_response()
}

fn refuse(node: &Engine, status: StatusCode, code: &'static str, message: &str) -> Response {
    reply(
        node,
        status,
        code,
        json!({"ok": false, "error": code, "message": message}),
    )
}

/// JSON, or curl's default form type (v1 hook scripts post JSON with
/// `curl -d` and may not set a type). Anything else is refused.
fn acceptable_type(headers: &HeaderMap) -> bool {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(t) => {
            let t = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            t == "application/json"
                || t.ends_with("+json")
                || t == "application/x-www-form-urlencoded"
        }
    }
}

pub async fn set_status(
    State(node): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > node.config.settings.max_message_bytes {
        return refuse(
            &node,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "body is over max_message_bytes",
        );
    }
    if !acceptable_type(&headers) {
        return refuse(
            &node,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        );
    }
    if crate::protocol::limits::has_nul(&body) {
        return refuse(
            &node,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "NUL characters are not allowed",
        );
    }
    let b: HookBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                &node,
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("invalid body: {e}"),
            )
        }
    };
    if b.cwd.is_empty() || !within(&b.cwd, MAX_CWD) {
        return refuse(
            &node,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "cwd must be 1 to 4096 characters",
        );
    }
    if !(0..=i64::from(i32::MAX)).contains(&b.pid) {
        return refuse(
            &node,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "pid is out of range",
        );
    }
    if b.session_id
        .as_ref()
        .is_some_and(|s| !within(s, MAX_SESSION_ID))
    {
        return refuse(
            &node,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "session_id is too long",
        );
    }
    let Some(status) = Status::parse(&b.status) else {
        return refuse(
            &node,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "status must be idle, working or dnd",
        );
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let req = HookRequest {
        cwd: b.cwd,
        pid: b.pid,
        status,
        bearer,
    };
    match status::hook(&node, req).await {
        Ok(HookOutcome::Applied(ids)) => reply(
            &node,
            StatusCode::OK,
            "ok",
            json!({"ok": true, "presence_id": ids[0].to_string()}),
        ),
        Ok(HookOutcome::Pending) => reply(
            &node,
            StatusCode::OK,
            "pending",
            json!({"ok": true, "pending": true}),
        ),
        Err(HookError::Unauthorized) => refuse(
            &node,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <hookToken> from this session's hello_ack",
        ),
        Err(HookError::RateLimited) => refuse(
            &node,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit",
            "too many hook posts for this session",
        ),
        Err(HookError::Unavailable) => refuse(
            &node,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the broker cannot reach its database",
        ),
    }
}

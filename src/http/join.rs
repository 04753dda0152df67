//! `POST /join`: v1 invite redemption. Body and replies are snake_case /
//! `{"ok":…}` as claudemesh clients expect.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::join::{self, JoinError, JoinRequest};
use crate::engine::Engine;
use crate::protocol::invite::InvitePayload;

#[derive(Deserialize)]
struct JoinBody {
    invite_token: String,
    #[serde(default)]
    invite_payload: Option<Value>,
    peer_pubkey: String,
    display_name: String,
}

fn refuse(status: StatusCode, code: &str) -> Response {
    (status, Json(json!({"ok": false, "error": code}))).into_response()
}

pub async fn join(State(node): State<Arc<Engine>>, body: Bytes) -> Response {
    if body.len() > node.config.settings.max_message_bytes {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    }
    if crate::protocol::limits::has_nul(&body) {
        return refuse(StatusCode::BAD_REQUEST, "bad_request");
    }
    let Ok(b) = serde_json::from_slice::<JoinBody>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "bad_request");
    };
    // The payload may come as the decoded object or as its JSON string.
    let payload = match b.invite_payload {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match serde_json::from_str::<InvitePayload>(&s) {
            Ok(p) => Some(p),
            Err(_) => return refuse(StatusCode::BAD_REQUEST, "bad_request"),
        },
        Some(v) => match serde_json::from_value::<InvitePayload>(v) {
            Ok(p) => Some(p),
            Err(_) => return refuse(StatusCode::BAD_REQUEST, "bad_request"),
        },
    };
    let req = JoinRequest {
        token: b.invite_token,
        payload,
        pubkey: b.peer_pubkey,
        display_name: b.display_name,
    };
    match join::join(&node, req).await {
        Ok(r) => {
            let mut body = json!({"ok": true, "memberId": r.member_id});
            if r.already_member {
                body["alreadyMember"] = Value::Bool(true);
            }
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(JoinError::Refused(code)) => refuse(StatusCode::BAD_REQUEST, code),
        Err(JoinError::Unavailable) => refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

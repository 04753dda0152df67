//! `POST /hook/{meshId}/{secret}`: an inbound webhook, from anything
//! outside; the engine checks the secret and pushes the body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::{webhooks, Engine};

pub async fn inbound(
    State(node): State<Arc<Engine>>,
    Path((mesh_id, secret)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let r = webhooks::inbound(&node, &mesh_id, &secret, &body).await;
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(r.body)).into_response()
}

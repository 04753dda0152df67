//! The routes of shared files; what they do is `engine::transfers`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;

use crate::engine::transfers::{self, DownloadQuery};
use crate::engine::Engine;
use std::net::SocketAddr;

pub async fn upload(
    State(node): State<Arc<Engine>>,
    peer: Option<Extension<SocketAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    transfers::upload(node.ctx.clone(), peer.map(|Extension(a)| a), headers, body).await
}

pub async fn download(
    State(node): State<Arc<Engine>>,
    peer: Option<Extension<SocketAddr>>,
    Path(file_id): Path<String>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Response {
    transfers::download(&node.ctx, peer.map(|Extension(a)| a), file_id, q, headers).await
}

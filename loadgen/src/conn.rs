//! One simulated peer's WebSocket session: a signed hello (PROTOCOL.md
//! "Handshake"), then a reader task that counts acks and pushes while the
//! write half is driven by the workload. A stalled member says hello the
//! same way and then is never read until the end of the run.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use claudemesh_broker::protocol::crypto;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::admin::Member;
use crate::payload;
use crate::stats::Stats;
use crate::workload::STALLED_ID_SUFFIX;

/// Unacked sends allowed per connection.
pub const WINDOW: usize = 32;
/// Connect plus hello must finish within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type Sink = SplitSink<Ws, Message>;
pub type Stream = SplitStream<Ws>;

/// A connected, greeted peer.
pub struct Conn {
    pub sink: Sink,
    /// Send credits: one taken per send, one returned per ack.
    pub window: Arc<Semaphore>,
    pub reader: JoinHandle<()>,
}

/// What identifies a peer's mesh to its hello.
pub struct HelloCtx {
    pub mesh_id: String,
    pub slug: String,
}

/// What a peer's reader needs besides its socket.
pub struct Reading {
    /// Deliveries each of this peer's acked sends calls for.
    pub fanout: u64,
    pub stats: Arc<Stats>,
    pub stop: CancellationToken,
}

fn hello_frame(ctx: &HelloCtx, index: usize, name: &str, member: &Member) -> Result<String> {
    let ts = chrono::Utc::now().timestamp_millis();
    let text = format!(
        "{}|{}|{}|{ts}",
        ctx.mesh_id, member.id, member.keys.public_hex
    );
    let sig = crypto::sign_hex(&member.keys.secret_hex, text.as_bytes())
        .ok_or_else(|| anyhow!("cannot sign with a generated key"))?;
    Ok(json!({
        "type": "hello", "meshId": ctx.mesh_id, "memberId": member.id,
        "pubkey": member.keys.public_hex, "displayName": name,
        "sessionId": format!("{}-s{index}", ctx.slug), "pid": std::process::id(),
        "cwd": "/loadgen", "hostname": "loadgen", "timestamp": ts, "signature": sig,
    })
    .to_string())
}

/// Connects session slot `index` to `ws_url`, says hello as `name` and
/// waits for `hello_ack`.
pub async fn greet(
    ws_url: &str,
    ctx: &HelloCtx,
    index: usize,
    name: &str,
    member: &Member,
) -> Result<(Sink, Stream)> {
    greet_token(ws_url, ctx, index, name, member)
        .await
        .map(|(sink, stream, _)| (sink, stream))
}

/// `greet`, also returning the session's hook token (`hello_ack.hookToken`),
/// which HTTP routes such as uploads take as a bearer.
pub async fn greet_token(
    ws_url: &str,
    ctx: &HelloCtx,
    index: usize,
    name: &str,
    member: &Member,
) -> Result<(Sink, Stream, String)> {
    let hello = hello_frame(ctx, index, name, member)?;
    let greet = async {
        // tungstenite zero-fills its read buffer on every read; the default
        // 128 KiB made that the generator's main cost in large idle runs.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4 * 1024);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(ws_url, Some(config), true)
            .await
            .with_context(|| format!("connecting to {ws_url}"))?;
        let (mut sink, mut stream) = ws.split();
        sink.send(Message::Text(hello.into())).await?;
        loop {
            let msg = stream
                .next()
                .await
                .ok_or_else(|| anyhow!("socket closed before hello_ack"))??;
            let Message::Text(t) = msg else {
                if let Message::Close(f) = msg {
                    bail!("socket closed before hello_ack: {f:?}");
                }
                continue;
            };
            let v: Incoming<'_> = serde_json::from_str(&t).context("frame is not JSON")?;
            match v.kind.as_ref() {
                "hello_ack" => {
                    let token = v.hook_token.as_deref().unwrap_or("").to_string();
                    return anyhow::Ok((sink, stream, token));
                }
                "error" => {
                    let code = v.code.as_deref().unwrap_or("?");
                    let hint = if code == "capacity" {
                        " (start the broker with MAX_CONNECTIONS_PER_MESH of at least the \
                         sessions per mesh: --peers / --meshes, plus stalled ones)"
                    } else {
                        ""
                    };
                    bail!(
                        "hello refused: {code}: {}{hint}",
                        v.message.as_deref().unwrap_or("")
                    )
                }
                _ => continue,
            }
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, greet)
        .await
        .map_err(|_| anyhow!("no hello_ack within {HELLO_TIMEOUT:?}"))?
        .with_context(|| name.to_string())
}

/// Connects peer `index` (see `greet`) and starts its reader.
pub async fn connect(
    ws_url: &str,
    ctx: &HelloCtx,
    index: usize,
    name: &str,
    member: &Member,
    reading: Reading,
) -> Result<Conn> {
    let (sink, stream) = greet(ws_url, ctx, index, name, member).await?;
    let window = Arc::new(Semaphore::new(WINDOW));
    let reader = tokio::spawn(read_loop(index, stream, window.clone(), reading));
    Ok(Conn {
        sink,
        window,
        reader,
    })
}

/// A stalled member's socket: greeted, then left unread (both halves
/// kept, so the socket stays open) until `probe_closed` at the end.
pub struct Stalled {
    pub sink: Sink,
    stream: Stream,
}

/// Connects stalled member slot `index` (see `greet`); nothing reads it.
pub async fn connect_stalled(
    ws_url: &str,
    ctx: &HelloCtx,
    index: usize,
    name: &str,
    member: &Member,
) -> Result<Stalled> {
    let (sink, stream) = greet(ws_url, ctx, index, name, member).await?;
    Ok(Stalled { sink, stream })
}

/// Whether the broker has closed a stalled socket: sends a ping, then
/// reads (draining what piled up) until the pong (open: `false`) or a
/// close frame, the end of the stream or an error (closed: `true`).
/// Callers bound it with a timeout and take a timeout as open.
pub async fn probe_closed(s: &mut Stalled) -> bool {
    if s.sink.send(Message::Ping(PROBE.into())).await.is_err() {
        return true;
    }
    loop {
        match s.stream.next().await {
            Some(Ok(Message::Pong(p))) if p.as_ref() == PROBE => return false,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
            Some(Ok(_)) => {}
        }
    }
}

/// The payload of `probe_closed`'s ping.
const PROBE: &[u8] = b"loadgen-stalled-probe";

/// The fields of incoming frames the load generator looks at.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    queued: Option<bool>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "hookToken")]
    hook_token: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    subtype: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    ciphertext: Option<Cow<'a, str>>,
}

/// Receives until `stop`: acks return send credits, pushes are checked
/// for duplicates and timed.
async fn read_loop(index: usize, mut stream: Stream, window: Arc<Semaphore>, reading: Reading) {
    let Reading {
        fanout,
        stats,
        stop,
    } = reading;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            next = stream.next() => next,
        };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                if !stop.is_cancelled() {
                    Stats::bump(&stats.closed_early);
                    stats.show_error(&format!("peer {index}: socket closed by the broker"));
                }
                // Wakes a sender waiting for credits on this socket.
                window.close();
                break;
            }
            Some(Ok(_)) => continue,
        };
        let Ok(frame) = serde_json::from_str::<Incoming<'_>>(&text) else {
            stats.show_error(&format!("peer {index}: unreadable frame {text}"));
            continue;
        };
        match frame.kind.as_ref() {
            "ack" => {
                if frame.queued == Some(true) {
                    Stats::bump(&stats.acked);
                    let id = frame.id.as_deref().unwrap_or("");
                    // Nobody reads a stalled member: no delivery due.
                    if !id.ends_with(STALLED_ID_SUFFIX) {
                        Stats::add(&stats.expected, fanout);
                    }
                } else {
                    Stats::bump(&stats.rejected);
                    stats.show_error(&format!(
                        "send rejected: {}",
                        frame
                            .error
                            .as_deref()
                            .or(frame.code.as_deref())
                            .unwrap_or("(no error)")
                    ));
                }
                window.add_permits(1);
            }
            "push" if frame.subtype.as_deref() == Some("system") => {}
            "push" => match frame.ciphertext.as_deref().and_then(payload::decode) {
                Some(h) => {
                    if seen.insert((h.sender, h.seq)) {
                        let latency = payload::now_us().saturating_sub(h.sent_us);
                        stats.delivered(latency, (h.sender, h.seq));
                    } else {
                        Stats::bump(&stats.duplicates);
                    }
                }
                None => Stats::bump(&stats.foreign),
            },
            "error" => stats.show_error(&format!(
                "peer {index}: broker error {}: {}",
                frame.code.as_deref().unwrap_or("?"),
                frame.message.as_deref().unwrap_or("")
            )),
            _ => {}
        }
    }
}

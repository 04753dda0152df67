//! One WebSocket connection: a reader loop (this task) that parses frames
//! and asks the engine, and a writer task that owns the sink. The two talk
//! through a bounded queue so a slow client never blocks the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::delivery::{self, Recipient};
use crate::engine::events::PeerEvent;
use crate::engine::messaging::{SendOutcome, SendRefusal};
use crate::engine::sessions::{close, Outbound, SessionHandle};
use crate::engine::{Node, DB_TIMEOUT};
use crate::protocol::frames::{self, error_ack, error_frame, ok_ack, ClientFrame, FrameError};
use crate::store::{PatchResult, Presence, PresencePatch, StoreError};

/// Frames queued for one socket. A client this far behind is not reading;
/// the bound keeps its memory fixed (slow-consumer policy comes later).
const OUTBOUND_QUEUE: usize = 1024;
/// Sends one session may have in flight: enough to fill a batch, bounded
/// so a flooding client waits instead of growing the queue.
const PIPELINED_SENDS: usize = 256;
/// How long the writer may take to flush a close frame at the end.
const WRITER_FLUSH: Duration = Duration::from_secs(2);

/// Why the loop ended; logged once per connection.
type EndReason = &'static str;

struct Conn {
    node: Arc<Node>,
    conn_id: Uuid,
    tx: mpsc::Sender<Outbound>,
    closer: watch::Sender<Option<(u16, &'static str)>>,
    presence: Option<Arc<Presence>>,
    client_ack: bool,
    /// Send outcomes, answered in submission order by `forward_acks`.
    acks: mpsc::Sender<PendingAck>,
    /// The session's delivery loop, started at hello.
    deliverer: Option<(JoinHandle<()>, CancellationToken)>,
}

pub async fn run(node: Arc<Node>, socket: WebSocket) {
    node.metrics.connections.inc();
    let started = Instant::now();
    let conn_id = Uuid::now_v7();
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let writer = tokio::spawn(write_loop(sink, rx));
    let (closer, closer_rx) = watch::channel(None);
    let (acks, acks_rx) = mpsc::channel(PIPELINED_SENDS);
    let ack_task = tokio::spawn(forward_acks(acks_rx, tx.clone()));
    let mut conn = Conn {
        node: node.clone(),
        conn_id,
        tx,
        closer,
        presence: None,
        client_ack: false,
        acks,
        deliverer: None,
    };
    let reason = conn.read_loop(stream, closer_rx).await;
    let Conn {
        presence,
        tx,
        deliverer,
        acks,
        ..
    } = conn;
    // Answer what was already submitted (the client may still read).
    drop(acks);
    let _ = tokio::time::timeout(WRITER_FLUSH, ack_task).await;
    if let Some((task, stop)) = deliverer {
        // Let in-flight completions finish before the presence (and its
        // claims) is released, so written pushes are not delivered twice.
        stop.cancel();
        let _ = task.await;
    }
    if let Some(p) = &presence {
        node.release(p.id, conn_id).await;
    }
    drop(tx);
    let _ = tokio::time::timeout(WRITER_FLUSH, writer).await;
    node.metrics.connections.dec();
    tracing::info!(
        conn_id = %conn_id,
        presence_id = presence.as_ref().map(|p| p.id.to_string()),
        mesh_id = presence.as_ref().map(|p| p.mesh_id.as_str()),
        reason,
        duration_ms = started.elapsed().as_millis() as u64,
        "connection closed"
    );
}

async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Outbound>) {
    while let Some(out) = rx.recv().await {
        let result = match out {
            Outbound::Text(t) => sink.send(Message::Text(t)).await,
            Outbound::Ping => sink.send(Message::Ping(Default::default())).await,
            Outbound::Marker(done) => {
                let _ = done.send(());
                Ok(())
            }
            Outbound::Close(code, reason) => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    })))
                    .await;
                break;
            }
        };
        if result.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// A submitted send whose ack is not written yet.
struct PendingAck {
    rx: oneshot::Receiver<SendOutcome>,
    id: String,
    req_id: Option<String>,
}

/// Writes send acks in submission order as their outcomes arrive.
async fn forward_acks(mut pending: mpsc::Receiver<PendingAck>, tx: mpsc::Sender<Outbound>) {
    while let Some(p) = pending.recv().await {
        let outcome = match tokio::time::timeout(DB_TIMEOUT, p.rx).await {
            Ok(Ok(o)) => o,
            _ => Err(SendRefusal {
                code: "unavailable",
                sentence: "the broker cannot reach its database; retry".into(),
            }),
        };
        let req_id = p.req_id.as_deref();
        let frame = match outcome {
            Ok(message_id) => frames::queued_ack(&p.id, &message_id.to_string(), req_id),
            Err(r) => error_ack(Some(&p.id), r.code, &r.sentence, req_id),
        };
        if tx.send(Outbound::Text(frame.into())).await.is_err() {
            return;
        }
    }
}

/// Resolves when the engine asks this socket to close.
async fn close_requested(
    rx: &mut watch::Receiver<Option<(u16, &'static str)>>,
) -> (u16, &'static str) {
    loop {
        if let Some(v) = *rx.borrow_and_update() {
            return v;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// True when a read error is tungstenite refusing an oversized frame.
fn is_capacity_error(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

impl Conn {
    async fn read_loop(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        mut closer_rx: watch::Receiver<Option<(u16, &'static str)>>,
    ) -> EndReason {
        let settings = &self.node.config.settings;
        let ping_every = Duration::from_secs(settings.ping_interval_seconds);
        let pong_timeout = Duration::from_secs(settings.pong_timeout_seconds);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let shutdown = self.node.close_sockets.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.close(close::GOING_AWAY, "shutdown").await;
                    return "shutdown";
                }
                (code, reason) = close_requested(&mut closer_rx) => {
                    self.close(code, reason).await;
                    return reason;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > pong_timeout {
                        self.node.metrics.pong_timeouts.inc();
                        self.close(close::GOING_AWAY, "pong timeout").await;
                        return "pong timeout";
                    }
                    // A full queue means the client is not reading; skipping
                    // the ping lets the pong timeout end it.
                    let _ = self.tx.try_send(Outbound::Ping);
                }
                msg = stream.next() => {
                    let msg = match msg {
                        None => return "client went away",
                        Some(Err(e)) => {
                            if is_capacity_error(e) {
                                self.node.metrics.oversized_frames.inc();
                                self.close(close::TOO_BIG, "frame too large").await;
                                return "frame too large";
                            }
                            return "read error";
                        }
                        Some(Ok(m)) => m,
                    };
                    last_heard = Instant::now();
                    match msg {
                        Message::Text(text) => {
                            if let Err(reason) = self.on_text(text.as_str()).await {
                                return reason;
                            }
                        }
                        Message::Binary(_) => {
                            self.node.metrics.bad_frames.inc();
                            self.send(error_frame("bad_request", "binary frames are not supported", None)).await;
                        }
                        Message::Close(_) => return "client closed",
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            }
        }
    }

    async fn send(&self, frame: String) {
        let _ = self.tx.send(Outbound::Text(frame.into())).await;
    }

    async fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Outbound::Close(code, reason)).await;
    }

    /// Handles one text frame. `Err` ends the connection.
    async fn on_text(&mut self, text: &str) -> Result<(), EndReason> {
        let parsed = frames::parse(text);
        let Some(presence) = self.presence.clone() else {
            return self.before_hello(parsed).await;
        };
        let incoming = match parsed {
            Ok(i) => i,
            Err(FrameError::BadSend {
                req_id,
                id,
                message,
            }) => {
                self.node.metrics.bad_frames.inc();
                // Through the ack queue, so acks keep the order of sends.
                let (done, rx) = oneshot::channel();
                let _ = done.send(Err(SendRefusal {
                    code: "bad_request",
                    sentence: message,
                }));
                let _ = self
                    .acks
                    .send(PendingAck {
                        rx,
                        id: id.unwrap_or_default(),
                        req_id,
                    })
                    .await;
                return Ok(());
            }
            Err(FrameError::BadRequest { req_id, message }) => {
                self.node.metrics.bad_frames.inc();
                self.send(error_frame("bad_request", &message, req_id.as_deref()))
                    .await;
                return Ok(());
            }
            Err(FrameError::MalformedHello(_)) => {
                self.send(error_frame(
                    "bad_request",
                    "this session already said hello",
                    None,
                ))
                .await;
                return Ok(());
            }
        };
        let req_id = incoming.req_id.as_deref();
        let node = self.node.clone();
        let result: Result<(), StoreError> = match incoming.frame {
            ClientFrame::Hello(_) => {
                self.send(error_frame(
                    "bad_request",
                    "this session already said hello",
                    req_id,
                ))
                .await;
                Ok(())
            }
            ClientFrame::ListPeers => match node
                .peers_list(&presence.mesh_id, &presence.member_id, req_id)
                .await
            {
                Ok(frame) => {
                    self.send(frame).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ClientFrame::SetStatus(status) => node.set_status(presence.id, status).await,
            ClientFrame::SetSummary(s) => self.patch(PresencePatch::Summary(s), None, req_id).await,
            ClientFrame::SetVisible(v) => {
                let id = incoming.id.as_deref();
                self.patch(PresencePatch::Visible(v), Some(id), req_id)
                    .await
            }
            ClientFrame::SetProfile(p) => {
                let id = incoming.id.as_deref();
                self.patch(PresencePatch::Profile(p), Some(id), req_id)
                    .await
            }
            ClientFrame::SetStats(s) => self.patch(PresencePatch::Stats(s), None, req_id).await,
            ClientFrame::JoinGroup(g) => {
                self.patch(PresencePatch::JoinGroup(g), None, req_id).await
            }
            ClientFrame::LeaveGroup(n) => {
                self.patch(PresencePatch::LeaveGroup(n), None, req_id).await
            }
            ClientFrame::Send(s) => {
                let id = s.id.clone();
                let rx = node.submit(presence.clone(), s).await;
                let pending = PendingAck {
                    rx,
                    id,
                    req_id: incoming.req_id.clone(),
                };
                let _ = self.acks.send(pending).await;
                Ok(())
            }
            ClientFrame::ClientAck(message_id) => {
                // Only sessions that opted in ack; an unknown or foreign id
                // matches no row of this session and changes nothing.
                match Uuid::parse_str(&message_id) {
                    Ok(id) if self.client_ack => node.ack(presence.id, id).await.map(|_| ()),
                    _ => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(presence_id = %presence.id, error = %e, "store failed");
            self.send(error_frame(
                "unavailable",
                "the broker cannot reach its database",
                req_id,
            ))
            .await;
        }
        Ok(())
    }

    /// A presence field change; `ack` is `Some(id)` for frames answered
    /// with an `ack` (`set_visible`, `set_profile`).
    async fn patch(
        &mut self,
        patch: PresencePatch,
        ack: Option<Option<&str>>,
        req_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let presence = self.presence.as_ref().expect("helloed");
        match self.node.patch(presence.id, patch).await? {
            PatchResult::Applied(after) => {
                if let Some(id) = ack {
                    self.send(ok_ack(id, req_id)).await;
                }
                if after.visible != presence.visible {
                    let event = if after.visible {
                        PeerEvent::Visible
                    } else {
                        PeerEvent::Hidden
                    };
                    self.node.announce(event, &after, None);
                }
                self.presence = Some(Arc::new(*after));
            }
            PatchResult::Refused => {
                self.send(error_frame("bad_request", "too many groups", req_id))
                    .await;
            }
            PatchResult::Gone => {
                self.send(error_frame(
                    "bad_request",
                    "this session's presence has ended",
                    req_id,
                ))
                .await;
            }
        }
        Ok(())
    }

    async fn before_hello(
        &mut self,
        parsed: Result<frames::Incoming, FrameError>,
    ) -> Result<(), EndReason> {
        let incoming = match parsed {
            Ok(i) => i,
            Err(FrameError::MalformedHello(message)) => {
                return Err(self.refuse("malformed", &message, None).await);
            }
            Err(FrameError::BadSend { req_id, id, .. }) => {
                self.send(error_ack(
                    id.as_deref(),
                    "no_hello",
                    "say hello first",
                    req_id.as_deref(),
                ))
                .await;
                return Ok(());
            }
            Err(FrameError::BadRequest { req_id, .. }) => {
                self.send(error_frame(
                    "no_hello",
                    "the first frame must be a hello",
                    req_id.as_deref(),
                ))
                .await;
                return Ok(());
            }
        };
        let req_id = incoming.req_id.as_deref();
        let hello = match incoming.frame {
            ClientFrame::Hello(h) => h,
            ClientFrame::Send(s) => {
                self.send(error_ack(
                    Some(&s.id),
                    "no_hello",
                    "say hello first",
                    req_id,
                ))
                .await;
                return Ok(());
            }
            _ => {
                self.send(error_frame(
                    "no_hello",
                    "the first frame must be a hello",
                    req_id,
                ))
                .await;
                return Ok(());
            }
        };
        match self.node.hello(&hello, self.conn_id, req_id).await {
            Ok(welcome) => {
                self.node.metrics.hello("ok");
                let p = &welcome.presence;
                let wake = Arc::new(Notify::new());
                let handle = SessionHandle {
                    conn_id: self.conn_id,
                    mesh_id: p.mesh_id.clone(),
                    member_id: p.member_id.clone(),
                    tx: self.tx.clone(),
                    wake: wake.clone(),
                    closer: self.closer.clone(),
                };
                self.node.sessions.insert(p.id, handle);
                tracing::info!(conn_id = %self.conn_id, presence_id = %p.id,
                    mesh_id = %p.mesh_id, member_id = %p.member_id, "hello accepted");
                // The ack goes first: queued pushes follow it.
                self.send(welcome.ack).await;
                if let Some(event) = welcome.announce {
                    self.node.announce(event, p, welcome.saved.as_ref());
                }
                let stop = CancellationToken::new();
                let task = tokio::spawn(delivery::run(
                    self.node.clone(),
                    Recipient {
                        presence: p.id,
                        mesh_id: p.mesh_id.clone(),
                        member_id: p.member_id.clone(),
                        client_ack: welcome.client_ack,
                    },
                    self.tx.clone(),
                    wake,
                    stop.clone(),
                ));
                self.deliverer = Some((task, stop));
                self.client_ack = welcome.client_ack;
                self.presence = Some(Arc::new(welcome.presence));
                Ok(())
            }
            Err(refusal) => Err(self.refuse(refusal.code, &refusal.message, req_id).await),
        }
    }

    /// Refuses a hello: error frame, then close 1008 (1011 when the
    /// database, not the client, is at fault).
    async fn refuse(&self, code: &'static str, message: &str, req_id: Option<&str>) -> EndReason {
        self.node.metrics.hello(code);
        tracing::info!(conn_id = %self.conn_id, code, "hello refused");
        self.send(error_frame(code, message, req_id)).await;
        let close_code = if code == "unavailable" {
            close::INTERNAL
        } else {
            close::POLICY
        };
        self.close(close_code, code).await;
        code
    }
}

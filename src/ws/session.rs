//! One WebSocket connection: a reader loop (this task) that parses frames
//! and asks the engine, and a writer task that owns the sink. The two talk
//! through a bounded queue so a slow client never blocks the engine.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::writer::{forward_acks, write_loop, PendingAck};
use crate::engine::delivery::{self, Recipient};
use crate::engine::events::PeerEvent;
use crate::engine::messaging::SendRefusal;
use crate::engine::outbound::{self, OutboundTx};
use crate::engine::sessions::{close, Mailbox, Outbound, SessionHandle};
use crate::engine::Node;
use crate::protocol::frames::{self, error_ack, error_frame, ok_ack, ClientFrame, FrameError};
use crate::store::{PatchResult, Presence, PresencePatch, StoreError};

/// Frames queued for one socket: one claim batch. Past it senders wait, and
/// a writer stalled for `ping_interval_seconds` drops the socket, so a
/// client that stops reading holds at most this many frames.
const OUTBOUND_QUEUE: usize = 256;
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
    tx: OutboundTx,
    closer: watch::Sender<Option<(u16, &'static str)>>,
    presence: Option<Arc<Presence>>,
    client_ack: bool,
    /// Send outcomes, answered in submission order by `forward_acks`.
    /// Started at the first send: most sessions never send, and the task
    /// and its queue would be a large share of an idle socket's memory.
    acks: Option<(mpsc::Sender<PendingAck>, JoinHandle<()>)>,
    /// Per-socket frame budget: (tokens, last refill).
    frames: (f64, Instant),
    /// The session's delivery loop, started at hello.
    deliverer: Option<(JoinHandle<()>, CancellationToken)>,
}

/// Splits the socket before the session future exists: an `async fn`
/// keeps its arguments for its whole life, and the unsplit socket is
/// several hundred bytes that every idle connection would carry.
pub fn run(node: Arc<Node>, socket: WebSocket) -> impl Future<Output = ()> {
    let (sink, stream) = socket.split();
    session(node, sink, stream)
}

async fn session(
    node: Arc<Node>,
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
) {
    let started = Instant::now();
    let conn_id = Uuid::now_v7();
    tracing::info!(node_id = %node.id, conn_id = %conn_id, "connection opened");
    let (tx, rx) = outbound::channel(OUTBOUND_QUEUE);
    let (closer, closer_rx) = watch::channel(None);
    let writer = tokio::spawn(write_loop(sink, rx, node.clone(), closer.clone()));
    let mut conn = Conn {
        node: node.clone(),
        conn_id,
        tx,
        closer,
        presence: None,
        client_ack: false,
        frames: (
            f64::from(node.config.settings.max_frames_per_second),
            Instant::now(),
        ),
        acks: None,
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
    if let Some((acks, ack_task)) = acks {
        drop(acks);
        let _ = tokio::time::timeout(WRITER_FLUSH, ack_task).await;
    }
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
    tracing::info!(
        node_id = %node.id,
        conn_id = %conn_id,
        presence_id = presence.as_ref().map(|p| p.id.to_string()),
        mesh_id = presence.as_ref().map(|p| p.mesh_id.as_str()),
        reason,
        duration_ms = started.elapsed().as_millis() as u64,
        "connection closed"
    );
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
        let hello_by = tokio::time::sleep(Duration::from_secs(settings.hello_timeout_seconds));
        tokio::pin!(hello_by);
        loop {
            tokio::select! {
                _ = &mut hello_by, if self.presence.is_none() => {
                    self.node.metrics.hello("timeout");
                    self.send(error_frame("hello_timeout", "no hello in time", None)).await;
                    self.close(close::POLICY, "hello timeout").await;
                    return "hello timeout";
                }
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
                            if !self.take_frame_token() {
                                Box::pin(self.throttled(text.as_str())).await;
                                continue;
                            }
                            // Boxed: its largest states (the hello) would
                            // otherwise size every idle socket's task.
                            if let Err(reason) = Box::pin(self.on_text(text.as_str())).await {
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

    /// One token of this socket's `max_frames_per_second` budget.
    fn take_frame_token(&mut self) -> bool {
        let rate = f64::from(self.node.config.settings.max_frames_per_second);
        let now = Instant::now();
        let (tokens, at) = self.frames;
        let refilled = (tokens + now.duration_since(at).as_secs_f64() * rate).min(rate);
        self.frames = (refilled - 1.0, now);
        if refilled >= 1.0 {
            true
        } else {
            self.frames.0 = refilled;
            false
        }
    }

    /// Answers a frame over the budget without acting on it: sends get
    /// their ack (clients wait for one), anything else an error.
    async fn throttled(&mut self, text: &str) {
        self.node.metrics.throttled_frames.inc();
        const SENTENCE: &str = "too many frames per second on this socket";
        match frames::parse(text) {
            Ok(frames::Incoming {
                frame: ClientFrame::Send(s),
                req_id,
                ..
            }) => {
                let (done, rx) = oneshot::channel();
                let _ = done.send(Err(SendRefusal {
                    code: "rate_limit",
                    sentence: SENTENCE.into(),
                }));
                self.pending_ack(PendingAck {
                    rx,
                    id: s.id,
                    req_id,
                })
                .await;
            }
            Ok(i) => {
                self.send(error_frame("rate_limit", SENTENCE, i.req_id.as_deref()))
                    .await
            }
            Err(_) => self.send(error_frame("rate_limit", SENTENCE, None)).await,
        }
    }

    /// Queues a send's outcome for its ack, in submission order; waits
    /// while `PIPELINED_SENDS` are unanswered.
    async fn pending_ack(&mut self, pending: PendingAck) {
        let (acks, _) = self.acks.get_or_insert_with(|| {
            let (acks, rx) = mpsc::channel(PIPELINED_SENDS);
            (acks, tokio::spawn(forward_acks(rx, self.tx.clone())))
        });
        let _ = acks.send(pending).await;
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
                self.pending_ack(PendingAck {
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
                self.pending_ack(pending).await;
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
                let mailbox = Arc::new(Mailbox::default());
                let handle = SessionHandle {
                    conn_id: self.conn_id,
                    mesh_id: p.mesh_id.clone(),
                    member_id: p.member_id.clone(),
                    tx: self.tx.clone(),
                    mailbox: mailbox.clone(),
                    closer: self.closer.clone(),
                };
                self.node.sessions.insert(p.id, handle);
                tracing::info!(conn_id = %self.conn_id, presence_id = %p.id,
                    mesh_id = %p.mesh_id, member_id = %p.member_id, node_id = %self.node.id,
                    "hello accepted");
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
                    mailbox,
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

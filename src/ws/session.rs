//! One WebSocket connection: a reader loop (this task) that reads frames
//! and hands them to the engine's dispatch, and a writer task that owns the
//! sink. The two talk through a bounded queue so a slow client never
//! blocks the engine. This file knows sockets; what a frame means is the
//! engine's.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::writer::{forward_ordered, write_loop};
use crate::engine::delivery::Deliverer;
use crate::engine::dispatch::{self, Out, Parsed, Pending, Refusal, Session};
use crate::engine::hello::{self, Socket};
use crate::engine::outbound;
use crate::engine::session_hello;
use crate::engine::sessions::{close, Outbound};
use crate::engine::Engine;

/// Frames queued for one socket: one claim batch. Past it senders wait, and
/// a writer stalled for `ping_interval_seconds` drops the socket, so a
/// client that stops reading holds at most this many frames.
const OUTBOUND_QUEUE: usize = 256;
/// Replies one session may have in flight (sends waiting for their ack):
/// enough to fill a batch, bounded so a flooding client waits instead of
/// growing the queue.
const PIPELINED_REPLIES: usize = 256;
/// How long the writer may take to flush a close frame at the end.
const WRITER_FLUSH: Duration = Duration::from_secs(2);

/// Why the loop ended; logged once per connection.
type EndReason = &'static str;

struct Conn {
    engine: Arc<Engine>,
    socket: Socket,
    /// Set by an accepted hello.
    session: Option<Session>,
    /// Later replies, written in submission order by `forward_ordered`.
    /// Started at the first one: most sessions never send, and the task
    /// and its queue would be a large share of an idle socket's memory.
    ordered: Option<(mpsc::Sender<Pending>, JoinHandle<()>)>,
    /// Per-socket frame budget: (tokens, last refill).
    frames: (f64, Instant),
    /// The session's delivery loop, started at hello.
    deliverer: Option<Deliverer>,
}

/// Splits the socket before the session future exists: an `async fn`
/// keeps its arguments for its whole life, and the unsplit socket is
/// several hundred bytes that every idle connection would carry.
pub fn run(
    engine: Arc<Engine>,
    socket: WebSocket,
    remote: Option<std::net::IpAddr>,
) -> impl Future<Output = ()> {
    let (sink, stream) = socket.split();
    session(engine, sink, stream, remote)
}

async fn session(
    engine: Arc<Engine>,
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    remote: Option<std::net::IpAddr>,
) {
    let started = Instant::now();
    let conn_id = Uuid::now_v7();
    tracing::info!(node_id = %engine.node_id, conn_id = %conn_id, "connection opened");
    let (tx, rx) = outbound::channel(OUTBOUND_QUEUE);
    let (closer, closer_rx) = watch::channel(None);
    let writer = tokio::spawn(write_loop(sink, rx, engine.clone(), closer.clone()));
    let mut conn = Conn {
        engine: engine.clone(),
        socket: Socket {
            conn_id,
            tx,
            closer,
            remote,
        },
        session: None,
        ordered: None,
        frames: (
            f64::from(engine.config.settings.max_frames_per_second),
            Instant::now(),
        ),
        deliverer: None,
    };
    let reason = conn.read_loop(stream, closer_rx).await;
    let Conn {
        session,
        socket,
        deliverer,
        ordered,
        ..
    } = conn;
    // Answer what was already submitted (the client may still read).
    if let Some((queue, task)) = ordered {
        drop(queue);
        let _ = tokio::time::timeout(WRITER_FLUSH, task).await;
    }
    if let Some(d) = deliverer {
        // In-flight completions finish before the presence (and its
        // claims) is released, so written pushes are not delivered twice.
        d.stop().await;
    }
    let presence = session.map(|s| s.presence);
    if let Some(p) = &presence {
        hello::release(&engine, p.id, conn_id).await;
    }
    drop(socket);
    let _ = tokio::time::timeout(WRITER_FLUSH, writer).await;
    tracing::info!(
        node_id = %engine.node_id,
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
        let settings = &self.engine.config.settings;
        let ping_every = Duration::from_secs(settings.ping_interval_seconds);
        let pong_timeout = Duration::from_secs(settings.pong_timeout_seconds);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let shutdown = self.engine.node.close_sockets.clone();
        let hello_by = tokio::time::sleep(Duration::from_secs(settings.hello_timeout_seconds));
        tokio::pin!(hello_by);
        loop {
            tokio::select! {
                _ = &mut hello_by, if self.session.is_none() => {
                    self.engine.metrics.hello("timeout");
                    self.send(dispatch::error("hello_timeout", "no hello in time", None)).await;
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
                        self.engine.metrics.pong_timeouts.inc();
                        self.close(close::GOING_AWAY, "pong timeout").await;
                        return "pong timeout";
                    }
                    // A full queue means the client is not reading; skipping
                    // the ping lets the pong timeout end it.
                    let _ = self.socket.tx.try_send(Outbound::Ping);
                }
                msg = stream.next() => {
                    let msg = match msg {
                        None => return "client went away",
                        Some(Err(e)) => {
                            if is_capacity_error(e) {
                                self.engine.metrics.oversized_frames.inc();
                                self.close(close::TOO_BIG, "frame too large").await;
                                return "frame too large";
                            }
                            return "read error";
                        }
                        Some(Ok(m)) => m,
                    };
                    last_heard = Instant::now();
                    if let Some(s) = &self.session {
                        s.mailbox.heard(self.engine.now());
                    }
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
                            self.engine.metrics.bad_frames.inc();
                            self.send(dispatch::error("bad_request", "binary frames are not supported", None)).await;
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
        let rate = f64::from(self.engine.config.settings.max_frames_per_second);
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
        self.engine.metrics.throttled_frames.inc();
        let out = dispatch::throttled(&dispatch::parse(text));
        self.write(out).await;
    }

    async fn write(&mut self, out: Out) {
        match out {
            Out::Now(frame) => self.send(frame).await,
            Out::Many(frames) => {
                for frame in frames {
                    self.send(frame).await;
                }
            }
            Out::Ordered(pending) => {
                let (queue, _) = self.ordered.get_or_insert_with(|| {
                    let (queue, rx) = mpsc::channel(PIPELINED_REPLIES);
                    let task = tokio::spawn(forward_ordered(rx, self.socket.tx.clone()));
                    (queue, task)
                });
                let _ = queue.send(pending).await;
            }
        }
    }

    async fn send(&self, frame: String) {
        let _ = self.socket.tx.send(Outbound::Text(frame.into())).await;
    }

    async fn close(&self, code: u16, reason: &'static str) {
        let _ = self.socket.tx.send(Outbound::Close(code, reason)).await;
    }

    /// Handles one text frame. `Err` ends the connection.
    async fn on_text(&mut self, text: &str) -> Result<(), EndReason> {
        let parsed = dispatch::parse(text);
        if self.session.is_none() {
            return self.before_hello(parsed).await;
        }
        if let Some(answer) = dispatch::not_a_request(&parsed) {
            if !matches!(parsed, Parsed::Hello(..) | Parsed::SessionHello(..)) {
                self.engine.metrics.bad_frames.inc();
            }
            self.send(answer).await;
            return Ok(());
        }
        let Parsed::Frame {
            head,
            spec,
            request,
        } = parsed
        else {
            return Ok(());
        };
        let session = self.session.as_mut().expect("helloed");
        let handled = match request {
            Ok(request) => dispatch::handle(session, request, &head).await,
            Err(sentence) => {
                self.engine.metrics.bad_frames.inc();
                Err(Refusal::bad_request(sentence))
            }
        };
        if let Some(out) = dispatch::answer(&self.engine.metrics, head, &spec, handled) {
            self.write(out).await;
        }
        Ok(())
    }

    async fn before_hello(&mut self, parsed: Parsed) -> Result<(), EndReason> {
        let (head, accepted) = match parsed {
            Parsed::Hello(head, Ok(h)) => {
                let r = hello::hello(&self.engine, &h, self.socket.conn_id).await;
                (head, r)
            }
            Parsed::SessionHello(head, Ok(h)) => {
                let r = session_hello::session_hello(&self.engine, &h, self.socket.conn_id).await;
                (head, r)
            }
            Parsed::Hello(head, Err(sentence)) | Parsed::SessionHello(head, Err(sentence)) => {
                let req_id = head.req_id.as_deref();
                return Err(self.refuse("malformed", &sentence, req_id).await);
            }
            other => {
                self.send(dispatch::no_hello(&other)).await;
                return Ok(());
            }
        };
        let req_id = head.req_id.as_deref();
        match accepted {
            Ok(welcome) => {
                self.engine.metrics.hello("ok");
                let (session, deliverer) =
                    hello::start_session(&self.engine, welcome, &self.socket, req_id).await;
                self.session = Some(session);
                self.deliverer = Some(deliverer);
                Ok(())
            }
            Err(refusal) => Err(self.refuse(refusal.code, &refusal.message, req_id).await),
        }
    }

    /// Refuses a hello: error frame, then close 1008 with the code as its
    /// reason (1011 when the database, not the client, is at fault; 4002
    /// `banned` for a revoked member).
    async fn refuse(&self, code: &'static str, message: &str, req_id: Option<&str>) -> EndReason {
        self.engine.metrics.hello(code);
        tracing::info!(conn_id = %self.socket.conn_id, code, "hello refused");
        self.send(dispatch::error(code, message, req_id)).await;
        let (close_code, reason) = match code {
            "unavailable" => (close::INTERNAL, code),
            "revoked" => (close::BANNED, "banned"),
            _ => (close::POLICY, code),
        };
        self.close(close_code, reason).await;
        code
    }
}

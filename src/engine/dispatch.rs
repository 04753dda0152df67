//! One dispatch for every frame after the handshake. The socket layer asks
//! [`parse`] for a typed request, hands it to [`handle`] with the
//! session's context, and writes what [`answer`] makes of the outcome.
//! Replies, `_reqId` echoes and errors are produced here, never per
//! family.
//!
//! Adding a family: its protocol file (a [`Family`] of frames), its engine
//! file (`async fn handle(&mut Session, Frame, &Head) -> Handled`), and one
//! line in the registry below.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use super::Engine;
use crate::metrics::{Metrics, RefusedLabels};
use crate::protocol::hello::{parse_hello, Hello, HELLO};
use crate::protocol::session_hello::{parse_session_hello, SessionHello, SESSION_HELLO};
use crate::protocol::wire::{
    error_ack, error_frame, head, with_req_id, Answer, Family, FrameSpec, Head, Shape, NUL_REFUSED,
};
use crate::store::{Presence, StoreError};

/// The registry: one line per family, `Variant(frame type) => handler`.
macro_rules! families {
    ($($variant:ident($name:literal, $frame:ty) => $handler:path),* $(,)?) => {
        /// A parsed request of any family.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $($variant($frame)),*
        }

        impl Request {
            /// The wire `type` it was parsed from.
            pub fn ty(&self) -> &'static str {
                match self {
                    $(Request::$variant(f) => f.ty()),*
                }
            }

            /// The family it belongs to (the `family` label of metrics).
            pub fn family(&self) -> &'static str {
                match self {
                    $(Request::$variant(_) => $name),*
                }
            }
        }

        static TABLE: LazyLock<HashMap<&'static str, (FrameSpec, Parser, &'static str)>> =
            LazyLock::new(|| {
                let mut table: HashMap<&'static str, (FrameSpec, Parser, &'static str)> =
                    HashMap::new();
                $(
                    for spec in <$frame as Family>::FRAMES {
                        let parser: Parser =
                            |ty, text| <$frame as Family>::parse(ty, text).map(Request::$variant);
                        let taken = table.insert(spec.ty, (*spec, parser, $name));
                        assert!(taken.is_none(), "frame type `{}` registered twice", spec.ty);
                    }
                )*
                table
            });

        /// Runs `request` through its family's handler and counts the
        /// outcome in `broker_frames_total`.
        pub async fn handle(s: &mut Session, request: Request, head: &Head) -> Handled {
            let (family, ty) = (request.family(), request.ty());
            let handled = match request {
                $(Request::$variant(f) => $handler(s, f, head).await),*
            };
            let result = match &handled {
                Ok(_) => "ok",
                Err(r) => r.code,
            };
            s.engine
                .metrics
                .frames
                .get_or_create(&crate::metrics::FrameLabels { family, r#type: ty, result })
                .inc();
            handled
        }
    };
}

families! {
    Presence("presence", crate::protocol::presence::PresenceFrame) => super::presence::handle,
    Messaging("messaging", crate::protocol::messaging::MessagingFrame) => super::messaging::handle,
    Moderation("moderation", crate::protocol::moderation::ModerationFrame) => super::moderation::handle,
    State("state", crate::protocol::state::StateFrame) => super::state::handle,
    Tasks("tasks", crate::protocol::tasks::TaskFrame) => super::tasks::handle,
    Memory("memory", crate::protocol::memory::MemoryFrame) => super::memory::handle,
    Contexts("contexts", crate::protocol::contexts::ContextFrame) => super::contexts::handle,
    Mesh("mesh", crate::protocol::mesh::MeshFrame) => super::mesh::handle,
    Skills("skills", crate::protocol::skills::SkillFrame) => super::skills::handle,
    MessageStatus("message_status", crate::protocol::message_status::MessageStatusFrame) => super::message_status::handle,
    Vault("vault", crate::protocol::vault::VaultFrame) => super::vault::handle,
    Vectors("vectors", crate::protocol::vectors::VectorFrame) => super::vectors::handle,
    Webhooks("webhooks", crate::protocol::webhooks::WebhookFrame) => super::webhooks::handle,
    Schedules("schedules", crate::protocol::schedules::ScheduleFrame) => super::schedules::handle,
    Streams("streams", crate::protocol::streams::StreamFrame) => super::streams::handle,
    Clock("clock", crate::protocol::clocks::ClockFrame) => super::clocks::handle,
    Relay("relay", crate::protocol::relay::RelayFrame) => super::relay::handle,
    Files("files", crate::protocol::files::FileFrame) => super::files::handle,
}

type Parser = fn(&str, &str) -> Result<Request, String>;

/// Every frame type the broker answers after the handshake.
pub fn frame_types() -> impl Iterator<Item = &'static FrameSpec> {
    TABLE.values().map(|(spec, _, _)| spec)
}

/// Every registered frame as (family, type): what `broker_frames_total`
/// is pre-populated with at start.
pub fn frame_families() -> impl Iterator<Item = (&'static str, &'static str)> {
    TABLE.values().map(|(spec, _, family)| (*family, spec.ty))
}

/// What a family handler is given: the engine and the session it serves.
pub struct Session {
    pub engine: Arc<Engine>,
    /// The presence as this session last wrote it (patches replace it).
    pub presence: Arc<Presence>,
    /// At-least-once mode (shared with the delivery loop): pushes are
    /// completed on `client_ack`, not on write.
    pub at_least_once: Arc<std::sync::atomic::AtomicBool>,
    /// Shared with the delivery loop and the session table; the socket
    /// notes here when it was last heard from.
    pub mailbox: Arc<super::sessions::Mailbox>,
}

/// Why a request was refused: its wire code and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad_request", message)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store failed");
        Refusal::new("unavailable", "the broker cannot reach its database")
    }
}

/// A reply that comes later (a `send`'s ack), resolved in submission
/// order with the other later replies of its socket.
pub type Later = Pin<Box<dyn Future<Output = Result<String, Refusal>> + Send>>;

/// What a handler answers besides a refusal.
pub enum Reply {
    /// Nothing (a frame without a success reply).
    None,
    /// One reply frame, serialised without `_reqId`.
    Frame(String),
    /// Several, written in this order (a reply and its 1.37 alias).
    Frames(Vec<String>),
    /// A reply still being worked out.
    Later(Later),
}

pub type Handled = Result<Reply, Refusal>;

/// One text frame, as far as it could be read.
pub enum Parsed {
    /// Not an object with a string `type`.
    Unreadable {
        req_id: Option<String>,
        message: &'static str,
    },
    /// A handshake frame: its fields, or why they are malformed.
    Hello(Head, Result<Box<Hello>, String>),
    /// The 1.37 daemon's handshake for one launched session.
    SessionHello(Head, Result<Box<SessionHello>, String>),
    /// A registered frame type: its request, or the `bad_request` sentence.
    Frame {
        head: Head,
        spec: FrameSpec,
        request: Result<Request, String>,
    },
    /// A string `type` nothing is registered for.
    Unknown(Head),
}

/// Reads one text frame.
pub fn parse(text: &str) -> Parsed {
    let head = match head(text) {
        Ok(h) => h,
        Err(e) => {
            return Parsed::Unreadable {
                req_id: e.req_id,
                message: e.message,
            }
        }
    };
    if head.ty == HELLO {
        let hello = handshake(&head, text, parse_hello);
        return Parsed::Hello(head, hello);
    }
    if head.ty == SESSION_HELLO {
        let hello = handshake(&head, text, parse_session_hello);
        return Parsed::SessionHello(head, hello);
    }
    let Some((spec, parser, _)) = TABLE.get(head.ty.as_str()) else {
        return Parsed::Unknown(head);
    };
    let request = if head.nul {
        Err(NUL_REFUSED.to_string())
    } else {
        parser(&head.ty, text)
    };
    Parsed::Frame {
        head,
        spec: *spec,
        request,
    }
}

/// A handshake frame's fields; one with a NUL is malformed, as a
/// request's is bad.
fn handshake<T>(
    head: &Head,
    text: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Box<T>, String> {
    if head.nul {
        return Err(NUL_REFUSED.to_string());
    }
    parse(text).map(Box::new)
}

/// What the socket writes for one frame.
pub enum Out {
    /// Write this now.
    Now(String),
    /// Write these now, in order.
    Many(Vec<String>),
    /// Write this once resolved, after every earlier `Ordered` of the
    /// socket (acks keep the order of their sends).
    Ordered(Pending),
}

/// A reply waiting for its outcome, with what rendering it needs.
pub struct Pending {
    outcome: Later,
    /// When the frame arrived plus the database deadline: a reply that
    /// waits behind earlier ones (acks keep their order) does not get a
    /// fresh deadline when its turn comes.
    deadline: tokio::time::Instant,
    answer: Answer,
    id: Option<String>,
    req_id: Option<String>,
}

impl Pending {
    /// The frame to write; `unavailable` when the outcome never comes.
    pub async fn resolve(self) -> String {
        let outcome = match tokio::time::timeout_at(self.deadline, self.outcome).await {
            Ok(o) => o,
            Err(_) => Err(Refusal::new(
                "unavailable",
                "the broker cannot reach its database; retry",
            )),
        };
        let frame = match outcome {
            Ok(frame) => frame,
            Err(r) => refusal_frame(self.answer, self.id.as_deref(), &r),
        };
        with_req_id(frame, self.req_id.as_deref())
    }
}

fn refusal_frame(answer: Answer, id: Option<&str>, r: &Refusal) -> String {
    match answer {
        // `answer` never renders these; a later reply of one would be the
        // family's own frame.
        Answer::Error | Answer::Never => error_frame(r.code, &r.message),
        Answer::Ack => error_ack(id, r.code, &r.message),
    }
}

/// The frame a refusal of `head`'s frame takes, with its echo.
pub fn refusal(head: &Head, answer: Answer, r: &Refusal) -> String {
    with_req_id(
        refusal_frame(answer, head.id.as_deref(), r),
        head.req_id.as_deref(),
    )
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + super::db_timeout()
}

/// What to write for the outcome of a frame of kind `spec`, if anything.
pub fn answer(metrics: &Metrics, head: Head, spec: &FrameSpec, handled: Handled) -> Option<Out> {
    let ordered = |outcome: Later, head: Head| {
        Some(Out::Ordered(Pending {
            outcome,
            deadline: deadline(),
            answer: spec.answer,
            id: head.id,
            req_id: head.req_id,
        }))
    };
    if spec.answer == Answer::Ack {
        // Every answer of an acked frame takes the ordered path, refusals
        // included: its client matches acks to sends by order.
        let outcome: Later = match handled {
            Ok(Reply::Later(l)) => l,
            Ok(Reply::Frame(f)) => Box::pin(std::future::ready(Ok(f))),
            Ok(Reply::Frames(mut f)) if !f.is_empty() => {
                Box::pin(std::future::ready(Ok(f.swap_remove(0))))
            }
            Ok(Reply::None | Reply::Frames(_)) => return None,
            Err(r) => Box::pin(std::future::ready(Err(r))),
        };
        return ordered(outcome, head);
    }
    match handled {
        Ok(Reply::None) => None,
        Ok(Reply::Frame(f)) => Some(Out::Now(with_req_id(f, head.req_id.as_deref()))),
        Ok(Reply::Frames(f)) => Some(Out::Many(
            f.into_iter()
                .map(|f| with_req_id(f, head.req_id.as_deref()))
                .collect(),
        )),
        Ok(Reply::Later(l)) => ordered(l, head),
        Err(r)
            if spec.answer == Answer::Never
                || (spec.shape == Shape::FireAndForget && head.req_id.is_none()) =>
        {
            // Its client waits for nothing and would hand an error to an
            // unrelated pending request.
            tracing::info!(frame = spec.ty, code = r.code, reason = %r.message, "fire-and-forget frame refused");
            metrics
                .ws_refused
                .get_or_create(&RefusedLabels {
                    r#type: spec.ty,
                    code: r.code,
                })
                .inc();
            None
        }
        Err(r) => Some(Out::Now(refusal(&head, spec.answer, &r))),
    }
}

/// An `error` frame the socket layer sends on its own account (a hello
/// timeout, a binary frame, a refused hello).
pub fn error(code: &str, message: &str, req_id: Option<&str>) -> String {
    with_req_id(error_frame(code, message), req_id)
}

/// The answer to a frame that is not a registered request: unreadable,
/// unknown, or a handshake frame on a session that already had one.
pub fn not_a_request(parsed: &Parsed) -> Option<String> {
    let bad = |req_id: Option<&str>, message: &str| {
        with_req_id(error_frame("bad_request", message), req_id)
    };
    match parsed {
        Parsed::Unreadable { req_id, message } => Some(bad(req_id.as_deref(), message)),
        Parsed::Hello(head, _) | Parsed::SessionHello(head, _) => Some(bad(
            head.req_id.as_deref(),
            "this session already said hello",
        )),
        Parsed::Unknown(head) if head.nul => Some(bad(head.req_id.as_deref(), NUL_REFUSED)),
        Parsed::Unknown(head) => {
            // The 1.37 daemon reads this exact code on a session socket as
            // "no session_hello here" and stops retrying; a handshake,
            // `send` or `client_ack` can never get it (they are registered).
            let shown: String = head.ty.chars().take(32).collect();
            Some(with_req_id(
                error_frame(
                    "unknown_message_type",
                    &format!("unknown message type: {shown}"),
                ),
                head.req_id.as_deref(),
            ))
        }
        Parsed::Frame { .. } => None,
    }
}

/// The answer to anything but a hello before the handshake.
pub fn no_hello(parsed: &Parsed) -> String {
    match parsed {
        Parsed::Frame { head, spec, .. } if spec.answer == Answer::Ack => with_req_id(
            error_ack(head.id.as_deref(), "no_hello", "say hello first"),
            head.req_id.as_deref(),
        ),
        other => with_req_id(
            error_frame("no_hello", "the first frame must be a hello"),
            req_id_of(other),
        ),
    }
}

/// The answer to a frame over the socket's frame budget, not acted on.
pub fn throttled(parsed: &Parsed) -> Out {
    const SENTENCE: &str = "too many frames per second on this socket";
    let r = Refusal::new("rate_limit", SENTENCE);
    match parsed {
        Parsed::Frame { head, spec, .. } if spec.answer == Answer::Ack => Out::Ordered(Pending {
            outcome: Box::pin(std::future::ready(Err(r))),
            deadline: deadline(),
            answer: spec.answer,
            id: head.id.clone(),
            req_id: head.req_id.clone(),
        }),
        other => Out::Now(with_req_id(error_frame(r.code, SENTENCE), req_id_of(other))),
    }
}

fn req_id_of(parsed: &Parsed) -> Option<&str> {
    match parsed {
        Parsed::Unreadable { req_id, .. } => req_id.as_deref(),
        Parsed::Hello(head, _)
        | Parsed::SessionHello(head, _)
        | Parsed::Unknown(head)
        | Parsed::Frame { head, .. } => head.req_id.as_deref(),
    }
}

#[cfg(test)]
mod tests;

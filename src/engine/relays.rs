//! Relays in flight (PROTOCOL-MESH.md §15–§16). A relay joins two sockets
//! that may sit on different nodes, so each half is held by the node whose
//! socket it serves, in memory: the caller's node keeps what the caller
//! waits for (its `_reqId`, its deadline, where the host is), the host's
//! node keeps which presence may answer and where the answer goes. The
//! request and the answer travel as bus signals (large ones parked in
//! `bus_payload` by the bus). Neither half is worth more than its socket:
//! when the caller's node dies the caller is gone; when the host's node
//! dies, the caller's node sees the host's heartbeat stop and answers
//! "host disconnected" itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::signal::Signal;
use super::{bounded, Ctx};
use crate::metrics::relay::RelayLabels;
use crate::protocol::relay::RelayKind;
use crate::protocol::wire::with_req_id;

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(200);
/// How often the hosts of relays to other nodes are checked for life.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// What the host's node sends back for a relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answered {
    /// The host's answer: a JSON object of its fields.
    Fields(String),
    /// The host presence has no socket there (closed, moved, ended).
    Gone,
}

/// A relay this node's caller waits on.
pub struct Call {
    pub caller: Uuid,
    pub req_id: Option<String>,
    pub kind: RelayKind,
    /// The server name (MCP) or the requested path.
    pub name: String,
    pub host: Uuid,
    pub host_node: Uuid,
}

struct Waiting {
    call: Call,
    started: Instant,
    deadline: Instant,
}

struct Hosted {
    from: Uuid,
    host: Uuid,
    kind: RelayKind,
    /// Past the caller's deadline nothing waits for the answer.
    until: Instant,
}

#[derive(Default)]
pub struct Relays {
    waiting: Mutex<HashMap<String, Waiting>>,
    hosted: Mutex<HashMap<String, Hosted>>,
}

fn kind_label(kind: RelayKind) -> &'static str {
    match kind {
        RelayKind::Mcp => "mcp",
        RelayKind::File => "file",
        RelayKind::Dir => "dir",
    }
}

/// How long the caller of `kind` waits.
fn timeout(ctx: &Ctx, kind: RelayKind) -> Duration {
    let s = &ctx.config.settings;
    Duration::from_secs(match kind {
        RelayKind::Mcp => s.mcp_call_timeout_seconds,
        _ => s.relay_timeout_seconds,
    })
}

/// Why a relay ended without the host's answer.
enum Failure {
    Timeout,
    HostGone,
}

/// Takes the entries `pred` picks out of `map`.
fn take<V>(map: &mut HashMap<String, V>, pred: impl Fn(&V) -> bool) -> Vec<(String, V)> {
    let ids: Vec<String> = map
        .iter()
        .filter(|(_, v)| pred(v))
        .map(|(id, _)| id.clone())
        .collect();
    ids.into_iter()
        .filter_map(|id| map.remove(&id).map(|v| (id, v)))
        .collect()
}

impl Relays {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hosted(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hosted>> {
        self.hosted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts relay `id`: `frame` goes to the host's node, and the caller
    /// waits for its answer until the kind's timeout.
    pub fn start(&self, ctx: &Ctx, id: String, call: Call, frame: String) {
        let now = Instant::now();
        let deadline = now + timeout(ctx, call.kind);
        let signal = Signal::Forward {
            id: id.clone(),
            from: ctx.node_id,
            host: call.host,
            kind: call.kind,
            frame,
        };
        let node = call.host_node;
        self.waiting().insert(
            id,
            Waiting {
                call,
                started: now,
                deadline,
            },
        );
        ctx.signal(node, signal);
    }

    /// The host's node: writes the forward to its local host, or answers
    /// `Gone` when the host has no socket here.
    pub fn forward(
        &self,
        ctx: &Ctx,
        id: String,
        from: Uuid,
        host: Uuid,
        kind: RelayKind,
        frame: String,
    ) {
        let until = Instant::now() + timeout(ctx, kind) + Duration::from_secs(1);
        self.hosted().insert(
            id.clone(),
            Hosted {
                from,
                host,
                kind,
                until,
            },
        );
        if !ctx.sessions.send_to(host, frame) {
            self.hosted().remove(&id);
            ctx.signal(
                from,
                Signal::Answer {
                    id,
                    answer: Answered::Gone,
                },
            );
        }
    }

    /// A response from presence `me` to relay `id` of `kind`: sent back to
    /// the caller's node when `me` is that relay's host; `false` (dropped)
    /// otherwise.
    pub fn respond(
        &self,
        ctx: &Ctx,
        me: Uuid,
        id: &str,
        kind: RelayKind,
        fields: Map<String, Value>,
    ) -> bool {
        let hosted = {
            let mut h = self.hosted();
            match h.get(id) {
                Some(x) if x.host == me && x.kind == kind => h.remove(id),
                _ => None,
            }
        };
        let Some(hosted) = hosted else {
            ctx.metrics.relay.dropped.inc();
            return false;
        };
        let answer = Answered::Fields(Value::Object(fields).to_string());
        ctx.signal(
            hosted.from,
            Signal::Answer {
                id: id.to_string(),
                answer,
            },
        );
        true
    }

    /// The caller's node: the answer to relay `id` goes out to its caller.
    pub fn answer(&self, ctx: &Ctx, id: &str, answer: Answered) {
        let Some(w) = self.waiting().remove(id) else {
            // Late (timed out already) or for a caller that is gone.
            ctx.metrics.relay.dropped.inc();
            return;
        };
        let frame = match answer {
            Answered::Fields(fields) => {
                let fields = match serde_json::from_str(&fields) {
                    Ok(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                ctx.metrics
                    .relay
                    .round_trip
                    .observe(w.started.elapsed().as_secs_f64());
                count(ctx, w.call.kind, "answered");
                answered(&w.call, fields)
            }
            Answered::Gone => failed(ctx, &w.call, Failure::HostGone),
        };
        deliver(ctx, &w.call, frame);
    }

    /// A socket of this node closed: the relays it hosts end ("host
    /// disconnected"), and the answers it waited for have nobody to go to.
    pub fn closed(&self, ctx: &Ctx, presence: Uuid) {
        let hosted = take(&mut self.hosted(), |x| x.host == presence);
        for (id, x) in hosted {
            ctx.signal(
                x.from,
                Signal::Answer {
                    id,
                    answer: Answered::Gone,
                },
            );
        }
        self.waiting().retain(|_, w| w.call.caller != presence);
    }

    /// Relays past their deadline, taken out.
    fn expired(&self, now: Instant) -> Vec<Call> {
        self.hosted().retain(|_, h| h.until > now);
        take(&mut self.waiting(), |x| x.deadline <= now)
            .into_iter()
            .map(|(_, x)| x.call)
            .collect()
    }

    /// Hosts on other nodes that relays of this node wait on.
    fn remote_hosts(&self, here: Uuid) -> Vec<Uuid> {
        let mut v: Vec<Uuid> = self
            .waiting()
            .values()
            .filter(|w| w.call.host_node != here)
            .map(|w| w.call.host)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Relays whose remote host is not among `alive`, taken out.
    fn orphaned(&self, here: Uuid, hosts: &[Uuid], alive: &[Uuid]) -> Vec<Call> {
        let gone = |x: &Waiting| {
            x.call.host_node != here
                && hosts.contains(&x.call.host)
                && !alive.contains(&x.call.host)
        };
        take(&mut self.waiting(), gone)
            .into_iter()
            .map(|(_, x)| x.call)
            .collect()
    }

    /// Relays waiting on this node (for tests and gauges).
    pub fn pending(&self) -> usize {
        self.waiting().len()
    }
}

/// Counts a relay's outcome in `broker_relays_total`.
pub fn count(ctx: &Ctx, kind: RelayKind, result: &'static str) {
    ctx.metrics
        .relay
        .relays
        .get_or_create(&RelayLabels {
            kind: kind_label(kind),
            result,
        })
        .inc();
}

/// The caller's frame for the host's answer.
fn answered(call: &Call, fields: Map<String, Value>) -> String {
    let mut out = Map::new();
    match call.kind {
        RelayKind::Mcp => {
            out.insert("type".into(), "mcp_call_result".into());
            if !fields.contains_key("result") && !fields.contains_key("error") {
                out.insert("result".into(), Value::Null);
            }
        }
        kind => {
            let ty = match kind {
                RelayKind::Dir => "peer_dir_response_forward",
                _ => "peer_file_response_forward",
            };
            out.insert("type".into(), ty.into());
            out.insert(kind.path_field().into(), call.name.clone().into());
        }
    }
    out.extend(fields);
    Value::Object(out).to_string()
}

/// The caller's frame for a relay that got no answer.
fn failed(ctx: &Ctx, call: &Call, why: Failure) -> String {
    let secs = timeout(ctx, call.kind).as_secs();
    let (result, error) = match (call.kind, why) {
        (RelayKind::Mcp, Failure::Timeout) => ("timeout", format!("MCP call timed out ({secs}s)")),
        (RelayKind::Mcp, Failure::HostGone) => (
            "host_gone",
            format!("MCP server \"{}\" host disconnected", call.name),
        ),
        (_, Failure::Timeout) => ("timeout", "timeout waiting for peer response".to_string()),
        (_, Failure::HostGone) => ("host_gone", "peer disconnected".to_string()),
    };
    count(ctx, call.kind, result);
    let mut fields = Map::new();
    fields.insert("error".into(), error.into());
    answered(call, fields)
}

fn deliver(ctx: &Ctx, call: &Call, frame: String) {
    // A caller that is gone (or moved to another node) drops it.
    ctx.sessions
        .send_to(call.caller, with_req_id(frame, call.req_id.as_deref()));
}

/// Ends relays past their deadline, and those whose host on another node
/// stopped being live (its node's heartbeat lapsed, or it left), until
/// `stop`.
pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_check = Instant::now();
    // Two missed beats and a second: as the sweeper judges its own.
    let fresh = Duration::from_secs(2 * ctx.config.settings.node_heartbeat_seconds + 1);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        for call in ctx.relays.expired(now) {
            let frame = failed(&ctx, &call, Failure::Timeout);
            deliver(&ctx, &call, frame);
        }
        if now.duration_since(last_check) < LIVENESS_EVERY {
            continue;
        }
        last_check = now;
        let hosts = ctx.relays.remote_hosts(ctx.node_id);
        if hosts.is_empty() {
            continue;
        }
        let alive = tokio::select! {
            _ = stop.cancelled() => return,
            r = bounded(ctx.store.live_hosts(&hosts, fresh)) => r,
        };
        match alive {
            Ok(alive) => {
                for call in ctx.relays.orphaned(ctx.node_id, &hosts, &alive) {
                    let frame = failed(&ctx, &call, Failure::HostGone);
                    deliver(&ctx, &call, frame);
                }
            }
            Err(e) => {
                tracing::debug!(node_id = %ctx.node_id, error = %e, "relay host check failed")
            }
        }
    }
}

//! The bus: wake-ups between nodes over Postgres LISTEN/NOTIFY. One
//! dedicated LISTEN connection per node (pooled clients never see
//! notifications) on `node_<id>` and `cluster`; one dedicated connection
//! that sends, coalescing everything queued into one statement with at
//! most one NOTIFY per destination channel. Payloads are small pointers,
//! never envelopes. A lost notification only delays: every session also
//! polls its deliveries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::pgconn::Database;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::signal::{self, Notice, Signal, MAX_PAYLOAD};
use crate::engine::Ctx;
/// Channel every node listens on.
pub const CLUSTER_CHANNEL: &str = "cluster";
/// First and longest pause between reconnect attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A signal plus the node that sent it.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    o: Uuid,
    #[serde(flatten)]
    s: Signal,
}

pub fn node_channel(id: Uuid) -> String {
    format!("node_{}", id.simple())
}

/// Sending half, held by the engine.
pub struct Bus {
    /// This node, named as the origin of every envelope it sends.
    origin: Uuid,
    tx: mpsc::UnboundedSender<(String, Signal)>,
}

impl signal::Bus for Bus {
    /// Queues `signal` for `node` (fire and forget).
    fn to_node(&self, node: Uuid, signal: Signal) {
        let _ = self.tx.send((node_channel(node), signal));
    }

    fn to_cluster(&self, signal: Signal) {
        let _ = self.tx.send((CLUSTER_CHANNEL.to_string(), signal));
    }

    fn notices(&self, wakes: &[(Uuid, Signal, Uuid)]) -> Vec<Notice> {
        notices(self.origin, wakes)
    }
}

/// The bus's outgoing queue, drained by [`start`]'s notifier.
pub struct Queue(mpsc::UnboundedReceiver<(String, Signal)>);

/// Creates the bus for node `origin`; [`start`] it once the node runs.
pub fn channel(origin: Uuid) -> (Bus, Queue) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Bus { origin, tx }, Queue(rx))
}

/// Starts the notifier and the listener of `ctx`'s node; they run until
/// `stop`.
pub fn start(
    ctx: Arc<Ctx>,
    db: Database,
    queue: Queue,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(run_notifier(ctx.clone(), db.clone(), queue.0, stop.clone())),
        tokio::spawn(run_listener(ctx, db, stop)),
    ]
}

/// Merges signals bound for one channel so a batch needs one NOTIFY per
/// channel, then splits payloads that would pass the size limit.
pub fn coalesce(origin: Uuid, batch: Vec<(String, Signal)>) -> Vec<(String, String)> {
    coalesce_tagged(origin, batch.into_iter().map(|(c, s)| (c, s, ())).collect())
        .into_iter()
        .map(|(c, p, _)| (c, p))
        .collect()
}

/// The notices of a send batch: its wake-ups for other nodes, coalesced,
/// each carrying the messages that caused its channel's wake-ups.
pub fn notices(origin: Uuid, wakes: &[(Uuid, Signal, Uuid)]) -> Vec<Notice> {
    let tagged = wakes
        .iter()
        .map(|(node, s, message)| (node_channel(*node), s.clone(), *message))
        .collect();
    coalesce_tagged(origin, tagged)
        .into_iter()
        // Wake-ups are chunked to fit; a notice is sent by the store,
        // which has no payload table to point into.
        .filter(|(_, p, _)| p.len() <= MAX_PAYLOAD)
        .map(|(channel, payload, mut messages)| {
            messages.sort_unstable();
            messages.dedup();
            Notice {
                channel,
                payload,
                messages,
            }
        })
        .collect()
}

/// `coalesce`, where each input carries a tag: every payload a channel's
/// merged wake-ups end up in carries all of that channel's tags.
fn coalesce_tagged<T: Clone>(
    origin: Uuid,
    batch: Vec<(String, Signal, T)>,
) -> Vec<(String, String, Vec<T>)> {
    type Merged<V, T> = HashMap<String, (Vec<V>, Vec<T>)>;
    let mut wakes: Merged<Uuid, T> = HashMap::new();
    let mut members: Merged<(String, String), T> = HashMap::new();
    let mut out = Vec::new();
    let push = |channel: &str, s: Signal, tags: Vec<T>, out: &mut Vec<(String, String, Vec<T>)>| {
        let payload = serde_json::to_string(&Envelope { o: origin, s }).expect("signal serialises");
        out.push((channel.to_string(), payload, tags));
    };
    for (channel, signal, tag) in batch {
        match signal {
            Signal::Wake { p } => {
                let e = wakes.entry(channel).or_default();
                e.0.extend(p);
                e.1.push(tag);
            }
            Signal::WakeMember { m } => {
                let e = members.entry(channel).or_default();
                e.0.extend(m);
                e.1.push(tag);
            }
            other => push(&channel, other, vec![tag], &mut out),
        }
    }
    // ~40 bytes per uuid, ~80 per member pair: chunk well under the cap.
    for (channel, (mut ids, tags)) in wakes {
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(150) {
            let s = Signal::Wake { p: chunk.to_vec() };
            push(&channel, s, tags.clone(), &mut out);
        }
    }
    for (channel, (mut pairs, tags)) in members {
        pairs.sort_unstable();
        pairs.dedup();
        for chunk in pairs.chunks(40) {
            let s = Signal::WakeMember { m: chunk.to_vec() };
            push(&channel, s, tags.clone(), &mut out);
        }
    }
    out
}

/// Sends queued signals until the bus is dropped or `stop`. Everything
/// waiting when a send starts goes in the same statement.
async fn run_notifier(
    ctx: Arc<Ctx>,
    db: Database,
    mut rx: mpsc::UnboundedReceiver<(String, Signal)>,
    stop: CancellationToken,
) {
    let mut client: Option<Notifier> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        let notes = coalesce(ctx.node_id, batch);
        let (channels, payloads): (Vec<String>, Vec<String>) = notes.into_iter().unzip();
        // Two tries: the second on a fresh connection. Past that the batch
        // is dropped: every session polls, so a lost wake-up only delays.
        let mut sent = false;
        for _ in 0..2 {
            match send_batch(&mut client, &db, &channels, &payloads).await {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(node_id = %ctx.node_id, error = %e, "notify failed");
                    client = None;
                }
            }
        }
        if sent {
            ctx.metrics.notify_sent.inc_by(channels.len() as u64);
            backoff = BACKOFF_MIN;
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// The sending connection, with its statement prepared once: parsing and
/// planning it per NOTIFY was a noticeable share of a wake-up's cost.
struct Notifier {
    client: tokio_postgres::Client,
    notify: tokio_postgres::Statement,
    park: tokio_postgres::Statement,
}

async fn send_batch(
    client: &mut Option<Notifier>,
    db: &Database,
    channels: &[String],
    payloads: &[String],
) -> Result<(), tokio_postgres::Error> {
    if client.is_none() {
        let mut cfg = db.config.clone();
        // A notification is not durable anyway: its commit need not wait
        // for a WAL flush, which is most of a cross-node wake-up's cost.
        cfg.options("-c synchronous_commit=off")
            .application_name("claudemesh-broker-notify");
        let (c, conn) = cfg.connect(db.tls.clone()).await?;
        tokio::spawn(conn);
        let notify = c
            .prepare("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)")
            .await?;
        // Parks a payload too large for NOTIFY (a big state value) and
        // drops those parked over a minute ago, far past any listener's
        // lag, in the same statement.
        let park = c
            .prepare(
                "WITH old AS (DELETE FROM bus_payload
                              WHERE created_at < now() - interval '60 seconds')
                 INSERT INTO bus_payload (body) VALUES ($1) RETURNING id",
            )
            .await?;
        *client = Some(Notifier {
            client: c,
            notify,
            park,
        });
    }
    let n = client.as_ref().expect("connected above");
    let mut sent = payloads.to_vec();
    for p in sent.iter_mut().filter(|p| p.len() > MAX_PAYLOAD) {
        let id: i64 = n.client.query_one(&n.park, &[&*p]).await?.get(0);
        *p = pointer(id);
    }
    n.client.execute(&n.notify, &[&channels, &sent]).await?;
    Ok(())
}

/// The notification that stands for a payload parked as row `id`.
fn pointer(id: i64) -> String {
    format!("{{\"r\":{id}}}")
}

/// The parked row a notification points to, if it is a pointer.
fn pointed(payload: &str) -> Option<i64> {
    payload
        .strip_prefix("{\"r\":")?
        .strip_suffix('}')?
        .parse()
        .ok()
}

/// One notification: this node's own events and stream publishes were
/// already delivered locally when they were sent; anything else is
/// applied.
fn received(ctx: &Ctx, payload: &str) {
    ctx.metrics.notify_received.inc();
    match serde_json::from_str::<Envelope>(payload) {
        Ok(env)
            if env.o != ctx.node_id
                || !matches!(env.s, Signal::Event { .. } | Signal::Stream { .. }) =>
        {
            ctx.apply(env.s)
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(node_id = %ctx.node_id, error = %e, "bad bus payload"),
    }
}

/// Reads parked payloads, on a connection of its own (opened at the first
/// pointer): the listening connection is busy being driven.
struct Parked {
    db: Database,
    client: Option<tokio_postgres::Client>,
}

impl Parked {
    fn new(db: Database) -> Parked {
        Parked { db, client: None }
    }

    /// The payload parked as `id`; `None` (logged) if it cannot be read:
    /// what the bus carries is advisory, like a lost notification.
    async fn fetch(&mut self, ctx: &Ctx, id: i64) -> Option<String> {
        for _ in 0..2 {
            if self.client.is_none() {
                match self.db.connect().await {
                    Ok(c) => {
                        self.client = Some(c);
                    }
                    Err(e) => {
                        tracing::warn!(node_id = %ctx.node_id, error = %e, "cannot read a parked bus payload");
                        return None;
                    }
                }
            }
            let c = self.client.as_ref().expect("connected above");
            match c
                .query_opt("SELECT body FROM bus_payload WHERE id = $1", &[&id])
                .await
            {
                Ok(row) => return row.map(|r| r.get(0)),
                Err(e) => {
                    tracing::warn!(node_id = %ctx.node_id, error = %e, "reading a parked bus payload failed");
                    self.client = None;
                }
            }
        }
        None
    }
}

/// Listens on this node's channel and the cluster channel until `stop`,
/// reconnecting with backoff. After every (re)connect all local sessions
/// are woken: notifications sent while the link was down are gone.
async fn run_listener(ctx: Arc<Ctx>, db: Database, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        if stop.is_cancelled() {
            return;
        }
        match db.config.connect(db.tls.clone()).await {
            Ok((client, mut conn)) => {
                // Signals are applied where the connection is driven: no
                // hop to another task on the cross-node path.
                let mut driver = {
                    let ctx = ctx.clone();
                    let db = db.clone();
                    tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                        let mut parked = Parked::new(db);
                        while let Some(m) = messages.next().await {
                            match m {
                                Ok(AsyncMessage::Notification(n)) => match pointed(n.payload()) {
                                    // Fetched before the next notification
                                    // is looked at: events keep their order.
                                    Some(id) => {
                                        if let Some(body) = parked.fetch(&ctx, id).await {
                                            received(&ctx, &body);
                                        }
                                    }
                                    None => received(&ctx, n.payload()),
                                },
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                    })
                };
                let listen = format!(
                    "LISTEN \"{}\"; LISTEN \"{}\"",
                    node_channel(ctx.node_id),
                    CLUSTER_CHANNEL
                );
                if let Err(e) = client.batch_execute(&listen).await {
                    tracing::warn!(node_id = %ctx.node_id, error = %e, "LISTEN failed");
                    driver.abort();
                } else {
                    backoff = BACKOFF_MIN;
                    if !first {
                        ctx.metrics.listen_reconnects.inc();
                        tracing::info!(node_id = %ctx.node_id, "LISTEN connection restored; catching up");
                    }
                    first = false;
                    ctx.sessions.wake_all();
                    tokio::select! {
                        _ = stop.cancelled() => {
                            driver.abort();
                            return;
                        }
                        _ = &mut driver => {}
                    }
                    drop(client);
                    tracing::warn!(node_id = %ctx.node_id, "LISTEN connection lost");
                }
            }
            Err(e) => tracing::warn!(node_id = %ctx.node_id, error = %e, "LISTEN connect failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_to_one_notify_per_channel_and_respects_the_cap() {
        let origin = Uuid::now_v7();
        let a = node_channel(Uuid::now_v7());
        let ids: Vec<Uuid> = (0..400).map(|_| Uuid::now_v7()).collect();
        let mut batch: Vec<(String, Signal)> = ids
            .chunks(2)
            .map(|c| (a.clone(), Signal::Wake { p: c.to_vec() }))
            .collect();
        batch.push((a.clone(), Signal::Wake { p: vec![ids[0]] }));
        batch.push((
            CLUSTER_CHANNEL.into(),
            Signal::Event {
                mesh: "m".into(),
                skip: crate::engine::signal::Skip::Member("x".into()),
                frame: "{}".into(),
            },
        ));
        let out = coalesce(origin, batch);
        let to_a: Vec<&(String, String)> = out.iter().filter(|(c, _)| *c == a).collect();
        assert_eq!(to_a.len(), 3, "400 ids in chunks of 150");
        assert!(out.iter().all(|(_, p)| p.len() <= MAX_PAYLOAD));
        let mut seen: Vec<Uuid> = to_a
            .iter()
            .flat_map(
                |(_, p)| match serde_json::from_str::<Envelope>(p).unwrap().s {
                    Signal::Wake { p } => p,
                    _ => vec![],
                },
            )
            .collect();
        seen.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(seen, want, "every id once");
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn notices_carry_every_message_that_woke_their_channel() {
        let origin = Uuid::now_v7();
        let (n1, n2) = (Uuid::now_v7(), Uuid::now_v7());
        let (m1, m2, m3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
        let pair = ("mesh".to_string(), "member".to_string());
        let out = notices(
            origin,
            &[
                (n1, Signal::Wake { p: vec![p1] }, m1),
                (n1, Signal::Wake { p: vec![p2] }, m2),
                (n1, Signal::Wake { p: vec![p1] }, m2),
                (
                    n2,
                    Signal::WakeMember {
                        m: vec![pair.clone()],
                    },
                    m3,
                ),
            ],
        );
        assert_eq!(out.len(), 2, "one notice per node: {out:?}");
        let to = |n: Uuid| out.iter().find(|x| x.channel == node_channel(n)).unwrap();
        let mut want = vec![m1, m2];
        want.sort();
        assert_eq!(to(n1).messages, want);
        let env: Envelope = serde_json::from_str(&to(n1).payload).unwrap();
        let mut woken = vec![p1, p2];
        woken.sort();
        assert_eq!(env.s, Signal::Wake { p: woken });
        assert_eq!(env.o, origin);
        assert_eq!(to(n2).messages, vec![m3]);
        let env: Envelope = serde_json::from_str(&to(n2).payload).unwrap();
        assert_eq!(env.s, Signal::WakeMember { m: vec![pair] });
    }

    #[test]
    fn envelopes_round_trip() {
        let env = Envelope {
            o: Uuid::nil(),
            s: Signal::Close {
                p: Uuid::nil(),
                c: Uuid::nil(),
                code: 4000,
                reason: None,
                error: None,
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains("\"k\":\"close\""));
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.s, env.s);
    }
}

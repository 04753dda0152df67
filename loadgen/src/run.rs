//! One run, phase by phase: provision, connect, load, drain, close, report.
//! Every wait is bounded, so a run always ends by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::SinkExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, NodeUrl};
use crate::conn::{self, Conn, HelloCtx, Reading, Sink, Stalled};
use crate::layout::Layout;
use crate::payload::Encoder;
use crate::progress::Progress;
use crate::stats::{self, IdleRss, Report, Stats};
use crate::workload::{self, Sender, Targets, GROUP, GROUP_TARGET};
use crate::Workload;

/// Connects (hello included) in flight at once.
const CONNECT_CONCURRENCY: usize = 64;
/// The send phase fails when acks stop arriving for this long.
const ACK_STALL: Duration = Duration::from_secs(30);
/// The drain ends when no new delivery arrives for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(10);
/// Queued `rate` offers per peer before the ticker drops some.
const FEED_DEPTH: usize = 1024;
/// Closing every socket at the end may take this long.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the phases poll counters (and redraw the bar).
const POLL: Duration = Duration::from_millis(20);
/// The end-of-run check of the stalled sockets may take this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Plan {
    pub workload: Workload,
    /// Peers, meshes and stalled members.
    pub layout: Layout,
    pub messages: u64,
    pub rate: f64,
    pub duration: Duration,
    pub payload_bytes: usize,
    pub encoder: Encoder,
    pub hold: Duration,
    /// Peers connecting at once.
    pub connect_concurrency: usize,
    pub broker_pid: Option<u32>,
    pub nodes: Vec<NodeUrl>,
    pub admin_token: String,
    pub progress: bool,
    /// dm / rate: address only peers connected to another node.
    pub cross_node: bool,
}

pub async fn run(plan: Plan) -> Result<Report> {
    let progress = Progress::new(plan.progress);
    let layout = plan.layout;
    let stats = if plan.workload == Workload::Broadcast {
        Stats::new().tracking_spread()
    } else {
        Stats::new()
    };
    let stats = Arc::new(stats);
    let stop = CancellationToken::new();

    progress.phase("provision", layout.slots() as u64);
    let group = (plan.workload == Workload::Group).then_some(GROUP);
    let p = progress.clone();
    let mesh_of: Vec<usize> = (0..layout.slots()).map(|s| layout.mesh_of(s)).collect();
    let prov = admin::provision(
        &plan.nodes[0].http,
        &plan.admin_token,
        layout.meshes,
        &mesh_of,
        move |s| layout.name(s),
        group,
        move |_| p.inc(),
    )
    .await?;

    let rss_before = plan.broker_pid.and_then(stats::rss_kb);
    if plan.workload == Workload::Idle && plan.broker_pid.is_some() && rss_before.is_none() {
        eprintln!("loadgen: cannot read VmRSS of the --broker-pid process");
    }

    progress.phase("connect", layout.slots() as u64);
    let (conns, hello_elapsed) = match connect_all(&plan, &prov, &stats, &stop, &progress).await {
        Ok(c) => c,
        Err(e) => {
            stop.cancel();
            return Err(e);
        }
    };
    let hello_per_s = layout.peers as f64 / hello_elapsed.as_secs_f64().max(1e-9);
    let stalled = match connect_stalled(&plan, &prov, &progress).await {
        Ok(s) => s,
        Err(e) => {
            stop.cancel();
            let (sinks, readers): (Vec<_>, Vec<_>) =
                conns.into_iter().map(|c| (c.sink, c.reader)).unzip();
            close_all(sinks, readers).await;
            return Err(e);
        }
    };

    let mut readers = Vec::with_capacity(conns.len());
    let mut sinks = Vec::with_capacity(conns.len());
    let mut windows = Vec::with_capacity(conns.len());
    for c in conns {
        readers.push(c.reader);
        sinks.push(Some(c.sink));
        windows.push(c.window);
    }

    let mut report = Report {
        workload: plan.workload.name(),
        peers: layout.peers,
        messages_per_peer: match plan.workload {
            Workload::Idle => 0,
            Workload::Rate => {
                (plan.rate * plan.duration.as_secs_f64()) as u64 / layout.peers as u64
            }
            _ => plan.messages,
        },
        payload_bytes: plan.payload_bytes,
        sent: 0,
        acked: 0,
        rejected: 0,
        delivered: 0,
        duplicates: 0,
        lost: 0,
        duration_s: 0.0,
        throughput_msgs_per_s: 0.0,
        latency_ms: Default::default(),
        hello_per_s: stats::round3(hello_per_s),
        meshes: layout.meshes,
        spread_ms: None,
        stalled: layout.stalled,
        sent_to_stalled: 0,
        stalled_closed: 0,
        idle: None,
        upload_mb_per_s: None,
        download_mb_per_s: None,
        claims_refused: None,
    };

    let outcome = if plan.workload == Workload::Idle {
        let t = Instant::now();
        hold(&plan, &progress).await;
        let after = plan.broker_pid.and_then(stats::rss_kb);
        report.duration_s = stats::round3(t.elapsed().as_secs_f64());
        let per_conn = match (rss_before, after) {
            (Some(b), Some(a)) => Some(stats::round3((a as f64 - b as f64) / layout.peers as f64)),
            _ => None,
        };
        report.idle = Some(IdleRss {
            broker_rss_kb_before: rss_before,
            broker_rss_kb_after: after,
            rss_kib_per_connection: per_conn,
        });
        Ok(())
    } else {
        load(
            plan,
            &prov,
            &stats,
            &progress,
            &mut sinks,
            windows,
            &mut report,
        )
        .await
    };

    progress.finish();
    stop.cancel();
    let stalled_sinks = if outcome.is_ok() {
        let (closed, sinks) = probe_stalled(stalled).await;
        report.stalled_closed = closed;
        sinks
    } else {
        stalled.into_iter().map(|s| s.sink).collect()
    };
    close_all(sinks.into_iter().flatten().chain(stalled_sinks), readers).await;
    outcome?;

    let rejected = Stats::get(&stats.rejected);
    if rejected > 0 {
        eprintln!(
            "loadgen: warning: {rejected} send(s) rejected; for rate_limit, start the broker \
             with BROKER_SEND_RATE_PER_MIN and BROKER_SEND_BURST raised"
        );
    }
    let closed = Stats::get(&stats.closed_early);
    if closed > 0 {
        eprintln!("loadgen: warning: the broker closed {closed} socket(s) during the run");
    }
    let foreign = Stats::get(&stats.foreign);
    if foreign > 0 {
        eprintln!("loadgen: warning: {foreign} push(es) did not carry a loadgen payload");
    }
    Ok(report)
}

/// The hello context of each mesh.
fn hello_ctxs(prov: &admin::Provisioned) -> Vec<Arc<HelloCtx>> {
    prov.meshes
        .iter()
        .map(|m| {
            Arc::new(HelloCtx {
                mesh_id: m.mesh_id.clone(),
                slug: m.slug.clone(),
            })
        })
        .collect()
}

/// Deliveries each acked send of peer `i` calls for.
fn fanout(workload: Workload, layout: &Layout, i: usize) -> u64 {
    match workload {
        Workload::Dm | Workload::Rate => 1,
        Workload::Broadcast | Workload::Group => {
            layout.peers_in(layout.mesh_of(i)).len() as u64 - 1
        }
        Workload::Idle
        | Workload::Recall
        | Workload::Schedule
        | Workload::Stream
        | Workload::State
        | Workload::Tasks
        | Workload::Relay
        | Workload::Upload => 0,
    }
}

/// Connects every peer; returns them in peer order and the time from the
/// first connect to the last `hello_ack`.
async fn connect_all(
    plan: &Plan,
    prov: &admin::Provisioned,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
    progress: &Progress,
) -> Result<(Vec<Conn>, Duration)> {
    let layout = plan.layout;
    let ctxs = hello_ctxs(prov);
    let limit = Arc::new(Semaphore::new(plan.connect_concurrency));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..layout.peers {
        let ws = plan.nodes[i % plan.nodes.len()].ws.clone();
        let members = prov.members.clone();
        let ctx = ctxs[layout.mesh_of(i)].clone();
        let reading = Reading {
            fanout: fanout(plan.workload, &layout, i),
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let c = conn::connect(&ws, &ctx, i, &layout.name(i), &members[i], reading).await?;
            anyhow::Ok((i, c))
        });
    }
    let mut slots: Vec<Option<Conn>> = (0..layout.peers).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        match done.context("connect task")? {
            Ok((i, c)) => {
                slots[i] = Some(c);
                progress.inc();
            }
            Err(e) => {
                tasks.abort_all();
                for c in slots.into_iter().flatten() {
                    c.reader.abort();
                }
                return Err(e);
            }
        }
    }
    let elapsed = started.elapsed();
    let conns = slots
        .into_iter()
        .map(|c| c.ok_or_else(|| anyhow!("a peer did not connect")))
        .collect::<Result<Vec<_>>>()?;
    Ok((conns, elapsed))
}

/// Connects the stalled members (after every peer), in slot order.
async fn connect_stalled(
    plan: &Plan,
    prov: &admin::Provisioned,
    progress: &Progress,
) -> Result<Vec<Stalled>> {
    let layout = plan.layout;
    let ctxs = hello_ctxs(prov);
    let mut tasks = JoinSet::new();
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    for i in layout.peers..layout.slots() {
        let ws = plan.nodes[i % plan.nodes.len()].ws.clone();
        let (members, limit) = (prov.members.clone(), limit.clone());
        let ctx = ctxs[layout.mesh_of(i)].clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let s = conn::connect_stalled(&ws, &ctx, i, &layout.name(i), &members[i]).await?;
            anyhow::Ok((i, s))
        });
    }
    let mut slots: Vec<Option<Stalled>> = (0..layout.stalled).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (i, s) = done.context("connect task")??;
        slots[i - layout.peers] = Some(s);
        progress.inc();
    }
    slots
        .into_iter()
        .map(|s| s.ok_or_else(|| anyhow!("a stalled member did not connect")))
        .collect()
}

/// Checks every stalled socket at once (`conn::probe_closed`, bounded by
/// `PROBE_TIMEOUT`); returns how many the broker had closed, and the
/// write halves to close.
async fn probe_stalled(stalled: Vec<Stalled>) -> (u64, Vec<Sink>) {
    let mut probes = JoinSet::new();
    for mut s in stalled {
        probes.spawn(async move {
            let closed = tokio::time::timeout(PROBE_TIMEOUT, conn::probe_closed(&mut s))
                .await
                .unwrap_or(false);
            (closed, s.sink)
        });
    }
    let (mut closed, mut sinks) = (0, Vec::new());
    while let Some(done) = probes.join_next().await {
        if let Ok((c, sink)) = done {
            closed += u64::from(c);
            sinks.push(sink);
        }
    }
    (closed, sinks)
}

async fn hold(plan: &Plan, progress: &Progress) {
    progress.phase("hold (s)", plan.hold.as_secs());
    let until = Instant::now() + plan.hold;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
        progress.set((plan.hold - until.saturating_duration_since(Instant::now())).as_secs());
    }
}

/// The messaging workloads: send, wait for every ack, drain deliveries.
async fn load(
    plan: Plan,
    prov: &admin::Provisioned,
    stats: &Arc<Stats>,
    progress: &Progress,
    sinks: &mut [Option<Sink>],
    windows: Vec<Arc<Semaphore>>,
    report: &mut Report,
) -> Result<()> {
    let layout = plan.layout;
    let n = layout.peers;
    let key_list = |slots: Vec<usize>| -> Arc<Vec<String>> {
        Arc::new(
            slots
                .into_iter()
                .map(|s| prov.members[s].keys.public_hex.clone())
                .collect(),
        )
    };
    let mesh_peers: Vec<_> = (0..layout.meshes)
        .map(|m| key_list(layout.peers_in(m)))
        .collect();
    let mesh_stalled: Vec<_> = (0..layout.meshes)
        .map(|m| key_list(layout.stalled_in(m)))
        .collect();
    // Peer i is at position i / meshes among its mesh's peers, and on
    // node i % nodes (connect_all spreads them round-robin).
    let nodes = plan.nodes.len();
    let mut elsewhere = Vec::new();
    if plan.cross_node {
        for i in 0..n {
            let others: Vec<usize> = layout
                .peers_in(layout.mesh_of(i))
                .into_iter()
                .filter(|s| s % nodes != i % nodes)
                .collect();
            if others.is_empty() {
                anyhow::bail!(
                    "--cross-node: peer {i} has no peer of its mesh on another node \
                     (--peers {} over --meshes {} and {nodes} urls)",
                    layout.peers,
                    layout.meshes
                );
            }
            elsewhere.push(key_list(others));
        }
    }
    let random_peer = |i: usize| {
        let m = layout.mesh_of(i);
        if plan.cross_node {
            Targets::RandomPeer {
                peers: elsewhere[i].clone(),
                stalled: mesh_stalled[m].clone(),
                own: None,
            }
        } else {
            Targets::RandomPeer {
                peers: mesh_peers[m].clone(),
                stalled: mesh_stalled[m].clone(),
                own: Some(i / layout.meshes),
            }
        }
    };
    let (senders, planned): (Vec<(usize, Targets)>, u64) = match plan.workload {
        Workload::Dm => (
            (0..n).map(|i| (i, random_peer(i))).collect(),
            plan.messages * n as u64,
        ),
        Workload::Group => (
            (0..n).map(|i| (i, Targets::Fixed(GROUP_TARGET))).collect(),
            plan.messages * n as u64,
        ),
        // Peer 0 of every mesh (slot m for mesh m).
        Workload::Broadcast => (
            (0..layout.meshes)
                .map(|m| (m, Targets::Fixed("*")))
                .collect(),
            plan.messages * layout.meshes as u64,
        ),
        Workload::Rate => (
            (0..n).map(|i| (i, random_peer(i))).collect(),
            (plan.rate * plan.duration.as_secs_f64()) as u64,
        ),
        Workload::Idle => unreachable!("idle has no load phase"),
        Workload::Recall
        | Workload::Schedule
        | Workload::Stream
        | Workload::State
        | Workload::Tasks
        | Workload::Relay
        | Workload::Upload => {
            unreachable!("runs in its own module")
        }
    };

    let enc = Arc::new(plan.encoder);
    let send_start_us = stats.started.elapsed().as_micros() as u64;
    progress.phase("send", planned);
    let mut tasks: JoinSet<Result<(usize, Sink)>> = JoinSet::new();
    let mut feeds = Vec::new();
    let paced = plan.rate > 0.0;
    for (i, targets) in senders {
        let sink = sinks[i]
            .take()
            .ok_or_else(|| anyhow!("peer {i} has no socket"))?;
        let s = Sender::new(
            i,
            sink,
            windows[i].clone(),
            enc.clone(),
            stats.clone(),
            targets,
        );
        if paced {
            let (tx, rx) = mpsc::channel(FEED_DEPTH);
            feeds.push(tx);
            tasks.spawn(s.run_fed(rx));
        } else {
            tasks.spawn(s.run_fixed(plan.messages));
        }
    }
    let ticker: Option<JoinHandle<u64>> =
        paced.then(|| tokio::spawn(workload::offer(feeds, plan.rate, plan.duration)));

    let answered = || Stats::get(&stats.acked) + Stats::get(&stats.rejected);
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok(Ok((i, sink)))) => sinks[i] = Some(sink),
                Some(Ok(Err(e))) => {
                    tasks.abort_all();
                    return Err(e);
                }
                Some(Err(e)) => {
                    tasks.abort_all();
                    return Err(anyhow!("sender task failed: {e}"));
                }
            },
            _ = tokio::time::sleep(POLL) => {
                let a = answered();
                progress.set(a);
                if a != last {
                    (last, last_change) = (a, Instant::now());
                } else if Stats::get(&stats.sent) > a && last_change.elapsed() >= ACK_STALL {
                    tasks.abort_all();
                    bail!(
                        "no acks for {} s ({} sent, {a} answered): the broker stopped acking",
                        ACK_STALL.as_secs(),
                        Stats::get(&stats.sent)
                    );
                }
            }
        }
    }
    if let Some(t) = ticker {
        let dropped = t.await.context("rate ticker")?;
        if dropped > 0 {
            eprintln!("loadgen: warning: {dropped} offers dropped (peer queues full): the offered rate was not met");
        }
    }
    let send_end_us = stats.started.elapsed().as_micros() as u64;

    let acked = Stats::get(&stats.acked);
    // Every ack is in: each added its sender's fan-out (none for sends
    // to stalled members).
    let expected = Stats::get(&stats.expected);
    progress.phase("deliver", expected);
    let (mut last, mut last_change) = (u64::MAX, Instant::now());
    loop {
        let d = Stats::get(&stats.delivered);
        progress.set(d);
        if d >= expected {
            break;
        }
        if d != last {
            (last, last_change) = (d, Instant::now());
        } else if last_change.elapsed() >= DRAIN_IDLE {
            break;
        }
        tokio::time::sleep(POLL).await;
    }

    let delivered = Stats::get(&stats.delivered);
    let end_us = send_end_us.max(Stats::get(&stats.last_delivery_us));
    let duration_s = end_us.saturating_sub(send_start_us) as f64 / 1e6;
    report.sent = Stats::get(&stats.sent);
    report.acked = acked;
    report.rejected = Stats::get(&stats.rejected);
    report.delivered = delivered;
    report.duplicates = Stats::get(&stats.duplicates);
    report.lost = expected.saturating_sub(delivered);
    report.duration_s = stats::round3(duration_s);
    report.throughput_msgs_per_s = if duration_s > 0.0 {
        stats::round3(delivered as f64 / duration_s)
    } else {
        0.0
    };
    report.latency_ms = stats.latency();
    report.spread_ms = stats.spread();
    report.sent_to_stalled = Stats::get(&stats.sent_to_stalled);
    Ok(())
}

/// Ends every reader and closes every socket that is still ours, within
/// `CLOSE_TIMEOUT`.
async fn close_all(sinks: impl IntoIterator<Item = Sink>, readers: Vec<JoinHandle<()>>) {
    let mut closing = JoinSet::new();
    for mut s in sinks {
        closing.spawn(async move {
            let _ = s.close().await;
        });
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while closing.join_next().await.is_some() {}
    })
    .await;
    closing.abort_all();
    for r in readers {
        r.abort();
    }
}

//! `claudemesh-loadgen`: drives a running broker (or cluster) through its
//! public protocol and admin API only, and reports what it measured.
//! The flags and JSON fields are a contract with scripts outside the
//! project (ADMIN.md, "Load generator").

mod admin;
mod conn;
mod fanout;
mod layout;
mod one_mesh;
mod payload;
mod progress;
mod recall;
mod relay;
mod run;
mod schedule;
mod stats;
mod tasks;
mod upload;
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};

const AFTER_HELP: &str = "\
Provisions a fresh mesh `load-<8 hex>` (with --meshes K > 1, K meshes
`load-<8 hex>-<m>`) with one member per peer through the admin API of the
first --url, connects every peer (round-robin over the urls) with a signed
hello, runs the workload, waits for deliveries to drain (until all arrive or
10 s pass with no progress) and reports.

Workloads (a peer's \"mesh\" is its own mesh; peer i is in mesh i % K):
  dm         each peer sends --messages to random other peers of its mesh
             (member key)
  broadcast  peer 0 of every mesh (peer m of mesh m) sends --messages to
             `*` (each reaches the other peers of that mesh)
  group      every member is in group `load`; each peer sends --messages
             to `@load` (each reaches the other peers of its mesh)
  rate       --rate messages/s in total, as dm sends spread over the peers,
             for --duration seconds
  idle       connect, hold --hold seconds; with --broker-pid, reports that
             process's VmRSS before connecting and at the end of the hold
  recall     seeds --memories memories (remember, through 16 extra
             sessions), then each peer sends --messages recalls, one at a
             time; latency is each recall's round trip
  schedule   each peer schedules --messages reminders (at most 100) to the
             next peer, due evenly over --duration seconds (default 60)
             starting --lead seconds (default 10) from now, and reads its
             pushes; latency is lateness (push here minus due time);
             duplicates and lost count reminders
  stream     every peer subscribes to one stream; the peers publish --rate
             publishes/s in total for --duration seconds, each reaching
             every other peer; latency is publish to a subscriber on
             another node than the publisher (every subscriber with one
             --url); start brokers with BROKER_STREAM_RATE_PER_MIN and
             BROKER_MAX_FRAMES_PER_SECOND above the per-peer rate
  state      every peer sets its own state key, --rate sets/s in total
             for --duration seconds, each reaching every other peer as
             state_change; latency is set to a peer on another node than
             the setter (every peer with one --url)
  tasks      each peer creates --messages tasks; then groups of one peer
             per --url (at least two) race to claim them, every member of
             a group claiming each of its group's tasks in the same order,
             one claim in flight per peer; throughput is tasks claimed/s,
             latency each claim's round trip; duplicates are double claims,
             lost tasks nobody won
  relay      every peer registers an MCP server and answers its calls;
             peer i calls peer i+1's (on the next --url) at --rate calls/s
             in total for --duration seconds; latency is mcp_call to
             mcp_call_result, an error result counts as lost
  upload     each peer uploads --messages files of --payload-bytes
             (POST /upload with its hook token, to its own --url), then
             downloads each from the next --url and compares; reports
             upload_mb_per_s and download_mb_per_s, latency per upload

schedule, stream, state, tasks, recall, relay and upload make one mesh of --peers
sessions (peer i on
url i % urls); --meshes and --stalled do not apply.

--meshes K (default 1, at most --peers): the peers are split over K meshes
of --peers / K (the first --peers % K meshes get one more); every mesh needs
2 peers or more except for idle. Many small meshes keep the peer_joined
fan-out of a large idle run linear, so hello_per_s measures hellos.

--stalled N (default 0; not for idle): N more members (stalled j in mesh
j % K) connect and say hello after the peers, then are never read again
(their sockets stay open). dm and rate senders pick uniformly among the
other peers of their mesh and its stalled members, so a stalled member gets
a normal peer's share; broadcast and group reach them as mesh (and group)
members. Nothing sent to them is expected or lost: `sent_to_stalled`
counts the dm/rate sends addressed to them; hello_per_s counts the peers
only. At the end each stalled socket gets a ping and is read for up to
3 s: `stalled_closed` counts those the broker had closed by then (close,
end of stream or error before the pong). The broker drops a socket whose
writes stall for BROKER_PING_INTERVAL_SECONDS (default 30; once its
buffers fill) or that misses pongs for BROKER_PONG_TIMEOUT_SECONDS
(default 75), so short runs may report 0.

--cross-node (dm and rate, two --url or more): senders address only peers
of their mesh connected to another node (peer i is on url i % urls), so the
latency is cross-node delivery alone.

broadcast with --rate R sends its --messages (per mesh) paced at R
broadcasts/s in total instead of as fast as acks allow, so each spread is
that broadcast's own rather than the interleaving of a burst.

broadcast also reports `spread_ms`: for each message, the time from its
first to its last push across recipients (as received here), over the
messages that reached 2 recipients or more (0 when none did); it is null
for the other workloads.

Start the broker with limits that let the load through, for example:
  BROKER_SEND_RATE_PER_MIN=1000000 BROKER_SEND_BURST=1000000
                             per-member send budget (default 60/min, burst 10)
  MAX_CONNECTIONS_PER_MESH=N live sessions per mesh (default 100): at least
                             --peers / --meshes (rounded up) plus the
                             stalled members of a mesh
  MAX_MESSAGE_BYTES=B        send size cap (default 65536); the generator reads
                             the same variable to check that --payload-bytes
                             fits (base64 grows it by a third)

Exit status 0 when the run completed (lost or rejected messages are
reported, not failures); 1 on errors (refused hello, broker unreachable,
acks stalled for 30 s).";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Dm,
    Broadcast,
    Group,
    Rate,
    Idle,
    Recall,
    Schedule,
    Stream,
    State,
    Tasks,
    Relay,
    Upload,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Dm => "dm",
            Workload::Broadcast => "broadcast",
            Workload::Group => "group",
            Workload::Rate => "rate",
            Workload::Idle => "idle",
            Workload::Recall => "recall",
            Workload::Schedule => "schedule",
            Workload::Stream => "stream",
            Workload::State => "state",
            Workload::Tasks => "tasks",
            Workload::Relay => "relay",
            Workload::Upload => "upload",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "claudemesh-loadgen",
    version,
    about = "Load generator for claudemesh-broker (public protocol and admin API only)",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Broker node, http://HOST:PORT (repeatable); admin calls go to the
    /// first, peers are spread round-robin, each on ws://HOST:PORT/ws.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "http://127.0.0.1:7900"
    )]
    pub urls: Vec<String>,
    /// Admin API bearer token.
    #[arg(long, env = "BROKER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Sessions, one member each (stalled members not included).
    #[arg(long)]
    pub peers: usize,
    /// Meshes the peers are split over (peer i in mesh i % K).
    #[arg(long, default_value_t = 1)]
    pub meshes: usize,
    /// Extra members that say hello and then never read their socket.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    /// dm, rate: address only peers connected to another node than the
    /// sender's (needs two --url or more): cross-node latency alone.
    #[arg(long)]
    pub cross_node: bool,
    /// dm, group, broadcast: messages per sending peer.
    #[arg(long, default_value_t = 100)]
    pub messages: u64,
    /// rate: messages per second offered in total.
    #[arg(long)]
    pub rate: Option<f64>,
    /// rate: seconds to offer load for.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Raw ciphertext size in bytes (at least 24: id and send time).
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// idle: seconds to hold the connections.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Peers connecting (and saying hello) at once; the default paces a
    /// large run, `--connect-concurrency 10000` makes it one burst.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// idle: broker process whose VmRSS is sampled (same machine).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// recall: memories seeded (through `remember`) before the recalls;
    /// `--messages` is then the recalls per peer.
    #[arg(long, default_value_t = 100_000)]
    pub memories: u64,
    /// schedule: seconds from the start of the run to the first due time
    /// (scheduling must finish within it).
    #[arg(long, default_value_t = 10.0)]
    pub lead: f64,
    /// Print one JSON document on stdout and no progress bar.
    #[arg(long)]
    pub json: bool,
}

/// The broker's send size cap as this environment configures it.
fn max_message_bytes() -> usize {
    ["BROKER_MAX_MESSAGE_BYTES", "MAX_MESSAGE_BYTES"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
        .unwrap_or(65536)
}

fn positive(flag: &str, v: Option<f64>) -> Result<f64> {
    match v {
        Some(x) if x.is_finite() && x > 0.0 => Ok(x),
        Some(x) => bail!("{flag} must be a positive number, got {x}"),
        None => bail!("the rate workload needs {flag}"),
    }
}

/// Checks flag combinations; returns the checked run plan.
fn plan(args: &Args) -> Result<run::Plan> {
    if args.peers == 0 {
        bail!("--peers must be at least 1");
    }
    if args.workload != Workload::Idle && args.peers < 2 {
        bail!(
            "--workload {} needs --peers 2 or more",
            args.workload.name()
        );
    }
    if args.meshes == 0 {
        bail!("--meshes must be at least 1");
    }
    if args.meshes > args.peers {
        bail!(
            "--meshes {} is more than --peers {}: every mesh needs a peer",
            args.meshes,
            args.peers
        );
    }
    let layout = layout::Layout {
        peers: args.peers,
        meshes: args.meshes,
        stalled: args.stalled,
    };
    if args.workload != Workload::Idle && layout.smallest_mesh() < 2 {
        bail!(
            "--workload {} needs 2 peers or more in every mesh: --peers {} over --meshes {} \
             leaves a mesh with {} (use --peers of at least {})",
            args.workload.name(),
            args.peers,
            args.meshes,
            layout.smallest_mesh(),
            2 * args.meshes
        );
    }
    if args.cross_node && !matches!(args.workload, Workload::Dm | Workload::Rate) {
        bail!("--cross-node applies to the dm and rate workloads");
    }
    if args.cross_node && args.urls.len() < 2 {
        bail!("--cross-node needs two --url or more (one per node)");
    }
    if args.workload == Workload::Idle && args.stalled > 0 {
        bail!("--stalled needs a messaging workload (dm, rate, broadcast or group); idle sends nothing");
    }
    if args.admin_token.is_empty() {
        bail!("--admin-token (or BROKER_ADMIN_TOKEN) is empty");
    }
    if !(args.hold.is_finite() && args.hold >= 0.0) {
        bail!("--hold must be zero or more seconds");
    }
    let (rate, duration) = match args.workload {
        Workload::Rate => {
            let rate = positive("--rate", args.rate)?;
            let secs = positive("--duration", args.duration)?;
            (rate, Duration::from_secs_f64(secs))
        }
        // Paced broadcasts: each one's spread is its own, not the
        // interleaving of a burst.
        Workload::Broadcast if args.rate.is_some() => {
            if args.duration.is_some() {
                bail!(
                    "a paced broadcast runs --messages per mesh; --duration applies to rate only"
                );
            }
            let rate = positive("--rate", args.rate)?;
            let total = args.messages as f64 * args.meshes as f64;
            (rate, Duration::from_secs_f64(total / rate))
        }
        _ => (0.0, Duration::ZERO),
    };
    let enc = payload::Encoder::new(args.payload_bytes).map_err(anyhow::Error::msg)?;
    // nonce + ciphertext + the longest target spec (a 64-hex key).
    let size = payload::NONCE_B64.len() + enc.encoded_len() + 64;
    let cap = max_message_bytes();
    if args.workload != Workload::Idle && size > cap {
        bail!(
            "--payload-bytes {} encodes to {size} bytes with nonce and target, over the \
             broker's max_message_bytes {cap} (set MAX_MESSAGE_BYTES for both if raised)",
            args.payload_bytes
        );
    }
    let nodes = args
        .urls
        .iter()
        .map(|u| admin::parse_node_url(u))
        .collect::<Result<Vec<_>>>()?;
    Ok(run::Plan {
        workload: args.workload,
        layout,
        messages: args.messages,
        rate,
        duration,
        payload_bytes: args.payload_bytes,
        encoder: enc,
        hold: Duration::from_secs_f64(args.hold),
        connect_concurrency: args.connect_concurrency.max(1),
        broker_pid: args.broker_pid,
        nodes,
        admin_token: args.admin_token.clone(),
        progress: !args.json,
        cross_node: args.cross_node,
    })
}

/// The `recall` workload's plan: one mesh, `--peers` querying sessions.
fn recall_plan(args: &Args) -> Result<recall::RecallPlan> {
    if args.peers == 0 || args.memories == 0 || args.messages == 0 {
        bail!("--workload recall needs --peers, --memories and --messages of at least 1");
    }
    if args.admin_token.is_empty() {
        bail!("--admin-token (or BROKER_ADMIN_TOKEN) is required");
    }
    Ok(recall::RecallPlan {
        node: admin::parse_node_url(&args.urls[0])?,
        admin_token: args.admin_token.clone(),
        peers: args.peers,
        recalls_per_peer: args.messages,
        memories: args.memories,
        progress: !args.json,
    })
}

/// Flags every one-mesh workload needs: peers, a token, the nodes.
fn one_mesh_nodes(args: &Args) -> Result<Vec<admin::NodeUrl>> {
    if args.peers < 2 {
        bail!(
            "--workload {} needs --peers 2 or more",
            args.workload.name()
        );
    }
    if args.admin_token.is_empty() {
        bail!("--admin-token (or BROKER_ADMIN_TOKEN) is required");
    }
    args.urls.iter().map(|u| admin::parse_node_url(u)).collect()
}

fn schedule_plan(args: &Args) -> Result<schedule::SchedulePlan> {
    let nodes = one_mesh_nodes(args)?;
    if args.messages == 0 || args.messages > schedule::MAX_PER_PEER {
        bail!(
            "--workload schedule needs --messages of 1 to {} (active reminders per member)",
            schedule::MAX_PER_PEER
        );
    }
    let window = positive("--duration", Some(args.duration.unwrap_or(60.0)))?;
    if !(args.lead.is_finite() && args.lead >= 0.0) {
        bail!("--lead must be zero or more seconds");
    }
    Ok(schedule::SchedulePlan {
        nodes,
        admin_token: args.admin_token.clone(),
        peers: args.peers,
        per_peer: args.messages,
        window: Duration::from_secs_f64(window),
        lead: Duration::from_secs_f64(args.lead),
        progress: !args.json,
    })
}

/// The `tasks` workload's plan: `--messages` tasks per peer, no rate.
fn tasks_plan(args: &Args) -> Result<tasks::TasksPlan> {
    let nodes = one_mesh_nodes(args)?;
    if args.messages == 0 {
        bail!("--workload tasks needs --messages of at least 1 (tasks per peer)");
    }
    Ok(tasks::TasksPlan {
        nodes,
        admin_token: args.admin_token.clone(),
        peers: args.peers,
        per_peer: args.messages,
        progress: !args.json,
    })
}

/// The plan of a rate-driven one-mesh workload (`stream`, `state`, `relay`).
fn stream_plan(args: &Args) -> Result<one_mesh::RatePlan> {
    let nodes = one_mesh_nodes(args)?;
    Ok(one_mesh::RatePlan {
        nodes,
        admin_token: args.admin_token.clone(),
        peers: args.peers,
        rate: positive("--rate", args.rate)?,
        duration: Duration::from_secs_f64(positive("--duration", args.duration)?),
        progress: !args.json,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = async {
        match args.workload {
            Workload::Recall => return recall::run(recall_plan(&args)?).await,
            Workload::Schedule => return schedule::run(schedule_plan(&args)?).await,
            Workload::Stream => {
                return fanout::run(stream_plan(&args)?, fanout::Kind::Stream).await
            }
            Workload::State => return fanout::run(stream_plan(&args)?, fanout::Kind::State).await,
            Workload::Tasks => return tasks::run(tasks_plan(&args)?).await,
            Workload::Relay => return relay::run(stream_plan(&args)?).await,
            Workload::Upload => {
                let nodes = one_mesh_nodes(&args)?;
                return upload::run(upload::UploadPlan {
                    nodes,
                    admin_token: args.admin_token.clone(),
                    peers: args.peers,
                    files: args.messages,
                    bytes: args.payload_bytes,
                    progress: !args.json,
                })
                .await;
            }
            _ => {}
        }
        let plan = plan(&args)?;
        run::run(plan).await
    }
    .await;
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("claudemesh-loadgen: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.human());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("claudemesh-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plan for a command line (split on whitespace).
    fn plan_of(args: &str) -> Result<run::Plan> {
        let argv = ["claudemesh-loadgen", "--admin-token", "t"]
            .into_iter()
            .chain(args.split_whitespace());
        plan(&Args::try_parse_from(argv).expect("flags parse"))
    }

    fn error_of(args: &str) -> String {
        match plan_of(args) {
            Ok(_) => panic!("{args:?} should be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cross_node_needs_two_urls_and_a_dm_or_rate_run() {
        let e = error_of("--workload dm --peers 4 --cross-node");
        assert!(e.contains("two --url"), "{e}");
        let e = error_of("--workload broadcast --peers 4 --cross-node --url http://127.0.0.1:1 --url http://127.0.0.1:2");
        assert!(e.contains("dm and rate"), "{e}");
        let p = plan_of("--workload dm --peers 4 --cross-node --url http://127.0.0.1:1 --url http://127.0.0.1:2")
        .unwrap();
        assert!(p.cross_node);
    }

    #[test]
    fn broadcast_may_be_paced_by_rate() {
        let p = plan_of("--workload broadcast --peers 4 --messages 10 --rate 5").unwrap();
        assert_eq!(p.rate, 5.0);
        assert_eq!(p.duration, Duration::from_secs(2));
        let e = error_of("--workload broadcast --peers 4 --rate 5 --duration 3");
        assert!(e.contains("--duration applies to rate only"), "{e}");
        let e = error_of("--workload broadcast --peers 4 --rate 0");
        assert!(e.contains("positive"), "{e}");
    }

    #[test]
    fn defaults_are_one_mesh_and_no_stalled_members() {
        let p = plan_of("--workload dm --peers 4").unwrap();
        assert_eq!(
            p.layout,
            layout::Layout {
                peers: 4,
                meshes: 1,
                stalled: 0
            }
        );
    }

    #[test]
    fn meshes_and_stalled_are_planned() {
        let p = plan_of("--workload dm --peers 7 --meshes 3 --stalled 2").unwrap();
        assert_eq!(p.layout.slots(), 9);
        assert_eq!(p.layout.smallest_mesh(), 2);
        // Idle may have a peer per mesh.
        assert!(plan_of("--workload idle --peers 5 --meshes 5").is_ok());
    }

    #[test]
    fn bad_mesh_counts_are_refused() {
        let e = error_of("--workload idle --peers 3 --meshes 0");
        assert!(e.contains("--meshes must be at least 1"), "{e}");
        let e = error_of("--workload idle --peers 3 --meshes 4");
        assert!(e.contains("more than --peers 3"), "{e}");
        let e = error_of("--workload dm --peers 5 --meshes 3");
        assert!(e.contains("2 peers or more in every mesh"), "{e}");
        assert!(e.contains("leaves a mesh with 1"), "{e}");
        let e = error_of("--workload broadcast --peers 3 --meshes 2");
        assert!(e.contains("--peers of at least 4"), "{e}");
    }

    #[test]
    fn stalled_needs_a_messaging_workload() {
        let e = error_of("--workload idle --peers 3 --stalled 1");
        assert!(e.contains("--stalled needs a messaging workload"), "{e}");
        for w in ["dm", "broadcast", "group"] {
            let args = format!("--workload {w} --peers 2 --stalled 3");
            assert!(plan_of(&args).is_ok());
        }
    }

    #[test]
    fn schedule_and_stream_check_their_flags() {
        let argv = |a: &str| {
            let v: Vec<&str> = ["claudemesh-loadgen", "--admin-token", "t"]
                .into_iter()
                .chain(a.split_whitespace())
                .collect();
            Args::try_parse_from(v).expect("flags parse")
        };
        let p = schedule_plan(&argv("--workload schedule --peers 3 --messages 100")).unwrap();
        assert_eq!(
            (p.window, p.lead),
            (Duration::from_secs(60), Duration::from_secs(10))
        );
        let e = schedule_plan(&argv("--workload schedule --peers 3 --messages 101"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("1 to 100"), "{e}");
        let e = schedule_plan(&argv("--workload schedule --peers 1"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("--peers 2"), "{e}");
        let e = stream_plan(&argv("--workload stream --peers 3 --duration 5"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("--rate"), "{e}");
        let p = stream_plan(&argv("--workload stream --peers 3 --rate 100 --duration 5")).unwrap();
        assert_eq!((p.rate, p.duration), (100.0, Duration::from_secs(5)));
    }

    #[test]
    fn older_checks_still_hold() {
        let e = error_of("--workload dm --peers 1");
        assert!(e.contains("needs --peers 2 or more"), "{e}");
        let e = error_of("--workload rate --peers 2 --duration 1");
        assert!(e.contains("needs --rate"), "{e}");
        let e = error_of("--workload dm --peers 2 --payload-bytes 10");
        assert!(e.contains("--payload-bytes must be at least 24"), "{e}");
    }
}

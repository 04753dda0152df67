//! Counters shared by every connection, the latency histogram, and the
//! report printed at the end (ADMIN.md "Load generator" fixes its JSON
//! field names).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Rejections and broker errors echoed to stderr before going quiet.
const MAX_ERRORS_SHOWN: u64 = 5;
/// Latencies above an hour are clamped (the histogram's top).
const MAX_LATENCY_US: u64 = 3_600_000_000;

pub struct Stats {
    pub started: Instant,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Sends addressed to a stalled member (also counted in `sent`).
    pub sent_to_stalled: AtomicU64,
    /// Deliveries the acked sends call for (each ack adds its fan-out).
    pub expected: AtomicU64,
    pub rejected: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    /// Non-system pushes whose ciphertext is not ours.
    pub foreign: AtomicU64,
    /// Sockets the broker closed (or that failed) before the run ended.
    pub closed_early: AtomicU64,
    /// When the last new delivery arrived, in µs since `started`.
    pub last_delivery_us: AtomicU64,
    errors_shown: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    /// Per message (sender, seq), when tracked (`broadcast`): its first
    /// and last receive time across recipients.
    spans: Option<Mutex<HashMap<(u64, u64), Span>>>,
}

/// Receive times of one message across its recipients, in µs since
/// `Stats::started`.
#[derive(Debug, Clone, Copy)]
struct Span {
    first_us: u64,
    last_us: u64,
    recipients: u32,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// p50, p95, p99 and max of `h` (in µs) in milliseconds; zeros when empty.
pub fn quantiles_ms(h: &Histogram<u64>) -> LatencyMs {
    if h.is_empty() {
        return LatencyMs::default();
    }
    // Whole microseconds: exactly three decimals of milliseconds.
    let ms = |us: u64| us as f64 / 1000.0;
    LatencyMs {
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            sent_to_stalled: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            closed_early: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            errors_shown: AtomicU64::new(0),
            latency_us: Mutex::new(histogram()),
            spans: None,
        }
    }

    /// Also records each message's first-to-last receive spread.
    pub fn tracking_spread(mut self) -> Stats {
        self.spans = Some(Mutex::new(HashMap::new()));
        self
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Prints one of the first few broker errors to stderr.
    pub fn show_error(&self, what: &str) {
        let n = self.errors_shown.fetch_add(1, Ordering::Relaxed);
        if n < MAX_ERRORS_SHOWN {
            eprintln!("loadgen: {what}");
        } else if n == MAX_ERRORS_SHOWN {
            eprintln!("loadgen: (further errors not shown)");
        }
    }

    /// A first delivery of message `id` (sender, seq) to one recipient,
    /// `latency_us` after it was sent.
    pub fn delivered(&self, latency_us: u64, id: (u64, u64)) {
        Self::bump(&self.delivered);
        let since = self.started.elapsed().as_micros() as u64;
        self.last_delivery_us.fetch_max(since, Ordering::Relaxed);
        {
            let mut h = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
            h.saturating_record(latency_us.max(1));
        }
        if let Some(spans) = &self.spans {
            let mut spans = spans.lock().unwrap_or_else(|e| e.into_inner());
            let s = spans.entry(id).or_insert(Span {
                first_us: since,
                last_us: since,
                recipients: 0,
            });
            // Readers race to the lock: keep the true extremes.
            s.first_us = s.first_us.min(since);
            s.last_us = s.last_us.max(since);
            s.recipients += 1;
        }
    }

    pub fn latency(&self) -> LatencyMs {
        let h = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        quantiles_ms(&h)
    }

    /// First-to-last receive spread over the messages that reached at
    /// least two recipients; `None` when not tracked.
    pub fn spread(&self) -> Option<LatencyMs> {
        let spans = self.spans.as_ref()?;
        let spans = spans.lock().unwrap_or_else(|e| e.into_inner());
        let mut h = histogram();
        for s in spans.values().filter(|s| s.recipients >= 2) {
            // One microsecond is the histogram's floor (and resolution).
            h.saturating_record((s.last_us - s.first_us).max(1));
        }
        Some(quantiles_ms(&h))
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Broker memory, for the `idle` workload.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IdleRss {
    pub broker_rss_kb_before: Option<u64>,
    pub broker_rss_kb_after: Option<u64>,
    pub rss_kib_per_connection: Option<f64>,
}

/// The one JSON document `--json` prints (field names are a contract).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// For the human summary only.
    #[serde(skip)]
    pub workload: &'static str,
    pub peers: usize,
    pub messages_per_peer: u64,
    pub payload_bytes: usize,
    pub sent: u64,
    pub acked: u64,
    pub rejected: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub duration_s: f64,
    pub throughput_msgs_per_s: f64,
    pub latency_ms: LatencyMs,
    pub hello_per_s: f64,
    pub meshes: usize,
    /// `broadcast`: first-to-last push spread per message; null otherwise.
    pub spread_ms: Option<LatencyMs>,
    pub stalled: usize,
    pub sent_to_stalled: u64,
    pub stalled_closed: u64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleRss>,
    /// `upload`: megabytes (10^6) a second each way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_mb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_mb_per_s: Option<f64>,
    /// `tasks`: claims refused as `task_not_claimable` (another won).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims_refused: Option<u64>,
}

impl Report {
    /// A one-mesh report of `workload` with nothing counted: the workloads
    /// of their own module (recall, schedule, stream) fill in what they
    /// measure.
    pub fn one_mesh(workload: &'static str) -> Report {
        Report {
            workload,
            peers: 0,
            messages_per_peer: 0,
            payload_bytes: 0,
            sent: 0,
            acked: 0,
            rejected: 0,
            delivered: 0,
            duplicates: 0,
            lost: 0,
            duration_s: 0.0,
            throughput_msgs_per_s: 0.0,
            latency_ms: LatencyMs::default(),
            hello_per_s: 0.0,
            meshes: 1,
            spread_ms: None,
            stalled: 0,
            sent_to_stalled: 0,
            stalled_closed: 0,
            idle: None,
            upload_mb_per_s: None,
            download_mb_per_s: None,
            claims_refused: None,
        }
    }
}

/// Rounds for display and JSON: three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// VmRSS of process `pid` in KiB, from /proc/PID/status.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

impl Report {
    /// The human summary printed without `--json`.
    pub fn human(&self) -> String {
        let mut out = format!(
            "workload {}: {} peers in {} mesh(es), {} messages per peer, {} payload bytes\n\
             hello rate:   {:.1} hellos/s\n\
             sent {}  acked {}  rejected {}\n\
             delivered {}  duplicates {}  lost {}\n\
             duration:     {:.3} s\n\
             throughput:   {:.1} deliveries/s\n\
             latency (ms): p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}\n",
            self.workload,
            self.peers,
            self.meshes,
            self.messages_per_peer,
            self.payload_bytes,
            self.hello_per_s,
            self.sent,
            self.acked,
            self.rejected,
            self.delivered,
            self.duplicates,
            self.lost,
            self.duration_s,
            self.throughput_msgs_per_s,
            self.latency_ms.p50,
            self.latency_ms.p95,
            self.latency_ms.p99,
            self.latency_ms.max,
        );
        if let Some(s) = &self.spread_ms {
            out.push_str(&format!(
                "spread (ms):  p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}  (first to last push)\n",
                s.p50, s.p95, s.p99, s.max
            ));
        }
        if let (Some(up), Some(down)) = (self.upload_mb_per_s, self.download_mb_per_s) {
            out.push_str(&format!(
                "files:        upload {up:.1} MB/s  download {down:.1} MB/s\n"
            ));
        }
        if self.stalled > 0 {
            out.push_str(&format!(
                "stalled:      {} sessions, {} messages sent to them, {} closed by the broker\n",
                self.stalled, self.sent_to_stalled, self.stalled_closed
            ));
        }
        if let Some(idle) = &self.idle {
            let show = |v: Option<u64>| v.map_or("n/a".to_string(), |k| format!("{k} KiB"));
            out.push_str(&format!(
                "broker RSS:   before {}  after {}  per connection {}\n",
                show(idle.broker_rss_kb_before),
                show(idle.broker_rss_kb_after),
                idle.rss_kib_per_connection
                    .map_or("n/a".to_string(), |k| format!("{k:.2} KiB")),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_reported_in_milliseconds() {
        let s = Stats::new();
        assert_eq!(s.latency().max, 0.0);
        for (seq, us) in [1_000, 2_000, 3_000, 100_000].into_iter().enumerate() {
            s.delivered(us, (0, seq as u64));
        }
        let l = s.latency();
        assert!((l.p50 - 2.0).abs() < 0.01, "{l:?}");
        assert!((l.max - 100.0).abs() < 0.1, "{l:?}");
        assert_eq!(Stats::get(&s.delivered), 4);
        assert!(s.spread().is_none(), "not tracked");
    }

    #[test]
    fn spread_counts_messages_with_two_recipients_or_more() {
        let s = Stats::new().tracking_spread();
        assert_eq!(s.spread().unwrap().max, 0.0);
        // Message (0, 0) reaches three recipients 20 ms apart at most,
        // (0, 1) only one: it is left out.
        s.delivered(5, (0, 0));
        s.delivered(5, (0, 1));
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.delivered(5, (0, 0));
        s.delivered(5, (0, 0));
        let spread = s.spread().unwrap();
        assert!(spread.max >= 20.0 && spread.max < 1000.0, "{spread:?}");
        assert_eq!(spread.p50, spread.max, "one message measured: {spread:?}");
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kb(std::process::id()).unwrap() > 0);
        assert_eq!(rss_kb(u32::MAX), None);
    }
}

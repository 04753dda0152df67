//! Metrics of the time and fan-out families (PROTOCOL-MESH.md §12–§14):
//! scheduled fires and their lateness, clock ticks, stream publishes.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::ResultLabel;

pub struct FanoutMetrics {
    /// Scheduled entries fired, by result (`sent`, or `no_recipient` for
    /// a fire into nothing).
    pub schedule_fires: Family<ResultLabel, Counter<u64, AtomicU64>>,
    /// Cron periods that passed unfired (an outage): each overdue entry
    /// fires once for them all.
    pub schedule_missed: Counter<u64, AtomicU64>,
    /// Due time → fire committed, seconds.
    pub schedule_lateness: Histogram,
    pub clock_ticks: Counter<u64, AtomicU64>,
    /// `publish` frames by result (`ok`, `rate_limit`).
    pub stream_publishes: Family<ResultLabel, Counter<u64, AtomicU64>>,
    /// `stream_data` frames sent out, all nodes' subscribers counted.
    pub stream_fanout: Counter<u64, AtomicU64>,
}

impl FanoutMetrics {
    pub fn register(registry: &mut Registry) -> FanoutMetrics {
        let m = FanoutMetrics {
            schedule_fires: Family::default(),
            schedule_missed: Counter::default(),
            // 1 ms … ~16 s: a fire is due within a poll; an outage lands
            // in +Inf.
            schedule_lateness: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            clock_ticks: Counter::default(),
            stream_publishes: Family::default(),
            stream_fanout: Counter::default(),
        };
        registry.register(
            "schedule_fires",
            "Scheduled entries fired, by result",
            m.schedule_fires.clone(),
        );
        registry.register(
            "schedule_missed_periods",
            "Cron periods that passed unfired during an outage",
            m.schedule_missed.clone(),
        );
        registry.register_with_unit(
            "schedule_lateness",
            "Scheduled due time to fire committed",
            Unit::Seconds,
            m.schedule_lateness.clone(),
        );
        registry.register(
            "clock_ticks",
            "Mesh clock ticks emitted",
            m.clock_ticks.clone(),
        );
        registry.register(
            "stream_publishes",
            "Stream publishes by result",
            m.stream_publishes.clone(),
        );
        registry.register(
            "stream_fanout",
            "stream_data frames sent to subscribers",
            m.stream_fanout.clone(),
        );
        for result in ["sent", "no_recipient"] {
            let _ = m.schedule_fires.get_or_create(&ResultLabel { result });
        }
        for result in ["ok", "rate_limit"] {
            let _ = m.stream_publishes.get_or_create(&ResultLabel { result });
        }
        m
    }
}

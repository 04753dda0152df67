//! Metrics of the relays between peers (PROTOCOL-MESH.md §15–§16).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelayLabels {
    /// `mcp`, `file` or `dir`.
    pub kind: &'static str,
    /// `answered`, `timeout`, `host_gone`, or (before any forward)
    /// `not_found`, `offline`.
    pub result: &'static str,
}

pub struct RelayMetrics {
    pub relays: Family<RelayLabels, Counter<u64, AtomicU64>>,
    /// Request in → answer out to the caller, answered relays only.
    pub round_trip: Histogram,
    /// Responses dropped: late, unknown id, or not from the relay's host.
    pub dropped: Counter<u64, AtomicU64>,
}

impl RelayMetrics {
    pub fn register(registry: &mut Registry) -> RelayMetrics {
        let m = RelayMetrics {
            relays: Family::default(),
            // 0.5 ms … ~16 s.
            round_trip: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            dropped: Counter::default(),
        };
        registry.register(
            "relays",
            "Relayed peer requests (MCP calls, file and directory requests) by outcome",
            m.relays.clone(),
        );
        registry.register_with_unit(
            "relay_round_trip",
            "Relayed request in to its answer out, answered relays",
            Unit::Seconds,
            m.round_trip.clone(),
        );
        registry.register(
            "relay_responses_dropped",
            "Relay responses dropped: late, unknown, or not from the relay's host",
            m.dropped.clone(),
        );
        m
    }
}

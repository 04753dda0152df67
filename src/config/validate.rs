//! Whether settings make a node that can start: each refusal names its
//! key, so an operator knows what to fix.

use std::net::IpAddr;
use std::path::Path;

use super::{FileStoreKind, Settings};

impl Settings {
    /// Rejects values that would start a broken node. Each message names
    /// the key so an operator knows what to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("db_pool_size", self.db_pool_size as u64),
            ("max_message_bytes", self.max_message_bytes as u64),
            (
                "max_connections_per_mesh",
                self.max_connections_per_mesh as u64,
            ),
            ("send_rate_per_min", self.send_rate_per_min as u64),
            ("send_burst", self.send_burst as u64),
            (
                "hook_rate_limit_per_min",
                self.hook_rate_limit_per_min as u64,
            ),
            (
                "webhook_rate_limit_per_min",
                self.webhook_rate_limit_per_min as u64,
            ),
            ("stream_rate_per_min", self.stream_rate_per_min as u64),
            ("status_ttl_seconds", self.status_ttl_seconds),
            ("claim_lease_seconds", self.claim_lease_seconds),
            ("queue_ttl_seconds", self.queue_ttl_seconds),
            ("ping_interval_seconds", self.ping_interval_seconds),
            ("pong_timeout_seconds", self.pong_timeout_seconds),
            ("node_heartbeat_seconds", self.node_heartbeat_seconds),
            ("node_lease_seconds", self.node_lease_seconds),
            ("sweep_interval_seconds", self.sweep_interval_seconds),
            ("audit_retention_days", self.audit_retention_days),
            ("hello_timeout_seconds", self.hello_timeout_seconds),
            (
                "max_connections_per_node",
                self.max_connections_per_node as u64,
            ),
            (
                "max_new_connections_per_second",
                self.max_new_connections_per_second as u64,
            ),
            ("max_frames_per_second", self.max_frames_per_second as u64),
            ("max_frame_bytes", self.max_frame_bytes as u64),
            ("db_timeout_seconds", self.db_timeout_seconds),
            (
                "http_header_timeout_seconds",
                self.http_header_timeout_seconds,
            ),
            ("max_http_connections", self.max_http_connections as u64),
            ("mcp_call_timeout_seconds", self.mcp_call_timeout_seconds),
            ("relay_timeout_seconds", self.relay_timeout_seconds),
            ("max_file_bytes", self.max_file_bytes),
            ("max_mesh_file_bytes", self.max_mesh_file_bytes),
            ("file_url_ttl_seconds", self.file_url_ttl_seconds),
            (
                "ephemeral_file_ttl_seconds",
                self.ephemeral_file_ttl_seconds,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                anyhow::bail!("invalid configuration: `{key}` must be greater than 0");
            }
        }
        for (key, value, max) in self.upper_bounds() {
            if value > max {
                anyhow::bail!("invalid configuration: `{key}` ({value}) must be at most {max}");
            }
        }
        if self.max_frame_bytes < self.max_message_bytes + 16 * 1024 {
            anyhow::bail!(
                "invalid configuration: `max_frame_bytes` ({}) must be at least `max_message_bytes` + 16384 ({})",
                self.max_frame_bytes,
                self.max_message_bytes + 16 * 1024
            );
        }
        self.validate_files()?;
        if let Some(f) = &self.database_ca_file {
            if !Path::new(f).is_file() {
                anyhow::bail!(
                    "invalid configuration: `database_ca_file` {f} is not a readable file"
                );
            }
        }
        if self.pong_timeout_seconds <= self.ping_interval_seconds {
            anyhow::bail!(
                "invalid configuration: `pong_timeout_seconds` ({}) must exceed `ping_interval_seconds` ({})",
                self.pong_timeout_seconds,
                self.ping_interval_seconds
            );
        }
        if self.node_lease_seconds <= self.node_heartbeat_seconds {
            anyhow::bail!(
                "invalid configuration: `node_lease_seconds` ({}) must exceed `node_heartbeat_seconds` ({})",
                self.node_lease_seconds,
                self.node_heartbeat_seconds
            );
        }
        if let Some(url) = &self.database_url {
            if url.trim().is_empty() {
                anyhow::bail!("invalid configuration: `database_url` is empty");
            }
        }
        if let Some(token) = &self.admin_token {
            if token.len() < 16 {
                anyhow::bail!(
                    "invalid configuration: `admin_token` must be at least 16 characters"
                );
            }
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                anyhow::bail!(
                    "invalid configuration: `public_url` must start with ws:// or wss://"
                );
            }
        }
        Ok(())
    }

    /// The largest value each size, count and duration may take: past
    /// these a value is a typo, and some (a TTL of centuries) would
    /// overflow a timestamp at the first use instead of failing at start.
    pub(super) fn upper_bounds(&self) -> Vec<(&'static str, u64, u64)> {
        const DAY: u64 = 86_400;
        const YEAR: u64 = 365 * DAY;
        const MIB: u64 = 1 << 20;
        // Rates and counts: far past any real limit (benchmarks switch the
        // limits off with 100,000,000), still no overflow in their math.
        const RATE_MAX: u64 = 1_000_000_000;
        vec![
            ("db_pool_size", self.db_pool_size as u64, 1_000),
            ("max_message_bytes", self.max_message_bytes as u64, 16 * MIB),
            ("max_frame_bytes", self.max_frame_bytes as u64, 64 * MIB),
            (
                "max_connections_per_mesh",
                self.max_connections_per_mesh as u64,
                RATE_MAX,
            ),
            ("send_rate_per_min", self.send_rate_per_min as u64, RATE_MAX),
            ("send_burst", self.send_burst as u64, RATE_MAX),
            (
                "hook_rate_limit_per_min",
                self.hook_rate_limit_per_min as u64,
                RATE_MAX,
            ),
            (
                "webhook_rate_limit_per_min",
                self.webhook_rate_limit_per_min as u64,
                RATE_MAX,
            ),
            (
                "stream_rate_per_min",
                self.stream_rate_per_min as u64,
                RATE_MAX,
            ),
            ("status_ttl_seconds", self.status_ttl_seconds, DAY),
            (
                "mcp_call_timeout_seconds",
                self.mcp_call_timeout_seconds,
                3600,
            ),
            ("relay_timeout_seconds", self.relay_timeout_seconds, 3600),
            ("file_url_ttl_seconds", self.file_url_ttl_seconds, DAY),
            ("max_file_bytes", self.max_file_bytes, 5 << 30),
            ("max_mesh_file_bytes", self.max_mesh_file_bytes, 1 << 40),
            (
                "ephemeral_file_ttl_seconds",
                self.ephemeral_file_ttl_seconds,
                YEAR,
            ),
            (
                "hook_fresh_window_seconds",
                self.hook_fresh_window_seconds,
                DAY,
            ),
            (
                "presence_grace_seconds",
                self.presence_grace_seconds,
                30 * DAY,
            ),
            ("claim_lease_seconds", self.claim_lease_seconds, DAY),
            ("queue_ttl_seconds", self.queue_ttl_seconds, YEAR),
            (
                "delivered_retention_seconds",
                self.delivered_retention_seconds,
                30 * DAY,
            ),
            ("ping_interval_seconds", self.ping_interval_seconds, DAY),
            ("pong_timeout_seconds", self.pong_timeout_seconds, DAY),
            ("node_heartbeat_seconds", self.node_heartbeat_seconds, 3_600),
            ("node_lease_seconds", self.node_lease_seconds, DAY),
            ("sweep_interval_seconds", self.sweep_interval_seconds, 3_600),
            ("shutdown_drain_seconds", self.shutdown_drain_seconds, 3_600),
            ("audit_retention_days", self.audit_retention_days, 36_500),
            ("hello_timeout_seconds", self.hello_timeout_seconds, 3_600),
            (
                "max_connections_per_node",
                self.max_connections_per_node as u64,
                RATE_MAX,
            ),
            (
                "max_new_connections_per_second",
                self.max_new_connections_per_second as u64,
                RATE_MAX,
            ),
            (
                "max_frames_per_second",
                self.max_frames_per_second as u64,
                RATE_MAX,
            ),
            ("db_timeout_seconds", self.db_timeout_seconds, 300),
            (
                "http_header_timeout_seconds",
                self.http_header_timeout_seconds,
                3_600,
            ),
            (
                "max_http_connections",
                self.max_http_connections as u64,
                RATE_MAX,
            ),
        ]
    }
}

impl Settings {
    /// The file settings that must agree with each other.
    fn validate_files(&self) -> anyhow::Result<()> {
        for c in &self.trusted_proxy_cidrs {
            parse_cidr(c).map_err(|e| {
                anyhow::anyhow!("invalid configuration: `trusted_proxy_cidrs`: {e}")
            })?;
        }
        if self.max_file_bytes > self.max_mesh_file_bytes {
            anyhow::bail!(
                "invalid configuration: `max_file_bytes` ({}) must be at most `max_mesh_file_bytes` ({})",
                self.max_file_bytes,
                self.max_mesh_file_bytes
            );
        }
        match self.file_store {
            Some(FileStoreKind::Postgres) if self.database_url.is_none() => anyhow::bail!(
                "invalid configuration: `file_store` = \"postgres\" needs a `database_url`"
            ),
            Some(FileStoreKind::Memory) if self.database_url.is_some() => anyhow::bail!(
                "invalid configuration: `file_store` = \"memory\" cannot serve a cluster: other nodes would not see the files (use postgres or s3)"
            ),
            Some(FileStoreKind::S3) if self.s3_bucket.as_deref().is_none_or(str::is_empty) => {
                anyhow::bail!("invalid configuration: `file_store` = \"s3\" needs `s3_bucket`")
            }
            _ => {}
        }
        if self
            .download_url_key
            .as_deref()
            .is_some_and(|k| k.len() < 16)
        {
            anyhow::bail!(
                "invalid configuration: `download_url_key` must be at least 16 characters"
            );
        }
        Ok(())
    }
}

/// A CIDR block, or a single address (as a /32 or /128).
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not a CIDR block or an IP address"))
}

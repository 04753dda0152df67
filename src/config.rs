//! Settings: loaded once at start from built-in defaults < `config.toml` <
//! environment, validated, then passed down as a typed value. Nothing else in
//! the crate reads the environment.

use std::net::IpAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Every key the broker understands. The environment is filtered to these
/// (as `BROKER_<KEY>`), so unrelated variables such as `BROKER_URL`, which the
/// admin CLI reads, never trip the unknown-key check.
pub const KEYS: &[&str] = &[
    "port",
    "bind",
    "database_url",
    "db_pool_size",
    "public_url",
    "admin_token",
    "max_message_bytes",
    "max_connections_per_mesh",
    "send_rate_per_min",
    "send_burst",
    "hook_rate_limit_per_min",
    "webhook_rate_limit_per_min",
    "stream_rate_per_min",
    "hook_auth",
    "status_ttl_seconds",
    "hook_fresh_window_seconds",
    "presence_grace_seconds",
    "claim_lease_seconds",
    "queue_ttl_seconds",
    "delivered_retention_seconds",
    "ping_interval_seconds",
    "pong_timeout_seconds",
    "node_heartbeat_seconds",
    "node_lease_seconds",
    "sweep_interval_seconds",
    "shutdown_drain_seconds",
    "log_format",
    "audit_retention_days",
    "audit_status_changes",
    "hello_timeout_seconds",
    "max_connections_per_node",
    "max_new_connections_per_second",
    "max_frames_per_second",
    "max_frame_bytes",
    "db_timeout_seconds",
    "migrate_on_start",
    "database_ca_file",
    "http_header_timeout_seconds",
    "max_http_connections",
    "mcp_call_timeout_seconds",
    "relay_timeout_seconds",
];

/// The claudemesh seed's environment names, read without prefix so existing
/// deployments keep working. A prefixed name wins over its seed name.
const SEED_ENV: &[&str] = &[
    "DATABASE_URL",
    "STATUS_TTL_SECONDS",
    "HOOK_FRESH_WINDOW_SECONDS",
    "MAX_CONNECTIONS_PER_MESH",
    "MAX_MESSAGE_BYTES",
    "HOOK_RATE_LIMIT_PER_MIN",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookAuth {
    Token,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Raw settings as layered by figment. Options left `None` get their
/// mode-dependent default (dev or not) in [`Settings::resolve`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub port: u16,
    pub bind: Option<IpAddr>,
    pub database_url: Option<String>,
    pub db_pool_size: usize,
    pub public_url: Option<String>,
    pub admin_token: Option<String>,
    pub max_message_bytes: usize,
    pub max_connections_per_mesh: u32,
    pub send_rate_per_min: u32,
    pub send_burst: u32,
    pub hook_rate_limit_per_min: u32,
    pub webhook_rate_limit_per_min: u32,
    /// Stream publishes per member per minute, cluster-wide (a minute's
    /// worth may come at once).
    pub stream_rate_per_min: u32,
    pub hook_auth: Option<HookAuth>,
    pub status_ttl_seconds: u64,
    pub hook_fresh_window_seconds: u64,
    pub presence_grace_seconds: u64,
    pub claim_lease_seconds: u64,
    pub queue_ttl_seconds: u64,
    pub delivered_retention_seconds: u64,
    pub ping_interval_seconds: u64,
    pub pong_timeout_seconds: u64,
    pub node_heartbeat_seconds: u64,
    pub node_lease_seconds: u64,
    pub sweep_interval_seconds: u64,
    pub shutdown_drain_seconds: u64,
    pub log_format: Option<LogFormat>,
    pub audit_retention_days: u64,
    pub audit_status_changes: bool,
    pub hello_timeout_seconds: u64,
    pub max_connections_per_node: u32,
    pub max_new_connections_per_second: u32,
    pub max_frames_per_second: u32,
    pub max_frame_bytes: usize,
    pub db_timeout_seconds: u64,
    pub migrate_on_start: bool,
    pub database_ca_file: Option<String>,
    pub http_header_timeout_seconds: u64,
    pub max_http_connections: u32,
    /// How long an `mcp_call` waits for its host (below the clients' 30 s).
    pub mcp_call_timeout_seconds: u64,
    /// How long a peer file or directory request waits (below the
    /// clients' 15 s).
    pub relay_timeout_seconds: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            port: 7900,
            bind: None,
            database_url: None,
            // Sixteen covers a busy node's concurrent transactions without
            // crowding Postgres' default 100 connections at three replicas.
            db_pool_size: 16,
            public_url: None,
            admin_token: None,
            max_message_bytes: 65536,
            max_connections_per_mesh: 100,
            send_rate_per_min: 60,
            send_burst: 10,
            hook_rate_limit_per_min: 30,
            // A CI system posting per job stays far below this.
            webhook_rate_limit_per_min: 60,
            stream_rate_per_min: 600,
            hook_auth: None,
            status_ttl_seconds: 60,
            hook_fresh_window_seconds: 30,
            presence_grace_seconds: 90,
            claim_lease_seconds: 30,
            queue_ttl_seconds: 604_800,
            // An hour covers the 1.37 daemon's retries (25, backing off)
            // and a user asking `message status` about today's messages.
            delivered_retention_seconds: 3600,
            ping_interval_seconds: 30,
            pong_timeout_seconds: 75,
            node_heartbeat_seconds: 5,
            node_lease_seconds: 15,
            sweep_interval_seconds: 5,
            shutdown_drain_seconds: 10,
            log_format: None,
            // Long enough for a quarterly review; pruning keeps a checkpoint.
            audit_retention_days: 90,
            // Hooks fire twice per turn per session: off unless asked for,
            // or they would dominate the log.
            audit_status_changes: false,
            // Real clients say hello in their first round trip; ten seconds
            // covers a slow network without keeping idle sockets around.
            hello_timeout_seconds: 10,
            // About 240 MB of sockets at ~24 KiB each: well inside a pod.
            max_connections_per_node: 10_000,
            // A reconnect storm after a node restart stays under this.
            max_new_connections_per_second: 1_000,
            // Far above any client (a busy one sends a few per second),
            // low enough that one socket cannot monopolise a node.
            max_frames_per_second: 1_000,
            // The reference broker's frame limit is far larger: anything a
            // client might reasonably send is parsed and answered (an
            // oversized send gets its `too_large` ack, not a dead socket).
            max_frame_bytes: 1 << 20,
            db_timeout_seconds: 5,
            migrate_on_start: true,
            database_ca_file: None,
            // A client that opened a connection and sends no request head
            // is gone, or an attack: real ones send it at once. hyper runs
            // the same timer between requests on a kept-alive connection,
            // so this is the idle timeout too.
            http_header_timeout_seconds: 10,
            // Connections beyond the sockets: probes, hooks, admin, joins.
            max_http_connections: 1_024,
            // Below what the clients wait (30 s, 15 s): the caller hears
            // the broker's reason instead of its own timeout.
            mcp_call_timeout_seconds: 25,
            relay_timeout_seconds: 14,
        }
    }
}

/// Overrides given on the command line; they sit above the environment.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<IpAddr>,
}

/// Settings with every mode-dependent default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub dev: bool,
    pub bind: IpAddr,
    pub hook_auth: HookAuth,
    pub log_format: LogFormat,
}

impl Settings {
    /// Layers defaults, the config file and the environment. `file` is the
    /// `--config` path; without one, `./config.toml` is read when present.
    pub fn load(file: Option<&Path>, cli: &CliOverrides) -> anyhow::Result<Settings> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    anyhow::bail!("config file {} does not exist", path.display());
                }
                fig = fig.merge(Toml::file_exact(path));
            }
            None if Path::new("config.toml").exists() => {
                fig = fig.merge(Toml::file_exact("config.toml"))
            }
            None => {}
        }
        fig = fig
            .merge(Env::raw().only(SEED_ENV))
            .merge(Env::prefixed("BROKER_").only(KEYS))
            .merge(Serialized::defaults(cli));
        let settings: Settings = fig.extract().map_err(|e| {
            // figment names the key and the source (file or variable).
            anyhow::anyhow!("invalid configuration: {e}")
        })?;
        settings.validate()?;
        Ok(settings)
    }

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
    fn upper_bounds(&self) -> Vec<(&'static str, u64, u64)> {
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

    /// Fills in the defaults that depend on `--dev`.
    pub fn resolve(self, dev: bool) -> Config {
        let bind = self.bind.unwrap_or(if dev {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from([0, 0, 0, 0])
        });
        let hook_auth =
            self.hook_auth
                .unwrap_or(if dev { HookAuth::None } else { HookAuth::Token });
        let log_format = self.log_format.unwrap_or(if dev {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        });
        Config {
            settings: self,
            dev,
            bind,
            hook_auth,
            log_format,
        }
    }
}

impl Config {
    /// The WebSocket URL invites name, given the port actually bound.
    pub fn public_url(&self, port: u16) -> String {
        match &self.settings.public_url {
            Some(url) => url.clone(),
            None => format!("ws://{}:{}/ws", self.bind, port),
        }
    }

    /// Largest WebSocket frame accepted; a larger one closes with 1009.
    pub fn max_frame_bytes(&self) -> usize {
        self.settings.max_frame_bytes
    }
}

#[cfg(test)]
// figment's Jail closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests;

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
    "upload_auth",
    "trusted_proxy_cidrs",
    "file_store",
    "s3_endpoint",
    "s3_region",
    "s3_bucket",
    "s3_access_key",
    "s3_secret_key",
    "s3_path_style",
    "s3_presign_public",
    "max_file_bytes",
    "max_mesh_file_bytes",
    "file_url_ttl_seconds",
    "ephemeral_file_ttl_seconds",
    "download_url_key",
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

/// Who may `POST /upload` (PROTOCOL-MESH.md §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadAuth {
    /// Only a live session's hook token, as a bearer.
    Token,
    /// Also an online presence of the mesh at the request's address.
    PeerAddress,
}

/// Where shared files' bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStoreKind {
    Postgres,
    S3,
    Memory,
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
    pub upload_auth: Option<UploadAuth>,
    /// Proxies whose `X-Forwarded-For` is believed (`peer_address`).
    pub trusted_proxy_cidrs: Vec<String>,
    pub file_store: Option<FileStoreKind>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_access_key: Option<String>,
    pub s3_secret_key: Option<String>,
    pub s3_path_style: bool,
    pub s3_presign_public: bool,
    pub max_file_bytes: u64,
    pub max_mesh_file_bytes: u64,
    pub file_url_ttl_seconds: u64,
    pub ephemeral_file_ttl_seconds: u64,
    /// HMAC key of download links; unset: made once and kept in the
    /// database (memory mode: per process). A secret.
    pub download_url_key: Option<String>,
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
            upload_auth: None,
            trusted_proxy_cidrs: Vec::new(),
            file_store: None,
            s3_endpoint: None,
            s3_region: None,
            s3_bucket: None,
            s3_access_key: None,
            s3_secret_key: None,
            s3_path_style: false,
            s3_presign_public: false,
            max_file_bytes: 50 << 20,
            max_mesh_file_bytes: 1 << 30,
            file_url_ttl_seconds: 60,
            ephemeral_file_ttl_seconds: 86_400,
            download_url_key: None,
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
    pub upload_auth: UploadAuth,
    pub file_store: FileStoreKind,
    /// `trusted_proxy_cidrs`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
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
        let upload_auth = self.upload_auth.unwrap_or(if dev {
            UploadAuth::PeerAddress
        } else {
            UploadAuth::Token
        });
        let file_store = self.file_store.unwrap_or(if self.database_url.is_some() {
            FileStoreKind::Postgres
        } else {
            FileStoreKind::Memory
        });
        let trusted_proxies = self
            .trusted_proxy_cidrs
            .iter()
            .filter_map(|c| parse_cidr(c).ok())
            .collect();
        Config {
            settings: self,
            dev,
            bind,
            hook_auth,
            log_format,
            upload_auth,
            file_store,
            trusted_proxies,
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

mod validate;
pub use validate::parse_cidr;

#[cfg(test)]
// figment's Jail closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests;

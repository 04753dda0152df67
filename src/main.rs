//! The command line: `serve`, `migrate`, `keygen` and the admin clients.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use claudemesh_broker::admin::cli::{self, AuditCmd, Conn, InviteCmd, MemberCmd, MeshCmd};
use claudemesh_broker::app::{open_store, Application};
use claudemesh_broker::config::{CliOverrides, Settings};
use claudemesh_broker::protocol::crypto;
use claudemesh_broker::store::postgres::{Database, PgStore};
use claudemesh_broker::{dev, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "claudemesh-broker",
    version,
    about = "Horizontally scalable claudemesh broker"
)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a broker node.
    Serve {
        /// Config file (default: ./config.toml when present).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        bind: Option<IpAddr>,
        /// Local development: 127.0.0.1, made-up admin token, demo mesh.
        #[arg(long)]
        dev: bool,
    },
    /// Apply migrations to DATABASE_URL and exit.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Generate an ed25519 key pair in the form clients keep.
    Keygen {
        #[arg(long)]
        json: bool,
    },
    /// Meshes.
    #[command(subcommand)]
    Mesh(MeshCmd),
    /// Members of a mesh.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Invite links.
    #[command(subcommand)]
    Invite(InviteCmd),
    /// Live presences of a mesh, cluster-wide.
    Peers {
        #[arg(long)]
        mesh: String,
        #[arg(long)]
        json: bool,
    },
    /// Cluster nodes.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let conn = cli.conn;
    match cli.cmd {
        Cmd::Serve {
            config,
            port,
            bind,
            dev,
        } => serve(config, CliOverrides { port, bind }, dev).await,
        Cmd::Migrate { config } => {
            let settings = Settings::load(config.as_deref(), &CliOverrides::default())?;
            let Some(url) = settings.database_url else {
                anyhow::bail!("no database_url configured (set DATABASE_URL)");
            };
            let db = Database::parse(&url, settings.database_ca_file.as_deref())?;
            let applied = PgStore::migrate_db(&db).await?;
            if applied.is_empty() {
                eprintln!("schema is current");
            } else {
                eprintln!("applied migrations {applied:?}");
            }
            Ok(0)
        }
        Cmd::Keygen { json } => {
            let kp = crypto::KeyPair::generate();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"publicKey": kp.public_hex, "secretKey": kp.secret_hex})
                );
            } else {
                println!(
                    "public key: {}\nsecret key: {}",
                    kp.public_hex, kp.secret_hex
                );
            }
            Ok(0)
        }
        Cmd::Mesh(c) => cli::mesh(&conn, c).await,
        Cmd::Member(c) => cli::member(&conn, c).await,
        Cmd::Invite(c) => cli::invite(&conn, c).await,
        Cmd::Peers { mesh, json } => cli::peers(&conn, &mesh, json).await,
        Cmd::Nodes { json } => cli::nodes(&conn, json).await,
        Cmd::Audit(c) => cli::audit(&conn, c).await,
    }
}

async fn serve(config: Option<PathBuf>, overrides: CliOverrides, dev: bool) -> anyhow::Result<i32> {
    let settings = Settings::load(config.as_deref(), &overrides)?;
    let config = settings.resolve(dev);
    telemetry::init(config.log_format);
    let admin_token = match (&config.settings.admin_token, dev) {
        (None, true) => Some(crypto::random_token(24)),
        _ => None,
    };
    let store = open_store(&config).await?;
    let app = Application::build(config, store, admin_token).await?;
    let node = app.engine();
    if node.config.dev {
        let clients = dev::bootstrap(&node).await?;
        println!("claudemesh-broker dev mode on {}", node.node.public_url);
        if let Some(token) = &node.node.admin_token {
            if node.config.settings.admin_token.is_none() {
                println!("admin token: {token}");
            }
        }
        println!("client configs for mesh `{}`:", dev::DEMO_SLUG);
        for c in &clients {
            println!("{}", serde_json::to_string(c)?);
        }
    }
    let stop = app.stop_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    app.run().await?;
    Ok(0)
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

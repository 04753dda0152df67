//! A throwaway Postgres with `ssl = on`, started from the machine's own
//! server binaries (the ones the main test database runs on), with a
//! certificate authority and a server certificate made here. Only TLS
//! connections are let in, so a test that connects has proved encryption.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TlsPostgres {
    pub port: u16,
    /// The CA that signed the server's certificate (for `localhost` only).
    pub ca_file: PathBuf,
    /// Another CA, which signed nothing this server holds.
    pub wrong_ca_file: PathBuf,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The server binaries' directory: the newest installed major version.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Runs a server tool; as the `postgres` user when we are root (initdb and
/// postgres refuse to run as root).
fn tool(bin: &Path, tool: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    let exe = bin.join(tool);
    if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&exe)
            .args(args)
            .output()
    } else {
        Command::new(&exe).args(args).output()
    }
}

/// [`tool`], which must succeed.
fn run(bin: &Path, name: &str, args: &[&str]) {
    let out = tool(bin, name, args).unwrap_or_else(|e| panic!("{name} runs: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    (p.self_signed(&key).unwrap(), key)
}

impl TlsPostgres {
    pub fn start() -> TlsPostgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (ca_cert, ca_key) = ca("claudemesh test CA");
        let (wrong, _) = ca("some other CA");
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca_cert, &ca_key)
            .unwrap();
        let ca_file = root.join("ca.pem");
        let wrong_ca_file = root.join("wrong-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        std::fs::write(&wrong_ca_file, wrong.pem()).unwrap();
        let data = root.join("data");
        std::fs::write(root.join("server.crt"), server.pem()).unwrap();
        std::fs::write(root.join("server.key"), server_key.serialize_pem()).unwrap();
        let chmod = |p: &Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        chmod(root, 0o755);
        chmod(&root.join("server.key"), 0o600);
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(root)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let data_s = data.to_str().unwrap();
        run(
            &bin,
            "initdb",
            &["-D", data_s, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n",
        )
        .unwrap();
        let port = crate::harness::free_port();
        let opts = format!(
            "-p {port} -c listen_addresses=localhost -c unix_socket_directories={} \
             -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c fsync=off",
            root.display(),
            root.join("server.crt").display(),
            root.join("server.key").display()
        );
        let log = root.join("server.log");
        run(
            &bin,
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                data_s,
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
            ],
        );
        TlsPostgres {
            port,
            ca_file,
            wrong_ca_file,
            dir,
            bin,
        }
    }

    /// A URL to database `postgres` on `host`, with `params` as its query.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let data = data.to_str().unwrap().to_string();
        let _ = tool(
            &self.bin,
            "pg_ctl",
            &["stop", "-m", "immediate", "-D", data.as_str()],
        );
    }
}

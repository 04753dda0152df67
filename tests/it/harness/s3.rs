//! A real S3 API server for the S3 blob store's tests: moto's server, from
//! PyPI, installed into `target/s3-server-venv` (by `tests/run.sh`, or
//! here on first use) and started once per test process on a free port.
//! Each test makes its own bucket. Where nothing can be installed, the
//! tests that need it say so and skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub struct S3Server {
    pub endpoint: String,
    _child: ChildGuard,
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/s3-server-venv")
}

/// The server binary: `S3_TEST_SERVER`, else the venv's, installed if
/// need be; the reason when there is none.
fn binary() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("S3_TEST_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let bin = venv().join("bin/moto_server");
    if bin.exists() {
        return Ok(bin);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv())
        .status()
        .map_err(|e| format!("python3 -m venv: {e}"))?;
    if !made.success() {
        return Err("python3 -m venv failed".into());
    }
    let pip = venv().join("bin/pip");
    let installed = Command::new(pip)
        .args(["install", "-q", "moto[server]"])
        .status()
        .map_err(|e| format!("pip: {e}"))?;
    if !installed.success() || !bin.exists() {
        return Err("pip install 'moto[server]' failed".into());
    }
    Ok(bin)
}

fn start() -> Result<S3Server, String> {
    let bin = binary()?;
    let port = super::free_port();
    // The server lives in a static, which is never dropped: a shell holds
    // it and kills it when the test process's end closes its stdin.
    let script = format!(
        "\"{}\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; read _; kill $pid",
        bin.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let guard = ChildGuard(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(S3Server {
                endpoint: format!("http://127.0.0.1:{port}"),
                _child: guard,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("the S3 server did not start listening".into())
}

static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();

/// The shared server, or why there is none.
pub fn server() -> Result<&'static S3Server, &'static str> {
    SERVER.get_or_init(start).as_ref().map_err(|e| e.as_str())
}

impl S3Server {
    /// A new empty bucket; its name.
    pub async fn bucket(&self) -> String {
        let name = format!("b-{}", uuid::Uuid::now_v7().simple());
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
        name
    }
}

/// The server for a test, or a skip notice and `None`.
pub fn or_skip(test: &str) -> Option<&'static S3Server> {
    match server() {
        Ok(s) => Some(s),
        Err(why) => {
            eprintln!("SKIPPED {test}: no S3 API server could be installed here ({why})");
            None
        }
    }
}

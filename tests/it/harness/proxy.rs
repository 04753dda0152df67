//! A TCP proxy between nodes and Postgres that tests can cut (close every
//! connection and refuse new ones), blackhole (keep connections open but
//! pass nothing) and restore.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Pass,
    Cut,
    Blackhole,
    /// Every chunk waits 50 ms each way: about 100 ms added per round trip.
    Slow,
}

pub struct Proxy {
    pub port: u16,
    mode: Arc<watch::Sender<Link>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on an ephemeral port and forwards to `upstream` (host:port).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, _) = watch::channel(Link::Pass);
        let mode = Arc::new(tx);
        let m = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let rx = m.subscribe();
                if *rx.borrow() == Link::Cut {
                    drop(client);
                    continue;
                }
                let up = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&up).await {
                        pipe(client, server, rx).await;
                    }
                });
            }
        });
        Proxy { port, mode, task }
    }

    /// A proxy to the server of database URL `url` (its host:port).
    pub async fn in_front_of(url: &str) -> Proxy {
        let at = url.find('@').expect("URL has user@host");
        let slash = at + url[at..].find('/').expect("URL has a database");
        Proxy::start(url[at + 1..slash].to_string()).await
    }

    pub fn set(&self, link: Link) {
        self.mode.send_replace(link);
    }

    /// `url` with its port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let at = url.find('@').expect("URL has user@host");
        let slash = at + url[at..].find('/').expect("URL has a database");
        let host = &url[at + 1..slash];
        let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        format!("{}{}:{}{}", &url[..=at], host, self.port, &url[slash..])
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Added one-way delay of a slow link.
const SLOW: std::time::Duration = std::time::Duration::from_millis(50);

/// Copies both ways while the link passes; on Cut, closes; on Blackhole,
/// stops reading (data waits in socket buffers) until the link changes.
async fn pipe(mut a: TcpStream, mut b: TcpStream, mut rx: watch::Receiver<Link>) {
    let mut ba = [0u8; 16 * 1024];
    let mut bb = [0u8; 16 * 1024];
    loop {
        let mode = *rx.borrow_and_update();
        match mode {
            Link::Cut => return,
            Link::Blackhole => {
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Link::Pass | Link::Slow => {}
        }
        let delay = mode == Link::Slow;
        tokio::select! {
            r = a.read(&mut ba) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if delay { tokio::time::sleep(SLOW).await; }
                    if b.write_all(&ba[..n]).await.is_err() { return }
                }
            },
            r = b.read(&mut bb) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if delay { tokio::time::sleep(SLOW).await; }
                    if a.write_all(&bb[..n]).await.is_err() { return }
                }
            },
            c = rx.changed() => if c.is_err() { return },
        }
    }
}

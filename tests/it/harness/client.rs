//! A real WebSocket peer, speaking the wire protocol as claudemesh
//! clients do (signed hello, JSON text frames).

use std::time::Duration;

use claudemesh_broker::protocol::crypto;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Member;

/// How long a test waits for an expected frame before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Peer {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// System events (`subtype: system` pushes) set aside by `recv`.
    pub events: std::collections::VecDeque<Value>,
    /// Other frames set aside by `next_event`.
    pending: std::collections::VecDeque<Value>,
}

fn is_system_event(v: &Value) -> bool {
    v["type"] == "push" && v["subtype"] == "system"
}

/// A hello timestamp no other hello of this test process has used.
/// Signatures are single-use and ed25519 is deterministic: two hellos of
/// one member in one millisecond would be the same signature, and the
/// second one refused `replayed` (as a real client's retry would cure).
pub fn fresh_timestamp() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = chrono::Utc::now().timestamp_millis();
    let prev = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .expect("always Some");
    now.max(prev + 1)
}

/// A signed hello for `member`, with `extra` fields merged in.
pub fn hello_frame(member: &Member, session_id: &str, extra: Value) -> Value {
    let ts = fresh_timestamp();
    signed_hello(
        &member.mesh_id,
        &member.id,
        &member.keys,
        session_id,
        ts,
        extra,
    )
}

pub fn signed_hello(
    mesh_id: &str,
    member_id: &str,
    keys: &crypto::KeyPair,
    session_id: &str,
    ts: i64,
    extra: Value,
) -> Value {
    let text = format!("{mesh_id}|{member_id}|{}|{ts}", keys.public_hex);
    let sig = crypto::sign_hex(&keys.secret_hex, text.as_bytes()).unwrap();
    let mut frame = json!({
        "type": "hello", "meshId": mesh_id, "memberId": member_id,
        "pubkey": keys.public_hex, "sessionId": session_id, "pid": 4242,
        "cwd": "/home/u/proj", "timestamp": ts, "signature": sig,
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            frame[k] = v;
        }
    }
    frame
}

/// A signed `session_hello` for `member`'s session key `session`
/// (PROTOCOL-SESSIONS.md §3): the attestation valid for 12 hours, as the
/// 1.37 client signs it; `extra` merged in last.
pub fn session_hello_frame(
    member: &Member,
    session: &crypto::KeyPair,
    session_id: &str,
    extra: Value,
) -> Value {
    let ts = fresh_timestamp();
    let expires = ts + 12 * 3600 * 1000;
    let parent = &member.keys.public_hex;
    let attest = format!(
        "claudemesh-session-attest|{parent}|{}|{expires}",
        session.public_hex
    );
    let hello = format!(
        "claudemesh-session-hello|{}|{parent}|{}|{ts}",
        member.mesh_id, session.public_hex
    );
    let mut frame = json!({
        "type": "session_hello", "meshId": member.mesh_id, "parentMemberId": member.id,
        "parentMemberPubkey": parent, "sessionPubkey": session.public_hex,
        "parentAttestation": {"sessionPubkey": session.public_hex, "parentMemberPubkey": parent,
            "expiresAt": expires,
            "signature": crypto::sign_hex(&member.keys.secret_hex, attest.as_bytes()).unwrap()},
        "sessionId": session_id, "pid": 4242, "cwd": "/home/u/proj", "hostname": "box",
        "peerType": "ai", "channel": "claudemesh-session", "timestamp": ts,
        "signature": crypto::sign_hex(&session.secret_hex, hello.as_bytes()).unwrap(),
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            frame[k] = v;
        }
    }
    frame
}

impl Peer {
    pub async fn connect(url: &str) -> Peer {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connects");
        Peer {
            ws,
            events: Default::default(),
            pending: Default::default(),
        }
    }

    /// Connects and completes a hello; returns the peer and `hello_ack`.
    pub async fn join(url: &str, member: &Member, session_id: &str) -> (Peer, Value) {
        Self::join_with(url, member, session_id, json!({})).await
    }

    pub async fn join_with(
        url: &str,
        member: &Member,
        session_id: &str,
        extra: Value,
    ) -> (Peer, Value) {
        let mut p = Peer::connect(url).await;
        p.send(hello_frame(member, session_id, extra)).await;
        let ack = p.recv().await;
        assert_eq!(ack["type"], "hello_ack", "{ack}");
        (p, ack)
    }

    /// Connects and completes a `session_hello`.
    pub async fn join_session(
        url: &str,
        member: &Member,
        session: &crypto::KeyPair,
        session_id: &str,
    ) -> (Peer, Value) {
        let mut p = Peer::connect(url).await;
        p.send(session_hello_frame(member, session, session_id, json!({})))
            .await;
        let ack = p.recv().await;
        assert_eq!(ack["type"], "hello_ack", "{ack}");
        (p, ack)
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::Text(t.to_string().into()))
            .await
            .expect("send");
    }

    /// Next JSON text frame other than a system event (events are kept in
    /// `events`); panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        if let Some(v) = self.pending.pop_front() {
            return v;
        }
        loop {
            let v = self.recv_any().await;
            if is_system_event(&v) {
                self.events.push_back(v);
            } else {
                return v;
            }
        }
    }

    /// Next system event (`peer_joined`, …), setting other frames aside.
    pub async fn next_event(&mut self) -> Value {
        if let Some(v) = self.events.pop_front() {
            return v;
        }
        loop {
            let v = self.recv_any().await;
            if is_system_event(&v) {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// Next JSON text frame of any kind (pings/pongs skipped).
    pub async fn recv_any(&mut self) -> Value {
        self.recv_any_within(RECV_TIMEOUT).await
    }

    /// Like `recv_any`, with a longer (or shorter) wait.
    pub async fn recv_any_within(&mut self, limit: Duration) -> Value {
        loop {
            let msg = tokio::time::timeout(limit, self.ws.next())
                .await
                .expect("a frame within the timeout")
                .expect("socket open")
                .expect("no socket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Waits for the server's close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        self.expect_close_within(RECV_TIMEOUT).await
    }

    /// Like `expect_close`, with a longer (or shorter) wait per frame.
    pub async fn expect_close_within(&mut self, limit: Duration) -> u16 {
        loop {
            let next = tokio::time::timeout(limit, self.ws.next())
                .await
                .expect("close within the timeout");
            match next {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON frame");
                    assert!(is_system_event(&v), "expected close, got frame {t}");
                    self.events.push_back(v);
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("expected close frame, got error {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// A revoked member's end (PROTOCOL-SESSIONS.md §9): the `revoked`
    /// error, then close 4002. Returns the error.
    pub async fn expect_banned(&mut self) -> Value {
        let e = self.recv().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("revoked")),
            "{e}"
        );
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("You've been removed from"),
            "{e}"
        );
        assert_eq!(self.expect_close().await, 4002);
        e
    }

    /// Sends each frame (each with `_reqId` `"r"`) and expects a
    /// `bad_request` echoing it whose message names the field.
    pub async fn expect_bad_requests(&mut self, cases: &[(Value, &str)]) {
        for (f, field) in cases {
            let e = self.request(f.clone()).await;
            assert_error(&e, "bad_request", "r");
            assert!(e["message"].as_str().unwrap().contains(field), "{f} → {e}");
        }
    }

    /// Sends `v` and returns the reply.
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// True if nothing but pings and system events arrives within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return true,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON frame");
                    if !is_system_event(&v) {
                        return false;
                    }
                    self.events.push_back(v);
                }
                Ok(_) => return false,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server acknowledges, so the broker has released
        // the presence before the test looks.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// Asserts `r` is an `error` with `code` that echoes `req_id`.
pub fn assert_error(r: &Value, code: &str, req_id: &str) {
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str(), r["_reqId"].as_str()),
        (Some("error"), Some(code), Some(req_id)),
        "{r}"
    );
}

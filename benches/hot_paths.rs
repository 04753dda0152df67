//! Hot pure paths: hello verification, frame parsing, push serialisation
//! and the routing decision. `cargo bench --bench hot_paths`.

use std::hint::black_box;

use chrono::Utc;
use claudemesh_broker::engine::delivery::push_frame;
use claudemesh_broker::engine::dispatch::{parse, Parsed};
use claudemesh_broker::engine::routing::route;
use claudemesh_broker::protocol::crypto::{sign_hex, KeyPair};
use claudemesh_broker::protocol::hello::verify;
use claudemesh_broker::protocol::target::{Priority, Target};
use claudemesh_broker::protocol::GroupRef;
use claudemesh_broker::store::{Presence, RouteTarget, StoredMessage};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use uuid::Uuid;

fn hello_text(keys: &KeyPair, ts: i64) -> String {
    let signed = format!("mesh|member|{}|{ts}", keys.public_hex);
    let sig = sign_hex(&keys.secret_hex, signed.as_bytes()).unwrap();
    json!({"type": "hello", "meshId": "mesh", "memberId": "member", "pubkey": keys.public_hex,
           "sessionId": "s1", "pid": 4242, "cwd": "/home/u/proj", "timestamp": ts,
           "groups": [{"name": "backend", "role": "lead"}], "signature": sig})
    .to_string()
}

fn benches(c: &mut Criterion) {
    let keys = KeyPair::generate();
    let now = Utc::now().timestamp_millis();
    let hello = hello_text(&keys, now);
    c.bench_function("hello: parse + verify signature", |b| {
        b.iter(|| {
            let Parsed::Hello(_, Ok(h)) = parse(black_box(&hello)) else {
                unreachable!()
            };
            verify(&h, now).unwrap();
        })
    });

    let send =
        json!({"type": "send", "id": "c1", "targetSpec": keys.public_hex, "priority": "next",
                      "nonce": "bm9uY2Vub25jZW5vbmNl", "ciphertext": "A".repeat(344)})
        .to_string();
    c.bench_function("frame: parse a 256-byte send", |b| {
        b.iter(|| {
            let Parsed::Frame { request: Ok(r), .. } = parse(black_box(&send)) else {
                unreachable!()
            };
            r
        })
    });

    let message = StoredMessage {
        id: Uuid::now_v7(),
        mesh_id: "mesh".into(),
        sender_member_id: "m".into(),
        sender_member_pubkey: keys.public_hex.clone(),
        sender_session_pubkey: None,
        priority: Priority::Next,
        nonce: "bm9uY2Vub25jZW5vbmNl".into(),
        ciphertext: "A".repeat(344),
        created_at: Utc::now(),
        echo: Default::default(),
    };
    c.bench_function("push: serialise once", |b| {
        b.iter(|| push_frame(black_box(&message), false))
    });

    // A mesh of 100 sessions, 10 per group.
    let targets: Vec<RouteTarget> = (0..100)
        .map(|i| RouteTarget {
            id: Uuid::now_v7(),
            mesh_id: "mesh".into(),
            member_id: format!("member{i}"),
            member_pubkey: KeyPair::generate().public_hex,
            session_pubkey: None,
            node_id: Uuid::nil(),
            visible: true,
            groups: vec![GroupRef {
                name: format!("team{}/sub", i % 10),
                role: None,
            }],
            status: claudemesh_broker::protocol::Status::Idle,
            status_updated_at: Utc::now(),
            online: true,
            at_least_once: false,
            role: claudemesh_broker::store::PeerRole::ControlPlane,
        })
        .collect();
    let sender: Presence = {
        let t = &targets[0];
        let mut p = sample_presence();
        p.id = t.id;
        p.member_id = t.member_id.clone();
        p
    };
    let direct = Target::Key(targets[57].member_pubkey.clone());
    let group = Target::Group("team3".into());
    c.bench_function("route: direct to a member key, 100 sessions", |b| {
        b.iter(|| route(black_box(&direct), Priority::Next, &sender, &targets))
    });
    c.bench_function("route: @group with subgroups, 100 sessions", |b| {
        b.iter(|| route(black_box(&group), Priority::Next, &sender, &targets))
    });
    c.bench_function("route: broadcast, 100 sessions", |b| {
        b.iter(|| route(black_box(&Target::All), Priority::Next, &sender, &targets))
    });
}

fn sample_presence() -> Presence {
    use claudemesh_broker::store::NewPresence;
    Presence::from_new(&NewPresence {
        id: Uuid::now_v7(),
        mesh_id: "mesh".into(),
        member_id: "m".into(),
        member_pubkey: "k".into(),
        node_id: Uuid::nil(),
        conn_id: Uuid::nil(),
        role: claudemesh_broker::store::PeerRole::ControlPlane,
        session_id: "s".into(),
        session_pubkey: None,
        display_name: "n".into(),
        named: true,
        pid: None,
        cwd: None,
        hostname: None,
        peer_type: None,
        channel: None,
        model: None,
        capabilities: vec![],
        at_least_once: false,
        groups: vec![],
        profile: Default::default(),
        visible: true,
        summary: None,
        hook_token_hash: vec![],
        now: Utc::now(),
    })
}

criterion_group!(hot, benches);
criterion_main!(hot);

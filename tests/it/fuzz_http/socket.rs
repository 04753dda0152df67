use super::*;

const FRAME_TYPES: &[&str] = &[
    "hello",
    "list_peers",
    "set_status",
    "set_summary",
    "set_visible",
    "set_profile",
    "set_stats",
    "join_group",
    "leave_group",
    "send",
    "client_ack",
];

const FRAME_FIELDS: &[&str] = &[
    "id",
    "_reqId",
    "targetSpec",
    "priority",
    "nonce",
    "ciphertext",
    "status",
    "summary",
    "visible",
    "avatar",
    "title",
    "bio",
    "capabilities",
    "stats",
    "name",
    "role",
    "messageId",
    "meshId",
    "memberId",
    "pubkey",
    "sessionId",
    "timestamp",
    "signature",
    "groups",
];

/// A valid frame of a random kind.
fn valid_frame(rng: &mut StdRng, targets: &[String]) -> Value {
    let b64 = |rng: &mut StdRng| {
        let n = rng.gen_range(0..64);
        base64::engine::general_purpose::STANDARD
            .encode((0..n).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>())
    };
    match rng.gen_range(0..10) {
        0..=3 => json!({
            "type": "send", "id": format!("c{}", rng.gen::<u32>()),
            "targetSpec": targets.choose(rng).unwrap(),
            "priority": (["now", "next", "low"].choose(rng).unwrap()),
            "nonce": b64(rng), "ciphertext": b64(rng),
        }),
        4 => {
            json!({"type": "set_status", "status": (["idle", "working", "dnd"].choose(rng).unwrap())})
        }
        5 => json!({"type": "set_summary", "summary": random_string(rng)}),
        6 => {
            json!({"type": "join_group", "name": (["backend", "ops/eu", "qa"].choose(rng).unwrap()), "role": "lead"})
        }
        7 => json!({"type": "set_visible", "visible": rng.gen::<bool>(), "id": "v"}),
        8 => json!({"type": "client_ack", "messageId": uuid::Uuid::now_v7().to_string()}),
        _ => json!({"type": "set_stats", "stats": {"turns": rng.gen::<u16>()}}),
    }
}

fn random_frame(rng: &mut StdRng, targets: &[String]) -> String {
    match rng.gen_range(0..8) {
        0 => random_string(rng),
        1 => random_json(rng, 3).to_string(),
        2 => {
            let base = valid_frame(rng, targets).to_string();
            edit_chars(rng, &base)
        }
        3 => {
            let base = valid_frame(rng, targets);
            near_miss(rng, &base, FRAME_FIELDS).to_string()
        }
        4 => valid_frame(rng, targets).to_string(),
        _ => {
            // Frame-shaped: a real type, random fields of random types.
            let mut m = Map::new();
            m.insert("type".into(), json!(FRAME_TYPES.choose(rng).unwrap()));
            for _ in 0..rng.gen_range(0..5) {
                let k = FRAME_FIELDS.choose(rng).unwrap().to_string();
                let v = if rng.gen_bool(0.5) {
                    Value::String(random_string(rng))
                } else {
                    random_json(rng, 2)
                };
                m.insert(k, v);
            }
            Value::Object(m).to_string()
        }
    }
}

/// True for the ack of a `send` (the `set_visible`/`set_profile` acks
/// carry neither a message id nor an error).
fn is_send_ack(v: &Value) -> bool {
    v["type"] == "ack"
        && (v["queued"] == true || v.get("code").is_some() || v.get("error").is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_never_break_a_socket() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let w = world_with(Backend::Memory, |s| {
        s.max_frames_per_second = 100_000;
        s.send_burst = 100_000;
        s.send_rate_per_min = 1_000_000;
    })
    .await;
    let url = w.node.ws_url();
    let (alice, _) = Peer::join_with(
        &url,
        &w.alice,
        "a1",
        json!({"capabilities": ["client_ack"]}),
    )
    .await;
    // Bob receives whatever alice manages to send; keep his socket drained.
    let (bob, _) = Peer::join_with(
        &url,
        &w.bob,
        "b1",
        json!({"capabilities": ["client_ack"], "groups": ["backend"]}),
    )
    .await;
    let bob_reader = tokio::spawn(async move {
        let mut ws = bob.ws;
        while let Some(Ok(_)) = ws.next().await {}
    });

    let (mut sink, mut stream) = alice.ws.split();
    let send_acks = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let final_id = uuid::Uuid::now_v7().to_string();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Value>();
    let reader = {
        let send_acks = send_acks.clone();
        let closed = closed.clone();
        let final_id = final_id.clone();
        tokio::spawn(async move {
            let mut done_tx = Some(done_tx);
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(&t).expect("the broker sends JSON");
                        if is_send_ack(&v) {
                            send_acks.fetch_add(1, Ordering::SeqCst);
                        }
                        if v["type"] == "peers_list" && v["_reqId"] == final_id.as_str() {
                            if let Some(tx) = done_tx.take() {
                                let _ = tx.send(v);
                            }
                        }
                    }
                    Ok(Message::Close(f)) => {
                        println!("closed by the broker: {f:?}");
                        closed.store(true, Ordering::SeqCst);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        println!("socket error: {e}");
                        closed.store(true, Ordering::SeqCst);
                        break;
                    }
                }
            }
        })
    };

    let targets: Vec<String> = vec![
        w.bob.keys.public_hex.clone(),
        w.alice.keys.public_hex.clone(),
        KeyPair::generate().public_hex,
        "*".into(),
        "@all".into(),
        "@backend".into(),
        "@nobody".into(),
    ];
    let mut sends = 0;
    for _ in 0..WS_FRAMES {
        // Frames over max_message_bytes + 16 KiB are refused at the frame
        // level (close 1009) by design: stay below.
        let text = loop {
            let t = random_frame(&mut rng, &targets);
            if t.len() < 60_000 {
                break t;
            }
        };
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&text) {
            if o.get("type").and_then(Value::as_str) == Some("send") {
                sends += 1;
            }
        }
        sink.send(Message::Text(text.clone().into()))
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: socket refused {text:?}: {e}"));
    }
    sink.send(Message::Text(
        json!({"type": "list_peers", "_reqId": final_id})
            .to_string()
            .into(),
    ))
    .await
    .expect("socket open");
    let list = tokio::time::timeout(REQUEST_TIMEOUT, done_rx)
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: no peers_list after the fuzz frames"))
        .unwrap_or_else(|_| panic!("seed {seed}: socket ended before peers_list"));
    assert!(list["peers"].as_array().is_some_and(|p| !p.is_empty()));
    // Acks of sends travel through their own queue: wait for the last.
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    while send_acks.load(Ordering::SeqCst) < sends && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        send_acks.load(Ordering::SeqCst),
        sends,
        "seed {seed}: every send-typed frame gets exactly one ack"
    );
    assert!(!closed.load(Ordering::SeqCst), "seed {seed}: socket closed");
    println!("{WS_FRAMES} frames, {sends} sends acked");
    reader.abort();
    bob_reader.abort();
    assert_healthy(&w.node).await;
}

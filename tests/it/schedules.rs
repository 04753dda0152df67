//! Scheduled messages over the wire (PROTOCOL-MESH.md §12): the replies
//! and errors of `schedule`, `list_scheduled` and `cancel_scheduled`; the
//! pushes fires make (one-shot, cron with the missed-period rule,
//! self-reminders from a socket that closed at once).

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::both_stores;
use crate::harness::client::assert_error;
use crate::harness::{world, world_with_clock, Backend, Peer};
use crate::messaging::expect_push;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn schedule(p: &mut Peer, to: &str, message: &str, extra: Value) -> Value {
    let mut f = json!({"type": "schedule", "to": to, "message": message, "_reqId": "s"});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            f[k] = v;
        }
    }
    let r = p.request(f).await;
    assert_eq!(
        (r["type"].as_str(), r["_reqId"].as_str()),
        (Some("scheduled_ack"), Some("s")),
        "{r}"
    );
    assert_eq!(r["scheduledId"].as_str().unwrap().len(), 32, "{r}");
    r
}

async fn list(p: &mut Peer) -> Vec<Value> {
    let r = p
        .request(json!({"type": "list_scheduled", "_reqId": "l"}))
        .await;
    assert_eq!(
        (r["type"].as_str(), r["_reqId"].as_str()),
        (Some("scheduled_list"), Some("l")),
        "{r}"
    );
    r["messages"].as_array().unwrap().clone()
}

async fn cancel(p: &mut Peer, id: &str) -> bool {
    let r = p
        .request(json!({"type": "cancel_scheduled", "scheduledId": id, "_reqId": "c"}))
        .await;
    assert_eq!(r["type"], "cancel_scheduled_ack", "{r}");
    assert_eq!(
        (r["scheduledId"].as_str(), r["_reqId"].as_str()),
        (Some(id), Some("c"))
    );
    r["ok"].as_bool().unwrap()
}

fn decoded(push: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(push["ciphertext"].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

async fn replies_lists_cancels_and_errors(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    assert!(list(&mut a).await.is_empty());

    let at = now_ms() + 600_000;
    let once = schedule(
        &mut a,
        &w.bob.keys.public_hex,
        "review",
        json!({"deliverAt": at}),
    )
    .await;
    assert_eq!(once["deliverAt"], at);
    assert!(once.get("cron").is_none(), "{once}");
    let daily = schedule(
        &mut a,
        "@backend",
        "sync",
        json!({"deliverAt": 0, "cron": "0 9 * * 1-5", "recurring": true}),
    )
    .await;
    assert_eq!(daily["cron"], "0 9 * * 1-5");
    let first =
        chrono::DateTime::from_timestamp_millis(daily["deliverAt"].as_i64().unwrap()).unwrap();
    assert_eq!(first.format("%H:%M:%S").to_string(), "09:00:00", "UTC");
    assert!(first > chrono::Utc::now());

    let listed = list(&mut a).await;
    let ids: Vec<&str> = listed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut want = [
        (
            once["deliverAt"].as_i64(),
            once["scheduledId"].as_str().unwrap(),
        ),
        (
            daily["deliverAt"].as_i64(),
            daily["scheduledId"].as_str().unwrap(),
        ),
    ];
    want.sort();
    assert_eq!(
        ids,
        want.iter().map(|w| w.1).collect::<Vec<_>>(),
        "by next fire time"
    );
    let e = listed
        .iter()
        .find(|e| e["id"] == once["scheduledId"])
        .unwrap();
    assert_eq!(
        (&e["to"], &e["message"], &e["firedCount"]),
        (&json!(w.bob.keys.public_hex), &json!("review"), &json!(0))
    );
    assert!(e["createdAt"].as_i64().unwrap() <= now_ms());
    assert!(
        list(&mut b).await.is_empty(),
        "only the caller's member's entries"
    );

    // Another member cannot cancel it; an unknown or malformed id is no.
    let once_id = once["scheduledId"].as_str().unwrap();
    assert!(!cancel(&mut b, once_id).await);
    assert!(!cancel(&mut a, "not-an-id").await);
    assert!(cancel(&mut a, once_id).await);
    assert!(!cancel(&mut a, once_id).await, "already cancelled");
    assert_eq!(list(&mut a).await.len(), 1);

    for (cron, why) in [
        ("61 * * * *", "matches no minute"),
        ("* * * *", "5 fields"),
        ("*/0 * * * *", "step of 0"),
        ("0 0 30 2 *", "matches no minute"),
        ("", "5 fields"),
    ] {
        let r = a
            .request(
                json!({"type": "schedule", "to": "*", "message": "m", "cron": cron, "_reqId": "x"}),
            )
            .await;
        assert_error(&r, "invalid_cron", "x");
        assert!(r["message"].as_str().unwrap().contains(why), "{cron}: {r}");
    }
    let big = "x".repeat(60_000);
    a.expect_bad_requests(&[
        (json!({"type": "schedule", "message": "m", "deliverAt": 1, "_reqId": "r"}), "`to`"),
        (json!({"type": "schedule", "to": "#general", "message": "m", "deliverAt": 1, "_reqId": "r"}), "topics"),
        (json!({"type": "schedule", "to": "*", "message": "m", "_reqId": "r"}), "`deliverAt`"),
        (json!({"type": "schedule", "to": "*", "message": big, "deliverAt": 1, "_reqId": "r"}), "max_message_bytes"),
        (json!({"type": "schedule", "to": "*", "message": "m", "deliverAt": now_ms() + 367 * 86_400_000i64, "_reqId": "r"}), "366 days"),
        (json!({"type": "cancel_scheduled", "_reqId": "r"}), "`scheduledId`"),
    ])
    .await;
    assert_eq!(list(&mut a).await.len(), 1, "no refusal stored anything");

    // 100 active entries per member, then `limit`.
    for i in 1..100 {
        schedule(&mut a, "*", &format!("n{i}"), json!({"deliverAt": at + i})).await;
    }
    let r = a
        .request(json!({"type": "schedule", "to": "*", "message": "one more", "deliverAt": at, "_reqId": "x"}))
        .await;
    assert_error(&r, "limit", "x");
    assert_eq!(list(&mut a).await.len(), 100);
    schedule(&mut b, "*", "bob has his own", json!({"deliverAt": at})).await;
}

async fn a_reminder_reaches_its_recipient_once(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    // Busy: only `now` passes, and a reminder is `now`.
    b.send(json!({"type": "set_status", "status": "working"}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ack = schedule(
        &mut a,
        &w.bob.keys.public_hex,
        "stand-up in 5",
        json!({"deliverAt": now_ms() + 300, "subtype": "reminder"}),
    )
    .await;
    let push = expect_push(&mut b).await;
    assert_eq!(decoded(&push), "stand-up in 5");
    assert_eq!(
        (
            &push["subtype"],
            &push["senderPubkey"],
            &push["nonce"],
            &push["priority"],
            &push["senderName"]
        ),
        (
            &json!("reminder"),
            &json!(""),
            &json!(""),
            &json!("now"),
            &json!("alice")
        )
    );
    assert_eq!(push["senderMemberPubkey"], w.alice.keys.public_hex);
    assert_eq!(push["messageId"].as_str().unwrap().len(), 32);
    assert!(b.quiet_for(Duration::from_millis(1200)).await, "fired once");
    assert!(
        list(&mut a).await.is_empty(),
        "a fired one-shot leaves the list"
    );
    assert!(!cancel(&mut a, ack["scheduledId"].as_str().unwrap()).await);

    // A time already past fires at once; multicast skips the creator.
    schedule(&mut a, "*", "overdue", json!({"deliverAt": 1})).await;
    assert_eq!(decoded(&expect_push(&mut b).await), "overdue");
    assert!(
        a.quiet_for(Duration::from_millis(800)).await,
        "not to its creator"
    );
}

async fn a_self_reminder_from_a_socket_that_closed_at_once_arrives(backend: Backend) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut short, _) = Peer::join(&url, &w.alice, "cli").await;
    short
        .send(
            json!({"type": "schedule", "to": w.alice.keys.public_hex, "message": "drink water",
            "deliverAt": now_ms() + 1_000}),
        )
        .await;
    short.close().await;
    // Nobody of alice's is online when it fires: queued for her member.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let (mut later, _) = Peer::join(&url, &w.alice, "a2").await;
    let push = expect_push(&mut later).await;
    assert_eq!(decoded(&push), "drink water");
    assert!(
        push.get("senderMemberPubkey").is_none(),
        "its own member: no echo key"
    );

    // With a session online, the reminder goes to it at the due moment.
    schedule(
        &mut later,
        &w.alice.keys.public_hex,
        "stretch",
        json!({"deliverAt": now_ms() + 300}),
    )
    .await;
    assert_eq!(decoded(&expect_push(&mut later).await), "stretch");
}

async fn a_reminder_to_a_member_nobody_runs_is_queued_and_an_unknown_key_fires_into_nothing(
    backend: Backend,
) {
    let w = world(backend).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let due = now_ms() + 300;
    schedule(
        &mut a,
        &w.bob.keys.public_hex,
        "for later",
        json!({"deliverAt": due}),
    )
    .await;
    let nobody = "ab".repeat(32);
    schedule(&mut a, &nobody, "into nothing", json!({"deliverAt": due})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !list(&mut a).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = w.node.metrics().await;
    assert!(
        metrics.contains("broker_schedule_fires_total{result=\"no_recipient\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("broker_schedule_fires_total{result=\"sent\"} 1"),
        "{metrics}"
    );
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    assert_eq!(
        decoded(&expect_push(&mut b).await),
        "for later",
        "queued for bob"
    );
    assert!(b.quiet_for(Duration::from_millis(300)).await);
}

async fn cron_fires_once_per_period_and_once_after_an_outage(backend: Backend) {
    let (w, clock) = world_with_clock(backend, |_| {}).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    let ack = schedule(
        &mut a,
        &w.bob.keys.public_hex,
        "tick",
        json!({"cron": "* * * * *"}),
    )
    .await;
    let first = ack["deliverAt"].as_i64().unwrap();
    assert_eq!(first % 60_000, 0, "on a minute");
    let jump = |to_ms: i64| {
        let behind = to_ms - chrono::Utc::now().timestamp_millis() - clock_offset(&clock);
        clock.advance(chrono::Duration::milliseconds(behind));
    };
    jump(first);
    assert_eq!(decoded(&expect_push(&mut b).await), "tick");
    assert!(
        b.quiet_for(Duration::from_millis(1200)).await,
        "once for that minute"
    );
    let e = list(&mut a).await;
    assert_eq!(
        (e[0]["firedCount"].as_i64(), e[0]["deliverAt"].as_i64()),
        (Some(1), Some(first + 60_000))
    );

    // Five periods pass unfired (an outage): one fire, then the next
    // matching minute after now.
    let missed_before = w.node.metric("broker_schedule_missed_periods_total").await;
    jump(first + 5 * 60_000 + 30_000);
    assert_eq!(decoded(&expect_push(&mut b).await), "tick");
    assert!(
        b.quiet_for(Duration::from_millis(1200)).await,
        "not once per missed minute"
    );
    let e = list(&mut a).await;
    assert_eq!(
        (e[0]["firedCount"].as_i64(), e[0]["deliverAt"].as_i64()),
        (Some(2), Some(first + 6 * 60_000))
    );
    let missed = w.node.metric("broker_schedule_missed_periods_total").await - missed_before;
    assert_eq!(missed, 4, "minutes 2-5 stood in for by one fire");
}

/// How far `clock` is ahead of the wall clock, in ms.
fn clock_offset(clock: &claudemesh_broker::engine::clock::TestClock) -> i64 {
    use claudemesh_broker::engine::clock::Clock;
    (clock.now() - chrono::Utc::now()).num_milliseconds()
}

both_stores!(
    replies_lists_cancels_and_errors,
    a_reminder_reaches_its_recipient_once,
    a_self_reminder_from_a_socket_that_closed_at_once_arrives,
    a_reminder_to_a_member_nobody_runs_is_queued_and_an_unknown_key_fires_into_nothing,
    cron_fires_once_per_period_and_once_after_an_outage,
);

//! The dispatcher's answers: registration, parsing, and which outcome
//! gets which frame (or none).

use super::*;

#[test]
fn every_frame_type_is_registered_once_and_none_is_a_handshake() {
    let types: Vec<&str> = frame_types().map(|s| s.ty).collect();
    assert_eq!(types.len(), TABLE.len());
    assert!(!types.contains(&HELLO));
    for ty in [
        "send",
        "client_ack",
        "list_peers",
        "set_status",
        "leave_group",
    ] {
        assert!(types.contains(&ty), "{ty}");
    }
}

#[test]
fn frames_parse_to_their_family_and_keep_their_head() {
    let Parsed::Frame {
        head,
        spec,
        request,
    } = parse(r#"{"type":"set_status","status":"idle","_reqId":"r","id":7}"#)
    else {
        panic!("a frame")
    };
    assert_eq!(
        (head.req_id.as_deref(), head.id.as_deref()),
        (Some("r"), None)
    );
    assert_eq!(spec, FrameSpec::request("set_status"));
    assert_eq!(request.unwrap().ty(), "set_status");
    match parse(r#"{"type":"send","id":"c1","targetSpec":5}"#) {
        Parsed::Frame {
            head,
            spec,
            request,
        } => {
            assert_eq!(head.id.as_deref(), Some("c1"));
            assert_eq!(spec.answer, Answer::Ack);
            assert!(request.unwrap_err().contains("invalid send"));
        }
        _ => panic!("a bad send is still a send"),
    }
    assert!(matches!(parse(r#"{"type":"dance"}"#), Parsed::Unknown(_)));
    assert!(matches!(parse("[]"), Parsed::Unreadable { .. }));
    assert!(matches!(
        parse(r#"{"type":"hello","meshId":"m"}"#),
        Parsed::Hello(_, Err(_))
    ));
    match parse(r#"{"type":"leave_group","name":"a\u0000"}"#) {
        Parsed::Frame { request, .. } => assert_eq!(request.unwrap_err(), NUL_REFUSED),
        _ => panic!("a frame"),
    }
}

#[test]
fn fire_and_forget_refusals_are_answered_only_to_a_req_id() {
    let metrics = Metrics::new("n", "memory");
    let spec = FrameSpec::fire_and_forget("forget");
    let mut head = Head {
        ty: "forget".into(),
        req_id: None,
        id: None,
        nul: false,
    };
    let refused = || Err(Refusal::new("forbidden", "not yours"));
    assert!(answer(&metrics, head.clone(), &spec, refused()).is_none());
    let counted = metrics.ws_refused.get_or_create(&RefusedLabels {
        r#type: "forget",
        code: "forbidden",
    });
    assert_eq!(counted.get(), 1);
    head.req_id = Some("r".into());
    let Some(Out::Now(frame)) = answer(&metrics, head.clone(), &spec, refused()) else {
        panic!("answered")
    };
    assert!(
        frame.contains("\"_reqId\":\"r\"") && frame.contains("forbidden"),
        "{frame}"
    );
    // Success replies go out either way; a request's errors always.
    head.req_id = None;
    let ok = Ok(Reply::Frame(r#"{"type":"forgotten"}"#.into()));
    assert!(matches!(
        answer(&metrics, head.clone(), &spec, ok),
        Some(Out::Now(_))
    ));
    let request = FrameSpec::request("set_status");
    assert!(matches!(
        answer(&metrics, head, &request, refused()),
        Some(Out::Now(_))
    ));
}

#[test]
fn silent_frames_are_never_answered() {
    let metrics = Metrics::new("n", "memory");
    let spec = FrameSpec::silent("client_ack");
    let head = Head {
        ty: "client_ack".into(),
        req_id: Some("r".into()),
        id: None,
        nul: false,
    };
    let refused = Err(Refusal::bad_request("junk"));
    assert!(
        answer(&metrics, head, &spec, refused).is_none(),
        "not even with _reqId"
    );
}

#[tokio::test]
async fn acked_frames_answer_in_order_whatever_the_outcome() {
    let metrics = Metrics::new("n", "memory");
    let spec = FrameSpec::acked("send");
    let head = Head {
        ty: "send".into(),
        req_id: Some("q".into()),
        id: Some("c1".into()),
        nul: false,
    };
    let Some(Out::Ordered(p)) = answer(&metrics, head, &spec, Err(Refusal::bad_request("no")))
    else {
        panic!("ordered")
    };
    let v: serde_json::Value = serde_json::from_str(&p.resolve().await).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["id"].as_str(), v["code"].as_str()),
        (Some("ack"), Some("c1"), Some("bad_request"))
    );
    assert_eq!(v["_reqId"], "q");
}

#[test]
fn refusals_take_their_frame_form_and_echo_the_request() {
    let head = Head {
        ty: "send".into(),
        req_id: Some("q".into()),
        id: Some("c9".into()),
        nul: false,
    };
    let r = Refusal::new("too_large", "big");
    let v: serde_json::Value = serde_json::from_str(&refusal(&head, Answer::Ack, &r)).unwrap();
    assert_eq!(v["type"], "ack");
    assert_eq!(v["id"], "c9");
    assert_eq!(v["error"], "too_large: big");
    assert_eq!(v["_reqId"], "q");
    let v: serde_json::Value = serde_json::from_str(&refusal(&head, Answer::Error, &r)).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("too_large"))
    );
    assert!(v.get("id").is_none(), "`id` only on send-related errors");
    let unknown = not_a_request(&parse(r#"{"type":"dance","_reqId":"r1"}"#)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&unknown).unwrap();
    assert_eq!(
        (v["code"].as_str(), v["_reqId"].as_str()),
        (Some("unknown_message_type"), Some("r1"))
    );
    assert_eq!(v["message"], "unknown message type: dance");
}

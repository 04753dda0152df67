use super::*;

// ---------------------------------------------------------------------------
// dispatch::parse
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(3000))]

    /// Arbitrary text never panics the decoder; non-objects are bad requests.
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in prop_oneof![any::<String>(), ".{0,64}"]) {
        let got = dispatch::parse(&text);
        if !text.trim_start().starts_with('{') {
            let unreadable = matches!(got, Parsed::Unreadable { .. });
            prop_assert!(unreadable, "{:?} read as a frame", text);
        }
    }

    /// Valid frames edited a few characters at a time: never a panic, and
    /// whatever still decodes as an object keeps the contract.
    #[test]
    fn parse_keeps_its_contract_on_edited_frames(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let frames = valid_frames();
        let base: &String = which.get(&frames);
        let text = apply_edits(base, &edits);
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&text) {
            check_parse_contract(&obj, &text)?;
        } else {
            let _ = dispatch::parse(&text);
        }
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// Frame-shaped objects with random field values of random JSON types.
    #[test]
    fn parse_keeps_its_contract_on_plausible_objects(obj in plausible_frame(FRAME_TYPES)) {
        let text = Value::Object(obj.clone()).to_string();
        check_parse_contract(&obj, &text)?;
    }

}

proptest! {
    #![proptest_config(config(1000))]

    /// Duplicate keys (which JavaScript's JSON.parse resolves to the last
    /// one): a frame whose effective `type` is `send` still gets an ack.
    #[test]
    fn a_send_with_duplicate_keys_is_still_ackable(
        obj in plausible_frame(&["send"]),
        dups in prop::collection::vec(
            (prop::sample::select(vec!["type", "id", "_reqId", "targetSpec", "nonce"]), json_leaf()),
            1..3,
        ),
    ) {
        // The duplicates go first: the object's own values are the last ones.
        let mut pairs: Vec<(String, Value)> =
            dups.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        pairs.extend(obj.clone());
        let text = object_text(&pairs);
        if obj.get("type").and_then(Value::as_str) == Some("send") {
            match dispatch::parse(&text) {
                Parsed::Frame { spec, .. } => prop_assert_eq!(spec.answer, Answer::Ack),
                _ => prop_assert!(false, "{} is not a send", text),
            }
        } else {
            let _ = dispatch::parse(&text);
        }
    }
}

#[test]
fn deeply_nested_sends_are_still_ackable() {
    for depth in [10, 127, 128, 129, 200, 1000] {
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for field in ["junk", "nonce"] {
            let text = format!(r#"{{"type":"send","id":"c1","{field}":{nested},"x":1}}"#);
            match dispatch::parse(&text) {
                Parsed::Frame {
                    head,
                    spec,
                    request: Err(_),
                } => {
                    assert_eq!(head.id.as_deref(), Some("c1"), "depth {depth}");
                    assert_eq!(spec.answer, Answer::Ack);
                }
                _ => panic!("depth {depth}, {field}: not a refused send"),
            }
        }
    }
}

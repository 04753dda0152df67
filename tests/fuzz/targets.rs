use super::*;

// ---------------------------------------------------------------------------
// Target::parse, valid_group_name, is_base64
// ---------------------------------------------------------------------------

const WHITESPACE: &[char] = &[
    ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
    '\u{2003}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
];

fn with_whitespace() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            any::<String>(),
            "[0-9a-f]{63,64}",
            group_name().prop_map(|g| format!("@{g}")),
            Just("@all".to_string()),
            Just("*".to_string()),
        ],
        any::<prop::sample::Index>(),
        prop::sample::select(WHITESPACE),
    )
        .prop_map(|(s, at, ws)| {
            let mut chars: Vec<char> = s.chars().collect();
            let i = at.index(chars.len() + 1);
            chars.insert(i, ws);
            chars.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(config(3000))]

    /// Whatever `Target::parse` accepts is one of the three documented
    /// shapes, exactly as given.
    #[test]
    fn target_parse_accepts_only_documented_shapes(spec in prop_oneof![
        any::<String>(),
        interesting_string(),
        "@.{0,20}",
    ]) {
        match Target::parse(&spec) {
            None => {}
            Some(Target::All) => prop_assert!(spec == "*" || spec == "@all"),
            Some(Target::Group(name)) => {
                prop_assert_eq!(format!("@{name}"), spec);
                prop_assert!(valid_group_name(&name));
                prop_assert_ne!(name, "all");
            }
            Some(Target::Key(k)) => {
                prop_assert_eq!(k.len(), 64);
                prop_assert!(k.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                prop_assert_eq!(k, spec.to_ascii_lowercase());
            }
        }
    }

    #[test]
    fn target_parse_accepts_every_hex_key(key in "[0-9a-fA-F]{64}") {
        prop_assert_eq!(Target::parse(&key), Some(Target::Key(key.to_ascii_lowercase())));
    }

    #[test]
    fn target_parse_accepts_every_valid_group(name in group_name()) {
        prop_assert!(valid_group_name(&name), "{}", name);
        let want = if name == "all" { Target::All } else { Target::Group(name.clone()) };
        prop_assert_eq!(Target::parse(&format!("@{name}")), Some(want));
    }

    #[test]
    fn nothing_with_whitespace_is_a_target_or_group(s in with_whitespace()) {
        prop_assert_eq!(Target::parse(&s), None);
        prop_assert!(!valid_group_name(&s));
        if let Some(rest) = s.strip_prefix('@') {
            prop_assert!(!valid_group_name(rest));
        }
    }

    /// Valid group names never collide with target syntax.
    #[test]
    fn valid_group_names_are_clean_paths(name in prop_oneof![
        any::<String>(),
        ".{0,20}",
        "[a-z/@*.:_-]{0,12}",
        (120usize..140).prop_map(|n| "a".repeat(n)),
    ]) {
        if valid_group_name(&name) {
            prop_assert!(!name.is_empty() && name.chars().count() <= 128);
            prop_assert!(!name.starts_with('/') && !name.ends_with('/') && !name.contains("//"));
            prop_assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()
                || matches!(c, '@' | '*' | '"' | '\'' | '\\' | ',')));
        }
    }

    #[test]
    fn is_base64_accepts_every_encoding_and_rejects_other_alphabets(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        junk in any::<String>(),
    ) {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            prop_assert!(is_base64(&engine.encode(&bytes)));
        }
        let alphabet = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_');
        if is_base64(&junk) {
            let body = junk.trim_end_matches('=');
            prop_assert!(junk.len() - body.len() <= 2);
            prop_assert!(body.chars().all(alphabet));
        } else {
            let body = junk.trim_end_matches('=');
            prop_assert!(junk.len() - body.len() > 2 || !body.chars().all(alphabet));
        }
    }
}

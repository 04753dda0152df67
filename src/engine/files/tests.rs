use super::*;
use crate::protocol::GroupRef;
use crate::store::{FileRow, PeerRole, PresenceState, Role};
use uuid::Uuid;

fn member(id: &str, pubkey: &str, name: &str) -> Member {
    Member {
        id: id.into(),
        mesh_id: "m".into(),
        pubkey: pubkey.into(),
        display_name: name.into(),
        role: Role::Member,
        default_groups: vec![],
        revoked_at: None,
        created_at: Utc::now(),
    }
}

fn presence(m: &Member, session: Option<&str>, name: &str, groups: &[&str]) -> Presence {
    let now = Utc::now();
    Presence {
        id: Uuid::now_v7(),
        mesh_id: "m".into(),
        member_id: m.id.clone(),
        member_pubkey: m.pubkey.clone(),
        node_id: Uuid::now_v7(),
        conn_id: Uuid::now_v7(),
        role: PeerRole::ControlPlane,
        session_id: "s".into(),
        session_pubkey: session.map(String::from),
        display_name: name.into(),
        pid: None,
        cwd: None,
        hostname: None,
        peer_type: None,
        channel: None,
        model: None,
        capabilities: vec![],
        at_least_once: false,
        status: crate::protocol::Status::Idle,
        status_source: crate::protocol::Source::Manual,
        status_updated_at: now,
        summary: None,
        groups: groups
            .iter()
            .map(|g| GroupRef {
                name: g.to_string(),
                role: None,
            })
            .collect(),
        visible: true,
        profile: Default::default(),
        stats: None,
        state: PresenceState::Online,
        grace_until: None,
        hook_token_hash: vec![],
        connected_at: now,
        last_seen_at: now,
        last_active_at: None,
    }
}

fn file(
    uploader: &str,
    target: Option<&str>,
    encrypted: bool,
    owner: Option<&str>,
    keys: &[(&str, &str)],
) -> StoredFile {
    StoredFile {
        file: FileRow {
            id: Uuid::now_v7(),
            mesh_id: "m".into(),
            name: "r.pdf".into(),
            size: 1,
            content_type: None,
            tags: vec![],
            uploader_member: uploader.into(),
            uploaded_by: "up".into(),
            persistent: true,
            expires_at: None,
            target_spec: target.map(String::from),
            encrypted,
            owner_pubkey: owner.map(String::from),
            created_at: Utc::now(),
        },
        keys: keys
            .iter()
            .map(|(p, k)| FileKey {
                peer_pubkey: p.to_string(),
                sealed_key: k.to_string(),
            })
            .collect(),
    }
}

#[test]
fn targets_match_the_uploader_everyone_keys_groups_and_names() {
    let alice = member("a", "AAAA", "Alice");
    let bob = member("b", "bbbb", "bob");
    let a = presence(&alice, Some("a5a5"), "alice-laptop", &["backend/api"]);
    let b = presence(&bob, None, "bob", &[]);
    let read = |f: &StoredFile, m: &Member, p: &Presence| can_read(f, m, p).map(|_| ());
    let open = file("b", None, false, None, &[]);
    assert_eq!(read(&open, &alice, &a), Ok(()));
    for spec in [
        "*",
        "aaaa",
        "A5A5",
        "@backend",
        "@backend/api",
        "alice",
        "ALICE-LAPTOP",
    ] {
        let f = file("b", Some(spec), false, None, &[]);
        assert_eq!(read(&f, &alice, &a), Ok(()), "{spec}");
    }
    for spec in ["@back", "@backend/api/x", "carol", "cccc"] {
        let f = file("b", Some(spec), false, None, &[]);
        assert_eq!(read(&f, &alice, &a), Err(Unreadable::NotTargeted), "{spec}");
        assert_eq!(
            read(&f, &bob, &b),
            Ok(()),
            "the uploader reads its own: {spec}"
        );
    }
}

#[test]
fn encrypted_files_need_a_sealed_key_or_ownership() {
    let alice = member("a", "aaaa", "alice");
    let bob = member("b", "bbbb", "bob");
    let a = presence(&alice, Some("a5a5"), "alice", &[]);
    let b = presence(&bob, Some("b5b5"), "bob", &[]);
    let f = file(
        "b",
        None,
        true,
        Some("B5B5"),
        &[("a5a5", "for-session"), ("aaaa", "for-member")],
    );
    assert_eq!(
        can_read(&f, &alice, &a),
        Ok(Some("for-session".into())),
        "session key first"
    );
    let a_plain = presence(&alice, None, "alice", &[]);
    assert_eq!(
        can_read(&f, &alice, &a_plain),
        Ok(Some("for-member".into()))
    );
    assert_eq!(
        can_read(&f, &bob, &b),
        Ok(None),
        "the owner by session pubkey"
    );
    let b_other = presence(&bob, Some("ffff"), "bob", &[]);
    assert_eq!(
        can_read(&f, &bob, &b_other),
        Err(Unreadable::NoKey),
        "another session of the owner's member"
    );
    let no_owner = file("b", None, true, None, &[]);
    assert_eq!(
        can_read(&no_owner, &bob, &b_other),
        Ok(None),
        "no owner pubkey: the uploader"
    );
    assert_eq!(can_read(&no_owner, &alice, &a), Err(Unreadable::NoKey));
}

#[test]
fn links_verify_only_as_signed_and_until_they_expire() {
    let key = b"0123456789abcdef0123456789abcdef";
    let now = Utc::now();
    let exp = now.timestamp() + 60;
    let sig = sign(key, "m", "f1", "alice", exp);
    assert!(verify(key, ("m", "f1", "alice"), exp, &sig, now));
    assert!(
        !verify(key, ("m", "f2", "alice"), exp, &sig, now),
        "another file"
    );
    assert!(
        !verify(key, ("m", "f1", "bob"), exp, &sig, now),
        "another member"
    );
    assert!(
        !verify(key, ("m", "f1", "alice"), exp + 1, &sig, now),
        "another expiry"
    );
    assert!(!verify(
        b"another key of 32 bytes, exactly",
        ("m", "f1", "alice"),
        exp,
        &sig,
        now
    ));
    assert!(
        !verify(
            key,
            ("m", "f1", "alice"),
            exp,
            &sig,
            now + chrono::Duration::seconds(60)
        ),
        "expired"
    );
    assert!(!verify(key, ("m", "f1", "alice"), exp, "not base64!", now));
}

#[test]
fn the_http_base_follows_the_public_url() {
    assert_eq!(http_base("ws://127.0.0.1:7900/ws"), "http://127.0.0.1:7900");
    assert_eq!(
        http_base("wss://mesh.example.com/ws"),
        "https://mesh.example.com"
    );
    assert_eq!(
        http_base("wss://mesh.example.com/"),
        "https://mesh.example.com"
    );
    assert_eq!(http_base("https://x.example"), "https://x.example");
}

//! The MCP registry and relay lookups: entries held per name by one
//! member, capped per mesh, following their host presence through grace
//! and its end; relay targets by session or member pubkey; hosts judged
//! live by their node's heartbeat.

use claudemesh_broker::store::*;
use serde_json::json;

use super::*;

fn entry(by: &Presence, name: &str, persistent: bool) -> McpEntry {
    McpEntry {
        mesh_id: by.mesh_id.clone(),
        name: name.into(),
        description: format!("{name} bridge"),
        tools: json!([{"name": "search", "description": "", "inputSchema": null}]),
        host_member: by.member_id.clone(),
        host_presence: Some(by.id),
        hosted_by: by.display_name.clone(),
        persistent,
        offline_since: None,
        created_at: t0(),
    }
}

async fn names(s: &dyn Store, mesh: &str) -> Vec<(String, bool)> {
    s.list_mcp(mesh)
        .await
        .unwrap()
        .iter()
        .map(|l| (l.entry.name.clone(), l.online()))
        .collect()
}

async fn a_name_is_held_by_one_member_under_a_cap(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let node = Uuid::now_v7();
    let a = attach(s, &hello(&alice, "a", node, t0())).await;
    let a2 = attach(s, &hello(&alice, "a2", node, t0())).await;
    let b = attach(s, &hello(&bob, "b", node, t0())).await;
    let ok = McpRegistered::Registered;
    assert_eq!(
        s.register_mcp(&entry(&a, "jira", false), false, 2)
            .await
            .unwrap(),
        ok
    );
    assert_eq!(
        s.register_mcp(&entry(&b, "jira", false), false, 2)
            .await
            .unwrap(),
        McpRegistered::Taken
    );
    // The same member's other session takes it over.
    let mut moved = entry(&a2, "jira", true);
    moved.description = "moved".into();
    assert_eq!(s.register_mcp(&moved, false, 2).await.unwrap(), ok);
    let got = s.mcp_server(&m.id, "jira").await.unwrap().unwrap();
    assert_eq!(
        (got.entry.host_presence, got.entry.persistent, got.host_node),
        (Some(a2.id), true, Some(node))
    );
    assert_eq!(got.entry.description, "moved");
    assert_eq!(
        s.register_mcp(&entry(&b, "gh", false), false, 2)
            .await
            .unwrap(),
        ok
    );
    assert_eq!(
        s.register_mcp(&entry(&b, "third", false), false, 2)
            .await
            .unwrap(),
        McpRegistered::Full
    );
    assert_eq!(
        s.register_mcp(&entry(&b, "gh", true), false, 2)
            .await
            .unwrap(),
        ok,
        "re-registering at the cap replaces"
    );
    // A privileged member may take another's name.
    assert_eq!(
        s.register_mcp(&entry(&b, "jira", false), true, 2)
            .await
            .unwrap(),
        ok
    );
    assert_eq!(
        s.mcp_server(&m.id, "jira")
            .await
            .unwrap()
            .unwrap()
            .entry
            .host_member,
        bob.id
    );
    assert_eq!(
        names(s, &m.id).await,
        [("gh".to_string(), true), ("jira".to_string(), true)],
        "by name"
    );
    // A presence that is not online hosts nothing.
    s.release_presence(a.id, a.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    assert_eq!(
        s.register_mcp(&entry(&a, "new", false), false, 9)
            .await
            .unwrap(),
        McpRegistered::Ended
    );
    assert!(s.mcp_server(&m.id, "new").await.unwrap().is_none());
    let other = mesh(s, "o").await;
    assert!(s.list_mcp(&other.id).await.unwrap().is_empty());
    assert!(s.mcp_server(&other.id, "jira").await.unwrap().is_none());
}

async fn only_the_host_member_or_a_privileged_one_unregisters(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let a = attach(s, &hello(&alice, "a", Uuid::now_v7(), t0())).await;
    s.register_mcp(&entry(&a, "jira", false), false, 9)
        .await
        .unwrap();
    s.register_mcp(&entry(&a, "gh", false), false, 9)
        .await
        .unwrap();
    assert!(s
        .unregister_mcp(&m.id, "jira", &bob.id, false)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .unregister_mcp(&m.id, "nope", &alice.id, false)
        .await
        .unwrap()
        .is_none());
    let gone = s
        .unregister_mcp(&m.id, "jira", &alice.id, false)
        .await
        .unwrap();
    assert_eq!(gone.map(|e| e.name), Some("jira".to_string()));
    let gone = s.unregister_mcp(&m.id, "gh", &bob.id, true).await.unwrap();
    assert_eq!(gone.map(|e| e.host_presence), Some(Some(a.id)));
    assert!(s.list_mcp(&m.id).await.unwrap().is_empty());
}

async fn entries_follow_their_host_through_grace_and_its_end(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let node = Uuid::now_v7();
    let a = attach(s, &hello(&alice, "a", node, t0())).await;
    s.register_mcp(&entry(&a, "keep", true), false, 9)
        .await
        .unwrap();
    s.register_mcp(&entry(&a, "temp", false), false, 9)
        .await
        .unwrap();
    assert!(s.sweep_mcp(t0()).await.unwrap().is_empty(), "all online");

    // In grace: offline at once, since the socket closed.
    s.release_presence(a.id, a.conn_id, t0() + secs(60), t0() + secs(5))
        .await
        .unwrap();
    let l = s.mcp_server(&m.id, "temp").await.unwrap().unwrap();
    assert!(!l.online());
    assert_eq!(l.offline_since(t0() + secs(30)), t0() + secs(5));
    assert!(
        s.sweep_mcp(t0() + secs(6)).await.unwrap().is_empty(),
        "still in grace"
    );
    let keep = s.mcp_server(&m.id, "keep").await.unwrap().unwrap();
    assert_eq!(keep.entry.offline_since, Some(t0() + secs(5)), "stamped");

    // Ended: the temporary entry is gone (swept once), the persistent one
    // waits offline for the member's next presence.
    s.expire_grace(t0() + secs(61)).await.unwrap();
    assert_eq!(names(s, &m.id).await, [("keep".to_string(), false)]);
    let swept = s.sweep_mcp(t0() + secs(62)).await.unwrap();
    assert_eq!(
        swept.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["temp"]
    );
    assert!(
        s.sweep_mcp(t0() + secs(63)).await.unwrap().is_empty(),
        "once"
    );
    let keep = s.mcp_server(&m.id, "keep").await.unwrap().unwrap();
    assert_eq!(keep.entry.host_presence, None);
    assert_eq!(keep.offline_since(t0() + secs(99)), t0() + secs(5));

    // Another member's new presence restores nothing; the member's does.
    let bob = member(s, &m, "bob").await;
    let b = attach(s, &hello(&bob, "b", node, t0() + secs(70))).await;
    assert!(s
        .rehost_mcp(&m.id, &bob.id, b.id, "bob")
        .await
        .unwrap()
        .is_empty());
    let a2 = attach(s, &hello(&alice, "a2", node, t0() + secs(70))).await;
    let moved = s
        .rehost_mcp(&m.id, &alice.id, a2.id, "alice-2")
        .await
        .unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(
        (
            moved[0].host_presence,
            moved[0].hosted_by.as_str(),
            moved[0].offline_since
        ),
        (Some(a2.id), "alice-2", None)
    );
    assert!(s.mcp_server(&m.id, "keep").await.unwrap().unwrap().online());
    assert!(
        s.rehost_mcp(&m.id, &alice.id, a2.id, "alice-2")
            .await
            .unwrap()
            .is_empty(),
        "already hosted there"
    );
    // While one presence hosts it online, the member's next one does not
    // take it.
    let a3 = attach(s, &hello(&alice, "a3", node, t0() + secs(80))).await;
    assert!(s
        .rehost_mcp(&m.id, &alice.id, a3.id, "alice-3")
        .await
        .unwrap()
        .is_empty());
    // A re-attach within grace brings it back online where it was.
    s.release_presence(a2.id, a2.conn_id, t0() + secs(200), t0() + secs(90))
        .await
        .unwrap();
    s.sweep_mcp(t0() + secs(91)).await.unwrap();
    let back = hello(&alice, "a2", node, t0() + secs(95));
    assert!(matches!(
        s.attach_presence(&back, 100).await.unwrap(),
        Attach::Reattached { .. }
    ));
    let moved = s
        .rehost_mcp(&m.id, &alice.id, a2.id, "alice-2")
        .await
        .unwrap();
    assert_eq!(moved.len(), 1, "stamped offline, so restored");
    let l = s.mcp_server(&m.id, "keep").await.unwrap().unwrap();
    assert!(l.online() && l.entry.offline_since.is_none());
}

async fn a_relay_goes_to_the_session_pubkey_else_the_members_best_presence(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let (n1, n2) = (Uuid::now_v7(), Uuid::now_v7());
    let verb = attach(s, &hello(&alice, "verb", n1, t0())).await;
    let mut launched = hello(&alice, "launched", n2, t0() - secs(10));
    launched.role = PeerRole::Session;
    launched.session_pubkey = Some("ab".repeat(32));
    let launched = attach(s, &launched).await;
    let later = attach(s, &hello(&alice, "later", n1, t0() + secs(5))).await;
    let mesh_id = m.id.clone();
    let mesh_id = &mesh_id;
    let target = |k: String| async move { s.relay_target(mesh_id, &k).await.unwrap() };
    assert_eq!(
        target("ab".repeat(32)).await,
        Some(RelayHost {
            presence: launched.id,
            node: n2
        })
    );
    assert_eq!(
        target(alice.pubkey.clone()).await.map(|h| h.presence),
        Some(launched.id),
        "session presences first"
    );
    s.release_presence(launched.id, launched.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    assert_eq!(
        target(alice.pubkey.clone()).await.map(|h| h.presence),
        Some(later.id),
        "then the latest connected online one"
    );
    assert_eq!(
        target("ab".repeat(32)).await,
        None,
        "in grace: not a target"
    );
    assert_eq!(target("cd".repeat(32)).await, None);
    let _ = verb;
    let other = mesh(s, "o").await;
    assert_eq!(
        s.relay_target(&other.id, &alice.pubkey).await.unwrap(),
        None
    );
}

async fn hosts_are_live_while_online_on_a_beating_node(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let alice = member(s, &m, "alice").await;
    let node = Uuid::now_v7();
    s.register_node(&NodeRow {
        id: node,
        addr: "n".into(),
        version: "t".into(),
        started_at: t0(),
    })
    .await
    .unwrap();
    let here = attach(s, &hello(&alice, "a", node, t0())).await;
    let there = attach(s, &hello(&alice, "b", Uuid::now_v7(), t0())).await;
    let away = attach(s, &hello(&alice, "c", node, t0())).await;
    s.release_presence(away.id, away.conn_id, t0() + secs(60), t0())
        .await
        .unwrap();
    let ids = [here.id, there.id, away.id, Uuid::now_v7()];
    let fresh = std::time::Duration::from_secs(30);
    assert_eq!(s.live_hosts(&ids, fresh).await.unwrap(), [here.id]);
    assert!(s.live_hosts(&[], fresh).await.unwrap().is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    assert!(
        s.live_hosts(&ids, std::time::Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty(),
        "a heartbeat older than `fresh`"
    );
}

crate::conformance!(
    a_name_is_held_by_one_member_under_a_cap,
    only_the_host_member_or_a_privileged_one_unregisters,
    entries_follow_their_host_through_grace_and_its_end,
    a_relay_goes_to_the_session_pubkey_else_the_members_best_presence,
    hosts_are_live_while_online_on_a_beating_node,
);

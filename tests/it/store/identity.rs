//! Meshes, members and invites.

use claudemesh_broker::store::*;
use uuid::Uuid;

use super::*;

async fn meshes_are_unique_by_slug_and_found_by_slug_and_id(s: &dyn Store) {
    let a = mesh(s, "a").await;
    let b = mesh(s, "b").await;
    let mut again = a.clone();
    again.id = Uuid::now_v7().to_string();
    assert!(matches!(
        s.insert_mesh(&again).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.mesh_by_slug("a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.mesh_by_id(&b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(s.mesh_by_slug("nope").await.unwrap(), None);
    let slugs: Vec<String> = s
        .list_meshes()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.slug)
        .collect();
    assert_eq!(slugs, ["a", "b"], "nothing of the refused insert");
}

async fn members_are_unique_by_pubkey_per_mesh_and_listed_oldest_first(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let other = mesh(s, "other").await;
    let first = new_member(&m, "first", t0());
    let second = new_member(&m, "second", t0() + secs(1));
    s.insert_member(&second).await.unwrap();
    s.insert_member(&first).await.unwrap();
    let mut dup = new_member(&m, "dup", t0());
    dup.pubkey = first.pubkey.clone();
    assert!(matches!(
        s.insert_member(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    // The same key may be a member of another mesh.
    let mut elsewhere = new_member(&other, "elsewhere", t0());
    elsewhere.pubkey = first.pubkey.clone();
    s.insert_member(&elsewhere).await.unwrap();

    let names: Vec<String> = s
        .list_members(&m.id)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.display_name)
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(
        s.member_by_pubkey(&m.id, &first.pubkey).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(s.member_by_id(&m.id, &first.id).await.unwrap(), Some(first));
    assert_eq!(
        s.member_by_id(&other.id, &second.id).await.unwrap(),
        None,
        "a member is found only in its own mesh"
    );
}

async fn revoking_a_member_ends_its_presences_and_drops_its_rows(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let (alice, bob) = (member(s, &m, "alice").await, member(s, &m, "bob").await);
    let node = Uuid::now_v7();
    let a = attach(s, &hello(&alice, "a1", node, t0())).await;
    let b1 = attach(s, &hello(&bob, "b1", node, t0())).await;
    let b2 = attach(s, &hello(&bob, "b2", node, t0())).await;
    store_all(
        s,
        &[
            outgoing(&a, t0(), vec![to_session(&b1)]),
            outgoing(&a, t0(), vec![to_member(&b2)]),
        ],
    )
    .await;
    assert_eq!(s.queue_depth().await.unwrap(), 2);

    let ended = s
        .revoke_member(&m.id, &bob.id, t0())
        .await
        .unwrap()
        .expect("bob was a member");
    assert_eq!(
        ended,
        [b1.clone(), b2.clone()],
        "as they were, oldest first"
    );
    assert_eq!(s.queue_depth().await.unwrap(), 0);
    assert_eq!(s.presence_by_id(b1.id).await.unwrap(), None);
    assert!(s.presence_by_id(a.id).await.unwrap().is_some());
    let revoked = s.member_by_id(&m.id, &bob.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(t0()));
    assert_eq!(
        s.revoke_member(&m.id, &bob.id, t0()).await.unwrap(),
        None,
        "already revoked"
    );
    assert_eq!(s.revoke_member(&m.id, "nobody", t0()).await.unwrap(), None);
}

fn invite(mesh: &Mesh, token: &str, max_uses: i32) -> Invite {
    Invite {
        token: token.to_string(),
        mesh_id: mesh.id.clone(),
        role: Role::Admin,
        max_uses,
        used_count: 0,
        expires_at: t0() + secs(3600),
        revoked_at: None,
        created_at: t0(),
    }
}

fn redeem(mesh: &Mesh, token: &str, pubkey: &str, at: chrono::DateTime<chrono::Utc>) -> Redeem {
    Redeem {
        token: token.to_string(),
        mesh_id: mesh.id.clone(),
        pubkey: pubkey.to_string(),
        display_name: "joiner".into(),
        new_member_id: Uuid::now_v7().to_string(),
        now: at,
    }
}

async fn invites_refuse_in_protocol_order_and_count_uses_atomically(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let other = mesh(s, "other").await;
    s.insert_invite(&invite(&m, "tok", 1)).await.unwrap();
    assert!(matches!(
        s.insert_invite(&invite(&m, "tok", 5)).await,
        Err(StoreError::Conflict(_))
    ));
    let key = |_: u8| claudemesh_broker::protocol::crypto::KeyPair::generate().public_hex;
    let refusal = |r: Result<Redeemed, InviteRefusal>| r.expect_err("refused");

    let r = s.redeem_invite(&redeem(&m, "nope", &key(0), t0())).await;
    assert_eq!(refusal(r.unwrap()), InviteRefusal::NotFound);
    let r = s.redeem_invite(&redeem(&other, "tok", &key(0), t0())).await;
    assert_eq!(refusal(r.unwrap()), InviteRefusal::MeshMismatch);
    let late = t0() + secs(3600);
    let r = s.redeem_invite(&redeem(&m, "tok", &key(0), late)).await;
    assert_eq!(refusal(r.unwrap()), InviteRefusal::Expired);

    let joiner = key(1);
    let first = redeem(&m, "tok", &joiner, t0());
    let ok = s.redeem_invite(&first).await.unwrap().unwrap();
    assert_eq!(
        ok,
        Redeemed {
            member_id: first.new_member_id.clone(),
            already_member: false
        }
    );
    let joined = s.member_by_id(&m.id, &ok.member_id).await.unwrap().unwrap();
    assert_eq!(joined.role, Role::Admin, "the invite's role");
    assert_eq!(joined.pubkey, joiner);
    // A member redeeming again uses nothing, even with no uses left.
    let again = s
        .redeem_invite(&redeem(&m, "tok", &joiner, t0()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.member_id, ok.member_id);
    assert!(again.already_member);
    let r = s.redeem_invite(&redeem(&m, "tok", &key(2), t0())).await;
    assert_eq!(refusal(r.unwrap()), InviteRefusal::Exhausted);

    assert_eq!(
        s.revoke_invite("tok", t0()).await.unwrap(),
        Some(m.id.clone())
    );
    assert_eq!(s.revoke_invite("tok", t0()).await.unwrap(), None);
    let r = s.redeem_invite(&redeem(&m, "tok", &key(3), t0())).await;
    assert_eq!(refusal(r.unwrap()), InviteRefusal::Revoked);
    assert_eq!(s.list_members(&m.id).await.unwrap().len(), 1);
}

async fn a_revoked_member_can_be_restored(s: &dyn Store) {
    let m = mesh(s, "m").await;
    let bob = member(s, &m, "bob").await;
    assert!(
        !s.unrevoke_member(&m.id, &bob.id).await.unwrap(),
        "not revoked"
    );
    s.revoke_member(&m.id, &bob.id, t0())
        .await
        .unwrap()
        .unwrap();
    assert!(s.unrevoke_member(&m.id, &bob.id).await.unwrap());
    let back = s.member_by_id(&m.id, &bob.id).await.unwrap().unwrap();
    assert_eq!(back.revoked_at, None);
    assert!(
        !s.unrevoke_member("other", &bob.id).await.unwrap(),
        "only in its mesh"
    );
}

crate::conformance!(
    a_revoked_member_can_be_restored,
    meshes_are_unique_by_slug_and_found_by_slug_and_id,
    members_are_unique_by_pubkey_per_mesh_and_listed_oldest_first,
    revoking_a_member_ends_its_presences_and_drops_its_rows,
    invites_refuse_in_protocol_order_and_count_uses_atomically,
);

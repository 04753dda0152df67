//! The store contract, tested at the traits: one body per behaviour, run
//! against both backends (`conformance!`), as nats-server runs its store
//! suite over every backend. Whatever the engine relies on a store for is
//! pinned here once, so the memory store and Postgres cannot drift.

mod audit;
mod clocks;
mod contexts;
mod files;
mod hooks;
mod identity;
mod memories;
mod message_status;
mod messages;
mod nodes;
mod presence;
mod relay;
mod schedules;
mod sends;
mod skills;
mod state;
mod streams;
mod tasks;
mod vault;
mod vectors;
mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use claudemesh_broker::protocol::crypto::KeyPair;
use claudemesh_broker::protocol::target::Priority;
use claudemesh_broker::protocol::GroupRef;
use claudemesh_broker::store::memory::MemoryStore;
use claudemesh_broker::store::postgres::PgStore;
use claudemesh_broker::store::*;
use uuid::Uuid;

use crate::harness::TestDb;

/// Runs each named `async fn name(s: &dyn Store)` of the calling module
/// once per backend, each on a fresh store (Postgres: its own database).
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    let s = $crate::store::Subject::memory();
                    super::$name(&*s.store).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let s = $crate::store::Subject::postgres().await;
                    super::$name(&*s.store).await
                }
            )*
        }
    };
}

/// A store under test, with the database it lives in (if any).
pub struct Subject {
    pub store: Arc<dyn Store>,
    _db: Option<TestDb>,
}

impl Subject {
    pub fn memory() -> Subject {
        Subject {
            store: Arc::new(MemoryStore::new()),
            _db: None,
        }
    }

    pub async fn postgres() -> Subject {
        let db = TestDb::migrated().await;
        let store = PgStore::connect(&db.url, 4).expect("pool builds");
        Subject {
            store: Arc::new(store),
            _db: Some(db),
        }
    }
}

/// The time every test starts at: fixed, so a test can name the same
/// instant twice, and whole milliseconds, so rows compare equal after a
/// round trip through Postgres (microseconds) from chrono (nanoseconds).
/// Stores take every time from their caller, so nothing needs it to be now.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_780_000_000_000).expect("in range")
}

pub fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

pub async fn mesh(s: &dyn Store, slug: &str) -> Mesh {
    let owner = KeyPair::generate();
    let m = Mesh {
        id: Uuid::now_v7().to_string(),
        slug: slug.to_string(),
        name: slug.to_string(),
        owner_pubkey: owner.public_hex,
        owner_secret: owner.secret_hex,
        root_key: "cm9vdA".into(),
        created_at: t0(),
    };
    s.insert_mesh(&m).await.expect("mesh stored");
    m
}

pub fn new_member(mesh: &Mesh, name: &str, at: DateTime<Utc>) -> Member {
    Member {
        id: Uuid::now_v7().to_string(),
        mesh_id: mesh.id.clone(),
        pubkey: KeyPair::generate().public_hex,
        display_name: name.to_string(),
        role: Role::Member,
        default_groups: vec![],
        revoked_at: None,
        created_at: at,
    }
}

pub async fn member(s: &dyn Store, mesh: &Mesh, name: &str) -> Member {
    let m = new_member(mesh, name, t0());
    s.insert_member(&m).await.expect("member stored");
    m
}

/// A hello's presence for `member`'s session `session` on `node`.
pub fn hello(member: &Member, session: &str, node: Uuid, at: DateTime<Utc>) -> NewPresence {
    NewPresence {
        id: Uuid::now_v7(),
        mesh_id: member.mesh_id.clone(),
        member_id: member.id.clone(),
        member_pubkey: member.pubkey.clone(),
        node_id: node,
        conn_id: Uuid::now_v7(),
        role: PeerRole::ControlPlane,
        session_id: session.to_string(),
        session_pubkey: None,
        display_name: member.display_name.clone(),
        named: true,
        pid: None,
        cwd: None,
        hostname: None,
        peer_type: None,
        channel: None,
        model: None,
        capabilities: vec![],
        at_least_once: false,
        groups: vec![GroupRef {
            name: "g".into(),
            role: None,
        }],
        profile: Default::default(),
        visible: true,
        summary: None,
        hook_token_hash: Uuid::now_v7().as_bytes().to_vec(),
        now: at,
    }
}

/// Attaches a new presence; panics unless it was created.
pub async fn attach(s: &dyn Store, p: &NewPresence) -> Presence {
    match s.attach_presence(p, 100).await.expect("attach") {
        Attach::Created(p) => p,
        other => panic!("expected a new presence, got {other:?}"),
    }
}

/// A bucket no test exhausts unless it means to.
pub fn roomy(key: &str) -> Bucket {
    Bucket {
        key: key.to_string(),
        rate_per_min: 60,
        burst: 1_000,
    }
}

/// A message from `from` (created at `at`, expiring a day later) with
/// `deliveries`, under `from`'s roomy bucket.
pub fn outgoing(from: &Presence, at: DateTime<Utc>, deliveries: Vec<NewDelivery>) -> Outgoing {
    Outgoing {
        message: NewMessage {
            id: new_message_id(at),
            mesh_id: from.mesh_id.clone(),
            sender_member_id: from.member_id.clone(),
            sender_member_pubkey: from.member_pubkey.clone(),
            sender_session_pubkey: None,
            target_spec: "*".into(),
            priority: Priority::Now,
            nonce: "bm9uY2U=".into(),
            ciphertext: "Y3Q=".into(),
            created_at: at,
            expires_at: at + Duration::days(1),
            echo: Default::default(),
        },
        deliveries,
        bucket: roomy(&from.member_id),
    }
}

/// One row for session `to`.
pub fn to_session(to: &Presence) -> NewDelivery {
    NewDelivery::to_session(&RouteTarget::of(to))
}

/// One row for any session of `to`'s member.
pub fn to_member(to: &Presence) -> NewDelivery {
    NewDelivery {
        recipient_member_id: to.member_id.clone(),
        recipient_session: None,
        exclude_session: None,
        claim: None,
    }
}

/// Stores `batch`, expecting every send queued; returns the message ids.
pub async fn store_all(s: &dyn Store, batch: &[Outgoing]) -> Vec<Uuid> {
    let stored = s
        .insert_messages(batch, &[], &[])
        .await
        .expect("batch stored")
        .expect("no routing check to fail");
    for r in &stored.results {
        assert!(matches!(r, SendResult::Queued { .. }), "{r:?}");
    }
    batch.iter().map(|o| o.message.id).collect()
}

/// A claim for `p` at `now` with a `lease`-second lease.
pub fn claim_for(p: &Presence, now: DateTime<Utc>, lease: i64, limit: usize) -> ClaimRequest {
    ClaimRequest {
        presence: p.id,
        mesh_id: p.mesh_id.clone(),
        member_id: p.member_id.clone(),
        node_id: p.node_id,
        now,
        lease_until: now + secs(lease),
        limit,
        reclaim_own: false,
    }
}

/// Claims for one session; returns the claimed message ids in order.
pub async fn claim_ids(s: &dyn Store, req: ClaimRequest) -> Vec<Uuid> {
    let mut all = s.claim_many(&[req]).await.expect("claim");
    all.remove(0).iter().map(|c| c.message.id).collect()
}

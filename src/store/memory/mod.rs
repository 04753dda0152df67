//! The single-node store: everything in one mutex-guarded struct. Every
//! operation takes the lock once, so each is atomic exactly like its
//! Postgres transaction. Not for clusters: nothing here is shared.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

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
mod rate;
mod relay;
mod schedules;
mod signatures;
mod skills;
mod state;
mod streams;
mod tasks;
mod text;
mod vault;
mod vectors;
mod webhooks;

use super::*;
use crate::protocol::Status;

#[derive(Default)]
struct State {
    meshes: HashMap<String, Mesh>,
    slug_index: HashMap<String, String>,
    members: HashMap<String, Member>,
    /// (mesh_id, pubkey) → member id.
    pubkey_index: HashMap<(String, String), String>,
    invites: HashMap<String, Invite>,
    nodes: HashMap<Uuid, NodeInfo>,
    /// Only online and in-grace presences; gone ones are dropped.
    presences: HashMap<Uuid, Presence>,
    /// The ids in `presences` by mesh: hellos, routing and listings look
    /// at one mesh, not every presence of the store. Changed only with
    /// `presences` (add_presence, remove_presence).
    presences_by_mesh: HashMap<String, std::collections::HashSet<Uuid>>,
    member_states: HashMap<(String, String), MemberState>,
    queue: messages::Queue,
    /// (pid, cwd) → (status, created_at) of hooks that came first.
    pending: HashMap<(i64, String), (Status, DateTime<Utc>)>,
    audit: audit::Chains,
    /// SHA-256 of accepted hello signatures → kept until.
    signatures: HashMap<Vec<u8>, DateTime<Utc>>,
    state: state::States,
    tasks: tasks::Tasks,
    notes: memories::Notes,
    contexts: contexts::Contexts,
    skills: skills::Skills,
    vaults: vault::Vaults,
    points: vectors::Points,
    webhooks: webhooks::Webhooks,
    schedules: schedules::Schedules,
    streams: streams::Streams,
    clocks: clocks::Clocks,
    mcp: relay::Registry,
    files: files::Files,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change
        // (each operation mutates after all its checks), so poison is safe
        // to ignore.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

//! Row → struct decoding, kept apart from the queries.

use tokio_postgres::types::Json;
use tokio_postgres::Row;

use crate::protocol::{Source, Status};
use crate::store::{Member, Mesh, PeerRole, Presence, PresenceState, Role};

pub fn mesh_from(r: &Row) -> Mesh {
    Mesh {
        id: r.get("id"),
        slug: r.get("slug"),
        name: r.get("name"),
        owner_pubkey: r.get("owner_pubkey"),
        owner_secret: r.get("owner_secret"),
        root_key: r.get("root_key"),
        created_at: r.get("created_at"),
    }
}

pub fn member_from(r: &Row) -> Member {
    Member {
        id: r.get("id"),
        mesh_id: r.get("mesh_id"),
        pubkey: r.get("peer_pubkey"),
        display_name: r.get("display_name"),
        role: Role::parse(r.get("role")).unwrap_or(Role::Member),
        default_groups: r.get::<_, Json<_>>("default_groups").0,
        revoked_at: r.get("revoked_at"),
        created_at: r.get("created_at"),
    }
}

/// Column list matching [`presence_from`]'s positions.
pub const PRESENCE_COLS: &str = "id, mesh_id, member_id, member_pubkey, node_id, conn_id, \
    session_id, session_pubkey, display_name, pid, cwd, hostname, peer_type, channel, model, \
    capabilities, status, status_source, status_updated_at, summary, groups, visible, profile, \
    stats, state, grace_until, hook_token_hash, connected_at, last_seen_at, role, at_least_once, \
    last_active_at";

pub fn presence_from(r: &Row) -> Presence {
    Presence {
        id: r.get(0),
        mesh_id: r.get(1),
        member_id: r.get(2),
        member_pubkey: r.get(3),
        node_id: r.get(4),
        conn_id: r.get(5),
        session_id: r.get(6),
        session_pubkey: r.get(7),
        display_name: r.get(8),
        pid: r.get(9),
        cwd: r.get(10),
        hostname: r.get(11),
        peer_type: r.get(12),
        channel: r.get(13),
        model: r.get(14),
        capabilities: r.get::<_, Json<_>>(15).0,
        status: Status::parse(r.get(16)).unwrap_or(Status::Idle),
        status_source: Source::parse(r.get(17)).unwrap_or(Source::Jsonl),
        status_updated_at: r.get(18),
        summary: r.get(19),
        groups: r.get::<_, Json<_>>(20).0,
        visible: r.get(21),
        profile: r.get::<_, Json<_>>(22).0,
        stats: r.get::<_, Option<Json<_>>>(23).map(|j| j.0),
        state: PresenceState::parse(r.get(24)),
        grace_until: r.get(25),
        hook_token_hash: r.get(26),
        connected_at: r.get(27),
        last_seen_at: r.get(28),
        role: PeerRole::parse(r.get(29)),
        at_least_once: r.get(30),
        last_active_at: r.get(31),
    }
}

//! The moderation family (PROTOCOL-SESSIONS.md §9): privileged members
//! `kick` and `disconnect` presences and `ban` or `unban` members, any
//! member lists the bans. Every rule is cluster-wide: presences are read
//! from the shared table and their sockets closed on whatever node holds
//! them. Revocation by the admin API ends sessions the same way.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::audit::Actor;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::events::{announce, PeerEvent};
use super::sessions::close;
use super::signal::Signal;
use super::{bounded, Ctx};
use crate::protocol::moderation::{ModerationFrame, Selection};
use crate::protocol::wire::{error_frame, Head};
use crate::store::{Member, Mesh, PeerRole, Presence, Role};
use crate::time::iso;

/// Shortest pubkey prefix a target may be (as the 1.37 client allows).
const MIN_PREFIX: usize = 8;

/// What a revoked member is told, on a hello and on its live sockets.
pub fn revoked_message(mesh: &Mesh) -> String {
    let name = if mesh.name.is_empty() {
        &mesh.slug
    } else {
        &mesh.name
    };
    format!("You've been removed from \"{name}\". Contact the mesh owner to rejoin.")
}

/// Ends a revoked member's presences (already deleted by the store):
/// each socket, on any node, gets the `revoked` error, then 4002
/// `banned`; the other members hear `peer_left`.
pub fn end_revoked(ctx: &Ctx, mesh: &Mesh, ended: &[Presence]) {
    let error = error_frame("revoked", &revoked_message(mesh));
    for p in ended {
        ctx.signal(
            p.node_id,
            Signal::Close {
                p: p.id,
                c: p.conn_id,
                code: close::BANNED,
                reason: Some("banned".into()),
                error: Some(error.clone()),
            },
        );
        announce(ctx, PeerEvent::Left, p, None);
    }
}

pub async fn handle(s: &mut Session, frame: ModerationFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    let (mesh, caller) = caller(ctx, me).await?;
    let privileged = is_privileged(&mesh, &caller);
    let forbidden =
        |verb: &str| Refusal::new("forbidden", format!("only owner or admin can {verb}"));
    match frame {
        ModerationFrame::ListBans => list_bans(ctx, &mesh).await,
        ModerationFrame::Kick(sel) if privileged => end_sessions(ctx, me, &caller, sel, true).await,
        ModerationFrame::Disconnect(sel) if privileged => {
            end_sessions(ctx, me, &caller, sel, false).await
        }
        ModerationFrame::Ban { target, reason } if privileged => {
            ban(ctx, &mesh, &caller, &target, reason).await
        }
        ModerationFrame::Unban { target } if privileged => {
            unban(ctx, &mesh, &caller, &target).await
        }
        ModerationFrame::Kick(_) => Err(forbidden("kick")),
        ModerationFrame::Disconnect(_) => Err(forbidden("disconnect")),
        ModerationFrame::Ban { .. } => Err(forbidden("ban")),
        ModerationFrame::Unban { .. } => Err(forbidden("unban")),
    }
}

/// The caller's mesh and member row, read fresh: a member banned a moment
/// ago moderates nothing.
/// An admin, or the mesh's owner (PROTOCOL-SESSIONS.md §9).
pub fn is_privileged(mesh: &Mesh, m: &Member) -> bool {
    m.role == Role::Admin || m.pubkey.eq_ignore_ascii_case(&mesh.owner_pubkey)
}

pub async fn caller(ctx: &Ctx, me: &Presence) -> Result<(Mesh, Member), Refusal> {
    let member = member_of(ctx, me).await?;
    match bounded(ctx.store.mesh_by_id(&me.mesh_id)).await? {
        Some(mesh) => Ok((mesh, member)),
        None => Err(gone()),
    }
}

/// The calling presence's member, read fresh: a member revoked a moment
/// ago acts on nothing, and writes are attributed to its current name.
pub async fn member_of(ctx: &Ctx, me: &Presence) -> Result<Member, Refusal> {
    match bounded(ctx.store.member_by_id(&me.mesh_id, &me.member_id)).await? {
        Some(m) if m.revoked_at.is_none() => Ok(m),
        _ => Err(gone()),
    }
}

fn gone() -> Refusal {
    Refusal::new(
        "forbidden",
        "this session's member is no longer in the mesh",
    )
}

/// Whether `key` is `target`, or starts with a hex `target` of 8+ chars.
fn key_matches(key: &str, target: &str) -> bool {
    key.eq_ignore_ascii_case(target)
        || (target.len() >= MIN_PREFIX
            && target.bytes().all(|b| b.is_ascii_hexdigit())
            && key.len() >= target.len()
            && key[..target.len()].eq_ignore_ascii_case(target))
}

fn selected(p: &Presence, sel: &Selection, now: DateTime<Utc>) -> bool {
    match sel {
        Selection::All => true,
        // Activity is recorded with each node's heartbeat, so a session
        // active within the last beat may look that much older.
        // A `stale` reaching past the start of time selects nothing.
        Selection::Stale(ms) => i64::try_from(*ms)
            .ok()
            .and_then(chrono::Duration::try_milliseconds)
            .and_then(|d| now.checked_sub_signed(d))
            .is_some_and(|cutoff| p.last_active() < cutoff),
        Selection::Target(t) => {
            p.display_name == *t
                || key_matches(&p.member_pubkey, t)
                || p.session_pubkey
                    .as_deref()
                    .is_some_and(|k| key_matches(k, t))
        }
        Selection::None => false,
    }
}

/// `kick` (4001, control-plane presences left alone) or `disconnect`
/// (1000, every selected presence): the presences end at once, without
/// grace, and the others hear `peer_left`.
async fn end_sessions(
    ctx: &Ctx,
    me: &Presence,
    caller: &Member,
    sel: Selection,
    kick: bool,
) -> Handled {
    let all = bounded(ctx.store.list_presences(&me.mesh_id)).await?;
    let mut skipped = Vec::new();
    let mut chosen = Vec::new();
    let now = ctx.now();
    for p in all
        .iter()
        .filter(|p| p.id != me.id && selected(p, &sel, now))
    {
        if kick && p.role == PeerRole::ControlPlane {
            skipped.push(name_of(p));
        } else {
            chosen.push(p.id);
        }
    }
    let ended = bounded(ctx.store.end_presences(&chosen)).await?;
    let stale = matches!(sel, Selection::Stale(_));
    let (code, reason) = match (kick, stale) {
        (true, false) => (close::KICKED, "kicked"),
        (true, true) => (close::KICKED, "kicked_stale"),
        (false, false) => (close::NORMAL, "disconnected"),
        (false, true) => (close::NORMAL, "disconnected_stale"),
    };
    for p in &ended {
        ctx.signal(
            p.node_id,
            Signal::Close {
                p: p.id,
                c: p.conn_id,
                code,
                reason: Some(reason.into()),
                error: None,
            },
        );
        announce(ctx, PeerEvent::Left, p, None);
    }
    let names: Vec<String> = ended.iter().map(name_of).collect();
    if !ended.is_empty() {
        ctx.audit.record(
            &me.mesh_id,
            if kick {
                "peer_kicked"
            } else {
                "peer_disconnected"
            },
            Some(Actor {
                member_id: &caller.id,
                name: &caller.display_name,
            }),
            json!({"presence_ids": ended.iter().map(|p| p.id).collect::<Vec<_>>()}),
        );
    }
    let mut reply = json!({
        "type": if kick { "kick_ack" } else { "disconnect_ack" },
        "kicked": names,
        "affected": names,
    });
    if !skipped.is_empty() {
        reply["skipped_control_plane"] = json!(skipped);
    }
    Ok(Reply::Frame(reply.to_string()))
}

fn name_of(p: &Presence) -> String {
    if p.display_name.is_empty() {
        p.id.to_string()
    } else {
        p.display_name.clone()
    }
}

async fn ban(
    ctx: &Ctx,
    mesh: &Mesh,
    caller: &Member,
    target: &str,
    reason: Option<String>,
) -> Handled {
    if target.is_empty() {
        return Err(Refusal::new("invalid", "ban needs a target"));
    }
    let members = bounded(ctx.store.list_members(&mesh.id)).await?;
    let matching: Vec<&Member> = members
        .iter()
        .filter(|m| m.revoked_at.is_none())
        .filter(|m| m.display_name == target || key_matches(&m.pubkey, target))
        .collect();
    let member = match matching.as_slice() {
        [] => {
            return Err(Refusal::new(
                "not_found",
                format!("no member matches {target}"),
            ))
        }
        [one] => *one,
        _ => {
            return Err(Refusal::new(
                "invalid",
                format!("several members match {target}; give more of the pubkey"),
            ))
        }
    };
    if member.id == caller.id {
        return Err(Refusal::new("invalid", "you cannot ban yourself"));
    }
    let Some(ended) = bounded(ctx.store.revoke_member(&mesh.id, &member.id, ctx.now())).await?
    else {
        return Err(Refusal::new(
            "not_found",
            format!("no member matches {target}"),
        ));
    };
    end_revoked(ctx, mesh, &ended);
    let mut payload = json!({"target": member.display_name, "targetPubkey": member.pubkey,
                             "sessions_closed": ended.len()});
    if let Some(r) = reason {
        payload["reason"] = json!(r);
    }
    ctx.audit.record(
        &mesh.id,
        "member_banned",
        Some(Actor {
            member_id: &caller.id,
            name: &caller.display_name,
        }),
        payload,
    );
    Ok(Reply::Frame(
        json!({"type": "ban_ack", "banned": member.display_name}).to_string(),
    ))
}

async fn unban(ctx: &Ctx, mesh: &Mesh, caller: &Member, target: &str) -> Handled {
    if target.is_empty() {
        return Err(Refusal::new("invalid", "unban needs a target"));
    }
    let members = bounded(ctx.store.list_members(&mesh.id)).await?;
    let Some(member) = members.iter().find(|m| {
        m.revoked_at.is_some()
            && (m.display_name == target || m.pubkey.eq_ignore_ascii_case(target))
    }) else {
        return Err(Refusal::new(
            "not_found",
            format!("no banned member matches {target}"),
        ));
    };
    if !bounded(ctx.store.unrevoke_member(&mesh.id, &member.id)).await? {
        return Err(Refusal::new(
            "not_found",
            format!("no banned member matches {target}"),
        ));
    }
    ctx.audit.record(
        &mesh.id,
        "member_unbanned",
        Some(Actor {
            member_id: &caller.id,
            name: &caller.display_name,
        }),
        json!({"target": member.display_name}),
    );
    Ok(Reply::Frame(
        json!({"type": "unban_ack", "unbanned": member.display_name}).to_string(),
    ))
}

async fn list_bans(ctx: &Ctx, mesh: &Mesh) -> Handled {
    let mut banned: Vec<Member> = bounded(ctx.store.list_members(&mesh.id))
        .await?
        .into_iter()
        .filter(|m| m.revoked_at.is_some())
        .collect();
    banned.sort_by_key(|m| m.revoked_at);
    let bans: Vec<_> = banned
        .iter()
        .map(|m| {
            json!({"name": m.display_name, "pubkey": m.pubkey,
                   "revokedAt": m.revoked_at.map(iso)})
        })
        .collect();
    Ok(Reply::Frame(
        json!({"type": "list_bans_result", "bans": bans}).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::key_matches;

    #[test]
    fn targets_match_keys_whole_or_by_hex_prefixes_of_eight() {
        let key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        assert!(key_matches(key, key));
        assert!(key_matches(key, "D75A9801"));
        assert!(!key_matches(key, "d75a980"), "seven is too short");
        assert!(!key_matches(key, "d75a980z"));
        assert!(!key_matches(key, "075a9801"));
    }
}

//! Relays between peers (PROTOCOL-MESH.md §15–§16): the MCP registry and
//! its events, and the requests relayed to a host presence wherever its
//! socket is (`relays` holds them in flight).

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::audit::Actor;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::events::system_frame;
use super::moderation::{caller, member_of};
use super::relays::{count, Call};
use super::signal::{Signal, Skip};
use super::{bounded, Ctx};
use crate::protocol::ids;
use crate::protocol::relay::{RelayFrame, RelayKind, MAX_MCP_SERVERS};
use crate::protocol::wire::Head;
use crate::store::{McpEntry, McpListed, McpRegistered, Presence};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: RelayFrame, head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    match frame {
        RelayFrame::Register {
            server,
            description,
            tools,
            persistent,
        } => register(ctx, me, server, description, tools, persistent).await,
        RelayFrame::Unregister { server } => unregister(ctx, me, &server).await,
        RelayFrame::List => list(ctx, me).await,
        RelayFrame::Call { server, tool, args } => call(ctx, me, head, server, tool, args).await,
        RelayFrame::CallResponse { call_id, fields } => {
            ctx.relays
                .respond(ctx, me.id, &call_id, RelayKind::Mcp, fields);
            Ok(Reply::None)
        }
        RelayFrame::PeerRequest {
            kind,
            target,
            path,
            pattern,
        } => peer_request(ctx, me, head, kind, &target, path, pattern).await,
        RelayFrame::PeerResponse { kind, fields } => {
            // The relay id is the forward's `_reqId`, echoed back.
            if let Some(id) = head.req_id.as_deref() {
                ctx.relays.respond(ctx, me.id, id, kind, fields);
            }
            Ok(Reply::None)
        }
    }
}

async fn register(
    ctx: &Ctx,
    me: &Presence,
    server: String,
    description: String,
    tools: Vec<Value>,
    persistent: bool,
) -> Handled {
    let max = ctx.config.settings.max_message_bytes;
    let size = Value::Array(tools.clone()).to_string().len();
    if size > max {
        return Err(Refusal::bad_request(format!(
            "`tools` is {size} bytes serialised; at most {max} (max_message_bytes)"
        )));
    }
    let (mesh, member) = caller(ctx, me).await?;
    let privileged = super::moderation::is_privileged(&mesh, &member);
    let names: Vec<Value> = tools.iter().map(|t| t["name"].clone()).collect();
    let entry = McpEntry {
        mesh_id: me.mesh_id.clone(),
        name: server.clone(),
        description: description.clone(),
        tools: Value::Array(tools),
        host_member: member.id.clone(),
        host_presence: Some(me.id),
        hosted_by: me.display_name.clone(),
        persistent,
        offline_since: None,
        created_at: ctx.now(),
    };
    match bounded(ctx.store.register_mcp(&entry, privileged, MAX_MCP_SERVERS)).await? {
        McpRegistered::Registered => {}
        McpRegistered::Taken => {
            return Err(Refusal::new(
                "forbidden",
                format!("MCP server \"{server}\" is registered by another member"),
            ))
        }
        McpRegistered::Full => {
            return Err(Refusal::new(
                "limit",
                format!("the mesh holds {MAX_MCP_SERVERS} MCP servers"),
            ))
        }
        McpRegistered::Ended => return Err(Refusal::new("forbidden", "this session has ended")),
    }
    ctx.audit.record(
        &me.mesh_id,
        "mcp_registered",
        Some(Actor {
            member_id: &member.id,
            name: &member.display_name,
        }),
        json!({"server": server, "tools": names.len()}),
    );
    let data = json!({"serverName": server, "description": description, "tools": names,
        "hostedBy": me.display_name});
    event(
        ctx,
        &me.mesh_id,
        "mcp_registered",
        data,
        Skip::Presence(me.id),
    );
    Ok(Reply::Frame(
        json!({"type": "mcp_register_ack", "serverName": server, "toolCount": names.len()})
            .to_string(),
    ))
}

async fn unregister(ctx: &Ctx, me: &Presence, server: &str) -> Handled {
    let (mesh, member) = caller(ctx, me).await?;
    let privileged = super::moderation::is_privileged(&mesh, &member);
    let gone = bounded(
        ctx.store
            .unregister_mcp(&me.mesh_id, server, &member.id, privileged),
    )
    .await?;
    // Someone else's entry, or none: ignored, as the contract says.
    if let Some(e) = gone {
        ctx.audit.record(
            &me.mesh_id,
            "mcp_unregistered",
            Some(Actor {
                member_id: &member.id,
                name: &member.display_name,
            }),
            json!({"server": e.name}),
        );
        unregistered(ctx, &e);
    }
    Ok(Reply::None)
}

/// `mcp_unregistered` for an entry deleted, to all but its host.
fn unregistered(ctx: &Ctx, e: &McpEntry) {
    let skip = e.host_presence.map_or(Skip::Nobody, Skip::Presence);
    let data = json!({"serverName": e.name, "hostedBy": e.hosted_by});
    event(ctx, &e.mesh_id, "mcp_unregistered", data, skip);
}

fn event(ctx: &Ctx, mesh: &str, name: &str, data: Value, skip: Skip) {
    let frame = system_frame(mesh, name, data, ctx.now());
    ctx.signal_cluster(Signal::Event {
        mesh: mesh.to_string(),
        skip,
        frame,
    });
}

async fn list(ctx: &Ctx, me: &Presence) -> Handled {
    member_of(ctx, me).await?;
    let now = ctx.now();
    let servers: Vec<Value> = bounded(ctx.store.list_mcp(&me.mesh_id))
        .await?
        .iter()
        .map(|l| {
            let tools: Vec<Value> = l
                .entry
                .tools
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| json!({"name": t["name"], "description": t["description"]}))
                .collect();
            let mut v = json!({"name": l.entry.name, "description": l.entry.description,
                "hostedBy": l.entry.hosted_by, "tools": tools, "online": l.online()});
            if !l.online() {
                v["offlineSince"] = iso(l.offline_since(now)).into();
            }
            v
        })
        .collect();
    Ok(Reply::Frame(
        json!({"type": "mcp_list_result", "servers": servers}).to_string(),
    ))
}

/// "5m": how long ago, in the largest whole unit.
fn ago(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - since).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn result_error(error: String) -> Handled {
    Ok(Reply::Frame(
        json!({"type": "mcp_call_result", "error": error}).to_string(),
    ))
}

async fn call(
    ctx: &Ctx,
    me: &Presence,
    head: &Head,
    server: String,
    tool: String,
    args: Value,
) -> Handled {
    member_of(ctx, me).await?;
    let found: Option<McpListed> = bounded(ctx.store.mcp_server(&me.mesh_id, &server)).await?;
    let Some(l) = found else {
        count(ctx, RelayKind::Mcp, "not_found");
        return result_error(format!("MCP server \"{server}\" not found in mesh"));
    };
    let (Some(host), Some(node)) = (l.entry.host_presence, l.host_node) else {
        count(ctx, RelayKind::Mcp, "offline");
        let now = ctx.now();
        return result_error(format!(
            "Server '{server}' is offline — hosted by {} who disconnected {} ago. It will restore when they reconnect.",
            l.entry.hosted_by,
            ago(l.offline_since(now), now)
        ));
    };
    let id = ids::encode(uuid::Uuid::now_v7());
    let forward = json!({"type": "mcp_call_forward", "callId": id, "serverName": server,
        "toolName": tool, "args": args, "callerName": me.display_name})
    .to_string();
    let call = Call {
        caller: me.id,
        req_id: head.req_id.clone(),
        kind: RelayKind::Mcp,
        name: server,
        host,
        host_node: node,
    };
    ctx.relays.start(ctx, id, call, forward);
    Ok(Reply::None)
}

async fn peer_request(
    ctx: &Ctx,
    me: &Presence,
    head: &Head,
    kind: RelayKind,
    target: &str,
    path: String,
    pattern: Option<String>,
) -> Handled {
    member_of(ctx, me).await?;
    let Some(host) = bounded(ctx.store.relay_target(&me.mesh_id, target)).await? else {
        count(ctx, kind, "not_found");
        return Err(Refusal::new(
            "peer_not_found",
            "no online peer has that pubkey",
        ));
    };
    let id = ids::encode(uuid::Uuid::now_v7());
    let mut forward = Map::new();
    let ty = match kind {
        RelayKind::Dir => "peer_dir_request_forward",
        _ => "peer_file_request_forward",
    };
    forward.insert("type".into(), ty.into());
    forward.insert("requesterPubkey".into(), me.pubkey().into());
    forward.insert(kind.path_field().into(), path.clone().into());
    if let Some(p) = pattern {
        forward.insert("pattern".into(), p.into());
    }
    forward.insert("_reqId".into(), id.clone().into());
    let call = Call {
        caller: me.id,
        req_id: head.req_id.clone(),
        kind,
        name: path,
        host: host.presence,
        host_node: host.node,
    };
    ctx.relays
        .start(ctx, id, call, Value::Object(forward).to_string());
    Ok(Reply::None)
}

/// A member's new presence takes over its offline persistent entries,
/// and the mesh hears `mcp_restored` for each.
pub async fn rehost(ctx: &Ctx, p: &Presence) {
    let moved = bounded(
        ctx.store
            .rehost_mcp(&p.mesh_id, &p.member_id, p.id, &p.display_name),
    )
    .await;
    match moved {
        Ok(moved) => {
            for e in moved {
                let data = json!({"serverName": e.name, "hostedBy": e.hosted_by});
                event(ctx, &e.mesh_id, "mcp_restored", data, Skip::Nobody);
            }
        }
        Err(e) => {
            tracing::warn!(presence_id = %p.id, error = %e, "could not restore MCP servers")
        }
    }
}

/// The sweeper's step: entries of ended non-persistent hosts go, with
/// `mcp_unregistered`; persistent ones are stamped offline.
pub async fn sweep(ctx: &Ctx) {
    match bounded(ctx.store.sweep_mcp(ctx.now())).await {
        Ok(gone) => gone.iter().for_each(|e| unregistered(ctx, e)),
        Err(e) => tracing::warn!(node_id = %ctx.node_id, error = %e, "MCP registry sweep failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_takes_the_largest_whole_unit() {
        let now = Utc::now();
        let at = |s: i64| now - chrono::Duration::seconds(s);
        assert_eq!(ago(at(0), now), "0s");
        assert_eq!(ago(at(59), now), "59s");
        assert_eq!(ago(at(300), now), "5m");
        assert_eq!(ago(at(7200), now), "2h");
        assert_eq!(ago(at(3 * 86400), now), "3d");
        assert_eq!(ago(now + chrono::Duration::seconds(5), now), "0s");
    }
}

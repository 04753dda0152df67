//! Tasks (PROTOCOL-MESH.md §3): any member creates and lists; a claim is
//! atomic across the cluster (the store's conditional update); a claimed
//! or done task is completed only by its claimer, its creator or a
//! privileged member. After a claim or complete the reply is every task
//! of the mesh, as the clients expect. Audited by id and size, never the
//! title or result.

use serde_json::{json, Value};

use super::audit::Actor;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::{caller, is_privileged};
use super::{bounded, Ctx};
use crate::protocol::ids;
use crate::protocol::tasks::{TaskFrame, MAX_LISTED};
use crate::protocol::wire::Head;
use crate::store::{Member, Presence, Task, TaskActor, TaskClaim, TaskCompletion, TaskStatus};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: TaskFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    let (mesh, member) = caller(ctx, me).await?;
    let actor = TaskActor {
        member_id: &member.id,
        name: &member.display_name,
        privileged: is_privileged(&mesh, &member),
    };
    match frame {
        TaskFrame::Create {
            title,
            assignee,
            priority,
            tags,
        } => create(ctx, me, &member, title, assignee, priority, tags).await,
        TaskFrame::Claim { task_id } => {
            let claimed = match ids::decode(&task_id) {
                Some(id) => bounded(ctx.store.claim_task(&me.mesh_id, id, actor)).await?,
                None => TaskClaim::NotClaimable,
            };
            if claimed == TaskClaim::NotClaimable {
                return Err(Refusal::new(
                    "task_not_claimable",
                    format!("task {task_id} is unknown or not open"),
                ));
            }
            audit(
                ctx,
                me,
                &member,
                "task_claimed",
                json!({"task_id": task_id}),
            );
            all_tasks(ctx, me).await
        }
        TaskFrame::Complete { task_id, result } => {
            let max = ctx.config.settings.max_message_bytes;
            let size = result.as_deref().map_or(0, str::len);
            if size > max {
                return Err(Refusal::bad_request(format!(
                    "`result` is {size} bytes; at most {max} (max_message_bytes)"
                )));
            }
            let done = match ids::decode(&task_id) {
                Some(id) => {
                    let r = ctx
                        .store
                        .complete_task(&me.mesh_id, id, actor, result.as_deref());
                    bounded(r).await?
                }
                None => TaskCompletion::NotFound,
            };
            match done {
                TaskCompletion::NotFound => Err(Refusal::new(
                    "task_not_found",
                    format!("no task {task_id} in this mesh"),
                )),
                TaskCompletion::Forbidden => Err(Refusal::new(
                    "forbidden",
                    "only its claimer, its creator, an admin or the mesh owner can complete a claimed task",
                )),
                TaskCompletion::Done => {
                    let payload = json!({"task_id": task_id, "result_bytes": size});
                    audit(ctx, me, &member, "task_completed", payload);
                    all_tasks(ctx, me).await
                }
            }
        }
        TaskFrame::List { status, assignee } => {
            let tasks = ctx.store.list_tasks(
                &me.mesh_id,
                status.as_deref(),
                assignee.as_deref(),
                MAX_LISTED,
            );
            Ok(task_list(&bounded(tasks).await?))
        }
    }
}

async fn create(
    ctx: &Ctx,
    me: &Presence,
    member: &Member,
    title: String,
    assignee: Option<String>,
    priority: String,
    tags: Vec<String>,
) -> Handled {
    let now = ctx.now();
    let t = Task {
        id: crate::store::new_message_id(now),
        mesh_id: me.mesh_id.clone(),
        title,
        assignee,
        priority,
        status: TaskStatus::Open,
        tags,
        created_by: member.display_name.clone(),
        created_by_member: member.id.clone(),
        claimed_by: None,
        claimed_by_member: None,
        created_at: now,
        result: None,
    };
    bounded(ctx.store.create_task(&t)).await?;
    let id = ids::encode(t.id);
    let payload = json!({"task_id": id, "title_bytes": t.title.len(), "tags": t.tags.len()});
    audit(ctx, me, member, "task_created", payload);
    Ok(Reply::Frame(
        json!({"type": "task_created", "id": id}).to_string(),
    ))
}

/// Every task of the mesh, as `list_tasks` without filters.
async fn all_tasks(ctx: &Ctx, me: &Presence) -> Handled {
    let tasks = bounded(ctx.store.list_tasks(&me.mesh_id, None, None, MAX_LISTED)).await?;
    Ok(task_list(&tasks))
}

fn task_list(tasks: &[Task]) -> Reply {
    let tasks: Vec<Value> = tasks.iter().map(wire).collect();
    Reply::Frame(json!({"type": "task_list", "tasks": tasks}).to_string())
}

fn wire(t: &Task) -> Value {
    json!({
        "id": ids::encode(t.id),
        "title": t.title,
        "assignee": t.assignee,
        "claimedBy": t.claimed_by,
        "status": t.status.as_str(),
        "priority": t.priority,
        "createdBy": t.created_by,
        "tags": t.tags,
        "createdAt": iso(t.created_at),
        "result": t.result,
    })
}

fn audit(ctx: &Ctx, me: &Presence, member: &Member, event: &'static str, payload: Value) {
    ctx.audit.record(
        &me.mesh_id,
        event,
        Some(Actor {
            member_id: &member.id,
            name: &member.display_name,
        }),
        payload,
    );
}

//! Skills (PROTOCOL-MESH.md §4): any member shares, reads and lists;
//! overwriting or removing another member's skill needs a privileged
//! member. Audited by name and size, never the instructions.

use serde_json::{json, Value};

use super::audit::Actor;
use super::bounded;
use super::dispatch::{Handled, Refusal, Reply, Session};
use super::moderation::{caller, is_privileged};
use crate::protocol::skills::{SkillFrame, MAX_SKILLS_PER_MESH};
use crate::protocol::wire::Head;
use crate::store::{Skill, SkillRemoval, SkillWrite};
use crate::time::iso;

pub async fn handle(s: &mut Session, frame: SkillFrame, _head: &Head) -> Handled {
    let ctx = &s.engine.ctx;
    let me = &s.presence;
    let (mesh, member) = caller(ctx, me).await?;
    let privileged = is_privileged(&mesh, &member);
    let actor = Actor {
        member_id: &member.id,
        name: &member.display_name,
    };
    match frame {
        SkillFrame::Share {
            name,
            description,
            instructions,
            tags,
            manifest,
        } => {
            let max = ctx.config.settings.max_message_bytes;
            let manifest_bytes = if manifest.is_null() {
                0
            } else {
                manifest.to_string().len()
            };
            for (field, size) in [
                ("instructions", instructions.len()),
                ("manifest", manifest_bytes),
            ] {
                if size > max {
                    return Err(Refusal::bad_request(format!(
                        "`{field}` is {size} bytes; at most {max} (max_message_bytes)"
                    )));
                }
            }
            let sk = Skill {
                mesh_id: me.mesh_id.clone(),
                name,
                description,
                instructions,
                tags,
                manifest,
                author: member.display_name.clone(),
                author_member: member.id.clone(),
                created_at: ctx.now(),
            };
            match bounded(ctx.store.share_skill(&sk, privileged, MAX_SKILLS_PER_MESH)).await? {
                SkillWrite::Forbidden => Err(Refusal::new(
                    "forbidden",
                    "another member's skill: only an admin or the mesh owner can overwrite it",
                )),
                SkillWrite::Full => Err(Refusal::new(
                    "limit",
                    format!("the mesh holds {MAX_SKILLS_PER_MESH} skills; remove one first"),
                )),
                SkillWrite::Shared => {
                    ctx.audit.record(
                        &me.mesh_id,
                        "skill_shared",
                        Some(actor),
                        json!({"name": sk.name, "size_bytes": sk.instructions.len()}),
                    );
                    Ok(ack(&sk.name, "shared"))
                }
            }
        }
        SkillFrame::Get { name } => {
            let sk = bounded(ctx.store.get_skill(&me.mesh_id, &name)).await?;
            let skill = sk.as_ref().map_or(Value::Null, |k| {
                json!({"name": k.name, "description": k.description,
                    "instructions": k.instructions, "tags": k.tags, "author": k.author,
                    "manifest": k.manifest, "createdAt": iso(k.created_at)})
            });
            Ok(Reply::Frame(
                json!({"type": "skill_data", "skill": skill}).to_string(),
            ))
        }
        SkillFrame::List { query } => {
            let all = ctx
                .store
                .list_skills(&me.mesh_id, query.as_deref(), MAX_SKILLS_PER_MESH);
            let skills: Vec<Value> = bounded(all)
                .await?
                .iter()
                .map(|k| {
                    json!({"name": k.name, "description": k.description, "tags": k.tags,
                        "author": k.author, "createdAt": iso(k.created_at)})
                })
                .collect();
            Ok(Reply::Frame(
                json!({"type": "skill_list", "skills": skills}).to_string(),
            ))
        }
        SkillFrame::Remove { name } => {
            let removed = ctx
                .store
                .remove_skill(&me.mesh_id, &name, &member.id, privileged);
            match bounded(removed).await? {
                SkillRemoval::Forbidden => Err(Refusal::new(
                    "forbidden",
                    "another member's skill: only an admin or the mesh owner can remove it",
                )),
                SkillRemoval::NotFound => Ok(ack(&name, "not_found")),
                SkillRemoval::Removed => {
                    ctx.audit.record(
                        &me.mesh_id,
                        "skill_removed",
                        Some(actor),
                        json!({"name": name}),
                    );
                    Ok(ack(&name, "removed"))
                }
            }
        }
    }
}

fn ack(name: &str, action: &str) -> Reply {
    Reply::Frame(json!({"type": "skill_ack", "name": name, "action": action}).to_string())
}

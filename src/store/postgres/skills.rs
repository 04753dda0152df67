//! Skills in Postgres. A share runs under a per-mesh advisory lock: the
//! author check, the cap count and the upsert see one state.

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::types::Json;

use super::{map_err, PgStore};
use crate::store::*;

fn skill(r: &tokio_postgres::Row) -> Skill {
    Skill {
        mesh_id: r.get(0),
        name: r.get(1),
        description: r.get(2),
        instructions: r.get(3),
        tags: r.get::<_, Json<Vec<String>>>(4).0,
        manifest: r
            .get::<_, Option<Json<Value>>>(5)
            .map_or(Value::Null, |j| j.0),
        author: r.get(6),
        author_member: r.get(7),
        created_at: r.get(8),
    }
}

const SKILL_SELECT: &str = "SELECT mesh_id, name, description, instructions, tags, manifest, \
    author, author_member, created_at FROM skill";

#[async_trait]
impl SkillStore for PgStore {
    async fn share_skill(
        &self,
        sk: &Skill,
        privileged: bool,
        max: usize,
    ) -> StoreResult<SkillWrite> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('skill:' || $1, 0))",
            &[&sk.mesh_id],
        )
        .await
        .map_err(map_err)?;
        let old = tx
            .query_opt(
                "SELECT author_member FROM skill WHERE mesh_id = $1 AND name = $2",
                &[&sk.mesh_id, &sk.name],
            )
            .await
            .map_err(map_err)?;
        match old {
            Some(r) if r.get::<_, String>(0) != sk.author_member && !privileged => {
                return Ok(SkillWrite::Forbidden)
            }
            Some(_) => {}
            None => {
                let n: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM skill WHERE mesh_id = $1",
                        &[&sk.mesh_id],
                    )
                    .await
                    .map_err(map_err)?
                    .get(0);
                if n as usize >= max {
                    return Ok(SkillWrite::Full);
                }
            }
        }
        let manifest = (!sk.manifest.is_null()).then_some(Json(&sk.manifest));
        tx.execute(
            "INSERT INTO skill (mesh_id, name, description, instructions, tags, manifest, author,
                                author_member, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (mesh_id, name) DO UPDATE SET description = excluded.description,
               instructions = excluded.instructions, tags = excluded.tags,
               manifest = excluded.manifest, author = excluded.author,
               author_member = excluded.author_member",
            &[
                &sk.mesh_id,
                &sk.name,
                &sk.description,
                &sk.instructions,
                &Json(&sk.tags),
                &manifest,
                &sk.author,
                &sk.author_member,
                &sk.created_at,
            ],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(SkillWrite::Shared)
    }

    async fn get_skill(&self, mesh_id: &str, name: &str) -> StoreResult<Option<Skill>> {
        let c = self.client().await?;
        let sql = format!("{SKILL_SELECT} WHERE mesh_id = $1 AND name = $2");
        let row = c
            .query_opt(&sql, &[&mesh_id, &name])
            .await
            .map_err(map_err)?;
        Ok(row.as_ref().map(skill))
    }

    async fn list_skills(
        &self,
        mesh_id: &str,
        query: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Skill>> {
        let c = self.client().await?;
        let sql = format!(
            "{SKILL_SELECT} WHERE mesh_id = $1 AND ($2::text IS NULL
                 OR strpos(lower(name), lower($2)) > 0
                 OR strpos(lower(description), lower($2)) > 0
                 OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(tags) t
                            WHERE strpos(lower(t), lower($2)) > 0))
             ORDER BY name COLLATE \"C\" LIMIT $3"
        );
        let rows = c
            .query(&sql, &[&mesh_id, &query, &(limit as i64)])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(skill).collect())
    }

    async fn remove_skill(
        &self,
        mesh_id: &str,
        name: &str,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<SkillRemoval> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "WITH t AS (SELECT 1 FROM skill WHERE mesh_id = $1 AND name = $2),
                      d AS (DELETE FROM skill WHERE mesh_id = $1 AND name = $2
                              AND ($4 OR author_member = $3) RETURNING 1)
                 SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM d)",
                &[&mesh_id, &name, &member_id, &privileged],
            )
            .await
            .map_err(map_err)?;
        let (found, gone): (i64, i64) = (row.get(0), row.get(1));
        Ok(match (found, gone) {
            (0, _) => SkillRemoval::NotFound,
            (_, 0) => SkillRemoval::Forbidden,
            _ => SkillRemoval::Removed,
        })
    }
}

//! Tasks in Postgres: claims and completions are single conditional
//! updates, so they need no lock and race safely across nodes.

use async_trait::async_trait;
use tokio_postgres::types::Json;
use uuid::Uuid;

use super::{map_err, PgStore};
use crate::store::*;

const TASK_COLS: &str = "id, mesh_id, title, assignee, priority, status, tags, created_by, \
    created_by_member, claimed_by, claimed_by_member, created_at, result";

fn task(r: &tokio_postgres::Row) -> Task {
    Task {
        id: r.get(0),
        mesh_id: r.get(1),
        title: r.get(2),
        assignee: r.get(3),
        priority: r.get(4),
        status: TaskStatus::parse(r.get(5)).unwrap_or(TaskStatus::Open),
        tags: r.get::<_, Json<Vec<String>>>(6).0,
        created_by: r.get(7),
        created_by_member: r.get(8),
        claimed_by: r.get(9),
        claimed_by_member: r.get(10),
        created_at: r.get(11),
        result: r.get(12),
    }
}

#[async_trait]
impl TaskStore for PgStore {
    async fn create_task(&self, t: &Task) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO task (id, mesh_id, title, assignee, priority, status, tags, created_by,
                               created_by_member, claimed_by, claimed_by_member, created_at, result)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &t.id,
                &t.mesh_id,
                &t.title,
                &t.assignee,
                &t.priority,
                &t.status.as_str(),
                &Json(&t.tags),
                &t.created_by,
                &t.created_by_member,
                &t.claimed_by,
                &t.claimed_by_member,
                &t.created_at,
                &t.result,
            ],
        )
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn claim_task(
        &self,
        mesh_id: &str,
        id: Uuid,
        by: TaskActor<'_>,
    ) -> StoreResult<TaskClaim> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE task SET status = 'claimed', claimed_by = $3, claimed_by_member = $4
                 WHERE mesh_id = $1 AND id = $2 AND status = 'open'",
                &[&mesh_id, &id, &by.name, &by.member_id],
            )
            .await
            .map_err(map_err)?;
        Ok(if n == 1 {
            TaskClaim::Won
        } else {
            TaskClaim::NotClaimable
        })
    }

    async fn complete_task(
        &self,
        mesh_id: &str,
        id: Uuid,
        by: TaskActor<'_>,
        result: Option<&str>,
    ) -> StoreResult<TaskCompletion> {
        let c = self.client().await?;
        // One statement: the rule is checked against the row it updates,
        // and the row's existence tells a refusal from an unknown task.
        let row = c
            .query_one(
                "WITH t AS (SELECT id FROM task WHERE mesh_id = $1 AND id = $2),
                      u AS (UPDATE task SET status = 'done', result = $5
                            WHERE mesh_id = $1 AND id = $2
                              AND (status = 'open' OR $4 OR created_by_member = $3
                                   OR claimed_by_member = $3)
                            RETURNING id)
                 SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM u)",
                &[&mesh_id, &id, &by.member_id, &by.privileged, &result],
            )
            .await
            .map_err(map_err)?;
        let (found, done): (i64, i64) = (row.get(0), row.get(1));
        Ok(match (found, done) {
            (0, _) => TaskCompletion::NotFound,
            (_, 0) => TaskCompletion::Forbidden,
            _ => TaskCompletion::Done,
        })
    }

    async fn count_tasks(&self, mesh_id: &str) -> StoreResult<(u64, u64, u64)> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'open'),
                        count(*) FILTER (WHERE status = 'claimed'),
                        count(*) FILTER (WHERE status = 'done')
                 FROM task WHERE mesh_id = $1",
                &[&mesh_id],
            )
            .await
            .map_err(map_err)?;
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        Ok((n(0), n(1), n(2)))
    }

    async fn list_tasks(
        &self,
        mesh_id: &str,
        status: Option<&str>,
        assignee: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Task>> {
        let c = self.client().await?;
        let sql = format!(
            "SELECT {TASK_COLS} FROM task
             WHERE mesh_id = $1 AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR assignee = $3)
             ORDER BY created_at DESC, seq DESC LIMIT $4"
        );
        let rows = c
            .query(&sql, &[&mesh_id, &status, &assignee, &(limit as i64)])
            .await
            .map_err(map_err)?;
        Ok(rows.iter().map(task).collect())
    }
}

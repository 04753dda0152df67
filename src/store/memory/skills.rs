//! Skills of the memory store.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::*;

/// mesh → name → skill; a `BTreeMap` lists names in order.
pub(super) type Skills = std::collections::HashMap<String, BTreeMap<String, Skill>>;

/// `list_skills`' rule: a case-insensitive substring of the name, the
/// description or a tag.
fn matches(s: &Skill, q: &str) -> bool {
    let q = q.to_lowercase();
    s.name.to_lowercase().contains(&q)
        || s.description.to_lowercase().contains(&q)
        || s.tags.iter().any(|t| t.to_lowercase().contains(&q))
}

#[async_trait]
impl SkillStore for MemoryStore {
    async fn share_skill(
        &self,
        sk: &Skill,
        privileged: bool,
        max: usize,
    ) -> StoreResult<SkillWrite> {
        let mut s = self.lock();
        let skills = s.skills.entry(sk.mesh_id.clone()).or_default();
        let created_at = match skills.get(&sk.name) {
            Some(old) if old.author_member != sk.author_member && !privileged => {
                return Ok(SkillWrite::Forbidden)
            }
            Some(old) => old.created_at,
            None if skills.len() >= max => return Ok(SkillWrite::Full),
            None => sk.created_at,
        };
        skills.insert(
            sk.name.clone(),
            Skill {
                created_at,
                ..sk.clone()
            },
        );
        Ok(SkillWrite::Shared)
    }

    async fn get_skill(&self, mesh_id: &str, name: &str) -> StoreResult<Option<Skill>> {
        let s = self.lock();
        Ok(s.skills.get(mesh_id).and_then(|k| k.get(name)).cloned())
    }

    async fn list_skills(
        &self,
        mesh_id: &str,
        query: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Skill>> {
        let s = self.lock();
        Ok(s.skills
            .get(mesh_id)
            .into_iter()
            .flat_map(|k| k.values())
            .filter(|sk| query.is_none_or(|q| matches(sk, q)))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn remove_skill(
        &self,
        mesh_id: &str,
        name: &str,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<SkillRemoval> {
        let mut s = self.lock();
        let Some(skills) = s.skills.get_mut(mesh_id) else {
            return Ok(SkillRemoval::NotFound);
        };
        match skills.get(name) {
            None => Ok(SkillRemoval::NotFound),
            Some(sk) if sk.author_member != member_id && !privileged => Ok(SkillRemoval::Forbidden),
            Some(_) => {
                skills.remove(name);
                Ok(SkillRemoval::Removed)
            }
        }
    }
}

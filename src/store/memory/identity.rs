//! Meshes, members and invites of the memory store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::presence::remove_presence;
use super::MemoryStore;
use crate::store::*;

#[async_trait]
impl IdentityStore for MemoryStore {
    async fn insert_mesh(&self, mesh: &Mesh) -> StoreResult<()> {
        let mut s = self.lock();
        if s.slug_index.contains_key(&mesh.slug) || s.meshes.contains_key(&mesh.id) {
            return Err(StoreError::Conflict("mesh slug already exists"));
        }
        s.slug_index.insert(mesh.slug.clone(), mesh.id.clone());
        s.meshes.insert(mesh.id.clone(), mesh.clone());
        Ok(())
    }

    async fn list_meshes(&self) -> StoreResult<Vec<Mesh>> {
        let mut v: Vec<Mesh> = self.lock().meshes.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.slug.cmp(&b.slug)));
        Ok(v)
    }

    async fn mesh_by_slug(&self, slug: &str) -> StoreResult<Option<Mesh>> {
        let s = self.lock();
        Ok(s.slug_index
            .get(slug)
            .and_then(|id| s.meshes.get(id))
            .cloned())
    }

    async fn mesh_by_id(&self, id: &str) -> StoreResult<Option<Mesh>> {
        Ok(self.lock().meshes.get(id).cloned())
    }

    async fn insert_member(&self, member: &Member) -> StoreResult<()> {
        let mut s = self.lock();
        let key = (member.mesh_id.clone(), member.pubkey.clone());
        if s.pubkey_index.contains_key(&key) || s.members.contains_key(&member.id) {
            return Err(StoreError::Conflict(
                "pubkey is already a member of this mesh",
            ));
        }
        s.pubkey_index.insert(key, member.id.clone());
        s.members.insert(member.id.clone(), member.clone());
        Ok(())
    }

    async fn list_members(&self, mesh_id: &str) -> StoreResult<Vec<Member>> {
        let mut v: Vec<Member> = self
            .lock()
            .members
            .values()
            .filter(|m| m.mesh_id == mesh_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn member_by_id(&self, mesh_id: &str, member_id: &str) -> StoreResult<Option<Member>> {
        Ok(self
            .lock()
            .members
            .get(member_id)
            .filter(|m| m.mesh_id == mesh_id)
            .cloned())
    }

    async fn member_by_pubkey(&self, mesh_id: &str, pubkey: &str) -> StoreResult<Option<Member>> {
        let s = self.lock();
        Ok(s.pubkey_index
            .get(&(mesh_id.to_string(), pubkey.to_string()))
            .and_then(|id| s.members.get(id))
            .cloned())
    }

    async fn revoke_member(
        &self,
        mesh_id: &str,
        member_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Vec<Presence>>> {
        let mut s = self.lock();
        match s.members.get_mut(member_id) {
            Some(m) if m.mesh_id == mesh_id && m.revoked_at.is_none() => m.revoked_at = Some(now),
            _ => return Ok(None),
        }
        let ids: Vec<uuid::Uuid> = s
            .presences
            .values()
            .filter(|p| p.member_id == member_id)
            .map(|p| p.id)
            .collect();
        let mut ended: Vec<Presence> = ids
            .into_iter()
            .filter_map(|id| remove_presence(&mut s, id))
            .collect();
        ended.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then(a.id.cmp(&b.id)));
        s.queue.drop_member(member_id);
        Ok(Some(ended))
    }

    async fn unrevoke_member(&self, mesh_id: &str, member_id: &str) -> StoreResult<bool> {
        Ok(match self.lock().members.get_mut(member_id) {
            Some(m) if m.mesh_id == mesh_id && m.revoked_at.is_some() => {
                m.revoked_at = None;
                true
            }
            _ => false,
        })
    }

    async fn insert_invite(&self, invite: &Invite) -> StoreResult<()> {
        let mut s = self.lock();
        if s.invites.contains_key(&invite.token) {
            return Err(StoreError::Conflict("invite token already exists"));
        }
        s.invites.insert(invite.token.clone(), invite.clone());
        Ok(())
    }

    async fn revoke_invite(&self, token: &str, now: DateTime<Utc>) -> StoreResult<Option<String>> {
        let mut s = self.lock();
        match s.invites.get_mut(token) {
            Some(inv) if inv.revoked_at.is_none() => {
                inv.revoked_at = Some(now);
                Ok(Some(inv.mesh_id.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn redeem_invite(&self, r: &Redeem) -> StoreResult<Result<Redeemed, InviteRefusal>> {
        let mut s = self.lock();
        let Some(inv) = s.invites.get(&r.token) else {
            return Ok(Err(InviteRefusal::NotFound));
        };
        if inv.mesh_id != r.mesh_id {
            return Ok(Err(InviteRefusal::MeshMismatch));
        }
        if inv.revoked_at.is_some() {
            return Ok(Err(InviteRefusal::Revoked));
        }
        if inv.expires_at <= r.now {
            return Ok(Err(InviteRefusal::Expired));
        }
        let role = inv.role;
        let key = (r.mesh_id.clone(), r.pubkey.clone());
        if let Some(id) = s.pubkey_index.get(&key) {
            return Ok(Ok(Redeemed {
                member_id: id.clone(),
                already_member: true,
            }));
        }
        let inv = s.invites.get_mut(&r.token).expect("checked above");
        if inv.used_count >= inv.max_uses {
            return Ok(Err(InviteRefusal::Exhausted));
        }
        inv.used_count += 1;
        let member = Member {
            id: r.new_member_id.clone(),
            mesh_id: r.mesh_id.clone(),
            pubkey: r.pubkey.clone(),
            display_name: r.display_name.clone(),
            role,
            default_groups: Vec::new(),
            revoked_at: None,
            created_at: r.now,
        };
        s.pubkey_index.insert(key, member.id.clone());
        s.members.insert(member.id.clone(), member);
        Ok(Ok(Redeemed {
            member_id: r.new_member_id.clone(),
            already_member: false,
        }))
    }
}

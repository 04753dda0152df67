//! Inbound webhooks of the memory store.

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::*;

/// mesh → active webhooks, oldest first.
pub(super) type Webhooks = std::collections::HashMap<String, Vec<Webhook>>;

#[async_trait]
impl WebhookStore for MemoryStore {
    async fn create_webhook(&self, w: &Webhook, max: usize) -> StoreResult<WebhookCreated> {
        let mut s = self.lock();
        let hooks = s.webhooks.entry(w.mesh_id.clone()).or_default();
        if hooks.iter().any(|h| h.name == w.name) {
            return Ok(WebhookCreated::Exists);
        }
        if hooks.len() >= max {
            return Ok(WebhookCreated::Full);
        }
        hooks.push(w.clone());
        Ok(WebhookCreated::Created)
    }

    async fn list_webhooks(&self, mesh_id: &str) -> StoreResult<Vec<Webhook>> {
        Ok(self
            .lock()
            .webhooks
            .get(mesh_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn delete_webhook(
        &self,
        mesh_id: &str,
        name: &str,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<WebhookDeleted> {
        let mut s = self.lock();
        let Some(hooks) = s.webhooks.get_mut(mesh_id) else {
            return Ok(WebhookDeleted::NotFound);
        };
        let Some(i) = hooks.iter().position(|h| h.name == name) else {
            return Ok(WebhookDeleted::NotFound);
        };
        if !privileged && hooks[i].created_by_member != member_id {
            return Ok(WebhookDeleted::Forbidden);
        }
        hooks.remove(i);
        Ok(WebhookDeleted::Deleted)
    }
}

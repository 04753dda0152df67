//! Vectors of the memory store.

use async_trait::async_trait;
use uuid::Uuid;

use super::MemoryStore;
use crate::store::*;

/// mesh → points in the order stored.
pub(super) type Points = std::collections::HashMap<String, Vec<Point>>;

#[async_trait]
impl VectorStore for MemoryStore {
    async fn store_point(
        &self,
        p: &Point,
        max_collections: usize,
        max_points: usize,
    ) -> StoreResult<PointStored> {
        let mut s = self.lock();
        let points = s.points.entry(p.mesh_id.clone()).or_default();
        let new_collection = !points.iter().any(|x| x.collection == p.collection);
        let collections: std::collections::HashSet<&str> =
            points.iter().map(|x| x.collection.as_str()).collect();
        if points.len() >= max_points || (new_collection && collections.len() >= max_collections) {
            return Ok(PointStored::Full);
        }
        points.push(p.clone());
        Ok(PointStored::Stored)
    }

    async fn search_points(
        &self,
        mesh_id: &str,
        collection: &str,
        query: &str,
        limit: usize,
    ) -> StoreResult<Vec<Point>> {
        let q = query.to_lowercase();
        let s = self.lock();
        Ok(s.points
            .get(mesh_id)
            .into_iter()
            .flatten()
            .filter(|p| p.collection == collection && p.text.to_lowercase().contains(&q))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn delete_point(
        &self,
        mesh_id: &str,
        collection: &str,
        id: Uuid,
        member_id: &str,
        privileged: bool,
    ) -> StoreResult<PointDeleted> {
        let mut s = self.lock();
        let Some(points) = s.points.get_mut(mesh_id) else {
            return Ok(PointDeleted::NotFound);
        };
        let Some(i) = points
            .iter()
            .position(|p| p.id == id && p.collection == collection)
        else {
            return Ok(PointDeleted::NotFound);
        };
        if !privileged && points[i].stored_by_member != member_id {
            return Ok(PointDeleted::Forbidden);
        }
        points.remove(i);
        Ok(PointDeleted::Deleted)
    }

    async fn list_collections(&self, mesh_id: &str) -> StoreResult<Vec<String>> {
        let s = self.lock();
        let names: std::collections::BTreeSet<String> = s
            .points
            .get(mesh_id)
            .into_iter()
            .flatten()
            .map(|p| p.collection.clone())
            .collect();
        Ok(names.into_iter().collect())
    }
}

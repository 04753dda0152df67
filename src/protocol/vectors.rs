//! Vectors (PROTOCOL-MESH.md §11), like-for-like with the reference:
//! text points in named collections, searched by case-insensitive
//! substring. No embeddings.

use serde_json::Value;

use super::fields::{key, string};
use super::wire::{Family, FrameSpec};

pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;
pub const MAX_COLLECTIONS: usize = 100;
pub const MAX_POINTS: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub enum VectorFrame {
    Store {
        collection: String,
        text: String,
        metadata: serde_json::Map<String, Value>,
    },
    Search {
        collection: String,
        query: String,
        limit: usize,
    },
    Delete {
        collection: String,
        id: String,
    },
    ListCollections,
}

/// `Notes` and `notes` are one collection: lower-cased, every character
/// outside `[a-z0-9_]` made `_`.
pub fn normalize(name: &str) -> String {
    name.chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn collection(v: &Value) -> Result<String, String> {
    key(v, "collection").map(|c| normalize(&c))
}

impl Family for VectorFrame {
    const FRAMES: &'static [FrameSpec] = &[
        FrameSpec::request("vector_store"),
        FrameSpec::request("vector_search"),
        FrameSpec::fire_and_forget("vector_delete"),
        FrameSpec::request("list_collections"),
    ];

    fn parse(ty: &str, text: &str) -> Result<Self, String> {
        let mut v: Value = serde_json::from_str(text).map_err(|e| format!("invalid frame: {e}"))?;
        Ok(match ty {
            // `text` and `metadata` are bounded by max_message_bytes (the
            // engine's).
            "vector_store" => VectorFrame::Store {
                collection: collection(&v)?,
                text: string(&v, "text")?,
                metadata: match v.get_mut("metadata").map(Value::take) {
                    None | Some(Value::Null) => Default::default(),
                    Some(Value::Object(m)) => m,
                    Some(_) => return Err("`metadata` must be an object".into()),
                },
            },
            "vector_search" => VectorFrame::Search {
                collection: collection(&v)?,
                query: string(&v, "query")?,
                limit: match v.get("limit") {
                    None | Some(Value::Null) => DEFAULT_LIMIT,
                    Some(Value::Number(n)) => n
                        .as_f64()
                        .filter(|x| x.is_finite())
                        .map_or(DEFAULT_LIMIT, |x| x.clamp(1.0, MAX_LIMIT as f64) as usize),
                    Some(_) => return Err("`limit` must be a number".into()),
                },
            },
            "vector_delete" => VectorFrame::Delete {
                collection: collection(&v)?,
                id: string(&v, "id")?,
            },
            "list_collections" => VectorFrame::ListCollections,
            other => unreachable!("`{other}` is not a vector frame"),
        })
    }

    fn ty(&self) -> &'static str {
        match self {
            VectorFrame::Store { .. } => "vector_store",
            VectorFrame::Search { .. } => "vector_search",
            VectorFrame::Delete { .. } => "vector_delete",
            VectorFrame::ListCollections => "list_collections",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_are_normalized_and_limits_clamped() {
        assert_eq!(normalize("My Notes-2026"), "my_notes_2026");
        assert_eq!(normalize("Ünï"), "_n_");
        let s = |t: &str| VectorFrame::parse("vector_search", t);
        assert!(matches!(
            s(r#"{"collection":"N","query":"q","limit":1000}"#).unwrap(),
            VectorFrame::Search { limit: 100, .. }
        ));
        assert!(matches!(
            s(r#"{"collection":"N","query":"q","limit":0}"#).unwrap(),
            VectorFrame::Search { limit: 1, .. }
        ));
        assert!(s(r#"{"collection":"","query":"q"}"#).is_err());
        assert!(VectorFrame::parse(
            "vector_store",
            r#"{"collection":"c","text":"t","metadata":[1]}"#
        )
        .is_err());
    }
}

//! Field readers the mesh-data families share (PROTOCOL-MESH.md §0): each
//! returns the value or the `bad_request` sentence naming the field.

use serde_json::Value;

/// Key-like strings: state `key`, skill `name`, `collection`, each tag, …
pub const MAX_KEY: usize = 256;
/// Items of any array field.
pub const MAX_ITEMS: usize = 256;

/// A required string, any length (bounded later by max_message_bytes).
pub fn string(v: &Value, field: &str) -> Result<String, String> {
    match v.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("`{field}` must be a string")),
    }
}

/// A required non-empty string, any length (bounded later by
/// max_message_bytes).
pub fn non_empty(v: &Value, field: &str) -> Result<String, String> {
    match v.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("`{field}` must be a non-empty string")),
    }
}

/// A required string of at most `max` characters, empty allowed.
pub fn limited(v: &Value, field: &str, max: usize) -> Result<String, String> {
    match v.get(field) {
        Some(Value::String(s)) if s.chars().count() <= max => Ok(s.clone()),
        _ => Err(format!(
            "`{field}` must be a string of at most {max} characters"
        )),
    }
}

/// A required string of 1–`max` characters.
pub fn bounded(v: &Value, field: &str, max: usize) -> Result<String, String> {
    match v.get(field) {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Ok(s.clone()),
        _ => Err(format!("`{field}` must be a string of 1-{max} characters")),
    }
}

/// A key-like string: 1–256 characters.
pub fn key(v: &Value, field: &str) -> Result<String, String> {
    bounded(v, field, MAX_KEY)
}

/// An optional string of at most `max` characters; null counts as absent.
pub fn opt_string(v: &Value, field: &str, max: usize) -> Result<Option<String>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(_) => Err(format!(
            "`{field}` must be a string of at most {max} characters"
        )),
    }
}

/// An optional array of key-like strings (tags, `filesRead`, `keys`, …);
/// absent or null is empty.
pub fn keys(v: &Value, field: &str) -> Result<Vec<String>, String> {
    let bad = || {
        format!(
            "`{field}` must be an array of at most {MAX_ITEMS} strings of 1-{MAX_KEY} characters"
        )
    };
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) if a.len() <= MAX_ITEMS => a
            .iter()
            .map(|t| match t {
                Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_KEY => Ok(s.clone()),
                _ => Err(bad()),
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

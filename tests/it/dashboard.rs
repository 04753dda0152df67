//! `deploy/grafana/claudemesh-broker.json` against a live node: every
//! metric a panel (or template variable) queries must be in `/metrics`,
//! used the way its type allows, and the dashboard must stay importable.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use crate::harness::{world, Backend, Peer};
use crate::messaging::{expect_push, send};

const DASHBOARD: &str = "deploy/grafana/claudemesh-broker.json";

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel, rows' nested (collapsed) panels included.
fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = v["panels"].as_array().into_iter().flatten().collect();
    while let Some(p) = stack.pop() {
        stack.extend(p["panels"].as_array().into_iter().flatten());
        out.push(p);
    }
    out
}

/// (where, PromQL) for every panel target and every query variable.
fn queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                let title = p["title"].as_str().unwrap_or("?");
                out.push((format!("panel `{title}`"), expr.to_string()));
            }
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = &var["query"];
        if let Some(q) = q.as_str().or_else(|| q["query"].as_str()) {
            if var["type"] == "query" {
                let name = var["name"].as_str().unwrap_or("?");
                out.push((format!("variable `{name}`"), q.to_string()));
            }
        }
    }
    out
}

/// One reference to a broker metric in a query.
struct Use {
    name: String,
    /// Directly the argument of `rate(`, `irate(` or `increase(`.
    in_rate: bool,
}

/// Identifiers starting with `broker_`, outside string literals.
fn metric_uses(expr: &str) -> Vec<Use> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if is_ident(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let preceded_by_var = start > 0 && chars[start - 1] == '$';
            if word.starts_with("broker_") && !preceded_by_var {
                let before: String = chars[..start].iter().collect();
                let before = before.trim_end();
                out.push(Use {
                    name: word,
                    in_rate: before.ends_with("rate(") || before.ends_with("increase("),
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// `# TYPE` families (name → type) and the names of all sample lines.
fn parse_exposition(text: &str) -> (BTreeMap<String, String>, HashSet<String>) {
    let mut families = BTreeMap::new();
    let mut samples = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    (families, samples)
}

/// The family a series name belongs to and that family's type, if the
/// exposition declares one whose type matches the name's suffix.
fn family_of<'a>(
    name: &'a str,
    families: &'a BTreeMap<String, String>,
) -> Option<(&'a str, &'a str)> {
    const SUFFIXES: &[(&str, &[&str])] = &[
        ("_total", &["counter"]),
        ("_bucket", &["histogram"]),
        ("_sum", &["histogram", "summary"]),
        ("_count", &["histogram", "summary"]),
        ("_info", &["info"]),
    ];
    if let Some(kind) = families.get(name) {
        if kind == "gauge" || kind == "unknown" {
            return Some((name, kind));
        }
    }
    SUFFIXES.iter().find_map(|(suffix, kinds)| {
        let base = name.strip_suffix(suffix)?;
        let (base, kind) = families.get_key_value(base)?;
        kinds
            .contains(&kind.as_str())
            .then_some((base.as_str(), kind.as_str()))
    })
}

#[test]
fn dashboard_panels_have_unique_ids_and_positions() {
    let dash = dashboard();
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let all = panels(&dash);
    assert!(!all.is_empty(), "no panels");
    let mut ids = HashSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("`{title}` has no numeric id"));
        assert!(
            ids.insert(id),
            "panel id {id} used twice (again by `{title}`)"
        );
        let g = &p["gridPos"];
        let [h, w, x, _y] = ["h", "w", "x", "y"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("`{title}`: gridPos.{k} missing"))
        });
        assert!(
            h > 0 && w > 0 && x + w <= 24,
            "`{title}`: gridPos {g} off the 24-column grid"
        );
        if p["type"] != "row" {
            let targets = p["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert!(
                targets
                    .iter()
                    .any(|t| t["expr"].as_str().is_some_and(|e| !e.trim().is_empty())),
                "`{title}` queries nothing"
            );
            let refs: HashSet<_> = targets.iter().map(|t| t["refId"].to_string()).collect();
            assert_eq!(refs.len(), targets.len(), "`{title}`: refIds repeat");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_only_exported_metrics() {
    let dash = dashboard();
    let queries = queries(&dash);
    let uses: Vec<(&str, &str, Use)> = queries
        .iter()
        .flat_map(|(at, expr)| {
            metric_uses(expr)
                .into_iter()
                .map(move |u| (at.as_str(), expr.as_str(), u))
        })
        .collect();
    assert!(
        uses.len() >= 20,
        "found only {} metric references",
        uses.len()
    );

    // A Postgres node (so the pool gauge exists) with a little traffic, so
    // labelled families have samples: hellos, a send and its push, HTTP
    // requests (the admin calls of `world`, /health), a hook post.
    let w = world(Backend::Postgres).await;
    let url = w.node.ws_url();
    let (mut a, _) = Peer::join(&url, &w.alice, "a1").await;
    let (mut b, _) = Peer::join(&url, &w.bob, "b1").await;
    send(&mut a, "d1", &w.bob.keys.public_hex, "now", "Y2lwaGVy").await;
    expect_push(&mut b).await;
    let health = reqwest::get(w.node.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let hook = serde_json::json!({"cwd": "/x", "pid": 1, "status": "idle"});
    w.node
        .http
        .post(w.node.url("/hook/set-status"))
        .json(&hook)
        .send()
        .await
        .unwrap();
    let r = reqwest::get(w.node.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let (families, samples) = parse_exposition(&text);

    let mut problems = BTreeSet::new();
    for (at, expr, u) in &uses {
        let Some((family, kind)) = family_of(&u.name, &families) else {
            problems.insert(format!(
                "{at}: `{}` is not exported by /metrics\n    {expr}",
                u.name
            ));
            continue;
        };
        if !samples.contains(&u.name) {
            problems.insert(format!(
                "{at}: `{}` (family `{family}`) has no sample",
                u.name
            ));
        }
        let cumulative = matches!(kind, "counter" | "histogram" | "summary");
        if cumulative != u.in_rate {
            let want = if cumulative {
                "inside rate()/increase()"
            } else {
                "as is, not inside rate()/increase()"
            };
            problems.insert(format!(
                "{at}: `{}` is a {kind}: use it {want}\n    {expr}",
                u.name
            ));
        }
    }
    for (at, expr) in &queries {
        if expr.contains("histogram_quantile(") && !expr.contains("_bucket") {
            problems.insert(format!(
                "{at}: histogram_quantile over no `_bucket` series\n    {expr}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{DASHBOARD} does not match /metrics:\n{}\n--- /metrics ---\n{text}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}

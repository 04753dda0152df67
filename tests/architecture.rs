//! The direction of dependencies between the top-level modules of `src/`,
//! checked from the source: every `crate::<module>` a module names must be
//! one it is allowed to know, and the allowed graph has no cycle. The
//! layers (docs/architecture.md): `protocol` knows nothing; `store` knows
//! `protocol`; `engine` knows the store traits and `protocol`; `cluster`
//! knows the engine types it is given; `ws`, `http` and `admin` go through
//! the engine and never reach the store or the cluster; `app` wires all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and what it may name. The leaf utilities
/// (`audit`, `time`, `config`, `metrics`, `telemetry`) hold no state of
/// their own and know no layer.
const ALLOWED: &[(&str, &[&str])] = &[
    ("protocol", &[]),
    ("time", &[]),
    ("config", &[]),
    ("metrics", &[]),
    ("pgconn", &[]),
    ("blobs", &["pgconn"]),
    ("audit", &["time"]),
    ("telemetry", &["config"]),
    ("store", &["protocol", "audit", "pgconn"]),
    (
        "engine",
        &[
            "store", "protocol", "audit", "config", "metrics", "time", "blobs",
        ],
    ),
    ("cluster", &["engine", "pgconn"]),
    ("ws", &["engine"]),
    ("http", &["engine", "ws", "protocol", "metrics"]),
    ("admin", &["engine", "http", "protocol", "time"]),
    ("dev", &["engine", "protocol"]),
    (
        "app",
        &[
            "engine", "store", "cluster", "http", "admin", "config", "ws", "dev", "blobs",
        ],
    ),
];

/// The `crate::<name>` references of one file, outside comments,
/// including each item of a `crate::{a::X, b}` group.
fn references(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let mut depth = 0;
                for (k, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.insert(ident(group[k + 1..].trim_start()));
                        }
                        _ => {}
                    }
                }
                out.insert(ident(group.trim_start()));
            } else {
                out.insert(ident(after));
            }
            rest = after;
        }
    }
    out.remove("");
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the modules its files name.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let named = graph.entry(top.clone()).or_default();
        named.extend(references(&text).into_iter().filter(|m| *m != top));
    }
    graph
}

#[test]
fn every_module_names_only_what_it_may_know() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, named) in imports() {
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!("`{module}` is not in the table of layers"));
            continue;
        };
        for n in named {
            if !may.contains(&n.as_str()) {
                wrong.push(format!("`{module}` names `crate::{n}`"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_layers_have_no_cycle() {
    // Depth-first search for a back edge over the allowed graph (which
    // bounds the real one, checked above).
    let graph: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    fn visit<'a>(
        n: &'a str,
        graph: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(n) {
            return;
        }
        assert!(!path.contains(&n), "cycle: {path:?} -> {n}");
        path.push(n);
        for m in graph.get(n).copied().unwrap_or(&[]) {
            visit(m, graph, path, done);
        }
        path.pop();
        done.insert(n);
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_scan_sees_references_in_uses_and_paths_but_not_comments() {
    let text = "use crate::store::{A, B};\nlet x = crate::engine::bounded(f);\n// crate::cluster is mentioned\nuse crate::{protocol::X, time};";
    let got: Vec<String> = references(text).into_iter().collect();
    assert_eq!(got, ["engine", "protocol", "store", "time"]);
}

/// The broker's own dependencies: the load generator's crates live in its
/// crate (`loadgen/`), so `cargo build -p claudemesh-broker` compiles none
/// of them; `bytes` was never used.
#[test]
fn the_broker_depends_on_none_of_the_load_generators_crates() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .split("\n[")
        .find(|s| s.starts_with("dependencies]"))
        .expect("a [dependencies] table")
        .lines()
        .skip(1)
        .filter_map(|l| l.split('=').next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    for crate_name in ["hdrhistogram", "indicatif", "tokio-tungstenite", "bytes"] {
        assert!(!deps.contains(&crate_name), "{crate_name} in {deps:?}");
    }
    assert!(deps.contains(&"tokio"), "the table was read: {deps:?}");
}

/// A presence that ends is deleted; no query names a `gone` state.
#[test]
fn no_query_names_a_gone_presence() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store"),
        &mut files,
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains("'gone'"), "{}", f.display());
    }
}

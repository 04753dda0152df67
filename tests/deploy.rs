//! The deployment files against the binary: the ConfigMap's config.toml
//! and the top-level config.toml against the settings the broker knows,
//! the image's port and entry point, the pods' shutdown timing and image
//! tags. `deploy/validate.sh` checks the manifests' schemas and their
//! consistency with each other; this file checks what only the crate
//! knows. No database, no network.

use std::collections::{BTreeMap, BTreeSet};

use claudemesh_broker::config::{CliOverrides, HookAuth, LogFormat, Settings, KEYS};
use figment::providers::{Format, Toml};
use figment::{Figment, Jail};

/// What the broker needs after its drain to close sockets and leave: up to
/// 3 s for session tasks (`SESSION_EXIT_WAIT` in src/app.rs), then the
/// background loops and the node row.
const CLOSE_AND_EXIT_SECONDS: u64 = 5;
/// Slack on top, for a slow database at shutdown.
const MARGIN_SECONDS: u64 = 5;

fn read(rel: &str) -> String {
    let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The `config.toml: |` block scalar of k8s/configmap.yaml, as YAML reads
/// it (indentation removed, one trailing newline).
fn configmap_config_toml() -> String {
    let yaml = read("k8s/configmap.yaml");
    let mut lines = yaml.lines();
    let key_indent = loop {
        let line = lines
            .next()
            .expect("k8s/configmap.yaml has a `config.toml: |` entry");
        if line.trim() == "config.toml: |" {
            break line.len() - line.trim_start().len();
        }
    };
    let mut body: Vec<&str> = Vec::new();
    let mut indent = None;
    for line in lines {
        if line.trim().is_empty() {
            body.push("");
            continue;
        }
        let this = line.len() - line.trim_start().len();
        if this <= key_indent {
            break;
        }
        let indent = *indent.get_or_insert(this);
        assert!(
            this >= indent,
            "config.toml in k8s/configmap.yaml: a line is indented less than the first: {line:?}"
        );
        body.push(&line[indent..]);
    }
    while body.last() == Some(&"") {
        body.pop();
    }
    assert!(
        !body.is_empty(),
        "config.toml in k8s/configmap.yaml is empty"
    );
    body.join("\n") + "\n"
}

/// Loads `text` as the `--config` file with the broker's own loader, in a
/// figment jail whose environment holds only `env` (so no BROKER_* variable
/// of the machine running the tests can change the outcome).
// figment's Jail closures return its own (large) error type.
#[allow(clippy::result_large_err)]
fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
    let mut out = None;
    let text = text.to_string();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Jail::expect_with(|jail| {
        jail.clear_env();
        for (k, v) in &env {
            jail.set_env(k, v);
        }
        jail.create_file("config.toml", &text)?;
        let path = jail.directory().join("config.toml");
        out =
            Some(Settings::load(Some(&path), &CliOverrides::default()).map_err(|e| e.to_string()));
        Ok(())
    });
    out.expect("the jail ran")
}

/// `key = value` pairs of a TOML document, values as JSON.
fn toml_table(text: &str) -> BTreeMap<String, serde_json::Value> {
    Figment::from(Toml::string(text))
        .extract()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
}

/// The ConfigMap's settings, as a pod loads them.
fn configmap_settings() -> Settings {
    load(&configmap_config_toml(), &[])
        .unwrap_or_else(|e| panic!("k8s/configmap.yaml's config.toml does not load: {e}"))
}

/// The numbers after `key:` on the lines of `yaml` that carry it.
fn yaml_numbers(yaml: &str, key: &str) -> Vec<u64> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|rest| rest.strip_prefix(':'))
        .map(|v| {
            v.trim()
                .trim_matches('"')
                .parse()
                .unwrap_or_else(|_| panic!("`{key}:{v}` is not a number"))
        })
        .collect()
}

/// The one number after `key:` in `yaml`.
fn yaml_number(file: &str, key: &str) -> u64 {
    let found = yaml_numbers(&read(file), key);
    assert_eq!(
        found.len(),
        1,
        "{file}: expected one `{key}:`, found {found:?}"
    );
    found[0]
}

/// Dockerfile instructions (continuation lines joined) of its last stage.
fn dockerfile_runtime_stage() -> (Vec<String>, Vec<String>) {
    let text = read("deploy/Dockerfile");
    let mut all = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        // Comment and empty lines are dropped, inside continuations too.
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                all.push(std::mem::take(&mut current));
            }
        }
    }
    let last_from = all
        .iter()
        .rposition(|i| i.to_uppercase().starts_with("FROM "))
        .expect("deploy/Dockerfile has a FROM");
    let runtime = all[last_from..].to_vec();
    (all, runtime)
}

fn instruction<'a>(stage: &'a [String], name: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter_map(|i| {
            let (op, rest) = i.split_once(' ')?;
            op.eq_ignore_ascii_case(name).then_some(rest.trim())
        })
        .collect()
}

#[test]
fn configmap_config_sets_only_known_keys_and_no_secrets() {
    let table = toml_table(&configmap_config_toml());
    assert!(
        !table.is_empty(),
        "the ConfigMap's config.toml sets nothing"
    );
    for key in table.keys() {
        assert!(
            KEYS.contains(&key.as_str()),
            "k8s/configmap.yaml sets `{key}`, which the broker does not know (config::KEYS)"
        );
    }
    for secret in ["database_url", "admin_token"] {
        assert!(
            !table.contains_key(secret),
            "k8s/configmap.yaml must not set `{secret}`: it comes from the Secret"
        );
    }
}

#[test]
fn configmap_config_loads_with_the_real_loader_as_a_production_node() {
    let settings = configmap_settings();
    assert!(settings.database_url.is_none() && settings.admin_token.is_none());
    let public = settings
        .public_url
        .clone()
        .expect("set public_url in the ConfigMap: invites name it as broker_url");
    assert!(
        public.ends_with("/ws"),
        "public_url {public} must end in /ws"
    );
    let config = settings.resolve(false);
    assert!(
        config.bind.is_unspecified(),
        "bind {} would hide the broker from probes and the Service",
        config.bind
    );
    assert_eq!(config.hook_auth, HookAuth::Token);
    assert_eq!(config.log_format, LogFormat::Json);
}

#[test]
fn the_secret_reaches_the_loader_under_the_deployments_env_names() {
    let deployment = read("k8s/deployment.yaml");
    for var in ["DATABASE_URL", "BROKER_ADMIN_TOKEN"] {
        assert!(
            deployment.contains(&format!("- name: {var}\n")),
            "k8s/deployment.yaml does not set env {var}"
        );
    }
    let url = "postgres://broker:secret@db:5432/claudemesh";
    let token = "0123456789abcdef0123456789abcdef";
    let settings = load(
        &configmap_config_toml(),
        &[("DATABASE_URL", url), ("BROKER_ADMIN_TOKEN", token)],
    )
    .expect("loads with the Secret's variables");
    assert_eq!(settings.database_url.as_deref(), Some(url));
    assert_eq!(settings.admin_token.as_deref(), Some(token));
}

#[test]
fn top_level_config_lists_every_key_once_with_its_default() {
    let text = read("config.toml");
    let defaults = serde_json::to_value(Settings::default()).expect("settings serialize");
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        let Some(entry) = line.trim_start().strip_prefix('#').map(str::trim) else {
            continue;
        };
        let Some((key, _)) = entry.split_once(" = ") else {
            continue;
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        assert!(
            KEYS.contains(&key),
            "config.toml lists `{key}`, which the broker does not know"
        );
        assert!(seen.insert(key), "config.toml lists `{key}` twice");
        let documented = toml_table(entry).remove(key).expect("the key parses");
        let default = &defaults[key];
        // Mode-dependent and unset defaults (None) are documented in words.
        if !default.is_null() {
            assert_eq!(
                &documented, default,
                "config.toml documents `{key} = {documented}`, the binary's default is {default}"
            );
        }
    }
    let missing: Vec<_> = KEYS.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "config.toml does not list {missing:?}");
}

#[test]
fn image_exposes_the_default_port_and_pods_listen_on_it() {
    let default = Settings::default().port;
    let (_, runtime) = dockerfile_runtime_stage();
    let exposed: Vec<&str> = instruction(&runtime, "EXPOSE")
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(
        exposed,
        vec![default.to_string()],
        "deploy/Dockerfile must EXPOSE the default port {default}"
    );
    let port = configmap_settings().port as u64;
    assert_eq!(
        yaml_number("k8s/deployment.yaml", "containerPort"),
        port,
        "the Deployment's containerPort is not the port the ConfigMap makes the broker listen on"
    );
}

#[test]
fn image_runs_the_broker_as_pid_1_without_root_or_healthcheck() {
    let (all, runtime) = dockerfile_runtime_stage();
    let froms = instruction(&all, "FROM");
    assert!(froms.len() >= 3, "multi-stage build expected: {froms:?}");
    assert!(
        all.iter().any(|i| i.contains("cargo chef cook")),
        "dependencies are cooked with cargo-chef"
    );
    assert!(
        instruction(&all, "HEALTHCHECK").is_empty(),
        "no HEALTHCHECK: Kubernetes probes the pods"
    );
    let entry = instruction(&runtime, "ENTRYPOINT");
    assert_eq!(entry.len(), 1, "one ENTRYPOINT in the runtime stage");
    let entry: Vec<String> = serde_json::from_str(entry[0])
        .expect("ENTRYPOINT in exec form (a JSON array), so the broker is PID 1 and gets SIGTERM");
    assert!(
        entry.len() == 1 && entry[0].ends_with("/claudemesh-broker"),
        "ENTRYPOINT is the broker binary alone (the subcommand goes in CMD): {entry:?}"
    );
    let cmd = instruction(&runtime, "CMD");
    assert_eq!(cmd, vec![r#"["serve"]"#], "CMD [\"serve\"]");
    let user = instruction(&runtime, "USER");
    assert_eq!(user.len(), 1, "one USER in the runtime stage");
    let ids: Vec<u32> = user[0]
        .split(':')
        .map(|id| {
            id.parse()
                .expect("USER by number, so runAsNonRoot can check it")
        })
        .collect();
    assert!(ids.iter().all(|id| *id != 0), "USER must not be root");
    let uid = yaml_numbers(&read("k8s/deployment.yaml"), "runAsUser");
    assert_eq!(
        uid,
        vec![ids[0] as u64],
        "the Deployment's runAsUser is the image's USER"
    );
}

#[test]
fn termination_grace_covers_pre_stop_drain_and_close() {
    let drain = configmap_settings().shutdown_drain_seconds;
    let file = "k8s/deployment.yaml";
    let yaml = read(file);
    let after_sleep: String = yaml
        .lines()
        .skip_while(|l| l.trim() != "sleep:")
        .skip(1)
        .take(1)
        .collect();
    let pre_stop = *yaml_numbers(&after_sleep, "seconds")
        .first()
        .expect("a native preStop `sleep:` with `seconds:` on the next line");
    let grace = yaml_number(file, "terminationGracePeriodSeconds");
    let needed = pre_stop + drain + CLOSE_AND_EXIT_SECONDS + MARGIN_SECONDS;
    assert!(
        grace >= needed,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} + shutdown_drain_seconds \
         {drain} + close {CLOSE_AND_EXIT_SECONDS} + margin {MARGIN_SECONDS}: the kubelet \
         would SIGKILL the broker before its sockets close with 1001"
    );
}

#[test]
fn image_tags_and_labels_follow_the_crate_version() {
    let version = env!("CARGO_PKG_VERSION");
    for file in ["k8s/deployment.yaml", "k8s/examples/migrate-job.yaml"] {
        let images: Vec<String> = read(file)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image:"))
            .map(|i| i.trim().to_string())
            .collect();
        assert_eq!(
            images,
            vec![format!("claudemesh-broker:{version}")],
            "{file}: the image tag follows Cargo.toml's version"
        );
    }
    let (all, _) = dockerfile_runtime_stage();
    assert!(
        instruction(&all, "ARG").contains(&format!("VERSION={version}").as_str()),
        "deploy/Dockerfile: ARG VERSION={version} (the image's version label)"
    );
}

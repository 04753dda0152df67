//! Admin subcommands: thin clients of a running node's admin API, so they
//! work the same against memory mode and a cluster. `--json` prints exactly
//! one JSON document on stdout; otherwise a table. Errors go to stderr.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Any node of the cluster.
    #[arg(
        long,
        env = "BROKER_URL",
        default_value = "http://127.0.0.1:7900",
        global = true
    )]
    pub url: String,
    /// The admin bearer token.
    #[arg(
        long,
        env = "BROKER_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum MeshCmd {
    /// Create a mesh (and its owner key, kept by the broker).
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long)]
        name: Option<String>,
        /// Also print the owner's secret key (only ever shown here).
        #[arg(long)]
        show_owner_secret: bool,
        #[arg(long)]
        json: bool,
    },
    /// List meshes.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// Enrol a public key as a member.
    Add {
        #[arg(long)]
        mesh: String,
        #[arg(long)]
        pubkey: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["member", "admin"])]
        role: Option<String>,
        /// Default groups, comma separated (`a,b/c`).
        #[arg(long)]
        groups: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List a mesh's members.
    List {
        #[arg(long)]
        mesh: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a member; its live sessions get `revoked` and close 4002.
    Revoke {
        #[arg(long)]
        mesh: String,
        #[arg(long)]
        member: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum InviteCmd {
    /// Create a signed v1 invite link.
    Create {
        #[arg(long)]
        mesh: String,
        #[arg(long)]
        uses: Option<i32>,
        /// Lifetime: `90s`, `30m`, `12h`, `7d` (default 7d).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long, value_parser = ["member", "admin"])]
        role: Option<String>,
        #[arg(long)]
        broker_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an invite by token.
    Revoke {
        /// The invite's token (or its `ic://join/` link).
        // Its own id: sharing the global `token` id would make this value
        // the admin bearer token too.
        #[arg(long = "token", id = "invite_token", value_name = "TOKEN")]
        token: String,
        /// The admin token (`--token` names the invite here).
        // Taking the global's id keeps the global `--token` out of this
        // command; clap hands the value on to `Conn::token`.
        #[arg(
            long = "admin-token",
            id = "token",
            value_name = "ADMIN_TOKEN",
            env = "BROKER_ADMIN_TOKEN",
            hide_env_values = true
        )]
        admin_token: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Verify a mesh's audit hash chain (exit 0 valid, 1 broken).
    Verify {
        #[arg(long)]
        mesh: String,
        #[arg(long)]
        json: bool,
    },
}

/// Parses `90s`, `30m`, `12h`, `7d` or bare seconds.
pub fn parse_ttl(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: i64 = num
        .parse()
        .with_context(|| format!("invalid --ttl `{s}` (try 7d, 12h, 30m, 90s)"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => bail!("invalid --ttl unit in `{s}` (s, m, h or d)"),
    };
    if n <= 0 {
        bail!("--ttl must be positive");
    }
    n.checked_mul(mult).context("--ttl is too large")
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(conn: &Conn) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: conn.url.trim_end_matches('/').to_string(),
            token: conn.token.clone(),
        }
    }

    /// Calls the API; returns the JSON body (Null for 204) or an error
    /// carrying the server's message.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}/admin{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the broker at {}", self.base))?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg = value["message"].as_str().unwrap_or("request failed");
            let code = value["error"].as_str().unwrap_or("error");
            bail!("{} {code}: {msg}", status.as_u16());
        }
        Ok(value)
    }
}

fn enc(segment: &str) -> String {
    // Path segments: slugs and ids are URL-safe already; tokens are
    // base64url. Anything else is percent-encoded byte by byte.
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON prints"));
}

/// Prints rows as an aligned table with a header.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn short(key: &Value) -> String {
    let k = s(key);
    if k.len() > 16 {
        format!("{}…", &k[..12])
    } else {
        k
    }
}

pub async fn mesh(conn: &Conn, cmd: MeshCmd) -> anyhow::Result<i32> {
    let c = Client::new(conn);
    match cmd {
        MeshCmd::Create {
            slug,
            name,
            show_owner_secret,
            json,
        } => {
            let mut body = json!({"slug": slug, "showOwnerSecret": show_owner_secret});
            if let Some(n) = name {
                body["name"] = Value::String(n);
            }
            let m = c.call(Method::POST, "/meshes", Some(body)).await?;
            if json {
                print_json(&m);
            } else {
                print_table(
                    &["ID", "SLUG", "NAME", "OWNER PUBKEY"],
                    vec![vec![
                        s(&m["id"]),
                        s(&m["slug"]),
                        s(&m["name"]),
                        s(&m["ownerPubkey"]),
                    ]],
                );
                if let Some(secret) = m["ownerSecretKey"].as_str() {
                    println!("owner secret key: {secret}");
                }
            }
        }
        MeshCmd::List { json } => {
            let list = c.call(Method::GET, "/meshes", None).await?;
            if json {
                print_json(&list);
            } else {
                let rows = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        vec![
                            s(&m["slug"]),
                            s(&m["name"]),
                            s(&m["id"]),
                            s(&m["createdAt"]),
                        ]
                    })
                    .collect();
                print_table(&["SLUG", "NAME", "ID", "CREATED"], rows);
            }
        }
    }
    Ok(0)
}

pub async fn member(conn: &Conn, cmd: MemberCmd) -> anyhow::Result<i32> {
    let c = Client::new(conn);
    match cmd {
        MemberCmd::Add {
            mesh,
            pubkey,
            name,
            role,
            groups,
            json,
        } => {
            let groups: Vec<String> = groups
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let mut body = json!({"pubkey": pubkey, "displayName": name, "groups": groups});
            if let Some(r) = role {
                body["role"] = Value::String(r);
            }
            let m = c
                .call(
                    Method::POST,
                    &format!("/meshes/{}/members", enc(&mesh)),
                    Some(body),
                )
                .await?;
            if json {
                print_json(&m);
            } else {
                print_table(
                    &["ID", "NAME", "ROLE", "PUBKEY"],
                    vec![vec![
                        s(&m["id"]),
                        s(&m["displayName"]),
                        s(&m["role"]),
                        s(&m["pubkey"]),
                    ]],
                );
            }
        }
        MemberCmd::List { mesh, json } => {
            let list = c
                .call(
                    Method::GET,
                    &format!("/meshes/{}/members", enc(&mesh)),
                    None,
                )
                .await?;
            if json {
                print_json(&list);
            } else {
                let rows = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        vec![
                            s(&m["id"]),
                            s(&m["displayName"]),
                            s(&m["role"]),
                            short(&m["pubkey"]),
                            m["groups"]
                                .as_array()
                                .map(|g| g.iter().map(s).collect::<Vec<_>>().join(","))
                                .unwrap_or_default(),
                            if m["revokedAt"].is_null() {
                                "active".into()
                            } else {
                                "revoked".into()
                            },
                        ]
                    })
                    .collect();
                print_table(&["ID", "NAME", "ROLE", "PUBKEY", "GROUPS", "STATE"], rows);
            }
        }
        MemberCmd::Revoke { mesh, member } => {
            c.call(
                Method::DELETE,
                &format!("/meshes/{}/members/{}", enc(&mesh), enc(&member)),
                None,
            )
            .await?;
            eprintln!("member {member} revoked");
        }
    }
    Ok(0)
}

pub async fn invite(conn: &Conn, cmd: InviteCmd) -> anyhow::Result<i32> {
    let c = Client::new(conn);
    match cmd {
        InviteCmd::Create {
            mesh,
            uses,
            ttl,
            role,
            broker_url,
            json,
        } => {
            let mut body = json!({});
            if let Some(u) = uses {
                body["maxUses"] = json!(u);
            }
            if let Some(t) = ttl {
                body["ttlSeconds"] = json!(parse_ttl(&t)?);
            }
            if let Some(r) = role {
                body["role"] = json!(r);
            }
            if let Some(b) = broker_url {
                body["brokerUrl"] = json!(b);
            }
            let inv = c
                .call(
                    Method::POST,
                    &format!("/meshes/{}/invites", enc(&mesh)),
                    Some(body),
                )
                .await?;
            if json {
                print_json(&inv);
            } else {
                println!("{}", s(&inv["link"]));
                eprintln!(
                    "role {}, {} use(s), expires {}",
                    s(&inv["role"]),
                    s(&inv["maxUses"]),
                    s(&inv["expiresAt"])
                );
            }
        }
        InviteCmd::Revoke { token, .. } => {
            let token = token
                .strip_prefix("ic://join/")
                .unwrap_or(&token)
                .to_string();
            c.call(Method::DELETE, &format!("/invites/{}", enc(&token)), None)
                .await?;
            eprintln!("invite revoked");
        }
    }
    Ok(0)
}

pub async fn peers(conn: &Conn, mesh: &str, json: bool) -> anyhow::Result<i32> {
    let c = Client::new(conn);
    let list = c
        .call(Method::GET, &format!("/meshes/{}/peers", enc(mesh)), None)
        .await?;
    if json {
        print_json(&list);
    } else {
        let rows = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                vec![
                    s(&p["displayName"]),
                    s(&p["status"]),
                    s(&p["state"]),
                    s(&p["sessionId"]),
                    short(&p["pubkey"]),
                    s(&p["nodeId"]),
                    s(&p["cwd"]),
                ]
            })
            .collect();
        print_table(
            &[
                "NAME", "STATUS", "STATE", "SESSION", "PUBKEY", "NODE", "CWD",
            ],
            rows,
        );
    }
    Ok(0)
}

pub async fn nodes(conn: &Conn, json: bool) -> anyhow::Result<i32> {
    let c = Client::new(conn);
    let list = c.call(Method::GET, "/nodes", None).await?;
    if json {
        print_json(&list);
    } else {
        let rows = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                vec![
                    s(&n["id"]),
                    s(&n["addr"]),
                    format!("{:.1}s", n["heartbeatAgeSeconds"].as_f64().unwrap_or(0.0)),
                    s(&n["sockets"]),
                    s(&n["draining"]),
                    s(&n["version"]),
                ]
            })
            .collect();
        print_table(
            &[
                "ID",
                "ADDR",
                "HEARTBEAT AGE",
                "SOCKETS",
                "DRAINING",
                "VERSION",
            ],
            rows,
        );
    }
    Ok(0)
}

pub async fn audit(conn: &Conn, cmd: AuditCmd) -> anyhow::Result<i32> {
    let c = Client::new(conn);
    let AuditCmd::Verify { mesh, json } = cmd;
    let v = c
        .call(
            Method::GET,
            &format!("/meshes/{}/audit/verify", enc(&mesh)),
            None,
        )
        .await?;
    let valid = v["valid"].as_bool().unwrap_or(false);
    if json {
        print_json(&v);
    } else if valid {
        println!("valid: {} entries", s(&v["entries"]));
    } else {
        println!(
            "BROKEN at seq {} ({} entries)",
            s(&v["brokenAt"]),
            s(&v["entries"])
        );
    }
    Ok(if valid { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        assert_eq!(parse_ttl("12h").unwrap(), 43_200);
        assert_eq!(parse_ttl("30m").unwrap(), 1_800);
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert!(parse_ttl("7w").is_err());
        assert!(parse_ttl("-1d").is_err());
        assert!(parse_ttl("d").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(enc("abc-_.~"), "abc-_.~");
    }
}

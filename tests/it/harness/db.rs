//! A database per test, cloned from a migrated template so tests run in
//! parallel without seeing each other's rows.

use std::sync::OnceLock;

use claudemesh_broker::store::postgres::migrate::MIGRATIONS;
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

/// Server URL for admin work (creating databases). `DATABASE_URL` wins;
/// the default is the local trust-auth cluster CI starts.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// `server_url` with its database name replaced.
pub fn url_for(db: &str) -> String {
    let base = server_url();
    let (head, tail) = match base.find('?') {
        Some(i) => (&base[..i], &base[i..]),
        None => (base.as_str(), ""),
    };
    let cut = head
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .unwrap_or(head.len());
    format!("{}/{}{}", &head[..cut], db, tail)
}

/// Template name: changes whenever a migration changes.
fn template_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut h = Sha256::new();
        for (v, name, sql) in MIGRATIONS {
            h.update(v.to_le_bytes());
            h.update(name.as_bytes());
            h.update(sql.as_bytes());
        }
        format!("cmb_tpl_{}", &hex::encode(h.finalize())[..16])
    })
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&server_url(), NoTls)
        .await
        .expect("Postgres must be running for the tests (see README: tests/run.sh starts one)");
    tokio::spawn(conn);
    client
}

/// Creates the template once per machine state; safe across processes.
async fn ensure_template(client: &tokio_postgres::Client) {
    let tpl = template_name();
    // Session-level advisory lock: other test processes wait here.
    client
        .execute("SELECT pg_advisory_lock(7424242)", &[])
        .await
        .unwrap();
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&tpl])
        .await
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{tpl}_build");
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .await
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .unwrap();
        let (mut c, conn) = tokio_postgres::connect(&url_for(&building), NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        claudemesh_broker::store::postgres::migrate::run(&mut c)
            .await
            .expect("migrations apply to an empty database");
        drop(c);
        let _ = task.await;
        // Rename only when complete, so a crashed build never leaves a
        // half-migrated template behind.
        client
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {tpl}"))
            .await
            .unwrap();
    }
    client
        .execute("SELECT pg_advisory_unlock(7424242)", &[])
        .await
        .unwrap();
}

/// A fresh database for one test; dropped (forcibly) when this is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Cloned from the migrated template.
    pub async fn migrated() -> TestDb {
        let client = admin_client().await;
        ensure_template(&client).await;
        let name = format!("cmb_t_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {}",
                template_name()
            ))
            .await
            .unwrap();
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    /// Empty: no schema at all (migration tests).
    pub async fn empty() -> TestDb {
        let client = admin_client().await;
        let name = format!("cmb_t_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    /// This database's URL as `role` (password `password`, which trust
    /// auth ignores).
    pub fn url_as(&self, role: &str, password: &str) -> String {
        let rest = self.url.split_once("://").unwrap().1;
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        format!("postgres://{role}:{password}@{host}")
    }

    /// Grants `role` row rights only: docs/operations.md, "Roles and
    /// grants", word for word (`claudemesh_app` renamed).
    pub async fn grant_dml(&self, role: &str) {
        let grants = format!(
            "GRANT CONNECT ON DATABASE {db} TO {role};
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};",
            db = self.name
        );
        self.client().await.batch_execute(&grants).await.unwrap();
    }

    /// A direct connection for assertions on rows.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside a runtime that may be shutting down: do the
        // cleanup on a thread with its own small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&server_url(), NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

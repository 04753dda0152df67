//! TLS to Postgres: every `sslmode` against a server that admits only
//! encrypted connections, with a certificate made in the test.

use std::sync::Arc;

use claudemesh_broker::store::postgres::{Database, PgStore};
use claudemesh_broker::store::Store;

use crate::harness::tls_pg::TlsPostgres;
use crate::harness::{test_settings, Peer, TestNode};
use crate::messaging::{expect_push, send};

async fn ping(url: &str, ca_file: Option<&str>) -> Result<(), String> {
    let db = Database::parse(url, ca_file).map_err(|e| e.to_string())?;
    let store = PgStore::open(&db, 1).map_err(|e| e.to_string())?;
    store.ping().await.map_err(|e| e.to_string())
}

fn path(p: &std::path::Path) -> String {
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn every_sslmode_against_a_tls_only_server() {
    let pg = TlsPostgres::start();
    let ca = path(&pg.ca_file);
    let wrong = path(&pg.wrong_ca_file);

    ping(&pg.url("localhost", "sslmode=require"), None)
        .await
        .expect("require: encrypted, certificate not checked");
    ping(&pg.url("localhost", "sslmode=prefer"), None)
        .await
        .expect("prefer: encrypts when offered");
    let plain = ping(&pg.url("localhost", "sslmode=disable"), None)
        .await
        .unwrap_err();
    assert!(
        plain.contains("pg_hba") || plain.contains("reject"),
        "{plain}"
    );

    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    ping(&pg.url("localhost", &full), None)
        .await
        .expect("verify-full with the right CA and host");
    ping(&pg.url("localhost", "sslmode=verify-full"), Some(&ca))
        .await
        .expect("the CA from database_ca_file");

    let err = ping(&pg.url("localhost", "sslmode=verify-full"), Some(&wrong))
        .await
        .unwrap_err();
    assert!(err.contains("certificate"), "wrong CA: {err}");
    let err = ping(
        &pg.url(
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={wrong}"),
        ),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.contains("certificate"), "verify-ca, wrong CA: {err}");
    let err = ping(&pg.url("127.0.0.1", &full), None).await.unwrap_err();
    assert!(err.contains("certificate"), "host name not on it: {err}");
    ping(
        &pg.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        None,
    )
    .await
    .expect("verify-ca checks the chain, not the name");
    // libpq: `require` with a root certificate verifies the chain.
    let err = ping(
        &pg.url("localhost", &format!("sslmode=require&sslrootcert={wrong}")),
        None,
    )
    .await
    .unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}

/// A whole node (store, bus, migrations) over `verify-full`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_over_verify_full() {
    let pg = TlsPostgres::start();
    let ca = path(&pg.ca_file);
    let url = pg.url("localhost", "sslmode=verify-full");
    let db = Database::parse(&url, Some(&ca)).unwrap();
    PgStore::migrate_db(&db).await.expect("migrates over TLS");
    let mut s = test_settings();
    s.database_url = Some(url.clone());
    s.database_ca_file = Some(ca.clone());
    let start =
        || async { TestNode::start_on(Arc::new(PgStore::open(&db, 4).unwrap()), s.clone()).await };
    let (n1, n2) = (start().await, start().await);
    n1.create_mesh("m").await;
    let alice = n1.add_member("m", "alice", &[]).await;
    let bob = n1.add_member("m", "bob", &[]).await;
    let (mut a, _) = Peer::join(&n1.ws_url(), &alice, "a").await;
    let (mut b, _) = Peer::join(&n2.ws_url(), &bob, "b").await;
    let ack = send(&mut a, "x", &bob.keys.public_hex, "now", "dGxz").await;
    assert_eq!(ack["queued"], true, "{ack}");
    assert_eq!(
        expect_push(&mut b).await["ciphertext"],
        "dGxz",
        "across the bus"
    );
}

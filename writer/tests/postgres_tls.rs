//! The writer against PostgreSQL servers of the test's own that accept TCP only over
//! TLS (`ssl = on`, `hostssl` only), with certificates from the test PKI: rows land
//! under verify-full over an encrypted connection; a wrong CA, a wrong host name, a
//! server without TLS and plaintext to a TLS-only server are each refused at start with
//! what to change.

use fleetmon::pki::{CertificateAuthority, LeafSpec};
use fleetmon::testkit::{PgCluster, TestPki};
use fleetmon_writer::testkit::*;
use tokio_util::sync::CancellationToken;

fn server_cert(pki: &TestPki, names: &[&str]) -> (String, String) {
    let issued = pki
        .ca()
        .issue(&LeafSpec::server(
            "postgres",
            names.iter().map(|n| (*n).to_owned()).collect(),
        ))
        .unwrap();
    (issued.cert_pem, issued.key_pem)
}

/// The error `fleetmon_writer::start` gives with this URL and CA, as text.
async fn refusal(setup: &Setup, url: String, ca: Option<std::path::PathBuf>) -> String {
    let mut config = setup.config.clone();
    config.postgres.url = url;
    config.postgres.ca = ca;
    match fleetmon_writer::start(config, CancellationToken::new()).await {
        Ok(_) => panic!("the writer started"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_to_a_server_that_demands_tls_stores_rows_encrypted() {
    let setup = Setup::new().await;
    let (cert, key) = server_cert(&setup.pki, &["localhost", "127.0.0.1"]);
    let pg = PgCluster::start_tls(&cert, &key);
    let ca = setup.pki.dir().join("ca.pem");
    let writer = setup
        .start_writer_with(|config| {
            config.postgres.url = format!(
                "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
                pg.port()
            );
            config.postgres.ca = Some(ca);
        })
        .await;
    let base = seconds_ago(10);
    setup
        .produce_hosts(&[
            host("tls-1", 1, base),
            host("tls-1", 2, base + std::time::Duration::from_secs(1)),
        ])
        .await;
    let (local, connection) = tokio_postgres::connect(&pg.socket_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let table = format!("{}.host_samples", setup.schema.name);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows: i64 = local
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if rows == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows} rows stored");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let encrypted: i64 = local
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name LIKE 'fleetmon-writer:%' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the writer's connections use TLS");
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_wrong_host_and_missing_tls_are_refused_at_start_naming_the_setting() {
    let setup = Setup::new().await;
    let ca = setup.pki.dir().join("ca.pem");
    let (cert, key) = server_cert(&setup.pki, &["db.internal"]);
    let pg = PgCluster::start_tls(&cert, &key);
    let url = |mode: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={mode}",
            pg.port()
        )
    };

    let other = CertificateAuthority::generate("some other CA").unwrap();
    let other_ca = setup.pki.dir().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let error = refusal(&setup, url("verify-full"), Some(other_ca)).await;
    assert!(
        error.ends_with(
            "the server's certificate is not signed by a CA in postgres.ca: set postgres.ca to the CA that issued it (sslmode=verify-full)"
        ),
        "{error}"
    );

    let error = refusal(&setup, url("verify-full"), Some(ca.clone())).await;
    assert!(
        error.ends_with(
            "the server's certificate does not name the host in postgres.url (sslmode=verify-full): connect by a name the certificate carries, or use sslmode=verify-ca"
        ),
        "{error}"
    );

    let error = refusal(&setup, url("disable"), None).await;
    assert!(
        error.ends_with(
            "the server accepts only TLS connections: add sslmode=verify-full to postgres.url and set postgres.ca"
        ),
        "{error}"
    );

    // verify-ca accepts the same certificate under any host name.
    let mut config = setup.config.clone();
    config.postgres.url = url("verify-ca");
    config.postgres.ca = Some(ca.clone());
    let stop = CancellationToken::new();
    let running = fleetmon_writer::start(config, stop.clone())
        .await
        .expect("verify-ca starts");
    stop.cancel();
    running.task.await.unwrap().unwrap();

    let plain = PgCluster::start();
    let error = refusal(
        &setup,
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
            plain.port()
        ),
        Some(ca),
    )
    .await;
    assert!(
        error.ends_with(
            "the server does not accept TLS but postgres.url says sslmode=require: turn on ssl at the server, or set sslmode=disable"
        ),
        "{error}"
    );

    // verify-full without a CA never gets as far as connecting.
    let env = vec![(
        "FLEETMON_WRITER__POSTGRES__URL".to_owned(),
        url("verify-full"),
    )];
    let error = <fleetmon_writer::WriterConfig as fleetmon::daemon::ServerConfig>::load(None, env)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid config: `postgres.ca` is required by sslmode=verify-full in postgres.url: set it to the CA bundle that signed the server's certificate"
    );
}

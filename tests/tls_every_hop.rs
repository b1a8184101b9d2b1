//! TLS on every hop, against servers that demand it: agent → collector (mutual TLS) →
//! Kafka over its SSL listener with a client certificate → writer over SASL_SSL with
//! SCRAM-SHA-512 → PostgreSQL that accepts only TLS, under verify-full. Then what a
//! misconfigured part gets: a wrong SCRAM password, an untrusted broker certificate, and
//! a plaintext client on the TLS listener.

use std::time::Duration;

use fleetmon::identity::Role;
use fleetmon::pki::LeafSpec;
use fleetmon::testkit::{CentralRig, RigOptions, switchable_site};
use fleetmon::testkit::{KafkaCluster, PgCluster, PgSchema, TestPki};

const USER: &str = "fleetmon";
const PASSWORD: &str = "correct horse battery staple";

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_with_tls_on_every_hop() {
    let pki = TestPki::new();
    let kafka = KafkaCluster::start_tls(&pki, USER, PASSWORD);
    let pg_cert = pki
        .ca()
        .issue(&LeafSpec::server("postgres", vec!["localhost".to_owned()]))
        .unwrap();
    let pg = PgCluster::start_tls(&pg_cert.cert_pem, &pg_cert.key_pem);
    let ca = pki.dir().join("ca.pem").display().to_string();
    let client = pki.client(Role::Operator, "kafka-collector");
    let mut rig = CentralRig::start_with(RigOptions {
        collector_kafka: Some(kafka.ssl_bootstrap()),
        collector_env: env(&[
            ("FLEETMON_COLLECTOR__KAFKA__TLS__CA", ca.clone()),
            (
                "FLEETMON_COLLECTOR__KAFKA__TLS__CERT",
                client.cert.display().to_string(),
            ),
            (
                "FLEETMON_COLLECTOR__KAFKA__TLS__KEY",
                client.key.display().to_string(),
            ),
        ]),
        writer_kafka: Some(kafka.sasl_ssl_bootstrap()),
        writer_env: env(&[
            ("FLEETMON_WRITER__KAFKA__TLS__CA", ca.clone()),
            ("FLEETMON_WRITER__KAFKA__SASL__USERNAME", USER.to_owned()),
            (
                "FLEETMON_WRITER__KAFKA__SASL__PASSWORD",
                PASSWORD.to_owned(),
            ),
            ("FLEETMON_WRITER__POSTGRES__CA", ca.clone()),
        ]),
        pg_url: Some(format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
            pg.port()
        )),
        pki: Some(pki),
        ..RigOptions::default()
    })
    .await;
    let site = switchable_site(Default::default()).await;
    rig.agent("tls-1", "hop = \"all\"");
    rig.add_shop(
        &format!("http://127.0.0.1:{site}/"),
        &["--interval", "1", "--all-agents"],
    );
    // The writer's schema lives on the TLS-only server; read it over its socket.
    let (local, connection) = tokio_postgres::connect(&pg.socket_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let sql = format!(
        "SELECT (SELECT count(*) FROM {s}.host_samples WHERE agent_id = 'tls-1') * \
                (SELECT count(*) FROM {s}.site_checks WHERE check_id = 'shop' AND ok)",
        s = rig.schema.name
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let both: i64 = local
            .query_one(&sql, &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if both > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no host and check rows through TLS within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the writer binary (certificates from `certs`, tables in `schema`) with `env`
/// against `kafka` until it exits; the line under `Caused by:`.
fn writer_refusal(
    certs: &std::path::Path,
    kafka: &str,
    schema: &str,
    env: &[(&str, String)],
) -> String {
    let schema_url = fleetmon::testkit::pg_url();
    let out = std::process::Command::new(fleetmon::testkit::binary("fleetmon-writer"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--kafka", kafka, "--pg-url", &schema_url])
        .env("FLEETMON_WRITER__TLS__CERT", certs.join("writer.pem"))
        .env("FLEETMON_WRITER__TLS__KEY", certs.join("writer-key.pem"))
        .env("FLEETMON_WRITER__TLS__CLIENT_CA", certs.join("ca.pem"))
        .env("FLEETMON_WRITER__POSTGRES__SCHEMA", schema)
        .env(
            "FLEETMON_WRITER__KAFKA__DEAD_LETTER_TOPIC",
            fleetmon::testkit::unique_name("tls-dlq"),
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run fleetmon-writer");
    assert!(!out.status.success(), "the writer started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .skip_while(|line| !line.starts_with("Caused by:"))
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_an_untrusted_broker_and_plaintext_are_refused_naming_the_setting() {
    let pki = TestPki::new();
    let kafka = KafkaCluster::start_tls(&pki, USER, PASSWORD);
    let other = TestPki::new();
    let ca = pki.dir().join("ca.pem").display().to_string();
    let sasl = kafka.sasl_ssl_bootstrap();
    let ssl = kafka.ssl_bootstrap();
    let cases = [
        (
            sasl.clone(),
            vec![
                ("FLEETMON_WRITER__KAFKA__TLS__CA", ca.clone()),
                ("FLEETMON_WRITER__KAFKA__SASL__USERNAME", USER.to_owned()),
                ("FLEETMON_WRITER__KAFKA__SASL__PASSWORD", "wrong".to_owned()),
            ],
            "the brokers refused the SASL credentials: check kafka.sasl.username and kafka.sasl.password",
        ),
        (
            sasl,
            vec![
                (
                    "FLEETMON_WRITER__KAFKA__TLS__CA",
                    other.dir().join("ca.pem").display().to_string(),
                ),
                ("FLEETMON_WRITER__KAFKA__SASL__USERNAME", USER.to_owned()),
                (
                    "FLEETMON_WRITER__KAFKA__SASL__PASSWORD",
                    PASSWORD.to_owned(),
                ),
            ],
            "the brokers' certificate is not signed by kafka.tls.ca: set kafka.tls.ca to the CA that issued it",
        ),
        (
            ssl.clone(),
            vec![("FLEETMON_WRITER__KAFKA__TLS__CA", ca.clone())],
            "the brokers ask for a client certificate they trust: set kafka.tls.cert and kafka.tls.key",
        ),
        (
            ssl,
            vec![],
            "the brokers do not speak plaintext on this address (a TLS listener?): set kafka.tls (and kafka.sasl for SASL_SSL)",
        ),
    ];
    // The writer makes its tables before it reaches Kafka: in schemas dropped at the end.
    let mut schemas = Vec::new();
    for _ in &cases {
        schemas.push(PgSchema::create().await);
    }
    // Each waits for the topic-creation timeout: run them side by side.
    let runs: Vec<_> = cases
        .into_iter()
        .zip(&schemas)
        .map(|((bootstrap, env, hint), schema)| {
            let pki_dir = pki.dir().to_owned();
            let schema = schema.name.clone();
            std::thread::spawn(move || (writer_refusal(&pki_dir, &bootstrap, &schema, &env), hint))
        })
        .collect();
    for run in runs {
        let (error, hint) = run.join().unwrap();
        assert!(
            error.starts_with("cannot create Kafka topic") && error.ends_with(hint),
            "{error}"
        );
    }
}

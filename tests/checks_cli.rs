//! `fleetmon checks` against the real binaries: a collector, a writer and an agent as
//! processes, real Kafka and Postgres. What the operator types, what it prints, and the
//! rows with the check's id that land in Postgres.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Processes, binary, eventually};
use fleetmon::identity::Role;
use fleetmon::testkit::{
    PgSchema, TestPki, free_port, grpcurl_binary, kafka_bootstrap, unique_name,
};

/// Runs `fleetmon checks ARGS` against `collector`; (exit ok, stdout, stderr).
fn checks(certs: &Path, collector: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("fleetmon"))
        .arg("checks")
        .args(args)
        .args(["--collector", &format!("https://127.0.0.1:{collector}")])
        .arg("--certs")
        .arg(certs)
        .output()
        .expect("run fleetmon checks");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn checks_ok(certs: &Path, collector: u16, args: &[&str]) -> String {
    let (ok, stdout, stderr) = checks(certs, collector, args);
    assert!(ok, "fleetmon checks {args:?} failed: {stderr}");
    stdout
}

async fn local_site() -> u16 {
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "shop: open" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_adds_pauses_and_applies_checks_and_rows_carry_the_check_id() {
    let pki = TestPki::new();
    let certs = pki.dir().to_owned();
    let logs = tempfile::tempdir().unwrap();
    let schema = PgSchema::create().await;
    let site_port = local_site().await;
    let (collector, writer) = (free_port(), free_port());
    let host_topic = unique_name("fleetmon-cc-host");
    let site_topic = unique_name("fleetmon-cc-site");
    let checks_topic = unique_name("fleetmon-cc-checks");
    let mut procs = Processes::default();
    procs.spawn(
        "collector",
        logs.path(),
        Command::new(binary("fleetmon-collector"))
            .args(["--listen", &format!("127.0.0.1:{collector}")])
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--kafka",
                &kafka_bootstrap(),
            ])
            .env("FLEETMON_COLLECTOR__TLS__CERT", certs.join("collector.pem"))
            .env(
                "FLEETMON_COLLECTOR__TLS__KEY",
                certs.join("collector-key.pem"),
            )
            .env("FLEETMON_COLLECTOR__TLS__CLIENT_CA", certs.join("ca.pem"))
            .env("FLEETMON_COLLECTOR__KAFKA__HOST_SAMPLES_TOPIC", &host_topic)
            .env("FLEETMON_COLLECTOR__KAFKA__SITE_CHECKS_TOPIC", &site_topic)
            .env("FLEETMON_COLLECTOR__KAFKA__CHECKS_TOPIC", &checks_topic)
            .env("FLEETMON_COLLECTOR__KAFKA__PARTITIONS", "2"),
    );
    procs.wait_port("collector", collector);
    procs.spawn(
        "writer",
        logs.path(),
        Command::new(binary("fleetmon-writer"))
            .args(["--listen", &format!("127.0.0.1:{writer}")])
            .args([
                "--metrics-listen",
                "127.0.0.1:0",
                "--kafka",
                &kafka_bootstrap(),
            ])
            .args(["--pg-url", schema.url()])
            .env("FLEETMON_WRITER__TLS__CERT", certs.join("writer.pem"))
            .env("FLEETMON_WRITER__TLS__KEY", certs.join("writer-key.pem"))
            .env("FLEETMON_WRITER__TLS__CLIENT_CA", certs.join("ca.pem"))
            .env("FLEETMON_WRITER__POSTGRES__SCHEMA", &schema.name)
            .env(
                "FLEETMON_WRITER__KAFKA__GROUP_ID",
                unique_name("fleetmon-cc-writer"),
            )
            .env("FLEETMON_WRITER__KAFKA__HOST_SAMPLES_TOPIC", &host_topic)
            .env("FLEETMON_WRITER__KAFKA__SITE_CHECKS_TOPIC", &site_topic)
            .env("FLEETMON_WRITER__KAFKA__CHECKS_TOPIC", &checks_topic)
            .env(
                "FLEETMON_WRITER__KAFKA__DEAD_LETTER_TOPIC",
                unique_name("fleetmon-cc-dlq"),
            )
            .env("FLEETMON_WRITER__BATCH__LINGER_MS", "100"),
    );
    procs.wait_port("writer", writer);
    let files = pki.client(Role::Agent, "edge-1");
    let config = logs.path().join("edge-1.toml");
    std::fs::write(
        &config,
        format!(
            "host_interval_seconds = 60\nmetrics_listen = \"127.0.0.1:0\"\n\
             labels = {{ location = \"eu-west\" }}\n\
             [collector]\nendpoint = \"https://127.0.0.1:{collector}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [outbox]\nbatch_interval_ms = 200\n",
            files.ca.display(),
            files.cert.display(),
            files.key.display()
        ),
    )
    .unwrap();
    procs.spawn(
        "edge-1",
        logs.path(),
        Command::new(binary("fleetmon-agent"))
            .arg("--config")
            .arg(&config),
    );

    let url = format!("http://127.0.0.1:{site_port}/");
    let added = checks_ok(
        &certs,
        collector,
        &[
            "add",
            "shop",
            "--url",
            &url,
            "--interval",
            "1",
            "--regex",
            "shop: (\\w+)",
            "--labels",
            "location=eu-west",
        ],
    );
    assert!(
        added.starts_with("check shop  version 1  active  every 1 s\n"),
        "{added}"
    );
    let rows = eventually(
        &schema,
        "SELECT count(*) FROM site_checks WHERE check_id = 'shop' AND check_version = 1 \
         AND agent_id = 'edge-1' AND ok AND matched_text = 'shop: open'",
        "rows of the central check",
        |n| n >= 2,
    )
    .await;
    assert!(rows >= 2);

    // `show` is the job status page: the agent, the version it applied, its last result.
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let shown = checks_ok(&certs, collector, &["show", "shop"]);
        if shown.contains("edge-1") && shown.contains(" ok 200 ") {
            break shown;
        }
        assert!(
            Instant::now() < deadline,
            "show never listed edge-1: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(shown.contains(&format!("  target    {url}\n")), "{shown}");
    assert!(shown.contains("  assigned  location=eu-west\n"), "{shown}");
    let agents = Command::new(binary("fleetmon"))
        .args([
            "agents",
            "--json",
            "--collector",
            &format!("https://127.0.0.1:{collector}"),
        ])
        .arg("--certs")
        .arg(&certs)
        .output()
        .unwrap();
    let agents: serde_json::Value = serde_json::from_slice(&agents.stdout).unwrap();
    assert_eq!(agents[0]["labels"]["location"], "eu-west", "{agents}");
    let json: serde_json::Value =
        serde_json::from_str(&checks_ok(&certs, collector, &["list", "--json"])).unwrap();
    assert_eq!(json[0]["id"], "shop");
    assert_eq!(json[0]["agents"][0]["agent_id"], "edge-1");
    assert_eq!(json[0]["agents"][0]["applied_version"], 1);
    assert_eq!(json[0]["definition"]["regex"], "shop: (\\w+)");

    // Paused: the row count stops growing.
    let paused = checks_ok(&certs, collector, &["pause", "shop"]);
    assert!(
        paused.starts_with("check shop  version 2  PAUSED"),
        "{paused}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = "SELECT count(*) FROM site_checks WHERE check_id = 'shop'";
    let before = schema.scalar(count).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        schema.scalar(count).await,
        before,
        "a paused check stored rows"
    );

    // The writer mirrors the definition, so history joins to what the check was.
    eventually(
        &schema,
        &format!(
            "SELECT count(*) FROM checks WHERE check_id = 'shop' AND version = 2 AND paused \
             AND kind = 'http' AND target = '{url}' AND interval_seconds = 1 AND deleted_at IS NULL"
        ),
        "the mirrored definition",
        |n| n == 1,
    )
    .await;

    // Bad input: the collector's message, and nothing changed.
    let (ok, _, stderr) = checks(&certs, collector, &["add", "Shop", "--url", &url]);
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "error: Checks/CreateCheck on https://127.0.0.1:{collector}: InvalidArgument: invalid check: `check.id` `Shop` is not a slug: use 1 to 63 lowercase letters, digits and `-`, starting with a letter (e.g. `shop-home`)\n"
        )
    );

    // Declarative: the file resumes `shop` at a new interval and adds `docs`.
    let file = logs.path().join("checks.toml");
    std::fs::write(
        &file,
        format!(
            "[[checks]]\nid = \"shop\"\nurl = \"{url}\"\ninterval_seconds = 2\nregex = \"shop: (\\\\w+)\"\nlabels = {{ location = \"eu-west\" }}\n\n\
             [[checks]]\nid = \"docs\"\nurl = \"{url}\"\nall_agents = true\n"
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let plan = checks_ok(&certs, collector, &["apply", "-f", &file, "--dry-run"]);
    assert_eq!(
        plan,
        format!(
            "~ shop ({url})\n+ docs ({url})\n1 to create, 1 to update, 0 to delete, 0 unchanged (dry run: nothing changed)\n"
        )
    );
    assert_eq!(
        schema.scalar(count).await,
        before,
        "a dry run changed nothing"
    );
    checks_ok(&certs, collector, &["apply", "-f", &file]);
    eventually(
        &schema,
        "SELECT count(*) FROM site_checks WHERE check_id = 'shop' AND check_version = 3",
        "rows of the resumed check",
        |n| n >= 1,
    )
    .await;
    let again = checks_ok(&certs, collector, &["apply", "-f", &file]);
    assert_eq!(
        again,
        "0 to create, 0 to update, 0 to delete, 2 unchanged\n"
    );

    // --prune deletes what the file no longer lists.
    std::fs::write(
        &file,
        format!("[[checks]]\nid = \"docs\"\nurl = \"{url}\"\nall_agents = true\n"),
    )
    .unwrap();
    let pruned = checks_ok(&certs, collector, &["apply", "-f", &file, "--prune"]);
    assert_eq!(
        pruned,
        "- shop\n0 to create, 0 to update, 1 to delete, 1 unchanged\n"
    );
    eventually(
        &schema,
        "SELECT count(*) FROM checks WHERE check_id = 'shop' AND deleted_at IS NOT NULL",
        "the deleted check keeps its row, marked deleted",
        |n| n == 1,
    )
    .await;
    let listed = checks_ok(&certs, collector, &["list"]);
    assert!(
        listed.contains("docs") && !listed.contains("shop"),
        "{listed}"
    );

    // grpcurl sees the service through reflection.
    let services = Command::new(grpcurl_binary())
        .arg("-cacert")
        .arg(certs.join("ca.pem"))
        .arg("-cert")
        .arg(certs.join("operator.pem"))
        .arg("-key")
        .arg(certs.join("operator-key.pem"))
        .args([&format!("127.0.0.1:{collector}"), "list"])
        .output()
        .unwrap();
    let services = String::from_utf8(services.stdout).unwrap();
    assert!(services.contains("fleetmon.v1.Checks\n"), "{services}");
    assert!(services.contains("fleetmon.v1.Control\n"), "{services}");
    procs.stop("edge-1");
}

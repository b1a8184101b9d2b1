//! `fleetmon checks` against the real binaries: a collector, a writer and an agent as
//! processes, real Kafka and Postgres. What the operator types, what it prints, and the
//! rows with the check's id that land in Postgres.

use std::time::{Duration, Instant};

use fleetmon::testkit::grpcurl_operator;
use fleetmon::testkit::{CentralRig, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_adds_pauses_and_applies_checks_and_rows_carry_the_check_id() {
    let mut rig = CentralRig::start("").await;
    let site_port = fleetmon::testkit::switchable_site(Default::default()).await;
    rig.agent("edge-1", "location = \"eu-west\"");
    let (schema, collector, certs) = (&rig.schema, rig.collector, rig.certs().to_owned());
    let checks = |args: &[&str]| rig.fleetmon(&[&["checks"], args].concat());
    let checks_ok = |args: &[&str]| rig.fleetmon_ok(&[&["checks"], args].concat());
    let url = format!("http://127.0.0.1:{site_port}/");
    let added = checks_ok(&[
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
    ]);
    assert!(
        added.starts_with("check shop  version 1  active  every 1 s\n"),
        "{added}"
    );
    let rows = eventually(
        schema,
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
        let shown = checks_ok(&["show", "shop"]);
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
    let agents = rig.fleetmon_ok(&["agents", "--json"]);
    let agents: serde_json::Value = serde_json::from_str(&agents).unwrap();
    assert_eq!(agents[0]["labels"]["location"], "eu-west", "{agents}");
    let json: serde_json::Value = serde_json::from_str(&checks_ok(&["list", "--json"])).unwrap();
    assert_eq!(json[0]["id"], "shop");
    assert_eq!(json[0]["agents"][0]["agent_id"], "edge-1");
    assert_eq!(json[0]["agents"][0]["applied_version"], 1);
    assert_eq!(json[0]["definition"]["regex"], "shop: (\\w+)");

    // Paused: the row count stops growing.
    let paused = checks_ok(&["pause", "shop"]);
    assert!(
        paused.starts_with("check shop  version 2  PAUSED"),
        "{paused}"
    );
    // Once the agent applied the set without it (a paused check is not sent: applied
    // version 0) it runs the check no more: no result of it is dated after that, shown by the agent's host samples (one a second) stored
    // from 3 s later.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json: serde_json::Value =
            serde_json::from_str(&checks_ok(&["list", "--json"])).unwrap();
        if json[0]["agents"][0]["applied_version"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the pause not applied: {json}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let applied = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    eventually(
        schema,
        &format!(
            "SELECT count(*) FROM host_samples WHERE agent_id = 'edge-1' \
             AND ts > to_timestamp({applied} + 3)"
        ),
        "a host sample 3 s after the pause",
        |n| n >= 1,
    )
    .await;
    assert_eq!(
        schema
            .scalar(&format!(
                "SELECT count(*) FROM site_checks WHERE check_id = 'shop' \
                 AND ts > to_timestamp({applied})"
            ))
            .await,
        0,
        "a paused check stored rows"
    );

    // The writer mirrors the definition, so history joins to what the check was.
    eventually(
        schema,
        &format!(
            "SELECT count(*) FROM checks WHERE check_id = 'shop' AND version = 2 AND paused \
             AND kind = 'http' AND target = '{url}' AND interval_seconds = 1 AND deleted_at IS NULL"
        ),
        "the mirrored definition",
        |n| n == 1,
    )
    .await;

    // Bad input: the collector's message, and nothing changed.
    let (ok, _, stderr) = checks(&["add", "Shop", "--url", &url]);
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "error: Checks/CreateCheck on https://127.0.0.1:{collector}: InvalidArgument: invalid check: `check.id` `Shop` is not a slug: use 1 to 63 lowercase letters, digits and `-`, starting with a letter (e.g. `shop-home`)\n"
        )
    );

    // Declarative: the file resumes `shop` at a new interval and adds `docs`.
    let file = rig.logs.path().join("checks.toml");
    std::fs::write(
        &file,
        format!(
            "[[checks]]\nid = \"shop\"\nurl = \"{url}\"\ninterval_seconds = 2\nregex = \"shop: (\\\\w+)\"\nlabels = {{ location = \"eu-west\" }}\n\n\
             [[checks]]\nid = \"docs\"\nurl = \"{url}\"\nall_agents = true\n"
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let plan = checks_ok(&["apply", "-f", &file, "--dry-run"]);
    assert_eq!(
        plan,
        format!(
            "~ shop ({url})\n+ docs ({url})\n1 to create, 1 to update, 0 to delete, 0 unchanged (dry run: nothing changed)\n"
        )
    );
    let shown = checks_ok(&["show", "shop"]);
    assert!(
        shown.starts_with("check shop  version 2  PAUSED"),
        "a dry run changed shop: {shown}"
    );
    let listed: serde_json::Value = serde_json::from_str(&checks_ok(&["list", "--json"])).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "a dry run created docs: {listed}"
    );
    checks_ok(&["apply", "-f", &file]);
    eventually(
        schema,
        "SELECT count(*) FROM site_checks WHERE check_id = 'shop' AND check_version = 3",
        "rows of the resumed check",
        |n| n >= 1,
    )
    .await;
    let again = checks_ok(&["apply", "-f", &file]);
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
    let pruned = checks_ok(&["apply", "-f", &file, "--prune"]);
    assert_eq!(
        pruned,
        "- shop\n0 to create, 0 to update, 1 to delete, 1 unchanged\n"
    );
    eventually(
        schema,
        "SELECT count(*) FROM checks WHERE check_id = 'shop' AND deleted_at IS NOT NULL",
        "the deleted check keeps its row, marked deleted",
        |n| n == 1,
    )
    .await;
    let listed = checks_ok(&["list"]);
    assert!(
        listed.contains("docs") && !listed.contains("shop"),
        "{listed}"
    );

    // A gRPC check's flags land in its definition (the runs are proven in
    // collector/tests/checks.rs).
    let grpc = checks_ok(&[
        "add",
        "orders",
        "--grpc",
        "127.0.0.1:9",
        "--grpc-tls",
        "--client-cert",
        "orders",
        "--expect-health",
        "not_serving",
        "--labels",
        "location=nowhere",
        "--json",
    ]);
    let grpc: serde_json::Value = serde_json::from_str(&grpc).unwrap();
    assert_eq!(
        (
            &grpc["definition"]["client_certificate"],
            &grpc["definition"]["expected_health"],
            &grpc["definition"]["tls"]
        ),
        (
            &serde_json::json!("orders"),
            &serde_json::json!("NOT_SERVING"),
            &serde_json::json!(true)
        ),
        "{grpc}"
    );

    // grpcurl sees the service through reflection.
    let services = grpcurl_operator(&certs, &[&format!("127.0.0.1:{collector}"), "list"]);
    assert!(services.contains("fleetmon.v1.Checks\n"), "{services}");
    assert!(services.contains("fleetmon.v1.Control\n"), "{services}");
    rig.procs.stop("edge-1");
}

/// A site on 127.0.0.1 answering 200 to requests with `Authorization: Bearer
/// {token}` and 401 to every other.
async fn site_requiring_token(token: &'static str) -> u16 {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move |headers: axum::http::HeaderMap| async move {
            let wanted = format!("Bearer {token}");
            if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&wanted) {
                (axum::http::StatusCode::OK, "private: open")
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, "who are you")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_header_from_a_checks_file_is_sent_by_the_agent_and_stored_sealed() {
    let keys = tempfile::tempdir().unwrap();
    let made = std::process::Command::new(fleetmon::testkit::binary("fleetmon"))
        .args(["certs", "new-secret-key", "--dir"])
        .arg(keys.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let key_file = keys.path().join("check-secrets.key");
    let mut rig = fleetmon::testkit::CentralRig::start_with(fleetmon::testkit::RigOptions {
        collector_env: vec![(
            "FLEETMON_COLLECTOR__CHECK_SECRETS__KEY_FILE".to_owned(),
            key_file.display().to_string(),
        )],
        ..Default::default()
    })
    .await;
    let port = site_requiring_token("s3cret-7f3a").await;
    rig.agent("edge-1", "");
    let url = format!("http://127.0.0.1:{port}/");
    let file = rig.logs.path().join("checks.toml");
    std::fs::write(
        &file,
        format!(
            "[[checks]]\nid = \"private\"\nurl = \"{url}\"\ninterval_seconds = 1\nall_agents = true\n\
             secret_headers = {{ Authorization = \"Bearer s3cret-7f3a\" }}\n"
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let checks_ok = |args: &[&str]| rig.fleetmon_ok(&[&["checks"], args].concat());
    checks_ok(&["apply", "-f", &file]);
    eventually(
        &rig.schema,
        "SELECT count(*) FROM site_checks WHERE check_id = 'private' AND ok AND status_code = 200",
        "authorized rows of the check",
        |n| n >= 1,
    )
    .await;
    // The writers' copy of the definition holds the value sealed only.
    eventually(
        &rig.schema,
        "SELECT count(*) FROM checks WHERE check_id = 'private' \
         AND position('s3cret'::bytea IN definition) = 0 \
         AND position('fleetmon-sealed:v1:'::bytea IN definition) > 0",
        "the mirrored definition, sealed",
        |n| n == 1,
    )
    .await;
    let shown: serde_json::Value =
        serde_json::from_str(&checks_ok(&["show", "private", "--json"])).unwrap();
    assert_eq!(
        shown["definition"]["secret_headers"]["Authorization"], "•••",
        "{shown}"
    );
    // Applied again: only the collector can compare the value, and finds it the same.
    let again = checks_ok(&["apply", "-f", &file]);
    assert_eq!(
        again,
        format!(
            "? private ({url}): secret header values, compared by the collector\n\
             0 to create, 0 to update, 0 to delete, 0 unchanged, 1 to compare\n\
             = private: secret header values unchanged\n"
        )
    );
    let audit = rig.fleetmon_ok(&["audit", "--json"]);
    assert!(audit.contains("checks.create"), "{audit}");
    assert!(
        !audit.contains("s3cret"),
        "the audit trail shows the secret: {audit}"
    );
}

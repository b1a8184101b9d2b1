//! Who may do what, tried as an attacker would against the real binaries: each test
//! performs the attack and checks that it fails to get in (docs/SECURITY.md).

use fleetmon::identity::{OperatorRole, Role};
use fleetmon::pki::LeafSpec;
use fleetmon::testkit::CentralRig;
use fleetmon::testkit::grpcurl_as;

/// A collector's issuing CA key (every collector that enrolls holds it) mints an
/// operator certificate: collector and writer refuse it at the handshake, while the
/// root-issued operator certificate and an agent certificate from the same issuing CA
/// still get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_minted_by_the_issuing_ca_is_refused_by_collector_and_writer() {
    let rig = CentralRig::start("").await;
    let certs = rig.certs().to_owned();
    let forged = rig
        .pki
        .issued_by_issuing_ca("forged-admin", &LeafSpec::client(Role::Operator, "admin"));
    let (operator, operator_key) = (certs.join("operator.pem"), certs.join("operator-key.pem"));
    for (server, port) in [("collector", rig.collector), ("writer", rig.writer)] {
        let addr = format!("127.0.0.1:{port}");
        let (ok, stdout, _) = grpcurl_as(
            &certs,
            &forged.cert,
            &forged.key,
            &["-connect-timeout", "2", &addr, "list"],
        );
        assert!(!ok, "{server} let the forged operator in: {stdout}");
        let (ok, stdout, stderr) = grpcurl_as(&certs, &operator, &operator_key, &[&addr, "list"]);
        assert!(ok, "{server} refused the real operator: {stderr}");
        assert!(stdout.contains("grpc.health.v1.Health"), "{stdout}");
        let log = std::fs::read_to_string(rig.logs.path().join(format!("{server}.log"))).unwrap();
        assert!(
            log.contains(
                "spiffe://fleetmon/operator/admin/admin is not an agent identity and was not issued \
                 by the root CA itself: the issuing CA signs agents only"
            ),
            "{server} log: {log}"
        );
    }
    // An agent enrolled through the issuing CA is what it is for: the collector's agent
    // services let it through the handshake (grpcurl lists through reflection).
    let enrolled = rig
        .pki
        .issued_by_issuing_ca("enrolled", &LeafSpec::client(Role::Agent, "web-1"));
    let addr = format!("127.0.0.1:{}", rig.collector);
    let (ok, stdout, stderr) = grpcurl_as(&certs, &enrolled.cert, &enrolled.key, &[&addr, "list"]);
    assert!(ok, "the enrolled agent was refused: {stderr}");
    assert!(stdout.contains("fleetmon.v1.Ingest"), "{stdout}");
}

/// `fleetmon ARGS` as the operator whose files are `files`: (ok, stdout, stderr).
fn fleetmon_as(
    rig: &CentralRig,
    files: &fleetmon::tls::ClientTlsFiles,
    args: &[&str],
) -> (bool, String, String) {
    let out = std::process::Command::new(fleetmon::testkit::binary("fleetmon"))
        .args(args)
        .args([
            "--collector",
            &format!("https://127.0.0.1:{}", rig.collector),
        ])
        .args(["--writer", &format!("https://127.0.0.1:{}", rig.writer)])
        .arg("--certs")
        .arg(rig.certs())
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .output()
        .expect("run fleetmon");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Each role does what it may and is refused the rest, with the role it needs named;
/// an operator certificate made before roles is an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_roles_allow_reading_changing_and_administering_in_turn() {
    let rig = CentralRig::start("").await;
    rig.add_shop("http://127.0.0.1:9/", &["--all-agents"]);
    let as_role = |role: OperatorRole| {
        rig.pki
            .client_from(&format!("op-{role}"), &LeafSpec::operator("vic", role))
    };
    let (viewer, editor) = (as_role(OperatorRole::Viewer), as_role(OperatorRole::Editor));

    // A viewer reads checks, alerts and history…
    for args in [&["checks", "list"][..], &["alerts"], &["status"]] {
        let (ok, _, stderr) = fleetmon_as(&rig, &viewer, args);
        assert!(ok, "viewer {args:?}: {stderr}");
    }
    // …and may not change a check or a silence.
    let (ok, _, stderr) = fleetmon_as(&rig, &viewer, &["checks", "pause", "shop"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "PermissionDenied: spiffe://fleetmon/operator/viewer/vic may not call fleetmon.v1.Checks/PauseCheck: it needs the editor role, this certificate has viewer (fleetmon certs issue-operator NAME --role editor)"
        ),
        "{stderr}"
    );
    let (ok, _, stderr) = fleetmon_as(
        &rig,
        &viewer,
        &["silence", "add", "--check", "shop", "--for", "1h"],
    );
    assert!(!ok);
    assert!(
        stderr.contains("fleetmon.v1.Alerts/CreateSilence: it needs the editor role"),
        "{stderr}"
    );

    // An editor changes checks, and may not create tokens.
    let (ok, _, stderr) = fleetmon_as(&rig, &editor, &["checks", "pause", "shop"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = fleetmon_as(&rig, &editor, &["tokens", "create"]);
    assert!(!ok);
    assert!(
        stderr.contains("fleetmon.v1.Credentials/CreateToken: it needs the admin role, this certificate has editor"),
        "{stderr}"
    );

    // A certificate from before roles (spiffe://fleetmon/operator/NAME) is an admin.
    let mut legacy = LeafSpec::operator("old-admin", OperatorRole::Admin);
    legacy.uri_sans = vec!["spiffe://fleetmon/operator/old-admin".to_owned()];
    let legacy = rig.pki.client_from("legacy", &legacy);
    let (ok, stdout, stderr) = fleetmon_as(&rig, &legacy, &["tokens", "create"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim().len(), 41, "{stdout}");
    let log = std::fs::read_to_string(rig.logs.path().join("collector.log")).unwrap();
    assert!(
        log.contains("operator certificate without a role: read as admin"),
        "{log}"
    );
}

/// Every change an operator makes lands in `fleetmon audit` with its author, role,
/// address and what it changed, and a token's secret never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operator_change_is_in_the_audit_trail_with_its_author() {
    let rig = CentralRig::start("").await;
    let editor = rig
        .pki
        .client_from("ed", &LeafSpec::operator("ed", OperatorRole::Editor));
    let (ok, _, stderr) = fleetmon_as(
        &rig,
        &editor,
        &[
            "checks",
            "add",
            "shop",
            "--url",
            "http://127.0.0.1:9/",
            "--all-agents",
        ],
    );
    assert!(ok, "{stderr}");
    rig.fleetmon_ok(&["checks", "pause", "shop"]);
    let token = rig.fleetmon_ok(&["tokens", "create"]);
    let token = token.trim();
    let token_id = token.split_once('.').unwrap().0;
    rig.fleetmon_ok(&["tokens", "revoke", token_id]);
    rig.fleetmon_ok(&["certs", "revoke", "web-9"]);
    rig.fleetmon_ok(&[
        "silence", "add", "--check", "shop", "--for", "1h", "--reason", "deploy",
    ]);
    rig.fleetmon_ok(&["silence", "rm", "1"]);
    rig.fleetmon_ok(&["checks", "rm", "shop"]);

    let expected = [
        ("ed", "editor", "checks.create", "shop"),
        ("admin", "admin", "checks.pause", "shop"),
        ("admin", "admin", "tokens.create", token_id),
        ("admin", "admin", "tokens.revoke", token_id),
        ("admin", "admin", "agents.revoke", "web-9"),
        ("admin", "admin", "silences.create", "silence 1"),
        ("admin", "admin", "silences.expire", "silence 1"),
        ("admin", "admin", "checks.delete", "shop"),
    ];
    // Collectors' events reach the writer through the audit topic: wait for all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (text, events) = loop {
        let text = rig.fleetmon_ok(&["audit", "--json"]);
        let events: serde_json::Value = serde_json::from_str(&text).unwrap();
        // Each collector change is recorded as requested, then as done.
        let all = events.as_array().unwrap();
        if all.len() >= expected.len() && all.iter().all(|e| e["outcome"] == "done") {
            break (text, events);
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut seen: Vec<(String, String, String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(
                e["remote_address"]
                    .as_str()
                    .unwrap()
                    .starts_with("127.0.0.1:"),
                "{e}"
            );
            let text = |k: &str| e[k].as_str().unwrap().to_owned();
            (
                text("actor"),
                text("actor_role"),
                text("action"),
                text("subject"),
            )
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, r, x, s)| (a.to_string(), r.to_string(), x.to_string(), s.to_string()))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    // What changed: the pause's before and after.
    let pause = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "checks.pause")
        .unwrap();
    assert_eq!(
        (&pause["before"]["paused"], &pause["after"]["paused"]),
        (&false.into(), &true.into())
    );
    assert!(
        !text.contains(token.split_once('.').unwrap().1),
        "a token's secret is never recorded"
    );
    // By author; and the table.
    let by_ed = rig.fleetmon_ok(&["audit", "--who", "ed", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&by_ed)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let table = rig.fleetmon_ok(&["audit"]);
    assert!(
        table.starts_with("AT") && table.contains("checks.create") && table.contains("  ed  "),
        "{table}"
    );
}

/// A change is recorded before it is attempted: one the collector refuses after that is
/// in the trail as failed, with the error; and one whose collector stopped between the
/// change and its outcome stays in the trail as requested, shown as not confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_change_and_an_unconfirmed_one_are_still_in_the_audit_trail() {
    use prost::Message as _;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let rig = CentralRig::start("").await;
    rig.fleetmon_ok(&["checks", "add", "shop", "--url", "http://127.0.0.1:9/"]);
    // An update against a version that is no longer current: refused by the catalog.
    let (ok, _, stderr) = grpcurl_as(
        rig.certs(),
        &rig.certs().join("operator.pem"),
        &rig.certs().join("operator-key.pem"),
        &[
            "-d",
            r#"{"check": {"id": "shop", "http": {"url": "http://127.0.0.1:9/"}}, "expectedVersion": 7}"#,
            &format!("127.0.0.1:{}", rig.collector),
            "fleetmon.v1.Checks/UpdateCheck",
        ],
    );
    assert!(!ok && stderr.contains("FailedPrecondition"), "{stderr}");

    // What a collector that died after its change leaves: the request alone.
    let author = fleetmon::audit::Author {
        peer: fleetmon::identity::PeerIdentity::from_der(
            fleetmon::tls::first_certificate(
                &std::fs::read_to_string(rig.certs().join("operator.pem")).unwrap(),
            )
            .unwrap()
            .as_ref(),
        )
        .unwrap(),
        remote: None,
    };
    let mut requested = author.event("checks.pause", "shop", None, None);
    requested.outcome = fleetmon::audit::REQUESTED.to_owned();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", fleetmon::testkit::kafka_bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&rig.audit_topic)
                .key(&requested.id)
                .payload(&requested.encode_to_vec()),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let table = loop {
        let table = rig.fleetmon_ok(&["audit"]);
        if table.contains("checks.update FAILED") && table.contains("checks.pause NOT CONFIRMED") {
            break table;
        }
        assert!(std::time::Instant::now() < deadline, "{table}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        table.contains(
            "checks.update FAILED: check `shop` is at version 1, not 7: get it again, then retry the change"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "checks.pause NOT CONFIRMED (its collector stopped before it could say; see the shop itself)"
        ),
        "{table}"
    );
    let events: serde_json::Value =
        serde_json::from_str(&rig.fleetmon_ok(&["audit", "--json"])).unwrap();
    let outcomes: std::collections::BTreeMap<String, String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("checks.create", "done"),
            ("checks.pause", "requested"),
            ("checks.update", "failed")
        ]
        .map(|(a, o)| (a.to_owned(), o.to_owned()))
        .into()
    );
}

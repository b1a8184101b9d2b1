//! Enrollment as an operator and a new host do it, with the real binaries: `fleetmon
//! tokens create`, `fleetmon certs fingerprint`, `fleetmon-agent enroll`, the agent's
//! rows in PostgreSQL under its name, then `fleetmon certs revoke` and `fleetmon agents`.

mod common;

use std::process::Command;

use common::{CentralRig, RigOptions, binary, eventually};
use fleetmon::testkit::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_enrolls_with_a_token_its_rows_land_under_its_name_and_a_revocation_shows() {
    let pki = fleetmon::testkit::TestPki::new();
    let enroll_port = free_port();
    let dir = pki.dir().to_owned();
    let mut rig = CentralRig::start_with(RigOptions {
        collector_env: vec![
            (
                "FLEETMON_COLLECTOR__ENROLLMENT__LISTEN".into(),
                format!("127.0.0.1:{enroll_port}"),
            ),
            (
                "FLEETMON_COLLECTOR__ENROLLMENT__ISSUING_CA".into(),
                dir.join("issuing-ca.pem").display().to_string(),
            ),
            (
                "FLEETMON_COLLECTOR__ENROLLMENT__ISSUING_CA_KEY".into(),
                dir.join("issuing-ca-key.pem").display().to_string(),
            ),
        ],
        pki: Some(pki),
        ..RigOptions::default()
    })
    .await;

    // One use unless `--uses` says otherwise.
    let token = rig.fleetmon_ok(&[
        "tokens",
        "create",
        "--expires",
        "1h",
        "--labels",
        "role=edge",
    ]);
    let token = token.trim();
    assert!(
        token.len() == 41 && token.as_bytes()[8] == b'.',
        "ID.SECRET: {token}"
    );
    let fingerprint = Command::new(binary("fleetmon"))
        .args(["certs", "fingerprint", "--dir"])
        .arg(rig.certs())
        .output()
        .unwrap();
    assert!(fingerprint.status.success());
    let fingerprint = String::from_utf8(fingerprint.stdout).unwrap();

    let host_dir = tempfile::tempdir().unwrap();
    let enrolled = Command::new(binary("fleetmon-agent"))
        .args(["enroll", "--collector"])
        .arg(format!("https://localhost:{enroll_port}"))
        .args(["--token", token, "--ca-fingerprint", fingerprint.trim()])
        .args(["--name", "web-17", "--dir"])
        .arg(host_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&enrolled.stdout);
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    assert!(stdout.contains("labels = { role = \"edge\" }"), "{stdout}");
    assert!(stdout.contains("[collector]"), "{stdout}");

    let files = fleetmon::tls::ClientTlsFiles {
        ca: host_dir.path().join("ca.pem"),
        cert: host_dir.path().join("agent.pem"),
        key: host_dir.path().join("agent-key.pem"),
        server_name: None,
    };
    rig.agent_with("web-17", "", &files);
    eventually(
        &rig.schema,
        "SELECT count(*) FROM host_samples WHERE agent_id = 'web-17'",
        "the enrolled agent's rows land under its name",
        |n| n >= 2,
    )
    .await;

    let tokens = rig.fleetmon_ok(&["tokens", "list"]);
    let id = &token[..8];
    let row = tokens
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("{tokens}"));
    assert!(row.contains("1/1") && row.contains("role=edge"), "{tokens}");
    // The token is spent: a second host is refused, with the reason.
    let second = Command::new(binary("fleetmon-agent"))
        .args(["enroll", "--collector"])
        .arg(format!("https://localhost:{enroll_port}"))
        .args(["--token", token, "--ca-fingerprint", fingerprint.trim()])
        .args(["--name", "web-18", "--dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "PermissionDenied: enrollment token {id} has been used 1 of 1 times"
        )),
        "{stderr}"
    );

    // The token's labels are the agent's (its config names none), once its control
    // stream has reported.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let agents: serde_json::Value =
            serde_json::from_str(&rig.fleetmon_ok(&["agents", "--json"])).unwrap();
        if agents[0]["labels"]["role"] == "edge" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{agents}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let revoked = rig.fleetmon_ok(&["certs", "revoke", "web-17"]);
    let collector = format!("https://127.0.0.1:{}", rig.collector);
    assert!(
        revoked.starts_with(&format!(
            "agent web-17 revoked on every collector\n\
             {collector}: closed the connection of web-17 from 127.0.0.1:"
        )),
        "{revoked}"
    );
    let agents: serde_json::Value =
        serde_json::from_str(&rig.fleetmon_ok(&["agents", "--json"])).unwrap();
    let web = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "web-17")
        .unwrap_or_else(|| panic!("{agents}"));
    assert_eq!(web["revoked"], true, "{agents}");
    let table = rig.fleetmon_ok(&["agents"]);
    assert!(
        table.lines().next().unwrap().ends_with("REVOKED"),
        "{table}"
    );
}

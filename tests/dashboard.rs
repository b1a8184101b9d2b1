//! `fleetmon dashboard` in real headless Chromium (Debian's, driven by playwright-core
//! from tests/browser): what the page shows against what the collector and Postgres
//! hold, a sample arriving without a reload, a check paused from the page. Screenshots
//! are written under the target directory (`dashboard-screenshots/`).

mod common;

use std::process::Command;

use common::{CentralRig, binary, eventually, switchable_site};
use fleetmon::testkit::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_live_and_pauses_a_check() {
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: scripts/test installs it (npm ci in tests/browser)"
    );
    let mut rig = CentralRig::start("").await;
    let site = switchable_site(Default::default()).await;
    rig.agent("web-1", "role = \"web\"");
    let url = format!("http://127.0.0.1:{site}/");
    rig.fleetmon_ok(&[
        "checks",
        "add",
        "shop",
        "--url",
        &url,
        "--interval",
        "1",
        "--all-agents",
    ]);
    eventually(
        &rig.schema,
        "SELECT count(*) FROM site_checks WHERE check_id = 'shop' AND ok",
        "the check's rows",
        |n| n >= 2,
    )
    .await;
    let port = free_port();
    let certs = rig.certs().to_owned();
    rig.procs.spawn(
        "dashboard",
        rig.logs.path(),
        Command::new(binary("fleetmon"))
            .args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--collector",
                &format!("https://127.0.0.1:{}", rig.collector),
            ])
            .args(["--writer", &format!("https://127.0.0.1:{}", rig.writer)])
            .arg("--certs")
            .arg(&certs),
    );
    rig.procs.wait_port("dashboard", port);

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("node")
        .current_dir(&browser_dir)
        .arg("dashboard.mjs")
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(&shots)
        .args(["web-1", "shop"])
        .output()
        .await
        .expect("run node");
    assert!(
        out.status.success(),
        "the browser script failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(common::Processes::log(rig.logs.path(), "dashboard"))
            .unwrap_or_default()
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["state"], "● live", "{seen}");
    assert_eq!(seen["labels"], "role=web", "{seen}");
    assert_eq!(
        seen["live_update"], true,
        "the CPU of a sample pushed after the page loaded appeared without a reload: {seen}"
    );
    assert_eq!(seen["charts"], 6, "{seen}");
    assert!(seen["chart_points"].as_u64().unwrap() >= 1, "{seen}");
    assert!(
        seen["check_location"]
            .as_str()
            .unwrap()
            .starts_with("web-1: ✓ ok 200"),
        "{seen}"
    );
    assert_eq!(seen["check_state"], "▶ active", "{seen}");
    assert_eq!(seen["check_state_after"], "‖ paused", "{seen}");
    let shown = rig.fleetmon_ok(&["checks", "show", "shop"]);
    assert!(
        shown.contains("PAUSED"),
        "the collector holds it paused: {shown}"
    );
    // Every stored run of the site passed, so 24 h uptime is exactly 100 %.
    assert_eq!(
        rig.schema
            .scalar(&format!(
                "SELECT count(*) FROM site_checks WHERE url = '{url}' AND NOT ok"
            ))
            .await,
        0
    );
    assert_eq!(seen["site_uptime"], "100.00 %", "{seen}");
    assert_eq!(seen["alerts"], "no open alerts", "{seen}");
    assert_eq!(seen["page_scrolls_sideways"], false, "{seen}");
    for shot in ["fleet.png", "agent.png", "checks.png", "phone.png"] {
        assert!(shots.join(shot).is_file(), "{shot} written");
    }
}

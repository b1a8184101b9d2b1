//! `/metrics/fleet` on the writer's metrics port: check states, host gauges with the
//! agent's labels and open alerts, as exact lines of the Prometheus text format, valid
//! by `promtool check metrics`, and scraped by a real Prometheus.

use std::process::{Command, Stdio};
use std::time::SystemTime;

use fleetmon::pb::{CheckDefinition, HttpCheck, SiteCheck, check_definition};
use fleetmon::testkit::Prometheus;
use fleetmon_writer::testkit::*;

fn result(check_id: &str, agent: &str, seq: u64, ok: bool) -> SiteCheck {
    let mut row = check(
        agent,
        seq,
        seconds_ago(10 - seq),
        "https://shop.example/",
        Some(if ok { 200 } else { 503 }),
        ok,
        20.0,
    );
    row.stream_id = format!("stream-{agent}");
    row.check_id = check_id.to_owned();
    row.check_version = 1;
    row
}

/// `GET /metrics/fleet` with curl: (status, body).
fn scrape(writer: &TestWriter) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!(
            "http://{}/metrics/fleet",
            writer.running.metrics_addr
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    (status.parse().expect("a status"), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_is_exported_for_prometheus_with_agent_labels_and_open_alerts() {
    let setup = Setup::new().await;
    let writer = setup
        .start_writer_with(|config| {
            config.alerts.evaluate_interval_seconds = 1;
            config.fleet_metrics.refresh_seconds = 1;
        })
        .await;
    setup
        .produce_credential("eu", &[("location", "eu-west")])
        .await;
    setup
        .produce_definition(&CheckDefinition {
            id: "shop".to_owned(),
            version: 1,
            kind: Some(check_definition::Kind::Http(HttpCheck {
                url: "https://shop.example/".to_owned(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .await;
    setup
        .wait_for("SELECT count(*) FROM agent_labels a JOIN checks c ON c.check_id = 'shop' WHERE a.agent_id = 'eu'", 1)
        .await;
    // eu fails three times in a row (DOWN there), us passes.
    let mut results: Vec<SiteCheck> = (1..=3)
        .map(|seq| result("shop", "eu", seq, false))
        .collect();
    results.push(result("shop", "us", 1, true));
    setup.produce_checks(&results).await;
    // eu's host, sampling every second, then silent: agent_silent opens.
    let mut sample = host("eu", 1, SystemTime::now());
    sample.interval_seconds = 1;
    setup.produce_hosts(&[sample]).await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'agent_silent' AND subject = 'eu' AND resolved_at IS NULL",
            1,
        )
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM check_state WHERE check_id = 'shop'",
            2,
        )
        .await;

    // The exposition, once its snapshot is newer than what it shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let body = loop {
        let (status, body) = scrape(&writer);
        assert_eq!(status, 200, "{body}");
        if body.contains("fleetmon_alert_open{") && body.contains("location=\"us\"") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for line in [
        "# TYPE fleetmon_check_up gauge",
        "fleetmon_check_up{check=\"shop\",location=\"eu\",kind=\"http\"} 0",
        "fleetmon_check_up{check=\"shop\",location=\"us\",kind=\"http\"} 1",
        "fleetmon_check_duration_seconds{check=\"shop\",location=\"us\"} 0.02",
        "fleetmon_node_memory_available_bytes{agent=\"eu\",label_location=\"eu-west\"} 5368709120",
        "fleetmon_node_filesystem_avail_bytes{agent=\"eu\",label_location=\"eu-west\",mountpoint=\"/\",device=\"/dev/vda1\",fstype=\"ext4\"} 53687091200",
        "fleetmon_node_network_receive_bytes_total{agent=\"eu\",label_location=\"eu-west\",device=\"eth0\"} 1000000",
        "# TYPE fleetmon_node_network_receive_bytes_total counter",
        "fleetmon_node_load1{agent=\"eu\",label_location=\"eu-west\"} 0.5",
        "fleetmon_alert_open{kind=\"agent_silent\",subject=\"eu\",agent=\"eu\",severity=\"critical\"} 1",
        "fleetmon_fleet_series_dropped 0",
    ] {
        assert!(body.lines().any(|l| l == line), "no `{line}` in:\n{body}");
    }

    // Valid by Prometheus' own checker.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test installs Debian's prometheus)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // A real Prometheus scrapes it.
    let prometheus = Prometheus::scraping(writer.running.metrics_addr, "/metrics/fleet").await;
    assert_eq!(
        prometheus
            .wait_for("fleetmon_check_up{check=\"shop\",location=\"eu\"}")
            .await,
        "0"
    );
    assert_eq!(
        prometheus
            .wait_for("sum(fleetmon_alert_open{severity=\"critical\"})")
            .await,
        "1"
    );
    assert_eq!(
        prometheus
            .wait_for(
                "fleetmon_node_memory_available_bytes{agent=\"eu\",label_location=\"eu-west\"}"
            )
            .await,
        "5368709120"
    );
    writer.stop().await;
}

/// Past `max_series`, series are left out and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_past_the_limit_are_counted_not_served() {
    let setup = Setup::new().await;
    let writer = setup
        .start_writer_with(|config| {
            config.fleet_metrics.max_series = 3;
        })
        .await;
    setup
        .produce_hosts(&[
            host("a", 1, SystemTime::now()),
            host("b", 1, SystemTime::now()),
        ])
        .await;
    setup.wait_for("SELECT count(*) FROM host_samples", 2).await;
    let (status, body) = scrape(&writer);
    assert_eq!(status, 200, "{body}");
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("fleetmon_fleet_"))
        .count();
    assert_eq!(samples, 3, "{body}");
    // Two agents of 14 series each (9, 3 for their filesystem, 2 for their interface):
    // 3 served, 25 dropped.
    assert!(
        body.lines()
            .any(|l| l == "fleetmon_fleet_series_dropped 25"),
        "{body}"
    );
    writer.stop().await;
}

/// The scrape snippet in deploy/ is a valid Prometheus config, and the Grafana dashboard
/// asks only for metrics the writer serves.
#[test]
fn the_deploy_snippets_are_valid_and_use_only_served_metrics() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let checked = Command::new("promtool")
        .args(["check", "config"])
        .arg(format!("{root}/deploy/prometheus/fleetmon.yml"))
        .output()
        .expect("promtool (scripts/test installs Debian's prometheus)");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/deploy/grafana/fleetmon.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let served: Vec<&str> = fleetmon_writer::api::fleet_metrics::family_names().collect();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("fleetmon_") {
                    assert!(served.contains(&word), "{word} in `{expr}` is not served");
                    used += 1;
                }
            }
        }
    }
    assert!(used >= 8, "the dashboard asks for {used} metrics");
}

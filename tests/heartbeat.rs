//! Heartbeat checks with the real binaries: `fleetmon checks add --heartbeat`, a job
//! pinging the collector's heartbeat listener with curl over HTTPS (no client
//! certificate), the rows in PostgreSQL, and `heartbeat_missed` alerts opened and
//! resolved by time, notified through a webhook.

use std::process::Command;
use std::time::{Duration, Instant};

use fleetmon::testkit::{CentralRig, RigOptions, eventually};
use fleetmon::testkit::{KafkaCluster, WebhookReceiver, free_port, wait_for_metric};

/// `curl -sS` of `path` on the heartbeat listener, trusting the CA in `certs`: (HTTP
/// status, body), or curl's error when no answer came. `data`: the body of a POST.
fn try_curl(
    certs: &std::path::Path,
    port: u16,
    path: &str,
    data: Option<&str>,
) -> Result<(u16, String), String> {
    let mut command = Command::new("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(certs.join("ca.pem"))
        .arg(format!("https://localhost:{port}{path}"));
    if let Some(data) = data {
        command.args(["--data-binary", data]);
    }
    let out = command.output().expect("curl runs");
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').expect("status line");
    Ok((code.parse().expect("status code"), body.to_owned()))
}

/// [`try_curl`] that must be answered.
fn curl(rig: &CentralRig, port: u16, path: &str, data: Option<&str>) -> (u16, String) {
    try_curl(rig.certs(), port, path, data).unwrap_or_else(|error| panic!("curl {path}: {error}"))
}

/// A rig whose collector has a heartbeat listener (its port, up), notifying `webhook`.
async fn heartbeat_rig(webhook: &str, kafka: Option<&str>) -> (CentralRig, u16) {
    let port = free_port();
    let rig = CentralRig::start_with(RigOptions {
        writer_toml: format!(
            "[alerts]\nevaluate_interval_seconds = 1\n\
             [[alerts.webhooks]]\nname = \"ops\"\nurl = \"{webhook}\"\n"
        ),
        collector_env: vec![(
            "FLEETMON_COLLECTOR__HEARTBEAT__LISTEN".into(),
            format!("127.0.0.1:{port}"),
        )],
        collector_kafka: kafka.map(str::to_owned),
        writer_kafka: kafka.map(str::to_owned),
        ..RigOptions::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no heartbeat listener");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (rig, port)
}

/// `fleetmon checks add NAME --heartbeat PERIOD --grace GRACE`: its ping token.
fn add_heartbeat(rig: &CentralRig, name: &str, period: &str, grace: &str) -> String {
    let added = rig.fleetmon_ok(&[
        "checks",
        "add",
        name,
        "--heartbeat",
        period,
        "--grace",
        grace,
        "--json",
    ]);
    let added: serde_json::Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["definition"]["kind"], "heartbeat", "{added}");
    added["ping_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no ping token: {added}"))
        .to_owned()
}

/// The open alerts as `fleetmon alerts --open --json` lists them.
fn open_alerts(rig: &CentralRig) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&rig.fleetmon_ok(&["alerts", "--open", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the open alerts satisfy `done` (30 s at most).
async fn until_alerts(
    rig: &CentralRig,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = open_alerts(rig);
        if done(&open) {
            return open;
        }
        assert!(Instant::now() < deadline, "{what}: {open:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pings_its_heartbeat_and_missing_or_failing_runs_alert() {
    let receiver = WebhookReceiver::start().await;
    let (rig, port) = heartbeat_rig(&receiver.url(), None).await;
    // An unknown token is refused; it stores nothing.
    assert_eq!(
        curl(&rig, port, "/ping/not-a-token", None),
        (
            404,
            "no heartbeat check has this token: copy the ping URL again (fleetmon checks rotate-token gives a new one)\n".to_owned()
        )
    );

    let token = add_heartbeat(&rig, "backup", "10s", "2s");
    assert_eq!(token.len(), 32, "{token}");
    // Shown once: `show` has only the hash.
    let shown = rig.fleetmon_ok(&["checks", "show", "backup"]);
    assert!(!shown.contains(&token), "{shown}");
    assert!(
        shown.contains("  heartbeat every 10 s, grace 2 s\n"),
        "{shown}"
    );

    // A job pinging every 2 s, for longer than period + grace, stays UP.
    let ping = format!("/ping/{token}");
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(14) {
        assert_eq!(curl(&rig, port, &ping, None), (200, "OK\n".to_owned()));
        pings += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eventually(
        &rig.schema,
        "SELECT count(*) FROM site_checks WHERE check_id = 'backup' AND method = 'PING' \
         AND agent_id = 'ping' AND ok",
        "every ping stored",
        |n| n == pings,
    )
    .await;
    assert_eq!(rig.fleetmon_ok(&["alerts", "--open"]), "no open alerts\n");

    // A run that starts and succeeds a second later stores its duration.
    assert_eq!(curl(&rig, port, &format!("{ping}/start"), None).0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(curl(&rig, port, &format!("{ping}/0"), None).0, 200);
    let duration = eventually(
        &rig.schema,
        "SELECT coalesce(max(response_time_ms), 0)::bigint FROM site_checks \
         WHERE check_id = 'backup' AND method = 'EXIT' AND status_code = 0",
        "the run's duration",
        |ms| ms > 0,
    )
    .await;
    assert!((1000..10_000).contains(&duration), "{duration} ms");

    // The job stops: one heartbeat_missed alert after period + grace, notified once.
    let stopped = Instant::now();
    let open = until_alerts(&rig, "the missed heartbeat alerts", |open| !open.is_empty()).await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(10),
        "opened too early"
    );
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["kind"], "heartbeat_missed");
    assert_eq!(open[0]["subject"], "backup");
    let cause = open[0]["cause"].as_str().unwrap();
    assert!(
        cause.starts_with("heartbeat backup: no success for ")
            && cause.ends_with(" s (period 10 s + grace 2 s)"),
        "{cause}"
    );
    receiver
        .wait_until("the opened notification", |delivered| {
            delivered
                .iter()
                .any(|n| n.body.to_string().contains("heartbeat_missed"))
        })
        .await;

    // A success resolves it.
    assert_eq!(curl(&rig, port, &ping, None).0, 200);
    until_alerts(&rig, "resolved by a success", <[_]>::is_empty).await;

    // An explicit failure opens it at once, with what the job said.
    assert_eq!(
        curl(&rig, port, &format!("{ping}/fail"), Some("dump: disk full")),
        (200, "OK\n".to_owned())
    );
    let open = until_alerts(&rig, "opened by /fail", |open| open.len() == 1).await;
    let cause = open[0]["cause"].as_str().unwrap();
    assert!(
        cause.starts_with("heartbeat backup: the job reported a failure ")
            && cause.ends_with(" s ago: dump: disk full"),
        "{cause}"
    );
    assert_eq!(curl(&rig, port, &format!("{ping}/0"), None).0, 200);
    until_alerts(&rig, "resolved by exit code 0", <[_]>::is_empty).await;
    // An exit code other than 0 is a failure, stored with its code.
    assert_eq!(curl(&rig, port, &format!("{ping}/3"), None).0, 200);
    let open = until_alerts(&rig, "opened by exit code 3", |open| open.len() == 1).await;
    assert!(
        open[0]["cause"]
            .as_str()
            .unwrap()
            .ends_with(" s ago: exit code 3"),
        "{open:?}"
    );
    assert_eq!(
        curl(&rig, port, &format!("{ping}/later"), None),
        (
            400,
            "unknown signal: after the token use start, fail or an exit code 0-255 (or nothing, for a success)\n".to_owned()
        )
    );

    // A new token: the old one is refused at once, the new one works.
    let rotated: serde_json::Value =
        serde_json::from_str(&rig.fleetmon_ok(&["checks", "rotate-token", "backup", "--json"]))
            .unwrap();
    let new_token = rotated["ping_token"].as_str().unwrap();
    assert_ne!(new_token, token);
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(&rig, port, &ping, None).0 != 404 {
        assert!(Instant::now() < deadline, "the old token still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        curl(&rig, port, &format!("/ping/{new_token}"), None),
        (200, "OK\n".to_owned())
    );
    until_alerts(&rig, "resolved by the new token's ping", <[_]>::is_empty).await;

    // Nothing from a wrong token was stored, and the jobs are no agent.
    assert_eq!(
        rig.schema
            .scalar("SELECT count(*) FROM site_checks WHERE check_id <> 'backup'")
            .await,
        0
    );
    let agents = rig.fleetmon_ok(&["agents", "--json"]);
    assert!(!agents.contains("\"ping\""), "{agents}");
}

/// The answer to a ping comes only once Kafka has it: a collector killed while a ping
/// waits for a frozen broker answers nothing, so the job pings again, and that ping is
/// stored (the unanswered one may be as well: at least once, never lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_is_answered_only_once_kafka_has_it_so_a_killed_collector_loses_none() {
    let kafka = KafkaCluster::start(1);
    let receiver = WebhookReceiver::start().await;
    let (mut rig, port) = heartbeat_rig(&receiver.url(), Some(kafka.bootstrap())).await;
    let token = add_heartbeat(&rig, "nightly", "1h", "5m");
    let ping = format!("/ping/{token}");
    assert_eq!(curl(&rig, port, &ping, None), (200, "OK\n".to_owned()));
    let stored = "SELECT count(*) FROM site_checks WHERE check_id = 'nightly'";
    eventually(&rig.schema, stored, "the first ping", |n| n == 1).await;

    // The broker freezes; the next ping reaches the collector and waits for Kafka.
    kafka.pause(1);
    let certs = rig.certs().to_owned();
    let waiting = {
        let ping = ping.clone();
        std::thread::spawn(move || try_curl(&certs, port, &ping, None))
    };
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], rig.collector_metrics));
    wait_for_metric(metrics, "fleetmon_collector_heartbeats_received_total", 2.0).await;
    rig.procs.kill("collector");
    let answer = waiting.join().unwrap();
    assert!(answer.is_err(), "a ping answered without Kafka: {answer:?}");

    // The job pings again once a collector is back: stored once, and only that.
    kafka.resume(1);
    rig.restart_collector();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_curl(rig.certs(), port, &ping, None) {
            Ok(answer) if answer.0 == 200 => break,
            other => assert!(Instant::now() < deadline, "no collector back: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The unanswered ping may be stored too: the broker, frozen with the dead
    // collector's produce request in its socket, takes it when it resumes. A job that
    // got no answer pings again, so a signal is stored at least once, never lost.
    let count = eventually(&rig.schema, stored, "the ping sent again", |n| n >= 2).await;
    assert!(
        count <= 3,
        "{count} pings stored of the three sent (the first, the unanswered one, the one sent again)"
    );
}

/// A job on a host with an agent signals over the agent's mutual TLS: `fleetmon-agent
/// ping`, allowed to the agents the heartbeat's assignment selects, stored with the
/// agent's name as the location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pings_a_heartbeat_that_selects_it_over_its_mutual_tls() {
    let receiver = WebhookReceiver::start().await;
    let (mut rig, _) = heartbeat_rig(&receiver.url(), None).await;
    rig.fleetmon_ok(&[
        "checks",
        "add",
        "backup",
        "--heartbeat",
        "1h",
        "--agents",
        "web-1",
    ]);
    rig.agent("web-1", "");
    rig.agent("web-2", "");
    let ping = |agent: &str, args: &[&str]| {
        let out = Command::new(fleetmon::testkit::binary("fleetmon-agent"))
            .arg("ping")
            .args(args)
            .arg("--config")
            .arg(rig.agent_config(agent))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = ping("web-1", &["backup"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "backup: stored\n");
    let (ok, _, stderr) = ping(
        "web-1",
        &["backup", "--exit-code", "2", "--message", "dump failed"],
    );
    assert!(ok, "{stderr}");
    eventually(
        &rig.schema,
        "SELECT count(*) FROM site_checks WHERE check_id = 'backup' AND agent_id = 'web-1' \
         AND ((method = 'PING' AND ok) \
           OR (method = 'EXIT' AND status_code = 2 AND NOT ok AND error_message = 'exit code 2: dump failed'))",
        "both signals of web-1",
        |n| n == 2,
    )
    .await;

    // An agent the heartbeat does not select is refused, and so is a check that is none.
    let collector = format!("https://127.0.0.1:{}", rig.collector);
    let (ok, _, stderr) = ping("web-2", &["backup"]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "Control/Ping on {collector}: PermissionDenied: heartbeat `backup` does not select agent web-2: add it to the check's agents or labels (fleetmon checks edit backup --agents …)"
        )),
        "{stderr}"
    );
    let (ok, _, stderr) = ping("web-1", &["nightly"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "NotFound: no check `nightly`: ping a heartbeat check by its id (fleetmon checks list)"
        ),
        "{stderr}"
    );
    assert_eq!(
        rig.schema
            .scalar("SELECT count(*) FROM site_checks WHERE agent_id = 'web-2' AND check_id <> ''")
            .await,
        0
    );
}

/// A heartbeat from a checks file: `checks apply` prints its ping URL once, the token
/// works, and applying the file again changes nothing (the token stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_from_a_checks_file_prints_its_ping_url_once() {
    let receiver = WebhookReceiver::start().await;
    let (rig, port) = heartbeat_rig(&receiver.url(), None).await;
    let file = rig.logs.path().join("checks.toml");
    std::fs::write(
        &file,
        "[[checks]]\nid = \"nightly\"\nkind = \"heartbeat\"\nperiod_seconds = 86400\ngrace_seconds = 3600\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let applied = rig.fleetmon_ok(&["checks", "apply", "-f", &file]);
    let token = applied
        .lines()
        .find_map(|line| line.strip_prefix("nightly: ping https://COLLECTOR:7404/ping/"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ping URL: {applied}"))
        .to_owned();
    assert!(
        applied.starts_with("+ nightly (heartbeat://nightly)\n1 to create"),
        "{applied}"
    );
    assert_eq!(
        curl(&rig, port, &format!("/ping/{token}"), None),
        (200, "OK\n".to_owned())
    );
    assert_eq!(
        rig.fleetmon_ok(&["checks", "apply", "-f", &file]),
        "0 to create, 0 to update, 0 to delete, 1 unchanged\n"
    );
    assert_eq!(
        curl(&rig, port, &format!("/ping/{token}"), None).0,
        200,
        "the token outlived the second apply"
    );
}

/// A heartbeat on a cron schedule in a time zone, from the CLI and from a checks file;
/// a bad expression or zone is refused naming the field, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_heartbeat_in_a_time_zone_is_added_shown_and_refused_when_bad() {
    let receiver = WebhookReceiver::start().await;
    let (rig, port) = heartbeat_rig(&receiver.url(), None).await;
    let added = rig.fleetmon_ok(&[
        "checks",
        "add",
        "backup",
        "--cron",
        "30 2 * * *",
        "--time-zone",
        "Europe/Berlin",
        "--grace",
        "1h",
    ]);
    assert!(
        added.contains("check backup  version 1  active  every 30 2 * * * Europe/Berlin\n")
            && added.contains("  heartbeat at `30 2 * * *` (Europe/Berlin), grace 3600 s\n"),
        "{added}"
    );
    let token = added
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("ping      https://COLLECTOR:7404/ping/")
        })
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ping URL: {added}"))
        .to_owned();
    assert_eq!(
        curl(&rig, port, &format!("/ping/{token}"), None),
        (200, "OK\n".to_owned())
    );

    let refused = |args: &[&str]| {
        let (ok, _, stderr) = rig.fleetmon(&[&["checks", "add", "bad"], args].concat());
        assert!(!ok);
        stderr
            .split_once("InvalidArgument: invalid check: ")
            .map(|(_, message)| message.trim_end().to_owned())
            .unwrap_or(stderr)
    };
    assert_eq!(
        refused(&["--cron", "30 26 * * *"]),
        "`check.heartbeat.cron` is `30 26 * * *`: the hour `26` is not a number from 0 to 23"
    );
    assert_eq!(
        refused(&["--cron", "@daily", "--time-zone", "Europe/Atlantis"]),
        "`check.heartbeat.time_zone` is `Europe/Atlantis`, not a time zone: use an IANA name such as Europe/Berlin, America/New_York or UTC"
    );

    let file = rig.logs.path().join("checks.toml");
    std::fs::write(
        &file,
        "[[checks]]\nid = \"report\"\nkind = \"heartbeat\"\ncron = \"0 6 * * mon-fri\"\ntime_zone = \"America/New_York\"\ngrace_seconds = 900\n",
    )
    .unwrap();
    rig.fleetmon_ok(&["checks", "apply", "-f", &file.display().to_string()]);
    let listed = rig.fleetmon_ok(&["checks", "list"]);
    let row = |id: &str| {
        listed
            .lines()
            .find(|line| line.starts_with(id))
            .unwrap_or_else(|| panic!("no {id}: {listed}"))
            .to_owned()
    };
    assert!(
        row("report").contains("0 6 * * mon-fri America/New_York"),
        "{listed}"
    );
    assert!(
        row("backup").contains("30 2 * * * Europe/Berlin"),
        "{listed}"
    );
    assert!(!listed.contains("bad"), "{listed}");
}

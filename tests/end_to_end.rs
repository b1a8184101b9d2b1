//! The whole pipeline as separate processes: the real collector, writer and three
//! agents (binaries built with the workspace), a real Kafka-protocol broker, the
//! real Postgres, and the real grpcurl; plus the quickstart script itself.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetmon::testkit::{Processes, binary, eventually, writer_command};

use fleetmon::identity::Role;
use fleetmon::testkit::{
    PgCluster, PgSchema, TestPki, free_port, grpcurl_operator, kafka_bootstrap, late_port,
    unique_name,
};

async fn local_site() -> u16 {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/", get(|| async { "end to end site: healthy" }))
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken on purpose") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_through_the_real_binaries() {
    let pki = TestPki::new();
    let certs = pki.dir().to_owned();
    let logs = tempfile::tempdir().unwrap();
    let schema = PgSchema::create().await;
    let site_port = local_site().await;
    let (collector_port, writer_port) = (free_port(), free_port());
    let host_topic = unique_name("fleetmon-e2e-host");
    let site_topic = unique_name("fleetmon-e2e-site");
    let mut procs = Processes::default();

    procs.spawn(
        "collector",
        logs.path(),
        Command::new(binary("fleetmon-collector"))
            .args([
                "--listen",
                &format!("127.0.0.1:{collector_port}"),
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--kafka", &kafka_bootstrap()])
            .env("FLEETMON_COLLECTOR__TLS__CERT", certs.join("collector.pem"))
            .env(
                "FLEETMON_COLLECTOR__TLS__KEY",
                certs.join("collector-key.pem"),
            )
            .env("FLEETMON_COLLECTOR__TLS__CLIENT_CA", certs.join("ca.pem"))
            .env("FLEETMON_COLLECTOR__KAFKA__HOST_SAMPLES_TOPIC", &host_topic)
            .env("FLEETMON_COLLECTOR__KAFKA__SITE_CHECKS_TOPIC", &site_topic)
            .env("FLEETMON_COLLECTOR__KAFKA__PARTITIONS", "3"),
    );
    procs.wait_port("collector", collector_port);
    fleetmon::testkit::wait_serving(collector_port, &pki.client(Role::Operator, "ops"));
    procs.spawn(
        "writer",
        logs.path(),
        writer_command(
            &certs,
            &schema,
            writer_port,
            &kafka_bootstrap(),
            schema.url(),
        )
        .env("FLEETMON_WRITER__KAFKA__HOST_SAMPLES_TOPIC", &host_topic)
        .env("FLEETMON_WRITER__KAFKA__SITE_CHECKS_TOPIC", &site_topic),
    );
    procs.wait_port("writer", writer_port);
    fleetmon::testkit::wait_serving(writer_port, &pki.client(Role::Operator, "ops"));

    let ok_url = format!("http://127.0.0.1:{site_port}/");
    let broken_url = format!("http://127.0.0.1:{site_port}/broken");
    for name in ["e2e-a1", "e2e-a2", "e2e-a3"] {
        let files = pki.client(Role::Agent, name);
        let config = logs.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "host_interval_seconds = 1\nhostname = \"{name}.host\"\nmetrics_listen = \"127.0.0.1:0\"\n\
                 [collector]\nendpoint = \"https://127.0.0.1:{collector_port}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
                 [outbox]\nbatch_interval_ms = 200\n\
                 [[sites]]\nurl = \"{ok_url}\"\ninterval_seconds = 1\nregex = \"site: (\\\\w+)\"\n\
                 [[sites]]\nurl = \"{broken_url}\"\ninterval_seconds = 1\n",
                files.ca.display(),
                files.cert.display(),
                files.key.display()
            ),
        )
        .unwrap();
        procs.spawn(
            name,
            logs.path(),
            Command::new(binary("fleetmon-agent"))
                .arg("--config")
                .arg(&config),
        );
    }

    eventually(
        &schema,
        "SELECT count(DISTINCT agent_id) FROM host_samples",
        "every agent has host rows",
        |n| n == 3,
    )
    .await;
    eventually(
        &schema,
        "SELECT count(DISTINCT agent_id) FROM site_checks WHERE status_code = 500",
        "every agent checked the broken page",
        |n| n == 3,
    )
    .await;
    let seen_before: i64 = schema
        .scalar("SELECT extract(epoch FROM max(last_seen))::bigint FROM agents")
        .await;
    eventually(
        &schema,
        "SELECT extract(epoch FROM max(last_seen))::bigint FROM agents",
        "agents.last_seen moves",
        |n| n > seen_before,
    )
    .await;

    // Everything the live view knows, through grpcurl.
    let collector = format!("127.0.0.1:{collector_port}");
    let writer = format!("127.0.0.1:{writer_port}");
    for (addr, own) in [
        (&collector, "fleetmon.v1.Fleet"),
        (&writer, "fleetmon.v1.History"),
    ] {
        let services = grpcurl_operator(&certs, &[addr, "list"]);
        for expected in [
            own,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(
                services.lines().any(|l| l == expected),
                "{expected} not in {services}"
            );
        }
        assert!(
            grpcurl_operator(&certs, &[addr, "grpc.health.v1.Health/Check"])
                .contains("\"status\": \"SERVING\"")
        );
    }
    let agents: serde_json::Value = serde_json::from_str(&grpcurl_operator(
        &certs,
        &[&collector, "fleetmon.v1.Fleet/ListAgents"],
    ))
    .unwrap();
    let ids: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e2e-a1", "e2e-a2", "e2e-a3"]);
    assert_eq!(agents["agents"][1]["hostname"], "e2e-a2.host");

    // Stop the agents, let the writer catch up, then History must match Postgres.
    for name in ["e2e-a1", "e2e-a2", "e2e-a3"] {
        procs.stop(name);
    }
    let mut last = -1;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = schema.scalar("SELECT count(*) FROM site_checks").await;
        if now == last {
            break;
        }
        last = now;
    }
    let db = schema.connect().await;
    let row = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE ok), count(*) FILTER (WHERE failure = 'status_mismatch') \
             FROM site_checks WHERE url = $1",
            &[&broken_url],
        )
        .await
        .unwrap();
    let (checks, ok, mismatched): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert!(checks >= 3);
    assert_eq!(
        (ok, mismatched),
        (0, checks),
        "every check of the broken page failed with its status"
    );
    let good: i64 = db
        .query_one("SELECT count(*) FROM site_checks WHERE url = $1 AND ok AND status_code = 200 AND matched_text = 'site: healthy'", &[&ok_url])
        .await
        .unwrap()
        .get(0);
    assert!(good >= 3);
    let rolled: i64 = db
        .query_one(
            "SELECT sum(checks)::bigint FROM site_check_rollups WHERE resolution = 'hour' AND url = $1",
            &[&broken_url],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rolled, checks, "rollups count every raw row");

    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let start = start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = format!(r#"{{"url": "{broken_url}", "range": {{"start": "{start}"}}}}"#);
    let answer: serde_json::Value = serde_json::from_str(&grpcurl_operator(
        &certs,
        &[
            "-d",
            &body,
            &writer,
            "fleetmon.v1.History/GetSiteAvailability",
        ],
    ))
    .unwrap();
    let site = &answer["sites"][0];
    assert_eq!(site["checks"], checks.to_string());
    assert_eq!(site["statusCodes"]["500"], checks.to_string());
    assert_eq!(
        site.get("okChecks"),
        None,
        "zero ok checks (proto3 JSON omits zero)"
    );
    assert_eq!(site["uptimePercent"], serde_json::Value::Null);

    // The operator CLI answers the same, as JSON for scripts.
    let fleetmon = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetmon"))
            .args(args)
            .arg("--certs")
            .arg(&certs)
            .args([
                "--collector",
                &format!("https://{collector}"),
                "--writer",
                &format!("https://{writer}"),
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fleetmon {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let sites = fleetmon(&["sites", "--since", "1h", "--url", &broken_url]);
    assert_eq!(sites[0]["checks"], checks);
    assert_eq!(sites[0]["uptime_percent"], 0.0);
    assert_eq!(sites[0]["status_codes"]["500"], checks);
    let listed = fleetmon(&["agents"]);
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let series = fleetmon(&["series", "e2e-a1", "--since", "10m", "--step", "1m"]);
    let stored: i64 = schema
        .scalar("SELECT count(*) FROM host_samples WHERE agent_id = 'e2e-a1'")
        .await;
    let counted: i64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["samples"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, stored, "every host sample falls in one bucket");
    let status = fleetmon(&["status"]);
    assert_eq!(status["agents"].as_array().unwrap().len(), 3);
    // This machine's disks, as df counts them: used + available never exceeds the size.
    for agent in status["agents"].as_array().unwrap() {
        let figure = |name: &str| {
            agent[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name} in {agent}"))
        };
        let (used, available) = (figure("disk_used_bytes"), figure("disk_available_bytes"));
        assert!(used + available <= figure("disk_total_bytes"), "{agent}");
        let percent = agent["disk_used_percent"].as_f64().unwrap();
        assert_eq!(percent, used as f64 * 100.0 / (used + available) as f64);
    }
}

/// Pids of every live process in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) && fields[0] != "Z" {
            pids.push(pid);
        }
    }
    pids
}

/// The quickstart with its default broker: Apache Kafka, started by the script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_stores_rows_and_stops_everything_on_ctrl_c() {
    quickstart("kafka", false).await;
}

/// The quickstart with the light broker it offers instead: tansu, in memory. Opt-in
/// (`FLEETMON_TEST_TANSU=1`): tansu takes 7 to 13 minutes to build, for this test alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_on_tansu_stores_rows_and_stops_everything_on_ctrl_c() {
    if std::env::var("FLEETMON_TEST_TANSU").as_deref() != Ok("1") {
        eprintln!(
            "skipped: the quickstart on tansu runs with FLEETMON_TEST_TANSU=1 (scripts/test then installs tansu, 7 to 13 minutes once)"
        );
        return;
    }
    quickstart("tansu", false).await;
}

/// The quickstart with TLS on every hop (`FLEETMON_DEMO_TLS=1`), against a PostgreSQL
/// that accepts TCP connections only over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_with_tls_on_every_hop_stores_rows_and_stops_everything_on_ctrl_c() {
    quickstart("kafka", true).await;
}

/// Runs `scripts/demo` with `broker` (`FLEETMON_DEMO_BROKER`), and with
/// `FLEETMON_DEMO_TLS` when `tls`, until rows land and the status table shows, then
/// presses Ctrl-C and checks that every process stopped.
async fn quickstart(broker: &str, tls: bool) {
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_fleetmon")).parent().unwrap();
    binary("fleetmon-agent");
    let database = unique_name("fleetmon_demo").replace('-', "_");
    let admin_url = fleetmon::testkit::pg_url();
    let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // With TLS: the demo's own CA, made first so that it can sign a certificate for a
    // PostgreSQL server that takes TCP connections only over TLS.
    let tls_pg = tls.then(|| {
        let certs = work.path().join("certs");
        let fleetmon = |args: &[&str]| {
            let status = Command::new(bin_dir.join("fleetmon"))
                .args(args)
                .arg("--dir")
                .arg(&certs)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "fleetmon {args:?}");
        };
        fleetmon(&["certs", "init"]);
        fleetmon(&["certs", "issue-server", "postgres", "--san", "localhost"]);
        let read = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
        PgCluster::start_tls(&read("postgres.pem"), &read("postgres-key.pem"))
    });
    let (pg_url, check_url) = match &tls_pg {
        Some(pg) => (
            format!(
                "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
                pg.port()
            ),
            pg.socket_url(),
        ),
        None => {
            admin
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await
                .unwrap();
            let base = admin_url
                .rsplit_once('/')
                .map(|(base, _)| base.to_owned())
                .unwrap();
            let url = format!("{base}/{database}");
            (url.clone(), url)
        }
    };
    let output = work.path().join("demo.out");
    // The demo binds these 20 s on, after Kafka started: ports no bind(0) can take.
    let dashboard_port = late_port();
    let status_port = late_port();
    let enroll_port = late_port();
    let mut demo = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"))
        .env_remove("FLEETMON_KAFKA")
        .env("FLEETMON_DEMO_BROKER", broker)
        .env("FLEETMON_DEMO_KAFKA_PORT", late_port().to_string())
        .env("FLEETMON_PG_URL", &pg_url)
        .env("FLEETMON_DEMO_BIN_DIR", bin_dir)
        .env("FLEETMON_DEMO_DIR", work.path().join("data"))
        .env("FLEETMON_CERTS_DIR", work.path().join("certs"))
        .env("FLEETMON_COLLECTOR_PORT", late_port().to_string())
        .env("FLEETMON_WRITER_PORT", late_port().to_string())
        .env(
            "FLEETMON_METRICS_PORTS",
            format!("{} {} {}", late_port(), late_port(), late_port()),
        )
        .env("FLEETMON_DEMO_HTTP_PORT", late_port().to_string())
        .env("FLEETMON_DASHBOARD_PORT", dashboard_port.to_string())
        .env("FLEETMON_STATUS_PAGE_PORT", status_port.to_string())
        .env("FLEETMON_ENROLL_PORT", enroll_port.to_string())
        .env("FLEETMON_HEARTBEAT_PORT", late_port().to_string())
        .env("FLEETMON_DEMO_REFRESH", "1")
        .env("FLEETMON_DEMO_TLS", if tls { "1" } else { "" })
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(work.path().join("demo.err")).unwrap(),
        ))
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = demo.id();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let err = std::fs::read_to_string(work.path().join("demo.err")).unwrap_or_default();
        if err.contains("rows landed")
            && std::fs::read_to_string(&output)
                .unwrap_or_default()
                .contains("SITE")
        {
            break;
        }
        if let Some(status) = demo.try_wait().unwrap() {
            panic!("demo exited early ({status}):\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "demo showed no rows and status within 120 s:\n{err}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let members = group_members(pgid);
    assert!(
        members.len() >= 7,
        "script, site, collector, writer, agent, dashboard, status: {members:?}"
    );
    // The quickstart ends on the dashboard: it names it with its token, and serves the
    // demo agent to a caller with that token only.
    let printed = std::fs::read_to_string(&output).unwrap();
    let prefix = format!("Open the dashboard: http://127.0.0.1:{dashboard_port}/?token=");
    let token = printed
        .lines()
        .find_map(|line| line.split_once(&prefix).map(|(_, token)| token.trim()))
        .unwrap_or_else(|| panic!("no dashboard address in {printed}"));
    assert_eq!(token.len(), 32, "{token}");
    // Beside it, the public status page, with the demo's checks and no login.
    assert!(
        printed.contains(&format!(
            "Public status page (read-only, no login): http://127.0.0.1:{status_port}/"
        )),
        "{printed}"
    );
    let status = http_get(status_port, "/api/v1/status.json", "");
    assert!(status.starts_with("HTTP/1.0 200 OK"), "{status}");
    assert!(
        status.contains("\"name\":\"Demo site\"")
            && status.contains("\"target\":\"http://127.0.0.1:"),
        "{status}"
    );
    let refused = http_get(dashboard_port, "/api/fleet", "wrong");
    assert!(
        refused.starts_with("HTTP/1.0 401") || refused.starts_with("HTTP/1.1 401"),
        "{refused}"
    );
    let fleet = http_get(dashboard_port, "/api/fleet", token);
    assert!(
        fleet.contains("\"agent_id\":\"demo\""),
        "the dashboard serves the demo agent: {fleet}"
    );
    // The two enrollment commands it prints work as printed: a token, then a host
    // enrolled with it on the enrollment listener.
    let command = |marker: &str| -> Vec<String> {
        printed
            .lines()
            .find(|line| line.contains(marker))
            .unwrap_or_else(|| panic!("no `{marker}` command in {printed}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let run = |words: &[String]| {
        let out = std::process::Command::new(&words[0])
            .args(&words[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{words:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let enroll_token = run(&command(" tokens create "));
    let enroll: Vec<String> = command(" enroll --collector ")
        .into_iter()
        .map(|word| {
            if word == "TOKEN" {
                enroll_token.trim().to_owned()
            } else {
                word
            }
        })
        .collect();
    assert!(
        enroll.contains(&format!("https://127.0.0.1:{enroll_port}")),
        "{enroll:?}"
    );
    let enrolled = run(&enroll);
    assert!(enrolled.contains("[collector]"), "{enrolled}");
    assert!(work.path().join("data/web-2/agent.pem").is_file());
    // Apache Kafka runs in a session of its own, stopped by the script (or, should the
    // script die, when it notices its owner is gone).
    let kafka_dir = work
        .path()
        .join(if tls { "data/kafka-tls" } else { "data/kafka" });
    let kafka_pid_file = kafka_dir.join("node-1/pid");
    let kafka_pid = std::fs::read_to_string(&kafka_pid_file)
        .ok()
        .map(|pid| pid.trim().parse::<i32>().unwrap());
    assert_eq!(kafka_pid.is_some(), broker == "kafka", "{kafka_pid_file:?}");
    if tls {
        // The collector holds a connection to the SSL listener and the writer to the
        // SASL_SSL one (the PostgreSQL server has no plaintext TCP at all).
        for listener in ["bootstrap-ssl", "bootstrap-sasl-ssl"] {
            let address = std::fs::read_to_string(kafka_dir.join(listener)).unwrap();
            let port: u16 = address.rsplit_once(':').unwrap().1.trim().parse().unwrap();
            assert!(
                established_to(port),
                "no connection to the {listener} listener ({address})"
            );
        }
    }
    let (db, connection) = tokio_postgres::connect(&check_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let hosts: i64 = db
        .query_one("SELECT count(*) FROM fleetmon.host_samples", &[])
        .await
        .unwrap()
        .get(0);
    assert!(hosts > 0);
    // The demo's heartbeat check is pinged by its loop, through the collector's
    // heartbeat listener.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pings: i64 = db
            .query_one(
                "SELECT count(*) FROM fleetmon.site_checks WHERE check_id = 'demo-job' \
                 AND method = 'PING' AND ok",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if pings > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ping of demo-job stored in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The two sites that fail on purpose (a 404, a closed port) alert like any check:
    // three failed runs 10 s apart, one location.
    let deadline = Instant::now() + Duration::from_secs(120);
    let alerted = loop {
        let subjects = fleetmon::testkit::texts(
            &db,
            "SELECT subject FROM fleetmon.alerts WHERE kind = 'check_down' \
             AND resolved_at IS NULL ORDER BY subject",
        )
        .await;
        if subjects.len() >= 2 || Instant::now() > deadline {
            break subjects;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(alerted.len(), 2, "{alerted:?}");
    assert!(
        alerted
            .iter()
            .any(|s| s.starts_with("demo http://127.0.0.1:") && s.ends_with("/missing")),
        "{alerted:?}"
    );
    let status = std::fs::read_to_string(&output).unwrap();
    assert!(
        status.contains("demo"),
        "the agent appears in the status table:\n{status}"
    );

    // Ctrl-C: SIGINT to the whole foreground group, as a terminal sends it.
    // SAFETY: kill(2) on the process group we created.
    unsafe { libc::kill(-(pgid as i32), libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while demo.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "demo did not stop within 30 s of Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The demo script has exited; its children leave the group as they exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left = group_members(pgid);
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        left.is_empty(),
        "processes left running 10 s after the demo exited on Ctrl-C: {left:?}"
    );
    if let Some(pid) = kafka_pid {
        // SAFETY: kill(pid, 0) only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "Apache Kafka (pid {pid}) still runs after Ctrl-C");
    }
    let err = std::fs::read_to_string(work.path().join("demo.err")).unwrap();
    let out = std::fs::read_to_string(&output).unwrap();
    assert!(
        out.contains(&format!("Stored history: PostgreSQL {pg_url}"))
            || err.contains("Stored history"),
        "the script says where the data is:\n{out}\n{err}"
    );
    drop(db);
    if tls_pg.is_none() {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
            .await;
    }
}

/// Whether an established IPv4 TCP connection on this machine has 127.0.0.1:`port` at
/// its far end (`/proc/net/tcp`: state 01, addresses in hex).
fn established_to(port: u16) -> bool {
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
}

/// `GET path` from the dashboard on 127.0.0.1:`port` with `token` as a bearer: the
/// whole answer, status line and headers included (HTTP/1.0, read to the end).
fn http_get(port: u16, path: &str, token: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

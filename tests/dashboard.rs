//! `fleetmon dashboard` in real headless Chromium (Debian's, driven by playwright-core
//! from tests/browser): what the page shows against what the collector and Postgres
//! hold, a sample arriving without a reload, a check paused from the page. Screenshots
//! are written under the target directory (`dashboard-screenshots/`).

use std::process::Command;

use fleetmon::testkit::late_port;
use fleetmon::testkit::{CentralRig, binary, eventually, switchable_site};

/// The access token of the dashboards these tests start.
const TOKEN: &str = "7e57dashboardtoken";

/// Starts `fleetmon dashboard ARGS` against the rig as process `name`, with [`TOKEN`];
/// its port.
fn start_dashboard(rig: &mut CentralRig, name: &str, args: &[&str]) -> u16 {
    let port = late_port();
    let certs = rig.certs().to_owned();
    rig.procs.spawn(
        name,
        rig.logs.path(),
        Command::new(binary("fleetmon"))
            .args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--collector",
                &format!("https://127.0.0.1:{}", rig.collector),
            ])
            .args(["--writer", &format!("https://127.0.0.1:{}", rig.writer)])
            .arg("--certs")
            .arg(&certs)
            .args(args)
            .env("FLEETMON_DASHBOARD_TOKEN", TOKEN),
    );
    rig.procs.wait_port(name, port);
    port
}

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
    rig.add_shop(&url, &["--interval", "1", "--all-agents"]);
    eventually(
        &rig.schema,
        "SELECT count(*) FROM site_checks WHERE check_id = 'shop' AND ok",
        "the check's rows",
        |n| n >= 2,
    )
    .await;
    let port = start_dashboard(&mut rig, "dashboard", &[]);

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = tokio::process::Command::new("node")
        .current_dir(&browser_dir)
        .arg("dashboard.mjs")
        .arg(format!("http://127.0.0.1:{port}/?token={TOKEN}"))
        .arg(&shots)
        .args(["web-1", "shop"])
        .output()
        .await
        .expect("run node");
    assert!(
        out.status.success(),
        "the browser script failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(fleetmon::testkit::Processes::log(
            rig.logs.path(),
            "dashboard"
        ))
        .unwrap_or_default()
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["address_after_login"],
        format!("http://127.0.0.1:{port}/"),
        "{seen}"
    );
    // The cross-site form reached the dashboard with the session cookie, and was refused.
    assert_eq!(seen["attack_status"], 403, "{seen}");
    assert!(
        seen["attack_answer"]
            .as_str()
            .unwrap()
            .starts_with("cross-site request refused"),
        "{seen}"
    );
    assert_eq!(seen["paused_after_attack"], false, "{seen}");
    assert_eq!(seen["state"], "● live", "{seen}");
    assert_eq!(seen["labels"], "role=web", "{seen}");
    assert_eq!(
        seen["live_update"], true,
        "the CPU of a sample pushed after the page loaded appeared without a reload: {seen}"
    );
    assert_eq!(seen["charts"], 6, "{seen}");
    assert!(seen["chart_points"].as_u64().unwrap() >= 1, "{seen}");
    // Today's samples, as the year's chart of day rollups shows them: one point (two
    // when the test runs across midnight UTC).
    let year_points = seen["year_points"].as_u64().unwrap();
    assert!((1..=2).contains(&year_points), "{seen}");
    // Ten by CPU and ten by memory (the agent's default), each process once.
    let processes = seen["processes"].as_u64().unwrap();
    assert!((10..=20).contains(&processes), "{seen}");
    let cells = seen["process_cells"].as_array().unwrap();
    assert_eq!(cells.len(), 8, "{seen}");
    assert!(
        cells[0].as_str().unwrap().parse::<u32>().is_ok(),
        "pid: {seen}"
    );
    assert!(cells[3].as_str().unwrap().ends_with(" %"), "cpu: {seen}");
    assert!(
        seen["check_location"]
            .as_str()
            .unwrap()
            .starts_with("web-1: ✓ ok 200"),
        "{seen}"
    );
    assert_eq!(seen["check_state"], "▶ active", "{seen}");
    assert_eq!(seen["check_state_after"], "‖ paused", "{seen}");
    assert_eq!(seen["audit_actor"], "admin", "{seen}");
    // Every run of shop passed and no outage was recorded: 100 % of the time it was
    // monitored, whatever the days before it existed (no data, counted apart).
    assert_eq!(seen["report_rows"], serde_json::json!(["shop"]), "{seen}");
    assert_eq!(seen["report_availability"], "100.0000 %", "{seen}");
    assert_eq!(seen["report_outages"], "0", "{seen}");
    assert!(
        seen["report_csv"]
            .as_str()
            .unwrap()
            .starts_with("200 check_id,target,from,to,period_seconds,availability_percent,"),
        "{seen}"
    );
    assert_eq!(
        seen["report_bad"],
        "400 from: `yesterday` is not a date or an RFC 3339 time: write e.g. 2026-11-01 or 2026-12-24T22:00:00Z\n",
        "{seen}"
    );
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
    assert_eq!(
        seen["summary_checks"], "Checks: 1 up, 0 degraded, 0 down",
        "{seen}"
    );
    assert_eq!(
        seen["summary_checks_after"], "Checks: 0 up, 0 degraded, 0 down, 1 paused",
        "{seen}"
    );
    assert_eq!(
        seen["summary_agents"], "Agents: 1 live, 0 stale, 0 disconnected",
        "{seen}"
    );
    assert_eq!(seen["summary_alerts"], "Alerts: 0 open", "{seen}");
    assert_eq!(
        seen["summary_links"],
        serde_json::json!(["#fleet-title", "#checks-title", "#alerts-panel"]),
        "{seen}"
    );
    assert_eq!(seen["page_scrolls_sideways"], false, "{seen}");
    for shot in ["fleet.png", "agent.png", "checks.png", "phone.png"] {
        assert!(shots.join(shot).is_file(), "{shot} written");
    }
}

/// One HTTP/1.1 exchange with the dashboard on `port`: (status, headers lower-cased,
/// body). `headers` are sent as given; `Host` is the dashboard's own unless given.
fn http(port: u16, request_line: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request =
        format!("{request_line} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_refuses_strangers_other_hosts_cross_site_changes_and_viewers() {
    let mut rig = CentralRig::start("").await;
    rig.add_shop("http://127.0.0.1:9/", &["--all-agents"]);
    let port = start_dashboard(&mut rig, "dashboard", &["--max-live-views", "1"]);

    // No token, a wrong one, another Host (DNS rebinding).
    let (status, _, body) = http(port, "GET /api/fleet", &[]);
    assert_eq!(
        (status, body.as_str()),
        (
            401,
            "this dashboard needs its access token: open the address `fleetmon dashboard` printed (/?token=…)\n"
        )
    );
    let (status, _, _) = http(port, "GET /?token=nope", &[]);
    assert_eq!(status, 401);
    let (status, head, body) = http(port, "GET /", &[("Host", "evil.example")]);
    assert_eq!(status, 421);
    assert!(
        body.starts_with(&format!(
            "this dashboard answers to 127.0.0.1:{port}, localhost:{port}"
        )),
        "{body}"
    );
    for header in [
        "content-security-policy: default-src 'self'",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
    ] {
        assert!(head.contains(header), "{header} missing: {head}");
    }

    // The token makes a session: a cookie, and the token gone from the address.
    let (status, head, _) = http(port, &format!("GET /?token={TOKEN}"), &[]);
    assert_eq!(status, 303);
    assert!(head.contains("location: /\r\n"), "{head}");
    let session = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: fleetmon_session="))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("{head}"))
        .to_owned();
    assert!(
        head.contains("httponly") && head.contains("samesite=strict"),
        "{head}"
    );
    let cookie = format!("fleetmon_session={session}");
    let (status, _, body) = http(port, "GET /api/session", &[("Cookie", &cookie)]);
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["role"], "editor");
    let csrf = view["csrf"].as_str().unwrap().to_owned();
    let own = format!("http://127.0.0.1:{port}");

    // Changes: refused from another origin, or without the CSRF token; done with both.
    let pause = "POST /api/checks/shop/pause";
    let (status, _, body) = http(
        port,
        pause,
        &[
            ("Cookie", &cookie),
            ("Origin", "http://127.0.0.1:1"),
            ("x-fleetmon-csrf", &csrf),
        ],
    );
    assert_eq!(status, 403);
    assert!(
        body.starts_with(&format!(
            "cross-site request refused: changes are accepted from {own} pages only"
        )),
        "{body}"
    );
    let (status, _, body) = http(
        port,
        pause,
        &[
            ("Cookie", &cookie),
            ("Sec-Fetch-Site", "same-site"),
            ("x-fleetmon-csrf", &csrf),
        ],
    );
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = http(port, pause, &[("Cookie", &cookie)]);
    assert_eq!(status, 403, "no Origin nor Sec-Fetch-Site: {body}");
    let (status, _, body) = http(port, pause, &[("Cookie", &cookie), ("Origin", &own)]);
    assert_eq!(
        (status, body.as_str()),
        (403, "missing or stale CSRF token: reload the page\n")
    );
    assert!(
        !rig.fleetmon_ok(&["checks", "show", "shop"])
            .contains("PAUSED")
    );
    let (status, _, body) = http(
        port,
        pause,
        &[
            ("Cookie", &cookie),
            ("Origin", &own),
            ("x-fleetmon-csrf", &csrf),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"paused\":true"), "{body}");
    // A script with the token as a bearer has no ambient credential to abuse.
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        port,
        "POST /api/checks/shop/resume",
        &[("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"paused\":false"), "{body}");

    // Live views are capped: the second is refused while the first is open.
    let first = {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {bearer}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stream
    };
    let (status, _, body) = http(port, "GET /api/events", &[("Authorization", &bearer)]);
    assert_eq!(
        (status, body.as_str()),
        (
            503,
            "1 live views are open already: close another dashboard tab (--max-live-views)\n"
        )
    );
    drop(first);

    // A viewer's token reads but cannot change.
    let viewer = start_dashboard(&mut rig, "viewer-dashboard", &["--token-role", "viewer"]);
    let (status, _, _) = http(viewer, "GET /api/checks", &[("Authorization", &bearer)]);
    assert_eq!(status, 200);
    let (status, _, body) = http(
        viewer,
        "POST /api/checks/shop/pause",
        &[("Authorization", &bearer)],
    );
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            "you are a viewer here: pausing and resuming checks need an editor (an operator certificate with --role editor, or a dashboard started with --token-role editor)\n"
        )
    );
}

/// One HTTPS/1.1 exchange with the dashboard on `port`, presenting `client` (or no
/// certificate) and trusting `rig`'s CA: (status, body), or what ended the connection.
async fn https_as(
    rig: &CentralRig,
    client: Option<&fleetmon::tls::ClientTlsFiles>,
    port: u16,
    request_line: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), std::io::Error> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = fleetmon::testkit::tls_connector(&rig.pki, client, b"http/1.1")
        .connect(name, tcp)
        .await?;
    let mut request = format!(
        "{request_line} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    Ok((status, body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_mutual_tls_an_operator_certificate_signs_in_with_its_role() {
    use fleetmon::identity::{OperatorRole, Role};
    use fleetmon::pki::LeafSpec;
    let mut rig = CentralRig::start("").await;
    let site = switchable_site(Default::default()).await;
    rig.agent("web-1", "role = \"web\"");
    rig.add_shop(&format!("http://127.0.0.1:{site}/"), &["--all-agents"]);
    let certs = rig.certs().to_owned();
    let file = |name: &str| certs.join(name).display().to_string();
    let (cert, key, ca) = (
        file("collector.pem"),
        file("collector-key.pem"),
        file("ca.pem"),
    );
    // The access token start_dashboard gives is not what signs in here.
    let port = start_dashboard(
        &mut rig,
        "mtls-dashboard",
        &["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &ca],
    );
    let viewer = rig.pki.client_from(
        "dash-viewer",
        &LeafSpec::operator("dash-viewer", OperatorRole::Viewer),
    );
    let editor = rig.pki.client_from(
        "dash-editor",
        &LeafSpec::operator("dash-editor", OperatorRole::Editor),
    );
    let agent = rig.pki.client(Role::Agent, "web-2");
    let origin = format!("https://127.0.0.1:{port}");

    // No token: the certificate signs in, and its role is the session's.
    let rig_ref = &rig;
    let session = |files| async move {
        let (status, body) = https_as(rig_ref, Some(files), port, "GET /api/session", &[])
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let seen = session(&viewer).await;
    assert_eq!(seen["role"], "viewer", "{seen}");
    // Under an active maintenance window the check says so.
    eventually(
        &rig.schema,
        "SELECT count(*) FROM checks WHERE check_id = 'shop'",
        "the mirrored check",
        |n| n == 1,
    )
    .await;
    let at = |offset: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    rig.fleetmon_ok(&[
        "maintenance",
        "add",
        "--check",
        "shop",
        "--from",
        &at(-60),
        "--until",
        &at(3600),
        "--reason",
        "upgrade",
    ]);
    let (status, body) = https_as(&rig, Some(&viewer), port, "GET /api/checks", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let checks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(checks[0]["id"], "shop", "{body}");
    assert_eq!(checks[0]["maintenance"]["reason"], "upgrade", "{body}");
    // A window by labels marks the locations whose agents carry them.
    rig.fleetmon_ok(&[
        "maintenance",
        "add",
        "--labels",
        "role=web",
        "--from",
        &at(-60),
        "--until",
        &at(3600),
        "--reason",
        "patching",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = https_as(&rig, Some(&viewer), port, "GET /api/checks", &[])
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let checks: serde_json::Value = serde_json::from_str(&body).unwrap();
        let web_1 = checks[0]["agents"]
            .as_array()
            .and_then(|agents| agents.iter().find(|a| a["agent_id"] == "web-1"))
            .cloned();
        if let Some(web_1) = web_1 {
            assert_eq!(web_1["maintenance"]["reason"], "patching", "{body}");
            assert_eq!(checks[0]["maintenance"]["reason"], "upgrade", "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web-1 never listed: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let viewer_csrf = seen["csrf"].as_str().unwrap().to_owned();
    let change = |csrf: &'static str| {
        [
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
            ("X-Fleetmon-Csrf", csrf),
        ]
    };
    let viewer_headers = change(viewer_csrf.leak());
    let (status, body) = https_as(
        &rig,
        Some(&viewer),
        port,
        "POST /api/checks/shop/pause",
        &viewer_headers,
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            "you are a viewer here: pausing and resuming checks need an editor (an operator certificate with --role editor, or a dashboard started with --token-role editor)\n"
        )
    );

    // An editor's certificate pauses, with its own CSRF token and from the page only.
    let seen = session(&editor).await;
    assert_eq!(seen["role"], "editor", "{seen}");
    let (status, _) = https_as(
        &rig,
        Some(&editor),
        port,
        "POST /api/checks/shop/pause",
        &viewer_headers,
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "another session's CSRF token was taken");
    let editor_headers = change(seen["csrf"].as_str().unwrap().to_owned().leak());
    let (status, body) = https_as(
        &rig,
        Some(&editor),
        port,
        "POST /api/checks/shop/pause",
        &editor_headers,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let shown = rig.fleetmon_ok(&["checks", "show", "shop"]);
    assert!(
        shown.starts_with("check shop  version 2  PAUSED"),
        "{shown}"
    );

    // An agent's certificate is refused; no certificate gets no connection at all.
    let (status, body) = https_as(&rig, Some(&agent), port, "GET /api/fleet", &[])
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            "spiffe://fleetmon/agent/web-2 is not an operator: sign in with an operator certificate (fleetmon certs issue-operator NAME --role viewer)\n"
        )
    );
    let refused = https_as(&rig, None, port, "GET /api/fleet", &[]).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("CertificateRequired")),
        "answered without a certificate: {refused:?}"
    );
}

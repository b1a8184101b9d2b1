//! `fleetmon status-page` against a real writer and PostgreSQL: check results go through
//! Kafka and the writer (which decides quorum outages), the page reads them as a
//! read-only role, and Debian's Chromium renders it with JavaScript off and on.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use fleetmon::pb::{Assignment, CheckDefinition, HttpCheck, check_definition};
use fleetmon::testkit::{PgSchema, Processes, binary, fleetmon_against, free_port, late_port};
use fleetmon_writer::testkit::{Setup, check_run, seconds_ago};
use serde_json::Value;

/// An https check of `id` run at three locations (quorum 2 of 3, the default).
fn definition(id: &str) -> CheckDefinition {
    CheckDefinition {
        id: id.to_owned(),
        version: 1,
        assignment: Some(Assignment {
            agents: ["eu", "us", "ap"].map(str::to_owned).to_vec(),
            ..Default::default()
        }),
        kind: Some(check_definition::Kind::Http(HttpCheck {
            url: format!("https://{id}.example/"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A role of its own that may only read what the status page reads, made by
/// `deploy/status-page-role.sql` as the docs say; its URL.
fn read_only_role(schema: &PgSchema) -> String {
    let role = format!("{}_status", schema.name);
    let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/status-page-role.sql");
    let out = Command::new("psql")
        .arg(schema.url())
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-v", &format!("role={role}")])
        .args([
            "-v",
            &format!("schema={}", schema.name),
            "-v",
            "password=only-reads",
            "-f",
        ])
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = url::Url::parse(schema.url()).unwrap();
    format!(
        "postgres://{role}:only-reads@{}:{}{}",
        url.host_str().unwrap(),
        url.port().unwrap_or(5432),
        url.path()
    )
}

/// Drops the role `read_only_role` made (roles outlive schemas).
async fn drop_role(schema: &PgSchema) {
    let role = format!("{}_status", schema.name);
    schema
        .connect()
        .await
        .batch_execute(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role};
             REVOKE USAGE ON SCHEMA {schema} FROM {role}; DROP ROLE {role};",
            schema = schema.name
        ))
        .await
        .unwrap();
}

/// The status page's config: the main page publishes shop, api (with its target) and
/// billing; the partners page only api. `secret` is on no page.
fn config(dir: &Path, port: u16, url: &str, schema: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("status.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nrefresh_seconds = 1\n\
             public_url = \"https://status.example.com\"\n{extra}\n\
             [postgres]\nurl = \"{url}\"\nschema = \"{schema}\"\n\
             [[pages]]\npath = \"/\"\ntitle = \"Example status\"\n\
             description = \"Our services, as three locations see them.\"\n\
             [[pages.groups]]\nname = \"Shop\"\n\
             checks = [{{ id = \"shop\", name = \"Online shop\" }}, \
                       {{ id = \"api\", name = \"Public API\", show_target = true }}]\n\
             [[pages.groups]]\nname = \"Back office\"\n\
             checks = [{{ id = \"billing\", name = \"Billing\" }}]\n\
             [[pages]]\npath = \"/partners\"\ntitle = \"Partner status\"\n\
             [[pages.groups]]\nname = \"API\"\n\
             checks = [{{ id = \"api\", name = \"Partner API\" }}]\n"
        ),
    )
    .unwrap();
    path
}

/// `GET path` with `headers`: the status, the headers and the body as text.
async fn get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::new();
    let mut request = client.get(format!("http://127.0.0.1:{port}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let body = String::from_utf8_lossy(&answer.bytes().await.unwrap()).into_owned();
    (status, headers, body)
}

/// Runs `fleetmon status-page` to its end: it must refuse to start; its stderr.
fn refused(config: &Path) -> String {
    let out = Command::new(binary("fleetmon"))
        .args(["status-page", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_published_checks_states_days_outages_and_maintenance_only() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: scripts/test installs it (npm ci in tests/browser)"
    );
    let setup = Setup::new().await;
    let _writer = setup.start_writer().await;
    for id in ["shop", "api", "billing", "secret"] {
        setup.produce_definition(&definition(id)).await;
    }
    // Two days ago every check passed everywhere: a day up for each.
    let two_days_ago = seconds_ago(2 * 86_400);
    let mut runs = Vec::new();
    for id in ["shop", "api", "billing", "secret"] {
        for agent in ["eu", "us", "ap"] {
            runs.push(check_run(id, agent, two_days_ago, true));
        }
    }
    // Now: shop fails at two locations of three (a quorum: an outage), api at one
    // (degraded), billing and secret pass. (Each location fails one check of four: one
    // failing most checks that pass elsewhere would be a location alert instead.)
    let now = seconds_ago(30);
    for step in 0..3 {
        let at = now + Duration::from_secs(step);
        for (id, agent, ok) in [
            ("shop", "eu", false),
            ("shop", "us", false),
            ("shop", "ap", true),
            ("api", "eu", true),
            ("api", "us", true),
            ("api", "ap", false),
            ("billing", "eu", true),
            ("billing", "us", true),
            ("billing", "ap", true),
            ("secret", "eu", true),
            ("secret", "us", true),
            ("secret", "ap", true),
        ] {
            runs.push(check_run(id, agent, at, ok));
        }
    }
    setup.produce_checks(&runs).await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'check_down' AND subject = 'shop' AND resolved_at IS NULL",
            1,
        )
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM check_state WHERE check_id = 'api' AND down",
            1,
        )
        .await;
    setup.wait_for("SELECT count(*) FROM check_days", 8).await;
    // Billing is in maintenance now; api has one scheduled for tomorrow.
    setup
        .schema
        .connect()
        .await
        .batch_execute(
            "INSERT INTO maintenance_windows (check_id, agent_id, reason, created_by, starts_at, ends_at)
             VALUES ('billing', '', 'Ledger migration', 'ops', now() - interval '5 minutes', now() + interval '1 hour'),
                    ('api', '', 'TLS certificate rotation', 'ops', now() + interval '1 day', now() + interval '1 day 30 minutes')",
        )
        .await
        .unwrap();

    let logs = tempfile::tempdir().unwrap();
    let port = free_port();
    let schema = &setup.schema;

    // A role that can write is refused, and so is a certificate the servers accept.
    let superuser = config(logs.path(), port, schema.url(), &schema.name, "");
    assert!(
        refused(&superuser).contains(
            "error: the status page reads PostgreSQL with a role that can write (it is a superuser): give it a role that can only read (docs/STATUS_PAGES.md shows how)"
        ),
        "{}",
        refused(&superuser)
    );
    let operator = setup.pki.client(fleetmon::identity::Role::Operator, "ops");
    let with_operator_cert = config(
        logs.path(),
        port,
        schema.url(),
        &schema.name,
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"",
            operator.cert.display(),
            operator.key.display()
        ),
    );
    assert!(
        refused(&with_operator_cert).contains(&format!(
            "error: `tls.cert` {} is a fleetmon operator certificate (ops): the status page must hold no credential the servers accept; give it a web server certificate",
            operator.cert.display()
        )),
        "{}",
        refused(&with_operator_cert)
    );

    // Started before PostgreSQL answers, the page waits for it: its URL leads to a
    // port where nothing listens yet.
    let reader = read_only_role(schema);
    let real = url::Url::parse(&reader).unwrap();
    let real_address = format!("{}:{}", real.host_str().unwrap(), real.port().unwrap());
    let late = late_port();
    let mut later = real.clone();
    later.set_port(Some(late)).unwrap();
    let good = config(logs.path(), port, later.as_str(), &schema.name, "");
    let mut procs = Processes::default();
    procs.spawn(
        "status-page",
        logs.path(),
        Command::new(binary("fleetmon"))
            .args(["status-page", "--config"])
            .arg(&good),
    );
    let log = Processes::log(logs.path(), "status-page");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("waiting for PostgreSQL")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "it did not say it waits"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = std::fs::read_to_string(&log).unwrap();
    assert!(
        waiting.contains(&format!("127.0.0.1:{late}")) && !waiting.contains("only-reads"),
        "it names the address, never the password: {waiting}"
    );
    // PostgreSQL "comes up": the port now leads to the real server.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", late))
        .await
        .unwrap();
    fleetmon::testkit::forward_to(listener, real_address);
    procs.wait_port("status-page", port);

    // Operators post to the incident the outage opened, and open one by hand.
    let writer = format!("https://{}", _writer.running.grpc_addr);
    let incidents = |args: &[&str]| {
        fleetmon_against(&[&["incidents"], args].concat(), &writer, setup.pki.dir())
    };
    let listed = incidents(&["list", "--json"]);
    let listed: Value = serde_json::from_str(&listed.1).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["check_ids"], serde_json::json!(["shop"]));
    assert_eq!(listed[0]["opened_by"], "fleetmon");
    let auto = listed[0]["id"].as_u64().unwrap().to_string();
    let (ok, _, error) = incidents(&[
        "update",
        &auto,
        "--status",
        "identified",
        "--message",
        "A bad deploy; rolling back.",
    ]);
    assert!(ok, "{error}");
    let (ok, opened, error) = incidents(&[
        "open",
        "--title",
        "Slow answers from the API",
        "--check",
        "api",
        "--status",
        "monitoring",
        "--message",
        "Answers take up to 5 s from one region.",
        "--json",
    ]);
    assert!(ok, "{error}");
    let manual: Value = serde_json::from_str(&opened).unwrap();
    // One incident, by its id; an id that is none is refused by name.
    let id = manual["id"].as_u64().unwrap().to_string();
    let (ok, shown, error) = incidents(&["show", &id, "--json"]);
    assert!(ok, "{error}");
    assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), manual);
    let (ok, _, error) = incidents(&["show", "999999"]);
    assert!(!ok);
    assert!(
        error.contains("NotFound: no incident 999999 (fleetmon incidents list shows them)"),
        "{error}"
    );
    let (ok, _, error) = incidents(&["open", "--title", "X", "--check", "nope", "--message", "m"]);
    assert!(!ok);
    assert!(
        error.contains("InvalidArgument: check_ids names nope, which is not a check (`fleetmon checks list` shows them)"),
        "{error}"
    );
    let (ok, _, error) = incidents(&["update", &auto, "--status", "fixed", "--message", "m"]);
    assert!(!ok);
    assert!(
        error.contains("InvalidArgument: status `fixed` is not one of investigating, identified, monitoring, resolved"),
        "{error}"
    );
    // The page shows them from its next reading (one a second here).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !get(port, "/api/v1/status.json", &[])
        .await
        .2
        .contains("Slow answers from the API")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the page never showed the incident"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The JSON: states as decided, the days, and nothing unpublished.
    let (status, headers, body) = get(port, "/api/v1/status.json", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"]["state"], "outage", "{json}");
    let checks: Vec<&Value> = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["checks"].as_array().unwrap())
        .collect();
    let state = |id: &str| {
        checks
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state("shop").as_deref(), Some("outage"));
    assert_eq!(state("api").as_deref(), Some("degraded"));
    assert_eq!(state("billing").as_deref(), Some("maintenance"));
    let api = checks.iter().find(|c| c["id"] == "api").unwrap();
    assert_eq!(
        (&api["locations"], &api["locations_failing"]),
        (&Value::from(3), &Value::from(1))
    );
    assert_eq!(api["target"], "https://api.example/");
    let shop = checks.iter().find(|c| c["id"] == "shop").unwrap();
    assert!(shop.get("target").is_none(), "{shop}");
    let days = shop["days"].as_array().unwrap();
    assert_eq!(days.len(), 90);
    let today = time::OffsetDateTime::now_utc().date();
    let day = |back: i64| {
        let date = (today - time::Duration::days(back)).to_string();
        days.iter().find(|d| d["date"] == date).unwrap().clone()
    };
    assert_eq!(day(2)["availability_percent"], 100.0, "{shop}");
    assert_eq!(
        day(3)["availability_percent"],
        Value::Null,
        "no data is not up: {shop}"
    );
    // Today holds the outage that began today (its seconds so far grow with each
    // reading).
    assert_eq!(day(0)["outages"], 1, "{shop}");
    assert_eq!(json["outages"][0]["name"], "Online shop");
    assert_eq!(json["outages"][0]["resolved_at"], Value::Null);
    // Incidents, newest first, each with its updates in order.
    let shown: Vec<(&str, &str)> = json["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["title"].as_str().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        shown,
        [
            ("Slow answers from the API", "monitoring"),
            ("Online shop is down", "identified")
        ]
    );
    let updates: Vec<&str> = json["incidents"][1]["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        updates,
        [
            "A quorum of locations finds it down.",
            "A bad deploy; rolling back."
        ]
    );
    assert_eq!(json["incidents"][0]["id"], manual["id"]);
    let maintenance: Vec<(&str, bool)> = json["maintenance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["reason"].as_str().unwrap(),
                m["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        maintenance,
        [
            ("Ledger migration", true),
            ("TLS certificate rotation", false)
        ]
    );
    for (path, body) in [
        ("/api/v1/status.json", &body),
        ("/", &get(port, "/", &[]).await.2),
        ("/feed.atom", &get(port, "/feed.atom", &[]).await.2),
        ("/partners", &get(port, "/partners", &[]).await.2),
    ] {
        assert!(
            !body.contains("secret"),
            "{path} names the unpublished check: {body}"
        );
        assert!(
            !body.contains("shop.example"),
            "{path} shows a target not to be shown"
        );
    }
    // The partners page has its own name for api and nothing else.
    let partners = get(port, "/partners/api/v1/status.json", &[]).await.2;
    let partners: Value = serde_json::from_str(&partners).unwrap();
    assert_eq!(partners["groups"][0]["checks"][0]["name"], "Partner API");
    assert_eq!(partners["groups"][0]["checks"].as_array().unwrap().len(), 1);
    assert_eq!(partners["status"]["state"], "degraded");
    // Its incidents: the API's only, under its name there.
    assert_eq!(
        partners["incidents"].as_array().unwrap().len(),
        1,
        "{partners}"
    );
    assert_eq!(
        partners["incidents"][0]["affects"],
        serde_json::json!(["Partner API"])
    );

    // Badges, only of published checks, each page of its own.
    let (status, headers, badge) = get(port, "/badge/shop/status.svg", &[]).await;
    assert_eq!(
        (status, &headers["content-type"]),
        (200, &"image/svg+xml".parse().unwrap())
    );
    assert!(badge.contains("<title>status: outage</title>"), "{badge}");
    let uptime = get(port, "/badge/api/uptime-30d.svg", &[]).await.2;
    assert!(
        uptime.contains("<title>uptime 30d: 100.00%</title>"),
        "{uptime}"
    );
    for path in [
        "/badge/secret/status.svg",
        "/partners/badge/shop/status.svg",
        "/badge/nothing/uptime-30d.svg",
    ] {
        assert_eq!(get(port, path, &[]).await.0, 404, "{path}");
    }
    // The feed names the outage.
    let feed = get(port, "/feed.atom", &[]).await.2;
    assert!(
        feed.contains("<title>[Identified] Online shop is down</title>"),
        "{feed}"
    );
    assert!(feed.contains("<link rel=\"self\" href=\"https://status.example.com/feed.atom\"/>"));

    // Cached and compressed: the same answer again is 304, and gzip when asked.
    // (A badge that stays the same: the page itself changes with every reading while
    // the open outage's length grows.)
    let badge = "/badge/api/status.svg";
    let (_, headers, _) = get(port, badge, &[]).await;
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(headers["cache-control"], "public, max-age=1");
    let (status, _, _) = get(port, badge, &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    let (status, _, _) = get(port, badge, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, 200);
    let (_, headers, _) = get(port, "/", &[("accept-encoding", "gzip")]).await;
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'; script-src 'self';")
    );

    // The browser, with JavaScript off, on a phone and on; then the outage ends and the
    // open page follows without a reload.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = tokio::process::Command::new("node")
        .current_dir(&browser_dir)
        .arg("status_page.mjs")
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(&shots)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stderr = tokio::io::BufReader::new(node.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let read = tokio::io::AsyncBufReadExt::read_line(&mut stderr, &mut line)
            .await
            .unwrap();
        assert!(read > 0, "the browser script ended before loading the page");
        if line.trim() == "loaded" {
            break;
        }
    }
    let later = SystemTime::now();
    let recovered: Vec<_> = (0..2)
        .flat_map(|step| {
            let at = later + Duration::from_secs(step);
            [
                check_run("shop", "eu", at, true),
                check_run("shop", "us", at, true),
            ]
        })
        .collect();
    setup.produce_checks(&recovered).await;
    let out = node.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the browser script failed: {}",
        std::fs::read_to_string(Processes::log(logs.path(), "status-page")).unwrap_or_default()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    for view in ["without_js", "with_js", "phone"] {
        let shown = &seen[view];
        assert_eq!(shown["title"], "Example status", "{view}");
        assert_eq!(shown["banner"], "Outage", "{view}");
        assert_eq!(shown["checks"]["shop"]["state"], "outage", "{view}");
        assert!(
            shown["checks"]["shop"]["state_text"]
                .as_str()
                .unwrap()
                .starts_with("Outage since "),
            "{view}: {shown}"
        );
        assert_eq!(
            shown["checks"]["api"]["state_text"], "Degraded (1 of 3 locations failing)",
            "{view}"
        );
        assert_eq!(shown["checks"]["api"]["target"], "https://api.example/");
        assert_eq!(shown["checks"]["shop"]["target"], Value::Null);
        assert_eq!(shown["checks"]["billing"]["state_text"], "Maintenance");
        assert_eq!(shown["checks"]["shop"]["bars"], 90, "{view}");
        let titles = shown["checks"]["shop"]["bar_titles"].as_array().unwrap();
        assert_eq!(
            titles[87],
            format!("{}: 100.00 % available", today - time::Duration::days(2)),
            "{view}"
        );
        assert_eq!(
            titles[86],
            format!("{}: no data", today - time::Duration::days(3))
        );
        assert!(
            titles[89].as_str().unwrap().contains(", 1 outage"),
            "{view}: {}",
            titles[89]
        );
        assert_eq!(shown["checks"]["shop"]["bar_classes"][86], "n");
        assert_eq!(shown["checks"]["shop"]["bar_classes"][87], "u");
        let incidents = shown["incidents"].as_array().unwrap();
        assert_eq!(incidents.len(), 2, "{view}: {incidents:?}");
        assert_eq!(incidents[1]["title"], "Online shop is down", "{view}");
        assert_eq!(incidents[1]["status"], "Identified");
        assert_eq!(incidents[1]["affects"], "Affects Online shop");
        let timeline = incidents[1]["updates"].as_array().unwrap();
        assert!(
            timeline[0]
                .as_str()
                .unwrap()
                .starts_with("Identified A bad deploy; rolling back. "),
            "{view}: {timeline:?}"
        );
        assert!(
            timeline[1]
                .as_str()
                .unwrap()
                .starts_with("Investigating A quorum of locations finds it down. "),
            "{view}: {timeline:?}"
        );
        assert_eq!(incidents[0]["affects"], "Affects Public API");
        let maintenance = shown["maintenance"].as_array().unwrap();
        assert!(
            maintenance[0]
                .as_str()
                .unwrap()
                .starts_with("In progress Billing: Ledger migration "),
            "{view}: {maintenance:?}"
        );
        assert!(
            maintenance[1]
                .as_str()
                .unwrap()
                .starts_with("Scheduled Public API: TLS certificate rotation "),
            "{view}: {maintenance:?}"
        );
        assert!(
            !shown["html"].as_str().unwrap().contains("secret"),
            "{view}"
        );
    }
    // On a phone the page fits the screen and shows the last 30 days.
    assert_eq!(seen["phone"]["scroll_width"], 390, "{}", seen["phone"]);
    assert_eq!(seen["phone"]["checks"]["shop"]["visible_bars"], 30);
    assert_eq!(seen["without_js"]["checks"]["shop"]["visible_bars"], 90);
    // The script refreshed the open page: the quorum recovered.
    let after = &seen["after_change"];
    assert_eq!(after["checks"]["shop"]["state"], "operational", "{after}");
    assert_eq!(after["banner"], "Some locations report problems");
    // Its incident resolved itself with the outage.
    assert_eq!(after["incidents"][1]["status"], "Resolved", "{after}");
    assert!(
        after["incidents"][1]["updates"][0]
            .as_str()
            .unwrap()
            .starts_with("Resolved Every location agrees it is back. "),
        "{after}"
    );
    assert_eq!(
        seen["reloaded"], 1,
        "one navigation: the page was not reloaded"
    );
    // A resolved incident takes no more updates.
    let (ok, _, error) = incidents(&["update", &auto, "--status", "monitoring", "--message", "m"]);
    assert!(!ok);
    assert!(
        error.contains(&format!(
            "FailedPrecondition: incident {auto} is resolved: open a new one (fleetmon incidents open)"
        )),
        "{error}"
    );
    procs.stop("status-page");
    drop_role(schema).await;
}

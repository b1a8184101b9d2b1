//! Alerts through the whole pipeline: three agents as processes run one central check
//! against a site the test takes down and brings back; the writer decides, a real
//! HTTP receiver gets the notifications, and `fleetmon alerts` / `fleetmon silence`
//! show and change what an operator relies on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fleetmon::testkit::{CentralRig, eventually, switchable_site};
use fleetmon::testkit::{WebhookReceiver, late_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_down_everywhere_alerts_once_and_resolves_once_through_the_whole_pipeline() {
    let receiver = WebhookReceiver::start().await;
    // Two channels that fail, with a secret in their URL's path as Slack's has: one
    // answers 500, one is a closed port. Neither URL may show anywhere whole.
    let refusing = WebhookReceiver::start().await;
    refusing.answer_with(500);
    let refusing_url = refusing
        .url()
        .replace("/hook", "/services/T0/B0/s3cretPathA");
    let closed_url = format!(
        "http://127.0.0.1:{}/services/T0/B0/s3cretPathB",
        late_port()
    );
    let mut rig = CentralRig::start(&format!(
        "[alerts]\nevaluate_interval_seconds = 1\n\
         [[alerts.webhooks]]\nname = \"ops\"\nurl = \"{}\"\n\
         [[alerts.webhooks]]\nname = \"refusing\"\nurl = \"{refusing_url}\"\n\
         [[alerts.webhooks]]\nname = \"closed\"\nurl = \"{closed_url}\"\n",
        receiver.url()
    ))
    .await;
    let down = Arc::new(AtomicBool::new(false));
    let port = switchable_site(down.clone()).await;
    for agent in ["eu-1", "us-1", "ap-1"] {
        rig.agent(agent, "tier = \"edge\"");
    }
    let url = format!("http://127.0.0.1:{port}/");
    rig.add_shop(
        &url,
        &[
            "--interval",
            "1",
            "--labels",
            "tier=edge",
            "--failure-threshold",
            "2",
        ],
    );
    eventually(
        &rig.schema,
        "SELECT count(DISTINCT agent_id) FROM site_checks WHERE check_id = 'shop' AND ok",
        "every location checks the site",
        |n| n == 3,
    )
    .await;
    assert_eq!(rig.fleetmon_ok(&["alerts", "--open"]), "no open alerts\n");

    down.store(true, Ordering::SeqCst);
    receiver
        .wait_until("the opened notification", |_| {
            receiver.delivered().iter().any(|n| n.1 == "opened")
        })
        .await;
    let open: serde_json::Value =
        serde_json::from_str(&rig.fleetmon_ok(&["alerts", "--open", "--json"])).unwrap();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open[0]["kind"], "check_down");
    assert_eq!(open[0]["subject"], "shop");
    let cause = open[0]["cause"].as_str().unwrap();
    assert!(
        cause.starts_with("check shop is down at ") && cause.contains("status"),
        "{cause}"
    );

    // A silence is listed, then ended; while it lasts nothing would be sent.
    let added = rig.fleetmon_ok(&[
        "silence", "add", "--check", "shop", "--for", "1h", "--reason", "deploy",
    ]);
    assert!(added.starts_with("silence 1 until "), "{added}");
    let listed = rig.fleetmon_ok(&["silence", "list"]);
    assert!(
        listed.starts_with("ID  CHECK  AGENT  ENDS")
            && listed.contains("  shop  ")
            && listed.contains("deploy"),
        "{listed}"
    );
    assert_eq!(
        rig.fleetmon_ok(&["silence", "rm", "1"]),
        "silence 1 ended\n"
    );
    assert_eq!(rig.fleetmon_ok(&["silence", "list"]), "no silences\n");

    // A weekly maintenance window, as an operator plans one.
    let words = |line: &'static str| line.split(' ').collect::<Vec<_>>();
    let planned = rig.fleetmon_ok(&words(
        "maintenance add --check shop --weekly sun,sat --at 02:00 --for 2h --tz Europe/Berlin --reason backups",
    ));
    assert!(
        planned.starts_with("maintenance 1: sun,sat 02:00 for 120 min (Europe/Berlin)"),
        "{planned}"
    );
    let listed = rig.fleetmon_ok(&["maintenance", "list"]);
    assert!(
        listed.starts_with("ID  NAME  CHECK  AGENT  WHEN")
            && listed.contains("  shop  ")
            && listed.contains("sun,sat 02:00 for 120 min (Europe/Berlin)")
            && listed.contains("backups"),
        "{listed}"
    );
    let (ok, _, stderr) = rig.fleetmon(&words(
        "maintenance add --check shop --weekly sun --at 02:00 --for 1h --tz Berlin",
    ));
    assert!(!ok);
    assert!(
        stderr.ends_with("InvalidArgument: time_zone `Berlin` is not a time zone: use an IANA name such as Europe/Berlin, America/New_York or UTC\n"),
        "{stderr}"
    );
    assert_eq!(
        rig.fleetmon_ok(&["maintenance", "rm", "1"]),
        "maintenance 1 removed\n"
    );
    assert_eq!(
        rig.fleetmon_ok(&["maintenance", "list"]),
        "no maintenance windows\n"
    );
    maintenance_from_a_file(&rig);
    let (ok, _, stderr) = rig.fleetmon(&["silence", "add", "--check", "nope", "--for", "1h"]);
    assert!(!ok);
    assert!(
        stderr.ends_with("NotFound: check_id: no check `nope` (see `fleetmon checks list`)\n"),
        "{stderr}"
    );

    down.store(false, Ordering::SeqCst);
    receiver
        .wait_until("the resolved notification", |_| {
            receiver.delivered().iter().any(|n| n.1 == "resolved")
        })
        .await;
    assert_eq!(rig.fleetmon_ok(&["alerts", "--open"]), "no open alerts\n");
    let events: Vec<(String, String, String)> = receiver
        .delivered()
        .into_iter()
        .map(|(_, event, kind, subject)| (event, kind, subject))
        .collect();
    assert_eq!(
        events,
        [
            ("opened".into(), "check_down".into(), "shop".into()),
            ("resolved".into(), "check_down".into(), "shop".into())
        ]
    );
    let shown = rig.fleetmon_ok(&["alerts", "show", open[0]["id"].to_string().as_str()]);
    assert!(
        shown.starts_with("alert 1 · check_down shop · resolved\n"),
        "{shown}"
    );
    assert!(
        shown.contains(" opened ") && shown.contains(" resolved "),
        "{shown}"
    );
    // The failing channels say why with the service's address only.
    let refused = refusing
        .url()
        .replace("/hook", "/… answered 500 Internal Server Error");
    assert!(shown.contains(&format!("retrying: {refused}")), "{shown}");
    let closed = closed_url.replace("/services/T0/B0/s3cretPathB", "/…: error sending request");
    assert!(shown.contains(&format!("retrying: {closed}")), "{shown}");
    let json = rig.fleetmon_ok(&[
        "alerts",
        "show",
        open[0]["id"].to_string().as_str(),
        "--json",
    ]);
    let log = std::fs::read_to_string(rig.logs.path().join("writer.log")).unwrap();
    for (what, text) in [
        ("alerts show", &shown),
        ("--json", &json),
        ("the writer's log", &log),
    ] {
        assert!(
            !text.contains("s3cretPath"),
            "a webhook URL's secret path shows in {what}: {text}"
        );
    }

    // A channel tested from the command line gets a test alert's opening and
    // resolution in one delivery; a refusing one says what it answered.
    let before = receiver.requests().len();
    assert_eq!(
        rig.fleetmon_ok(&["alerts", "test-channel", "ops"]),
        "channel ops (webhook): accepted\n"
    );
    let tested = receiver.requests()[before].body.clone();
    let events: Vec<&str> = tested["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["event"].as_str())
        .collect();
    assert_eq!(events, ["opened", "resolved"], "{tested}");
    assert_eq!(tested["notifications"][0]["alert"]["kind"], "test");
    let (ok, stdout, _) = rig.fleetmon(&["alerts", "test-channel", "refusing"]);
    assert!(!ok);
    assert_eq!(stdout, format!("channel refusing (webhook): {refused}\n"));
    let (ok, _, stderr) = rig.fleetmon(&["alerts", "test-channel", "nope"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "NotFound: channel: no channel `nope` in this writer's [alerts] (webhooks and channels)"
        ),
        "{stderr}"
    );
}

/// Named windows from a file: created, left alone when unchanged, replaced when
/// changed, pruned when dropped; a window made by hand is never touched; mistakes are
/// named by file, window and field.
fn maintenance_from_a_file(rig: &CentralRig) {
    let rfc3339 = |offset: time::Duration| {
        (time::OffsetDateTime::now_utc() + offset)
            .replace_nanosecond(0)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (from, until) = (
        rfc3339(time::Duration::hours(1)),
        rfc3339(time::Duration::hours(3)),
    );
    // The weekly windows for shop fall three days off, so that they never hold back
    // this test's notifications (a fixed day failed the test when run in that hour).
    let day = (time::OffsetDateTime::now_utc() + time::Duration::days(3))
        .weekday()
        .to_string()[..3]
        .to_lowercase();
    let file = rig.logs.path().join("maintenance.toml");
    let path = file.display().to_string();
    let write = |patching_for: &str, with_move: bool| {
        let mut text = format!(
            "[[windows]]\nname = \"db-patching\"\ncheck = \"shop\"\nreason = \"patching\"\n\
             weekly = [\"{day}\"]\nat = \"02:00\"\nfor = \"{patching_for}\"\ntime_zone = \"Europe/Berlin\"\n\n\
             [[windows]]\nname = \"last-year\"\ncheck = \"shop\"\n\
             from = \"2025-01-01T00:00:00Z\"\nuntil = \"2025-01-02T00:00:00Z\"\n\n\
             [[windows]]\nname = \"db-tier\"\nlabels = {{ role = \"db\" }}\nweekly = [\"sat\"]\nat = \"23:00\"\nfor = \"30m\"\n"
        );
        if with_move {
            text.push_str(&format!(
                "\n[[windows]]\nname = \"move\"\ncheck = \"shop\"\nfrom = \"{from}\"\nuntil = \"{until}\"\n"
            ));
        }
        std::fs::write(&file, text).unwrap();
    };
    let apply =
        |extra: &[&str]| rig.fleetmon_ok(&[&["maintenance", "apply", "-f", &path], extra].concat());

    write("2h", true);
    assert_eq!(
        apply(&[]),
        "+ db-patching\n+ db-tier\n+ move\n  last-year: over, left out\n3 to create, 0 to update, 0 to remove, 0 unchanged\n"
    );
    assert_eq!(
        apply(&[]),
        "  last-year: over, left out\n0 to create, 0 to update, 0 to remove, 3 unchanged\n"
    );
    // A window made by hand has no name: apply never touches it.
    let by_hand = format!("maintenance add --check shop --weekly {day} --at 03:00 --for 1h");
    let by_hand: Vec<&str> = by_hand.split(' ').collect();
    rig.fleetmon_ok(&by_hand);
    let (ok, _, stderr) = rig.fleetmon(&[&by_hand[..], &["--name", "db-patching"]].concat());
    assert!(!ok);
    assert!(
        stderr.contains("AlreadyExists: maintenance window `db-patching` exists (window 2): remove it first, or change it with fleetmon maintenance apply"),
        "{stderr}"
    );

    write("3h", false);
    assert_eq!(
        apply(&["--prune", "--dry-run"]),
        "~ db-patching\n- move (window 4)\n  last-year: over, left out\n0 to create, 1 to update, 1 to remove, 1 unchanged\n"
    );
    apply(&["--prune"]);
    let listed = rig.fleetmon_ok(&["maintenance", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let windows: Vec<(String, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                w["duration_minutes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        windows,
        [
            ("db-tier".to_owned(), 30),
            ("".to_owned(), 60),
            ("db-patching".to_owned(), 180)
        ],
        "{listed}"
    );
    let table = rig.fleetmon_ok(&["maintenance", "list"]);
    assert!(
        table
            .lines()
            .any(|line| line.contains("db-tier") && line.contains(" role=db ")),
        "{table}"
    );

    std::fs::write(
        &file,
        "[[windows]]\nname = \"odd\"\ncheck = \"shop\"\nweekly = [\"funday\"]\n",
    )
    .unwrap();
    let (ok, _, stderr) = rig.fleetmon(&["maintenance", "apply", "-f", &path]);
    assert!(!ok);
    assert_eq!(
        stderr,
        format!(
            "error: {path}: window `odd`: `weekly` `funday` is not a day: use sun, mon, tue, wed, thu, fri or sat\n"
        )
    );
}

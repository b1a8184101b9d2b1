//! Alerts end to end through the writer: check results on Kafka from several
//! locations, state and alerts in Postgres, notifications at a real HTTP receiver.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use fleetmon::identity::Role;
use fleetmon::pb::alerts_client::AlertsClient;
use fleetmon::pb::{
    Alerting, Assignment, CheckDefinition, CreateSilenceRequest, GetAlertRequest, HttpCheck,
    ListAlertsRequest, SiteCheck, check_definition,
};
use fleetmon::testkit::WebhookReceiver;
use fleetmon_writer::config::{ChannelConfig, ChannelKind, WebhookConfig};
use fleetmon_writer::testkit::*;
use tonic::Code;
use tonic::transport::Channel;

/// One run of `check_id` at `agent`, `secs` seconds after `base`.
fn run(check_id: &str, agent: &str, base: SystemTime, secs: u64, ok: bool) -> SiteCheck {
    check_run(check_id, agent, base + Duration::from_secs(secs), ok)
}

/// An https check of `id` run by the agent `eu`.
fn definition(id: &str, alerting: Option<Alerting>) -> CheckDefinition {
    CheckDefinition {
        id: id.to_owned(),
        version: 1,
        assignment: Some(Assignment {
            agents: vec!["eu".to_owned()],
            ..Default::default()
        }),
        kind: Some(check_definition::Kind::Http(HttpCheck {
            url: format!("https://{id}.example/"),
            ..Default::default()
        })),
        alerting,
        ..Default::default()
    }
}

fn webhook(receiver: &WebhookReceiver) -> WebhookConfig {
    WebhookConfig {
        name: "ops".to_owned(),
        url: receiver.url(),
        format: Default::default(),
        send_resolved: true,
        headers: Default::default(),
    }
}

async fn writer_with_webhook(setup: &Setup, receiver: &WebhookReceiver) -> TestWriter {
    let hook = webhook(receiver);
    setup
        .start_writer_with(move |config| {
            config.alerts.webhooks = vec![hook];
            config.alerts.evaluate_interval_seconds = 1;
        })
        .await
}

/// The open alerts, as the Alerts API lists them.
async fn open_alerts(alerts: &mut AlertsClient<Channel>) -> Vec<fleetmon::pb::Alert> {
    alerts
        .list_alerts(ListAlertsRequest {
            open_only: true,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .alerts
}

fn alerts_client(setup: &Setup, writer: &TestWriter) -> AlertsClient<Channel> {
    let files = setup.pki.client(Role::Operator, "ops");
    let url = format!("https://{}", writer.running.grpc_addr);
    AlertsClient::new(
        fleetmon::tls::endpoint(&url, &files)
            .unwrap()
            .connect_lazy(),
    )
}

/// `(event, kind, subject)` of every delivered notification.
fn delivered(receiver: &WebhookReceiver) -> Vec<(String, String, String)> {
    receiver
        .delivered()
        .into_iter()
        .map(|(_, event, kind, subject)| (event, kind, subject))
        .collect()
}

fn note(event: &str, kind: &str, subject: &str) -> (String, String, String) {
    (event.to_owned(), kind.to_owned(), subject.to_owned())
}

/// Waits until `expected.len()` notifications were delivered, then checks they are
/// exactly `expected`, in order.
async fn delivered_exactly(receiver: &WebhookReceiver, expected: &[(String, String, String)]) {
    receiver
        .wait_until("every expected notification", |_| {
            receiver.delivered().len() >= expected.len()
        })
        .await;
    assert_eq!(delivered(receiver), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_locations_quorum_two_one_alert_opened_and_resolved_once() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    let base = seconds_ago(60);
    let locations = ["eu", "us", "ap"];
    setup
        .produce_checks(&locations.map(|agent| run("shop", agent, base, 0, true)))
        .await;
    // One location failing three times is DOWN there, and raises nothing.
    let eu_fails: Vec<_> = (1..=3).map(|s| run("shop", "eu", base, s, false)).collect();
    setup.produce_checks(&eu_fails).await;
    setup
        .wait_for(
            "SELECT count(*) FROM check_state WHERE check_id = 'shop' AND agent_id = 'eu' AND down",
            1,
        )
        .await;
    assert_eq!(setup.scalar("SELECT count(*) FROM alerts").await, 0);

    // A second one makes the quorum: one alert.
    let us_fails: Vec<_> = (1..=3).map(|s| run("shop", "us", base, s, false)).collect();
    setup.produce_checks(&us_fails).await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'check_down' AND subject = 'shop' AND resolved_at IS NULL",
            1,
        )
        .await;
    receiver
        .wait_until("the opened notification", |r| !r.is_empty())
        .await;

    // One success each is below the success threshold (2): still open.
    setup
        .produce_checks(&[
            run("shop", "eu", base, 4, true),
            run("shop", "us", base, 4, true),
        ])
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM check_state WHERE check_id = 'shop' AND agent_id <> 'ap' AND consecutive_successes = 1",
            2,
        )
        .await;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM alerts WHERE resolved_at IS NULL")
            .await,
        1
    );
    // The second success at one location leaves one DOWN of three: resolved.
    setup
        .produce_checks(&[run("shop", "eu", base, 5, true)])
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE resolved_at IS NOT NULL",
            1,
        )
        .await;
    receiver
        .wait_until("the resolved notification", |r| {
            r.iter().filter(|r| r.answered == 200).count() >= 2
        })
        .await;
    // Nothing more is sent: the outbox is empty after a round of the rules that began
    // after the resolution.
    writer.after_a_full_round().await;
    setup
        .wait_for(
            "SELECT count(*) FROM notifications WHERE delivered_at IS NULL",
            0,
        )
        .await;
    assert_eq!(
        delivered(&receiver),
        [
            note("opened", "check_down", "shop"),
            note("resolved", "check_down", "shop")
        ]
    );
    let alert = &alerts_client(&setup, &writer)
        .list_alerts(ListAlertsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .alerts[0];
    assert_eq!(alert.locations, ["eu", "us"]);
    assert!(
        alert.cause.starts_with(
            "check shop is down at 2 of 3 locations (quorum 2): eu: unexpected status"
        ),
        "{}",
        alert.cause
    );
    let timeline = alerts_client(&setup, &writer)
        .get_alert(GetAlertRequest { id: alert.id })
        .await
        .unwrap()
        .into_inner();
    let events: Vec<&str> = timeline.timeline.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(events, ["opened", "resolved"]);
    assert!(
        timeline
            .notifications
            .iter()
            .all(|n| n.delivered_at.is_some() && n.delivery_key.starts_with("fleetmon-ops-"))
    );
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_from_an_agents_own_config_alerts_as_one_location_of_its_own() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    let base = seconds_ago(60);
    let url = "http://127.0.0.1:9/";
    let subject = format!("edge {url}");
    let local = |secs: u64, ok: bool| {
        let mut row = check(
            "edge",
            next_seq(),
            base + Duration::from_secs(secs),
            url,
            Some(if ok { 200 } else { 503 }),
            ok,
            20.0,
        );
        row.check_id = String::new();
        row.check_version = 0;
        // Three intervals reach back past `base`: the runs are recent enough to count.
        row.interval_seconds = 30;
        row
    };
    // Two failures are below the threshold (3): DOWN nowhere yet.
    setup
        .produce_checks(&[local(0, true), local(1, false), local(2, false)])
        .await;
    setup
        .wait_for(
            &format!(
                "SELECT count(*) FROM check_state WHERE check_id = '{subject}' AND agent_id = 'edge' \
                 AND consecutive_failures = 2 AND NOT down AND interval_seconds = 30"
            ),
            1,
        )
        .await;
    assert_eq!(setup.scalar("SELECT count(*) FROM alerts").await, 0);

    // The third: one location of one is the whole quorum.
    setup.produce_checks(&[local(3, false)]).await;
    setup
        .wait_for(
            &format!(
                "SELECT count(*) FROM alerts WHERE kind = 'check_down' AND subject = '{subject}' \
                 AND agent_id = 'edge' AND resolved_at IS NULL"
            ),
            1,
        )
        .await;
    let cause = setup.text("SELECT cause FROM alerts").await;
    assert_eq!(
        cause,
        "site http://127.0.0.1:9/ is down at edge (3 failed runs in a row): unexpected status"
    );

    // Two passes: resolved, and both transitions were told.
    setup
        .produce_checks(&[local(4, true), local(5, true)])
        .await;
    delivered_exactly(
        &receiver,
        &[
            note("opened", "check_down", &subject),
            note("resolved", "check_down", &subject),
        ],
    )
    .await;
    let detail = setup
        .text("SELECT detail FROM alert_events WHERE event = 'resolved'")
        .await;
    assert_eq!(detail, "site http://127.0.0.1:9/ is up again at edge");
    // An agent's own sites say nothing of its reach: no location alert.
    writer.after_a_full_round().await;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM alerts WHERE kind <> 'check_down'")
            .await,
        0
    );
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_that_cannot_reach_its_targets_is_one_location_alert_and_no_site_alert() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    let base = seconds_ago(60);
    let checks = ["api", "www", "cdn"];
    let mut ok_elsewhere = Vec::new();
    for check in checks {
        for agent in ["us", "ap"] {
            ok_elsewhere.extend((0..=3).map(|s| run(check, agent, base, s, true)));
        }
    }
    setup.produce_checks(&ok_elsewhere).await;
    setup.wait_for("SELECT count(*) FROM check_state", 6).await;
    let cut: Vec<_> = checks
        .iter()
        .flat_map(|check| (1..=3).map(move |s| run(check, "eu", base, s, false)))
        .collect();
    setup.produce_checks(&cut).await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'location_unreachable' AND subject = 'eu'",
            1,
        )
        .await;
    receiver
        .wait_until("the location notification", |r| !r.is_empty())
        .await;
    // Every cut run is stored, and a round of the rules began after that: a site alert
    // would have opened by now.
    setup
        .wait_for("SELECT count(*) FROM site_checks WHERE agent_id = 'eu'", 9)
        .await;
    writer.after_a_full_round().await;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM alerts WHERE kind <> 'location_unreachable'")
            .await,
        0
    );
    assert_eq!(
        delivered(&receiver),
        [note("opened", "location_unreachable", "eu")]
    );
    let cause = setup.text("SELECT cause FROM alerts").await;
    assert_eq!(
        cause,
        "location eu cannot reach its targets: 3 of its 3 checks fail there and pass elsewhere (api, cdn, www)"
    );
    // Its network back: two passes on every check resolve it.
    let back: Vec<_> = checks
        .iter()
        .flat_map(|check| (4..=5).map(move |s| run(check, "eu", base, s, true)))
        .collect();
    setup.produce_checks(&back).await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE resolved_at IS NOT NULL",
            1,
        )
        .await;
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_holds_notifications_back_and_a_burst_is_grouped() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    setup.produce_definition(&definition("quiet", None)).await;
    setup
        .wait_for("SELECT count(*) FROM checks WHERE check_id = 'quiet'", 1)
        .await;
    let mut alerts = alerts_client(&setup, &writer);
    let silence = alerts
        .create_silence(CreateSilenceRequest {
            check_id: "quiet".to_owned(),
            agent_id: String::new(),
            reason: "maintenance".to_owned(),
            duration_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(silence.created_by, "ops");

    let base = seconds_ago(60);
    let quiet: Vec<_> = (1..=3)
        .map(|s| run("quiet", "eu", base, s, false))
        .collect();
    setup.produce_checks(&quiet).await;
    setup
        .wait_for(
            &format!(
                "SELECT count(*) FROM notifications WHERE silenced_by = {}",
                silence.id
            ),
            1,
        )
        .await;
    let listed = open_alerts(&mut alerts).await;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].silenced,
        "the alert is recorded, and shown silenced"
    );

    // 60 checks failing at once: a few grouped deliveries, not 60.
    let burst: Vec<_> = (0..60)
        .flat_map(|i| (1..=3).map(move |s| run(&format!("burst-{i}"), "eu", base, s, false)))
        .collect();
    setup.produce_checks(&burst).await;
    receiver
        .wait_until("every burst notification", |_| {
            receiver.delivered().len() == 60
        })
        .await;
    let requests = receiver.requests();
    assert!(
        requests.len() <= 6,
        "60 notifications took {} requests",
        requests.len()
    );
    assert!(
        receiver
            .delivered()
            .iter()
            .all(|(_, event, kind, subject)| event == "opened"
                && kind == "check_down"
                && subject.starts_with("burst-")),
        "nothing of the silenced check was sent"
    );
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_silences_are_refused_with_the_field_named() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let mut alerts = alerts_client(&setup, &writer);
    let cases = [
        (
            CreateSilenceRequest {
                duration_seconds: 60,
                ..Default::default()
            },
            Code::InvalidArgument,
            "check_id or agent_id is required: a silence must match something",
        ),
        (
            CreateSilenceRequest {
                check_id: "nope".to_owned(),
                duration_seconds: 60,
                ..Default::default()
            },
            Code::NotFound,
            "check_id: no check `nope` (see `fleetmon checks list`)",
        ),
        (
            CreateSilenceRequest {
                agent_id: "eu".to_owned(),
                duration_seconds: 0,
                ..Default::default()
            },
            Code::InvalidArgument,
            "duration_seconds must be from 1 to 2678400 (31 days)",
        ),
        (
            CreateSilenceRequest {
                agent_id: "eu".to_owned(),
                duration_seconds: 60,
                reason: "é".repeat(501),
                ..Default::default()
            },
            Code::InvalidArgument,
            "reason is 501 characters long: keep it to 500 (link to the ticket for more)",
        ),
    ];
    for (request, code, message) in cases {
        let status = alerts.create_silence(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
    let status = alerts
        .get_alert(GetAlertRequest { id: 0 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "id must be a positive id");
    let mut as_agent = AlertsClient::new(
        fleetmon::tls::endpoint(
            &format!("https://{}", writer.running.grpc_addr),
            &setup.pki.client(Role::Agent, "eu"),
        )
        .unwrap()
        .connect_lazy(),
    );
    let status = as_agent
        .list_alerts(ListAlertsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_silent_for_three_intervals_alerts_and_resolves_when_it_returns() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    let sample = |seq| HostSampleAt::now(seq).sample("edge-1");
    setup.produce_hosts(&[sample(1)]).await;
    setup
        .wait_for("SELECT count(*) FROM agents WHERE interval_seconds = 1", 1)
        .await;
    // Nothing more: after three seconds, by time alone, it is silent.
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'agent_silent' AND subject = 'edge-1' AND resolved_at IS NULL",
            1,
        )
        .await;
    setup.produce_hosts(&[sample(2)]).await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'agent_silent' AND resolved_at IS NOT NULL",
            1,
        )
        .await;
    delivered_exactly(
        &receiver,
        &[
            note("opened", "agent_silent", "edge-1"),
            note("resolved", "agent_silent", "edge-1"),
        ],
    )
    .await;
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_waiting_behind_a_stalled_writer_never_make_an_agent_silent() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    let sample = |seq| HostSampleAt::now(seq).sample("edge-1");
    // The agent samples every second (the scenario's clock), stored as it comes,
    // until the writers have saved how far they stored the host topic.
    let mut seq = 1;
    setup.produce_hosts(&[sample(seq)]).await;
    let progress = format!(
        "SELECT count(*) FROM partition_progress WHERE topic = '{}' AND stored_up_to > now() - interval '5 seconds'",
        setup.config.kafka.host_samples_topic
    );
    while setup.scalar(&progress).await == 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seq += 1;
        setup.produce_hosts(&[sample(seq)]).await;
    }
    // The writer stalls: storing host rows waits for a lock the test holds (reading
    // does not), while the agent goes on for 12 s, four times its silent threshold.
    let blocker = setup.schema.connect().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE host_samples IN SHARE MODE")
        .await
        .unwrap();
    let stalled_at = seq;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seq += 1;
        setup.produce_hosts(&[sample(seq)]).await;
    }
    // The rules ran meanwhile (two full rounds after the last sample), judging by what
    // was stored, which stopped at the stall.
    writer.after_a_full_round().await;
    assert!(
        setup.scalar("SELECT count(*) FROM host_samples").await <= stalled_at as i64,
        "the writer did not stall"
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    setup
        .wait_for("SELECT count(*) FROM host_samples", seq as i64)
        .await;
    writer.after_a_full_round().await;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM alerts WHERE kind = 'agent_silent'")
            .await,
        0,
        "an agent was called silent while its samples waited in Kafka"
    );
    // The rule still decides: the agent stops, and it is silent.
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'agent_silent' AND subject = 'edge-1' AND resolved_at IS NULL",
            1,
        )
        .await;
    delivered_exactly(&receiver, &[note("opened", "agent_silent", "edge-1")]).await;
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_claiming_an_absurd_interval_switches_off_no_time_rule() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    // A rule of this database refuses disk_full alerts: that rule fails on its data
    // every round, and must be skipped (and counted) without stopping the others.
    setup
        .schema
        .connect()
        .await
        .batch_execute("ALTER TABLE alerts ADD CONSTRAINT no_disk_full CHECK (kind <> 'disk_full')")
        .await
        .unwrap();
    // Straight onto the topic, past the collector's bounds: the largest interval a
    // sample can claim, on a busy CPU (so the CPU rule's arithmetic reads it) and a
    // full disk.
    let hostile = fleetmon::pb::HostSample {
        interval_seconds: u32::MAX,
        cpu_usage_percent: 99.0,
        disk_used_bytes: 99 << 30,
        disk_available_bytes: Some(1 << 30),
        ..host("hostile", 1, SystemTime::now())
    };
    let edge = HostSampleAt {
        seq: 1,
        ts: SystemTime::now(),
    }
    .sample("edge-1");
    setup.produce_hosts(&[hostile, edge]).await;
    setup.wait_for("SELECT count(*) FROM agents", 2).await;
    // The silent rule still decides for everyone else.
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'agent_silent' AND subject = 'edge-1' AND resolved_at IS NULL",
            1,
        )
        .await;
    let skipped = fleetmon::testkit::metric_value(
        writer.running.metrics_addr,
        "fleetmon_writer_alert_evaluations_skipped_total",
    )
    .unwrap_or(0.0);
    assert!(skipped >= 1.0, "the disk rule was not counted as skipped");
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_clock_is_off_alerts_clock_skew_until_it_is_fixed() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    let sample = |seq, offset_ms| fleetmon::pb::HostSample {
        clock_offset_ms: Some(offset_ms),
        ..HostSampleAt {
            seq,
            ts: SystemTime::now(),
        }
        .sample("drifting")
    };
    setup.produce_hosts(&[sample(1, -125_400)]).await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'clock_skew' AND subject = 'drifting' AND resolved_at IS NULL",
            1,
        )
        .await;
    let cause = setup
        .text("SELECT cause FROM alerts WHERE kind = 'clock_skew'")
        .await;
    assert_eq!(
        cause,
        "the clock of drifting is 125 s behind its collector's (the limit is 60 s; samples more than the collector's limits.max_clock_skew_seconds ahead are refused): fix its time sync"
    );
    setup.produce_hosts(&[sample(2, 300)]).await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'clock_skew' AND resolved_at IS NOT NULL",
            1,
        )
        .await;
    writer.stop().await;
}

/// A host sample of one agent that samples every second.
struct HostSampleAt {
    seq: u64,
    ts: SystemTime,
}

impl HostSampleAt {
    /// Sample `seq`, taken now.
    fn now(seq: u64) -> Self {
        HostSampleAt {
            seq,
            ts: SystemTime::now(),
        }
    }

    fn sample(&self, agent: &str) -> fleetmon::pb::HostSample {
        fleetmon::pb::HostSample {
            interval_seconds: 1,
            ..host(agent, self.seq, self.ts)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_hand_over_an_open_incident_without_a_second_alert() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    setup
        .produce_definition(&definition(
            "pay",
            Some(Alerting {
                failure_threshold: 2,
                success_threshold: 3,
                quorum: 1,
            }),
        ))
        .await;
    let first = writer_with_webhook(&setup, &receiver).await;
    setup
        .wait_for("SELECT count(*) FROM checks WHERE check_id = 'pay'", 1)
        .await;
    let base = seconds_ago(60);
    setup
        .produce_checks(&[
            run("pay", "eu", base, 1, false),
            run("pay", "eu", base, 2, false),
        ])
        .await;
    setup
        .wait_for("SELECT count(*) FROM alerts WHERE resolved_at IS NULL", 1)
        .await;
    // A second writer joins; the first leaves mid-incident.
    let second = writer_with_webhook(&setup, &receiver).await;
    first.stop().await;
    let more: Vec<_> = (3..=5)
        .map(|s| run("pay", "eu", base, s, false))
        .chain((6..=7).map(|s| run("pay", "eu", base, s, true)))
        .collect();
    setup.produce_checks(&more).await;
    setup
        .wait_for(
            "SELECT count(*) FROM check_state WHERE consecutive_successes = 2",
            1,
        )
        .await;
    assert_eq!(
        setup.scalar("SELECT count(*) FROM alerts").await,
        1,
        "the failures after the hand-over open nothing new"
    );
    // The third success in a row resolves it, under the second writer.
    setup
        .produce_checks(&[run("pay", "eu", base, 8, true)])
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE resolved_at IS NOT NULL",
            1,
        )
        .await;
    delivered_exactly(
        &receiver,
        &[
            note("opened", "check_down", "pay"),
            note("resolved", "check_down", "pay"),
        ],
    )
    .await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_before_delivering_sends_the_same_key_after_restart() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    receiver.answer_with(503);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("writer.toml");
    let c = &setup.config;
    let certs = setup.pki.dir();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nclient_ca = \"{ca}\"\n\
             [kafka]\nbootstrap_servers = \"{kafka}\"\ngroup_id = \"{group}\"\n\
             host_samples_topic = \"{host}\"\nsite_checks_topic = \"{site}\"\n\
             checks_topic = \"{checks}\"\ndead_letter_topic = \"{dlq}\"\n\
             [kafka.options]\n\"session.timeout.ms\" = 6000\n\
             [postgres]\nurl = \"{pg}\"\nschema = \"{schema}\"\n\
             [batch]\nlinger_ms = 50\n\
             [[alerts.webhooks]]\nname = \"ops\"\nurl = \"{hook}\"\n",
            cert = certs.join("writer.pem").display(),
            key = certs.join("writer-key.pem").display(),
            ca = certs.join("ca.pem").display(),
            kafka = c.kafka.bootstrap_servers,
            group = c.kafka.group_id,
            host = c.kafka.host_samples_topic,
            site = c.kafka.site_checks_topic,
            checks = c.kafka.checks_topic,
            dlq = c.kafka.dead_letter_topic,
            pg = c.postgres.url,
            schema = c.postgres.schema,
            hook = receiver.url(),
        ),
    )
    .unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_fleetmon-writer"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fleetmon-writer")
    };
    let mut writer = spawn();
    let base = seconds_ago(60);
    let fails: Vec<_> = (1..=3).map(|s| run("cart", "eu", base, s, false)).collect();
    setup.produce_checks(&fails).await;
    receiver
        .wait_until("a first, refused delivery", |r| !r.is_empty())
        .await;
    // Killed between the committed transition and a delivery that succeeded.
    writer.kill().unwrap();
    writer.wait().unwrap();
    let refused_key = receiver.requests()[0].idempotency_key.clone();
    assert!(!refused_key.is_empty());
    receiver.answer_with(200);
    let mut restarted = spawn();
    receiver
        .wait_until("the delivery after the restart", |r| {
            r.iter().any(|r| r.answered == 200)
        })
        .await;
    // Delivered and recorded as such: nothing is left for the notifier to send again.
    setup
        .wait_for(
            "SELECT count(*) FROM notifications WHERE delivered_at IS NULL",
            0,
        )
        .await;
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].0, refused_key, "the same idempotency key");
    assert_eq!(setup.scalar("SELECT count(*) FROM alerts").await, 1);
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM alert_events WHERE event = 'opened'")
            .await,
        1,
        "the transition was applied once"
    );
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM notifications WHERE delivered_at IS NOT NULL")
            .await,
        1
    );
}

/// A session holding the `silences` table locked, as a long maintenance would: every
/// read of alerts and silences waits on it until `ROLLBACK`.
async fn lock_silences(setup: &Setup) -> tokio_postgres::Client {
    let locker = setup.schema.connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE silences IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    locker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_queries_have_their_own_connections_and_a_time_limit() {
    let setup = Setup::new().await;
    let writer = setup
        .start_writer_with(|config| {
            config.alerts.enabled = false;
            config.postgres.pool_size = 1;
            config.postgres.query_pool_size = 2;
        })
        .await;
    let locker = lock_silences(&setup).await;
    // More stuck API calls than the writer has connections of any kind.
    let stuck: Vec<_> = (0..4)
        .map(|_| {
            let mut client = alerts_client(&setup, &writer);
            tokio::spawn(async move {
                client
                    .list_silences(fleetmon::pb::ListSilencesRequest {})
                    .await
            })
        })
        .collect();
    let now = SystemTime::now();
    setup.produce_hosts(&[host("while-stuck", 1, now)]).await;
    setup
        .wait_for(
            "SELECT count(*) FROM host_samples WHERE agent_id = 'while-stuck'",
            1,
        )
        .await;
    assert!(
        stuck.iter().all(|call| !call.is_finished()),
        "the calls were still waiting while the batch was stored"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    for call in stuck {
        call.await.unwrap().expect("answered once the lock is gone");
    }
    writer.stop().await;

    // A query that runs past postgres.query_timeout_seconds is cancelled.
    let writer = setup
        .start_writer_with(|config| config.postgres.query_timeout_seconds = 1)
        .await;
    let locker = lock_silences(&setup).await;
    let status = alerts_client(&setup, &writer)
        .list_silences(fleetmon::pb::ListSilencesRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "the query ran longer than postgres.query_timeout_seconds and was cancelled: \
         ask for less (a shorter range, a smaller limit) or raise the limit"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    writer.stop().await;
}

fn channel(name: &str, kind: ChannelKind, url: &str) -> ChannelConfig {
    ChannelConfig::new(name, kind, url)
}

/// A writer sending to `channels`, deciding time rules every second.
async fn writer_with_channels(setup: &Setup, channels: Vec<ChannelConfig>) -> TestWriter {
    setup
        .start_writer_with(move |config| {
            config.alerts.channels = channels;
            config.alerts.evaluate_interval_seconds = 1;
        })
        .await
}

/// Three failed runs of `shop` at the one location `eu` (a check DOWN), or two passed
/// ones after them (UP again).
fn shop_runs(base: SystemTime, up: bool) -> Vec<SiteCheck> {
    if up {
        (4..=5).map(|s| run("shop", "eu", base, s, true)).collect()
    } else {
        (1..=3).map(|s| run("shop", "eu", base, s, false)).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_fires_the_alert_keeps_it_firing_and_ends_it_on_resolve() {
    let setup = Setup::new().await;
    let alertmanager = fleetmon::testkit::Alertmanager::start().await;
    let am = ChannelConfig {
        resend_seconds: 1,
        ..channel("am", ChannelKind::Alertmanager, &alertmanager.url())
    };
    let writer = writer_with_channels(&setup, vec![am]).await;
    let base = seconds_ago(60);
    setup.produce_checks(&shop_runs(base, false)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let fired = loop {
        let alerts = alertmanager.alerts().await;
        if let Some(alert) = alerts.as_array().and_then(|a| a.first()) {
            break alert.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no alert reached Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = setup
        .scalar("SELECT alert_id FROM alerts WHERE kind = 'check_down' AND subject = 'shop'")
        .await;
    assert_eq!(
        fired["labels"],
        serde_json::json!({
            "alertname": "check_down", "subject": "shop", "severity": "critical",
            "source": "fleetmon", "fleetmon_alert_id": id.to_string(),
        }),
        "{fired}"
    );
    assert!(
        fired["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with(
                "check shop is down at 1 of 1 locations (quorum 1): eu: unexpected status"
            ),
        "{fired}"
    );
    assert_eq!(fired["annotations"]["locations"], "eu");
    assert_eq!(fired["status"]["state"], "active");

    // It ends 4 s after each send unless sent again: sent again every second, it is
    // updated and stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = alertmanager.alerts().await;
        let alert = &alerts[0];
        if alert["updatedAt"] != fired["updatedAt"] && alert["endsAt"] != fired["endsAt"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the open alert was not sent again: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Resolved here, ended there.
    setup.produce_checks(&shop_runs(base, true)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while alertmanager
        .alerts()
        .await
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resolved alert stayed active in Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    setup
        .wait_for(
            "SELECT count(*) FROM notifications WHERE channel = 'am' AND delivered_at IS NOT NULL",
            2,
        )
        .await;
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_gets_a_trigger_then_a_resolve_under_one_dedup_key_and_channels_route_by_kind_severity_and_subject()
 {
    let setup = Setup::new().await;
    let pagerduty = WebhookReceiver::start().await;
    pagerduty.answer_with(202);
    let disks = WebhookReceiver::start().await;
    let pd = ChannelConfig {
        routing_key: "R0UT1NGKEY".to_owned(),
        ..channel("pd", ChannelKind::Pagerduty, &pagerduty.url())
    };
    let disk_only = ChannelConfig {
        kinds: vec!["disk_full".to_owned()],
        ..channel("disks", ChannelKind::Webhook, &disks.url())
    };
    // Routes that take the shop's alert (critical, subject `sho*`) and routes that do
    // not (warnings only, `db-*` subjects, agents `db-*`).
    let route = |name: &str, change: fn(&mut ChannelConfig)| {
        let mut config = channel(name, ChannelKind::Webhook, &disks.url());
        change(&mut config);
        config
    };
    let routes = vec![
        route("critical", |c| c.severities = vec!["critical".into()]),
        route("shop-team", |c| c.subjects = vec!["sho*".into()]),
        route("warnings", |c| c.severities = vec!["warning".into()]),
        route("dbas", |c| c.subjects = vec!["db-*".into()]),
        route("db-hosts", |c| c.agents = vec!["db-*".into()]),
    ];
    let writer = writer_with_channels(&setup, [vec![pd, disk_only], routes].concat()).await;
    let base = seconds_ago(60);
    setup.produce_checks(&shop_runs(base, false)).await;
    pagerduty
        .wait_until("the trigger", |requests| !requests.is_empty())
        .await;
    let id = setup
        .scalar("SELECT alert_id FROM alerts WHERE kind = 'check_down' AND subject = 'shop'")
        .await;
    let trigger = pagerduty.requests()[0].body.clone();
    let dedup_key = format!("fleetmon-alert-{id}");
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY");
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], dedup_key.as_str());
    assert_eq!(trigger["client"], "fleetmon");
    let payload = &trigger["payload"];
    assert!(
        payload["summary"]
            .as_str()
            .unwrap()
            .starts_with("check_down shop: check shop is down at 1 of 1 locations"),
        "{trigger}"
    );
    assert_eq!(
        (&payload["source"], &payload["severity"], &payload["class"]),
        (&"shop".into(), &"critical".into(), &"check_down".into())
    );
    assert!(
        payload["timestamp"].as_str().is_some_and(|t| t.len() >= 20),
        "{trigger}"
    );
    assert_eq!(
        payload["custom_details"]["locations"],
        serde_json::json!(["eu"])
    );

    setup.produce_checks(&shop_runs(base, true)).await;
    pagerduty
        .wait_until("the resolve", |requests| requests.len() >= 2)
        .await;
    assert_eq!(
        pagerduty.requests()[1].body,
        serde_json::json!({
            "routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": dedup_key,
        })
    );
    // The disk channel takes disk alerts only: the check's opening and resolution put
    // nothing in its outbox (rows are written with the transitions, so they would be).
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM notifications WHERE channel = 'disks'")
            .await,
        0
    );
    let routed = fleetmon::testkit::texts(
        &setup.schema.connect().await,
        "SELECT DISTINCT channel FROM notifications WHERE channel NOT IN ('pd', 'disks') \
         ORDER BY channel",
    )
    .await;
    assert_eq!(routed, ["critical", "shop-team"]);
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_over_starttls_as_one_message_a_delivery_with_the_key_as_message_id() {
    let setup = Setup::new().await;
    // The writer's own server certificate (for localhost) serves the SMTP server here.
    let tls = setup.pki.server("writer");
    let smtp = fleetmon::testkit::SmtpServer::start_tls(&tls.cert, &tls.key).await;
    let mail = ChannelConfig {
        from: "fleetmon <fleetmon@example.test>".to_owned(),
        to: vec!["ops@example.test".to_owned()],
        ca: Some(tls.client_ca.clone()),
        ..channel(
            "mail",
            ChannelKind::Email,
            &format!("smtp://localhost:{}", smtp.port()),
        )
    };
    // The same server without TLS: allowed to a relay on this machine, refused by a
    // server that requires STARTTLS.
    let clear = ChannelConfig {
        name: "clear".to_owned(),
        smtp_tls: fleetmon_writer::config::SmtpTls::None,
        ..mail.clone()
    };
    let writer = writer_with_channels(&setup, vec![mail, clear]).await;
    let base = seconds_ago(60);
    setup.produce_checks(&shop_runs(base, false)).await;
    let opened = smtp.wait_for(1).await.remove(0);
    let key = setup
        .text("SELECT delivery_key FROM notifications WHERE channel = 'mail'")
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM notifications WHERE channel = 'clear' \
             AND delivered_at IS NULL AND last_error LIKE '%530%STARTTLS%'",
            1,
        )
        .await;
    for line in [
        "Subject: fleetmon: [opened] check_down shop".to_owned(),
        "From: fleetmon <fleetmon@example.test>".to_owned(),
        "To: ops@example.test".to_owned(),
        format!("Message-ID: <{key}@fleetmon>"),
    ] {
        assert!(
            opened.lines().any(|l| l == line),
            "no `{line}` in:\n{opened}"
        );
    }
    assert!(opened.contains("Content-Type: text/plain"), "{opened}");
    assert!(opened.contains("Content-Type: text/html"), "{opened}");
    assert!(
        opened.contains("check shop is down at 1 of 1 locations"),
        "{opened}"
    );
    assert_eq!(
        smtp.messages().len(),
        1,
        "the channel without TLS got through"
    );

    setup.produce_checks(&shop_runs(base, true)).await;
    let resolved = smtp.wait_for(2).await.remove(1);
    assert!(
        resolved
            .lines()
            .any(|l| l == "Subject: fleetmon: [resolved] check_down shop"),
        "{resolved}"
    );
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_window_in_its_time_zone_holds_notifications_back_until_removed() {
    use fleetmon::pb::{
        CreateMaintenanceRequest, ListMaintenanceRequest, RemoveMaintenanceRequest,
    };
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    setup.produce_definition(&definition("shop", None)).await;
    setup
        .wait_for("SELECT count(*) FROM checks WHERE check_id = 'shop'", 1)
        .await;
    let mut alerts = alerts_client(&setup, &writer);
    // Every day from half an hour ago, Tokyo time, for an hour: in force now there,
    // and (9 hours off) not now in UTC, so the zone is what makes it active.
    let start = setup
        .text("SELECT to_char(now() AT TIME ZONE 'Asia/Tokyo' - interval '30 minutes', 'HH24:MI')")
        .await;
    let weekly = |time_zone: &str| CreateMaintenanceRequest {
        check_id: "shop".to_owned(),
        reason: "database upgrade".to_owned(),
        weekdays: (0..7).collect(),
        start_time: start.clone(),
        duration_minutes: 60,
        time_zone: time_zone.to_owned(),
        ..Default::default()
    };
    let in_utc = alerts
        .create_maintenance(weekly("UTC"))
        .await
        .unwrap()
        .into_inner();
    assert!(!in_utc.active, "{in_utc:?}");
    let window = alerts
        .create_maintenance(weekly("Asia/Tokyo"))
        .await
        .unwrap()
        .into_inner();
    assert!(window.active, "{window:?}");
    assert_eq!(
        (
            window.start_time.as_str(),
            window.duration_minutes,
            window.created_by.as_str()
        ),
        (start.as_str(), 60, "ops")
    );
    alerts
        .remove_maintenance(RemoveMaintenanceRequest { id: in_utc.id })
        .await
        .unwrap();
    let listed = alerts
        .list_maintenance(ListMaintenanceRequest {})
        .await
        .unwrap()
        .into_inner()
        .windows;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, window.id);

    // The alert opens and is recorded; its notification is held back by the window.
    let base = seconds_ago(60);
    setup.produce_checks(&shop_runs(base, false)).await;
    setup
        .wait_for(
            &format!(
                "SELECT count(*) FROM notifications WHERE held_by_window = {} AND delivered_at IS NOT NULL",
                window.id
            ),
            1,
        )
        .await;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM alerts WHERE kind = 'check_down' AND subject = 'shop' AND resolved_at IS NULL")
            .await,
        1
    );
    assert!(
        receiver.requests().is_empty(),
        "a held notification was sent"
    );
    let alert_id = setup
        .scalar("SELECT alert_id FROM alerts WHERE subject = 'shop'")
        .await;
    let held = alerts
        .get_alert(GetAlertRequest {
            id: u64::try_from(alert_id).unwrap(),
        })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(held[0].held_by_window, window.id, "{held:?}");
    let listed = open_alerts(&mut alerts).await;
    assert!(
        listed[0].in_maintenance && !listed[0].silenced,
        "{listed:?}"
    );

    // The work done, the window removed: the next transition is told.
    alerts
        .remove_maintenance(RemoveMaintenanceRequest { id: window.id })
        .await
        .unwrap();
    setup.produce_checks(&shop_runs(base, true)).await;
    delivered_exactly(&receiver, &[note("resolved", "check_down", "shop")]).await;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'maintenance.%'")
            .await,
        4
    );

    // Bad windows are refused with the field named.
    let refused = |request: CreateMaintenanceRequest| {
        let mut alerts = alerts.clone();
        async move { alerts.create_maintenance(request).await.unwrap_err() }
    };
    let status = refused(weekly("Mars/Olympus")).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "time_zone `Mars/Olympus` is not a time zone: use an IANA name such as Europe/Berlin, America/New_York or UTC"
    );
    let status = refused(CreateMaintenanceRequest {
        start_time: "25:00".to_owned(),
        ..weekly("UTC")
    })
    .await;
    assert_eq!(
        status.message(),
        "start_time `25:00` is not a time of day: write HH:MM, e.g. 02:00"
    );
    let status = refused(CreateMaintenanceRequest {
        check_id: "shop".to_owned(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        status.message(),
        "give either starts_at and ends_at (a one-off window) or weekdays, start_time, duration_minutes and time_zone (a weekly one)"
    );
    let status = refused(CreateMaintenanceRequest {
        reason: "x".repeat(501),
        ..weekly("UTC")
    })
    .await;
    assert_eq!(
        status.message(),
        "reason is 501 characters long: keep it to 500 (link to the ticket for more)"
    );
    let status = refused(CreateMaintenanceRequest::default()).await;
    assert_eq!(
        status.message(),
        "check_id, agent_id or labels is required: a maintenance window must match something"
    );
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_paging_services_get_the_payload_each_documents() {
    let setup = Setup::new().await;
    let kinds = [
        ("discord", ChannelKind::Discord),
        ("teams", ChannelKind::Teams),
        ("telegram", ChannelKind::Telegram),
        ("ntfy", ChannelKind::Ntfy),
        ("gotify", ChannelKind::Gotify),
        ("pushover", ChannelKind::Pushover),
        ("opsgenie", ChannelKind::Opsgenie),
    ];
    let mut receivers = std::collections::BTreeMap::new();
    let mut channels = Vec::new();
    for (name, kind) in kinds {
        let receiver = WebhookReceiver::start().await;
        receiver.answer_with(202);
        // Services whose address is a base get the receiver's root.
        let url = receiver.url().trim_end_matches("/hook").to_owned() + "/svc";
        channels.push(ChannelConfig {
            token: format!("T0KEN-{name}"),
            to: vec![format!("to-{name}")],
            ..channel(name, kind, &url)
        });
        receivers.insert(name, receiver);
    }
    let writer = writer_with_channels(&setup, channels).await;
    let base = seconds_ago(60);
    setup.produce_checks(&shop_runs(base, false)).await;
    for receiver in receivers.values() {
        receiver
            .wait_until("the opening", |requests| !requests.is_empty())
            .await;
    }
    let id = setup
        .scalar("SELECT alert_id FROM alerts WHERE kind = 'check_down' AND subject = 'shop'")
        .await;
    let first = |name: &str| receivers[name].requests()[0].clone();

    let discord = first("discord");
    assert_eq!(discord.path, "/svc");
    let content = discord.body["content"].as_str().unwrap();
    assert!(
        content.starts_with(
            "fleetmon: 1 notification\n• [opened] check_down shop: check shop is down"
        ),
        "{content}"
    );
    assert_eq!(
        discord.body["allowed_mentions"],
        serde_json::json!({"parse": []})
    );

    let teams = first("teams");
    assert_eq!(teams.body["type"], "message");
    let card = &teams.body["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(
        card["content"]["body"][0]["text"],
        "fleetmon: [opened] check_down shop"
    );

    let telegram = first("telegram");
    assert_eq!(telegram.path, "/svc/botT0KEN-telegram/sendMessage");
    assert_eq!(telegram.body["chat_id"], "to-telegram");
    assert!(
        telegram.body["text"]
            .as_str()
            .unwrap()
            .contains("check_down shop")
    );

    let ntfy = first("ntfy");
    assert_eq!(ntfy.path, "/svc");
    assert_eq!(ntfy.headers["authorization"], "Bearer T0KEN-ntfy");
    assert_eq!(
        (
            &ntfy.body["topic"],
            &ntfy.body["title"],
            &ntfy.body["priority"]
        ),
        (
            &"to-ntfy".into(),
            &"fleetmon: [opened] check_down shop".into(),
            &5.into()
        )
    );

    let gotify = first("gotify");
    assert_eq!(gotify.path, "/svc/message");
    assert_eq!(gotify.headers["x-gotify-key"], "T0KEN-gotify");
    assert_eq!(gotify.body["priority"], 8);

    let pushover = first("pushover");
    assert_eq!(
        (
            &pushover.body["token"],
            &pushover.body["user"],
            &pushover.body["priority"]
        ),
        (&"T0KEN-pushover".into(), &"to-pushover".into(), &1.into())
    );

    let opsgenie = first("opsgenie");
    assert_eq!(opsgenie.path, "/svc/v2/alerts");
    assert_eq!(opsgenie.headers["authorization"], "GenieKey T0KEN-opsgenie");
    assert_eq!(
        (
            &opsgenie.body["message"],
            &opsgenie.body["alias"],
            &opsgenie.body["priority"]
        ),
        (
            &"check_down shop".into(),
            &format!("fleetmon-alert-{id}").into(),
            &"P1".into()
        )
    );

    // The resolution: Opsgenie closes its alert by alias; the chats are told.
    setup.produce_checks(&shop_runs(base, true)).await;
    for receiver in receivers.values() {
        receiver
            .wait_until("the resolution", |requests| requests.len() >= 2)
            .await;
    }
    let closed = receivers["opsgenie"].requests()[1].clone();
    assert_eq!(
        closed.path,
        format!("/svc/v2/alerts/fleetmon-alert-{id}/close?identifierType=alias")
    );
    assert_eq!(closed.body["source"], "fleetmon");
    assert_eq!(receivers["ntfy"].requests()[1].body["priority"], 2);
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_with_a_body_template_gets_that_body() {
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let chat = ChannelConfig {
        body_template: r#"{"text": "{{title}}\n{{text}}", "count": {{count}}}"#.to_owned(),
        ..channel("chat", ChannelKind::Webhook, &receiver.url())
    };
    let writer = writer_with_channels(&setup, vec![chat]).await;
    setup
        .produce_checks(&shop_runs(seconds_ago(60), false))
        .await;
    receiver
        .wait_until("the templated body", |requests| !requests.is_empty())
        .await;
    let body = receiver.requests()[0].body.clone();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "fleetmon: [opened] check_down shop\n• [opened] check_down shop: check shop is down"
        ),
        "{body}"
    );
    assert_eq!(body["count"], 1);
    writer.stop().await;
}

/// A heartbeat signal of `check_id` at `ts`, as a collector's listener stores it.
fn ping(check_id: &str, ts: SystemTime) -> SiteCheck {
    SiteCheck {
        agent_id: "ping".to_owned(),
        stream_id: "heartbeat-listener".to_owned(),
        seq: next_seq(),
        checked_at: at(ts),
        url: format!("heartbeat://{check_id}"),
        method: "PING".to_owned(),
        ok: true,
        check_id: check_id.to_owned(),
        check_version: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_heartbeat_is_due_at_its_next_run_in_its_time_zone() {
    use fleetmon::pb::HeartbeatCheck;
    let setup = Setup::new().await;
    let receiver = WebhookReceiver::start().await;
    let writer = writer_with_webhook(&setup, &receiver).await;
    let nightly = |id: &str| CheckDefinition {
        id: id.to_owned(),
        version: 1,
        kind: Some(check_definition::Kind::Heartbeat(HeartbeatCheck {
            cron: "30 2 * * *".to_owned(),
            time_zone: "Europe/Berlin".to_owned(),
            grace_seconds: 3600,
            ..Default::default()
        })),
        ..Default::default()
    };
    setup.produce_definition(&nightly("backup")).await;
    setup.produce_definition(&nightly("export")).await;
    setup
        .wait_for("SELECT count(*) FROM checks WHERE kind = 'heartbeat'", 2)
        .await;
    // backup last ran 49 hours ago: the nightly run after it, plus the grace, is past.
    // export ran 10 minutes ago: its next run is at least 23 hours away (an hour of
    // grace is more than the 10 minutes, whatever the time of day now).
    setup
        .produce_checks(&[
            ping("backup", seconds_ago(49 * 3600)),
            ping("export", seconds_ago(600)),
        ])
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'heartbeat_missed' AND resolved_at IS NULL",
            1,
        )
        .await;
    // Both were decided in that round: only backup is DOWN.
    let cause = setup
        .text("SELECT cause FROM alerts WHERE kind = 'heartbeat_missed' AND subject = 'backup'")
        .await;
    assert!(
        cause.starts_with("heartbeat backup: no success since ")
            && cause.contains(" 02:30 CET (at `30 2 * * *` (Europe/Berlin)) + grace 3600 s"),
        "{cause}"
    );
    // Tonight's run pings: resolved.
    setup
        .produce_checks(&[ping("backup", SystemTime::now())])
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM alerts WHERE kind = 'heartbeat_missed' AND subject = 'backup' AND resolved_at IS NOT NULL",
            1,
        )
        .await;
    assert_eq!(
        setup
            .scalar("SELECT count(*) FROM alerts WHERE kind = 'heartbeat_missed'")
            .await,
        1
    );
    writer.stop().await;
}

/// An agent's labels come from its credential on the credentials topic (the token it
/// enrolled with): a window selecting `role=web` holds back web-1's alert and not
/// db-1's, and a channel selecting `role=db` is told of db-1's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_channels_select_alerts_by_the_labels_an_agent_enrolled_with() {
    use fleetmon::pb::CreateMaintenanceRequest;
    let setup = Setup::new().await;
    let (everyone, dbas) = (
        WebhookReceiver::start().await,
        WebhookReceiver::start().await,
    );
    let mut for_dbas = channel("dbas", ChannelKind::Webhook, &dbas.url());
    for_dbas.labels = [("role".to_owned(), "db".to_owned())].into();
    let writer = writer_with_channels(
        &setup,
        vec![
            channel("ops", ChannelKind::Webhook, &everyone.url()),
            for_dbas,
        ],
    )
    .await;
    setup.produce_credential("db-1", &[("role", "db")]).await;
    setup.produce_credential("web-1", &[("role", "web")]).await;
    setup
        .wait_for(
            "SELECT count(*) FROM agent_labels WHERE labels ->> 'role' IN ('db', 'web')",
            2,
        )
        .await;
    let mut alerts = alerts_client(&setup, &writer);
    let now = SystemTime::now();
    let window = alerts
        .create_maintenance(CreateMaintenanceRequest {
            labels: [("role".to_owned(), "web".to_owned())].into(),
            reason: "web tier upgrade".to_owned(),
            starts_at: at(now - Duration::from_secs(60)),
            ends_at: at(now + Duration::from_secs(3600)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(window.labels.get("role").map(String::as_str), Some("web"));

    // Both agents go silent: two alerts; web-1's is held by the window.
    let sample = |agent: &str| {
        HostSampleAt {
            seq: 1,
            ts: SystemTime::now(),
        }
        .sample(agent)
    };
    setup
        .produce_hosts(&[sample("db-1"), sample("web-1")])
        .await;
    setup
        .wait_for(
            &format!(
                "SELECT count(*) FROM notifications n JOIN alerts a USING (alert_id) \
                 WHERE a.subject = 'web-1' AND n.held_by_window = {}",
                window.id
            ),
            1,
        )
        .await;
    delivered_exactly(&everyone, &[note("opened", "agent_silent", "db-1")]).await;
    delivered_exactly(&dbas, &[note("opened", "agent_silent", "db-1")]).await;
    let open = open_alerts(&mut alerts).await;
    let in_maintenance: Vec<(&str, bool)> = open
        .iter()
        .map(|a| (a.subject.as_str(), a.in_maintenance))
        .collect();
    assert!(
        in_maintenance.contains(&("web-1", true)) && in_maintenance.contains(&("db-1", false)),
        "{in_maintenance:?}"
    );
    // A window must select something; labels alone are enough.
    let error = alerts
        .create_maintenance(CreateMaintenanceRequest {
            starts_at: at(now),
            ends_at: at(now + Duration::from_secs(60)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "check_id, agent_id or labels is required: a maintenance window must match something"
    );
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_check_state_that_another_batch_made_meanwhile_is_upserted_not_refused() {
    use fleetmon_writer::alerts::rules::LocationState;
    use std::collections::BTreeMap;

    let setup = Setup::new().await;
    setup.start_writer().await.stop().await;
    let sink = fleetmon_writer::store::PostgresSink::new(&setup.config.postgres).unwrap();
    // Another batch made shop's state at eu-1 (DOWN) after this one read none.
    setup
        .schema
        .connect()
        .await
        .batch_execute(
            "INSERT INTO check_state (check_id, agent_id, down, consecutive_failures,
                 consecutive_successes, last_ts, last_error, changed_at, interval_seconds)
             VALUES ('shop', 'eu-1', true, 3, 0, now(), 'status 503', now(), 30)",
        )
        .await
        .unwrap();
    let now = SystemTime::now();
    let up = LocationState::new(now);
    let states: BTreeMap<(String, String), LocationState> = [
        (("shop".to_owned(), "eu-1".to_owned()), up.clone()),
        (("shop".to_owned(), "us-1".to_owned()), up),
    ]
    .into();
    let intervals = [(("shop".to_owned(), "us-1".to_owned()), 60)].into();
    let mut client = sink.background().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    fleetmon_writer::alerts::store::store_new_states(&tx, &states, &intervals)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        setup
            .text(
                "SELECT string_agg(agent_id || ' ' || down || ' ' || interval_seconds, ', ' \
                 ORDER BY agent_id) FROM check_state WHERE check_id = 'shop'"
            )
            .await,
        // eu-1 takes this batch's state and keeps the interval it had.
        "eu-1 false 30, us-1 false 60"
    );
}

/// Two writers moving the same partition's check states in turn (a partition taken
/// over and given back, or a writer that lost it without hearing of it): each goes on
/// from what the other stored. Three failed runs in three batches, the middle one
/// another writer's, are three in a row and open the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_given_a_partition_back_reads_the_states_another_stored_meanwhile() {
    use fleetmon::pb::SITE_CHECK_CONTENT_TYPE;
    use fleetmon_writer::alerts::store::BatchRules;
    use fleetmon_writer::consume::row_batch::{RowBatch, decode_site};
    use fleetmon_writer::store::PostgresSink;
    use prost::Message as _;

    let setup = Setup::new().await;
    setup.start_writer().await.stop().await;
    let writer = || {
        PostgresSink::new(&setup.config.postgres)
            .unwrap()
            .with_after_rows(BatchRules::default())
    };
    let (first, second) = (writer(), writer());
    let t0 = seconds_ago(300);
    let batch = |seq: u64, ok: bool| {
        let result = check(
            "eu-1",
            seq,
            t0 + Duration::from_secs(60 * seq),
            "https://shop.example/",
            Some(if ok { 200 } else { 503 }),
            ok,
            10.0,
        );
        let row =
            decode_site(Some(&result.encode_to_vec()), Some(SITE_CHECK_CONTENT_TYPE)).unwrap();
        let mut batch = RowBatch::default();
        batch.push_check("site-checks", 0, seq as i64, row);
        batch
    };
    let state = || async {
        setup
            .text(
                "SELECT down || ' ' || consecutive_failures || ' ' || consecutive_successes \
                 FROM check_state WHERE agent_id = 'eu-1'",
            )
            .await
    };
    first.write(&batch(1, true)).await.unwrap();
    first.write(&batch(2, false)).await.unwrap();
    assert_eq!(state().await, "false 1 0");
    second.write(&batch(3, false)).await.unwrap();
    assert_eq!(
        state().await,
        "false 2 0",
        "the second writer read the first's state"
    );
    first.write(&batch(4, false)).await.unwrap();
    assert_eq!(
        state().await,
        "true 3 0",
        "the first writer went on from the second's state"
    );
    assert_eq!(
        setup
            .text("SELECT count(*)::text FROM alerts WHERE kind = 'check_down' AND resolved_at IS NULL")
            .await,
        "1"
    );
    // A pass after three failures.
    first.write(&batch(5, true)).await.unwrap();
    assert_eq!(state().await, "true 0 1");
}

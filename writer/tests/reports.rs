//! Availability reports end to end: a scripted sequence of results from three
//! locations through Kafka and the writer, a maintenance window made through the API,
//! and the report over the period to the second (docs/REPORTS.md).

use std::time::{Duration, SystemTime};

use fleetmon::identity::Role;
use fleetmon::pb::alerts_client::AlertsClient;
use fleetmon::pb::{
    AvailabilityReport, AvailabilityReportRequest, CreateMaintenanceRequest, SiteCheck, TimeRange,
};
use fleetmon_writer::testkit::*;
use tonic::Code;

const LOCATIONS: [&str; 3] = ["eu", "us", "ap"];
/// Seconds between two runs at each location.
const INTERVAL: u32 = 10;

/// The run of `pay` at `agent`, `secs` after `base`.
fn run(agent: &str, base: SystemTime, secs: u64, ok: bool) -> SiteCheck {
    let mut run = check_run("pay", agent, base + Duration::from_secs(secs), ok);
    run.interval_seconds = INTERVAL;
    run
}

fn at_secs(base: SystemTime, secs: u64) -> Option<prost_types::Timestamp> {
    at(base + Duration::from_secs(secs))
}

async fn report(
    history: &mut fleetmon::pb::history_client::HistoryClient<tonic::transport::Channel>,
    base: SystemTime,
    checks: &[&str],
    labels: &[(&str, &str)],
) -> Result<AvailabilityReport, tonic::Status> {
    history
        .get_availability_report(AvailabilityReportRequest {
            range: Some(TimeRange {
                start: at_secs(base, 0),
                end: at_secs(base, 300),
            }),
            check_ids: checks.iter().map(|c| (*c).to_owned()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn span(base: SystemTime, from: u64, to: u64) -> fleetmon::pb::ReportSpan {
    fleetmon::pb::ReportSpan {
        start: at_secs(base, from),
        end: at_secs(base, to),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_period_reports_its_downtime_maintenance_and_gap_to_the_second() {
    let setup = Setup::new().await;
    let writer = setup
        .start_writer_with(|config| config.alerts.evaluate_interval_seconds = 1)
        .await;
    setup
        .produce_definition(&quorum_of_two("pay", INTERVAL))
        .await;
    // And one run only on agents labelled region=eu, which never reports.
    let mut eu_only = quorum_of_two("eu-only", INTERVAL);
    eu_only.assignment = Some(fleetmon::pb::Assignment {
        labels: [("region".to_owned(), "eu".to_owned())].into(),
        ..Default::default()
    });
    setup.produce_definition(&eu_only).await;
    setup.wait_for("SELECT count(*) FROM checks", 2).await;
    // The period lies a little ahead: locations count as reporting for three intervals
    // after their newest run, so runs dated ahead stay current however slow the test.
    let base = seconds_ago(0) + Duration::from_secs(120);
    let files = setup.pki.client(Role::Operator, "ops");
    let url = format!("https://{}", writer.running.grpc_addr);
    let mut alerts = AlertsClient::new(
        fleetmon::tls::endpoint(&url, &files)
            .unwrap()
            .connect_lazy(),
    );
    alerts
        .create_maintenance(CreateMaintenanceRequest {
            check_id: "pay".to_owned(),
            reason: "database upgrade".to_owned(),
            starts_at: at_secs(base, 100),
            ends_at: at_secs(base, 130),
            ..Default::default()
        })
        .await
        .unwrap();

    // Second by second: eu and us fail at 50 and 60 (an outage of 20 s, ended by eu at
    // 70), and from 110 to 140 (40 s, 20 of them in maintenance); ap passes throughout.
    // Nobody reports from 170 to 250: the run at 160 covers until 190 (three
    // intervals), so 190 to 260 has no data.
    let seconds: Vec<u64> = (0..=160).step_by(10).chain([260, 270, 280]).collect();
    let failing = |agent: &str, s: u64| {
        agent != "ap"
            && ((50..70).contains(&s) || (110..150).contains(&s) || (agent == "us" && s == 70))
    };
    let mut stored = 0;
    for s in seconds {
        let runs: Vec<SiteCheck> = LOCATIONS
            .iter()
            .map(|agent| run(agent, base, s, !failing(agent, s)))
            .collect();
        stored = setup.produce_step(&runs, stored).await;
    }
    assert_eq!(
        setup
            .scalar(
                "SELECT count(*) FROM alerts WHERE kind = 'check_down' AND resolved_at IS NOT NULL"
            )
            .await,
        2
    );

    let mut history = setup.history(&writer, Role::Operator);
    let first = report(&mut history, base, &["pay"], &[]).await.unwrap();
    let pay = &first.checks[0];
    assert_eq!(pay.check_id, "pay");
    assert_eq!(pay.target, "https://pay.example/");
    assert_eq!(
        (
            pay.period_seconds,
            pay.maintenance_seconds,
            pay.no_data_seconds,
            pay.down_seconds,
            pay.up_seconds
        ),
        (300.0, 30.0, 70.0, 40.0, 160.0)
    );
    assert_eq!(pay.availability_percent, Some(80.0));
    assert_eq!(pay.outage_count, 2);
    assert_eq!(
        (pay.mttr_seconds, pay.mtbf_seconds),
        (Some(20.0), Some(80.0))
    );
    // Failed runs: eu 6, us 7.
    assert_eq!((pay.results, pay.ok_results), (60, 60 - 13));
    // Every run took 20 ms: the bucket's middle, within the stated 4.4 %.
    let p50 = pay.response_time_p50_ms.unwrap();
    assert!((p50 / 20.0 - 1.0).abs() < 0.045, "{p50}");
    assert_eq!(pay.maintenance, [span(base, 100, 130)]);
    assert_eq!(pay.no_data, [span(base, 190, 260)]);
    let outages: Vec<_> = pay
        .outages
        .iter()
        .map(|o| {
            (
                o.started_at,
                o.ended_at,
                o.duration_seconds,
                o.counted_seconds,
                o.locations.clone(),
            )
        })
        .collect();
    let both = vec!["eu".to_owned(), "us".to_owned()];
    assert_eq!(
        outages,
        [
            (
                at_secs(base, 50),
                at_secs(base, 70),
                20.0,
                20.0,
                both.clone()
            ),
            (at_secs(base, 110), at_secs(base, 150), 40.0, 20.0, both)
        ]
    );

    // The same period again: the same report.
    let again = report(&mut history, base, &["pay"], &[]).await.unwrap();
    assert_eq!(again.checks, first.checks);

    // A late run from ap inside the gap (older than its newest: it changes no state)
    // covers 220 to 250: the gap shrinks by 30 s, which count as up, and the report
    // says so by its results and spans.
    setup
        .produce_step(&[run("ap", base, 220, true)], stored)
        .await;
    let late = report(&mut history, base, &[], &[]).await.unwrap();
    let ids: Vec<&str> = late.checks.iter().map(|c| c.check_id.as_str()).collect();
    assert_eq!(ids, ["eu-only", "pay"]);
    let pay = &late.checks[1];
    assert_eq!(
        (
            pay.no_data_seconds,
            pay.down_seconds,
            pay.up_seconds,
            pay.results
        ),
        (40.0, 40.0, 190.0, 61)
    );
    assert_eq!(pay.no_data, [span(base, 190, 220), span(base, 250, 260)]);

    // By labels: eu-only, which has no result, so no data and no availability (never
    // 100 %); pay runs on every agent, not on agents chosen by labels, so it is left
    // out, also when named.
    for named in [&[][..], &["pay"][..]] {
        let by_labels = report(&mut history, base, named, &[("region", "eu")])
            .await
            .unwrap();
        let ids: Vec<&str> = by_labels
            .checks
            .iter()
            .map(|c| c.check_id.as_str())
            .collect();
        let expected: &[&str] = if named.is_empty() { &["eu-only"] } else { &[] };
        assert_eq!(ids, expected);
    }
    let silent = &late.checks[0];
    assert_eq!(
        (
            silent.no_data_seconds,
            silent.up_seconds,
            silent.availability_percent
        ),
        (300.0, 0.0, None)
    );

    // Bad requests are refused with what to fix.
    let missing = report(&mut history, base, &["nope"], &[])
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.message(),
        "check_ids: no check `nope` existed in the period (see `fleetmon checks list`)"
    );
    let backwards = history
        .get_availability_report(AvailabilityReportRequest {
            range: Some(TimeRange {
                start: at_secs(base, 10),
                end: at_secs(base, 0),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(backwards.code(), Code::InvalidArgument);
    assert_eq!(backwards.message(), "range.end must be after range.start");
    writer.stop().await;
}

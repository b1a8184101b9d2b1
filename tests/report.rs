//! `fleetmon report availability` against a real writer: a scripted outage through
//! Kafka and the writer, then the report as a table, CSV, JSON and HTML, and what it
//! says to bad input.

use std::time::{Duration, SystemTime};

use fleetmon::testkit::fleetmon_against;
use fleetmon_writer::testkit::{Setup, check_run, quorum_of_two, seconds_ago};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&Rfc3339).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_reads_alike_as_a_table_csv_json_and_html_and_refuses_bad_input() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    setup.produce_definition(&quorum_of_two("shop", 10)).await;
    setup
        .wait_for("SELECT count(*) FROM checks WHERE check_id = 'shop'", 1)
        .await;
    // eu and us fail at 20 and 30: an outage from 20 to 40 of the minute reported.
    let base = seconds_ago(0) + Duration::from_secs(60);
    let mut stored = 0;
    for s in (0..60).step_by(10) {
        let runs: Vec<_> = ["eu", "us", "ap"]
            .iter()
            .map(|agent| {
                let ok = *agent == "ap" || !(20..40).contains(&s);
                let mut run = check_run("shop", agent, base + Duration::from_secs(s), ok);
                run.interval_seconds = 10;
                run
            })
            .collect();
        stored = setup.produce_step(&runs, stored).await;
    }
    let (from, to) = (rfc3339(base), rfc3339(base + Duration::from_secs(60)));
    let server = format!("https://{}", writer.running.grpc_addr);
    let report = |args: &[&str]| {
        fleetmon_against(
            &[&["report", "availability"], args].concat(),
            &server,
            setup.pki.dir(),
        )
    };
    let period = ["--from", from.as_str(), "--to", to.as_str()];

    let (ok, table, error) = report(&period);
    assert!(ok, "{error}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with(&format!("Availability from {from} to {to} (computed ")));
    let row: Vec<&str> = lines[3]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        row[..8],
        [
            "shop",
            "66.6666 %",
            "20 s",
            "1",
            "20 s",
            "40 s",
            "0 s",
            "0 s"
        ],
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "  outage   {} to {}  20 s (counted 20 s)  at eu, us\n",
            rfc3339(base + Duration::from_secs(20)),
            rfc3339(base + Duration::from_secs(40))
        )),
        "{table}"
    );

    let (ok, csv, error) = report(&[&period[..], &["--format", "csv"]].concat());
    assert!(ok, "{error}");
    let csv: Vec<&str> = csv.lines().collect();
    assert_eq!(csv.len(), 2, "{csv:?}");
    let fields: Vec<&str> = csv[1].split(',').collect();
    assert_eq!(
        [&fields[..13], &fields[16..]].concat(),
        [
            "shop",
            "https://shop.example/",
            &from,
            &to,
            "60",
            &(100.0 * 40.0 / 60.0_f64).to_string(),
            "40",
            "20",
            "0",
            "0",
            "1",
            "20",
            "40",
            "18",
            "14"
        ]
    );

    let (ok, json, error) = report(&[&period[..], &["--check", "shop", "--json"]].concat());
    assert!(ok, "{error}");
    let json: Value = serde_json::from_str(&json).unwrap();
    let shop = &json["checks"][0];
    assert_eq!(
        (
            shop["down_seconds"].as_f64(),
            shop["no_data_seconds"].as_f64()
        ),
        (Some(20.0), Some(0.0))
    );
    assert_eq!(
        shop["outages"][0]["locations"],
        serde_json::json!(["eu", "us"])
    );

    let (ok, html, error) = report(&[&period[..], &["--format", "html"]].concat());
    assert!(ok, "{error}");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(
        html.contains("<th scope=\"row\">shop<br><small>https://shop.example/</small></th><td>66.6666 %</td><td>20 s</td>"),
        "{html}"
    );
    assert!(!html.contains("<script"), "it stands alone: {html}");

    let (ok, _, error) = report(&["--from", "2026-13-01", "--to", &to]);
    assert!(!ok);
    assert!(
        error.contains(
            "`2026-13-01` is not a date or an RFC 3339 time: write e.g. 2026-11-01 or 2026-12-24T22:00:00Z"
        ),
        "{error}"
    );
    let (ok, _, error) = report(&[&period[..], &["--check", "nope"]].concat());
    assert!(!ok);
    assert_eq!(
        error.trim_end(),
        format!(
            "error: History/GetAvailabilityReport on {server}: NotFound: check_ids: no check `nope` existed in the period (see `fleetmon checks list`)"
        )
    );
    writer.stop().await;
}

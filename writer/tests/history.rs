//! The History service over mutual TLS against hand-computed answers on a known
//! data set, and what grpcurl sees.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use fleetmon::identity::Role;
use fleetmon::pb::{
    HostSeriesRequest, ListStoredAgentsRequest, RecentChecksRequest, SiteAvailability,
    SiteAvailabilityRequest, TimeRange,
};
use fleetmon::testkit::grpcurl_operator;
use fleetmon_writer::testkit::*;
use tonic::Code;

const URL: &str = "https://h.example/";
const OTHER: &str = "https://other.example/";

fn since(ago: Duration) -> Option<TimeRange> {
    Some(TimeRange {
        start: at(SystemTime::now() - ago),
        end: None,
    })
}

/// Ten checks of URL in the last hour: response times 10..=100 ms; #3 and #7 answer
/// 503, #9 gets no response at all; the rest 200. One check of OTHER.
async fn load_checks(setup: &Setup) {
    let base = seconds_ago(50 * 60);
    let checks: Vec<_> = (0..10u64)
        .map(|i| {
            let (status, ok) = match i {
                3 | 7 => (Some(503), false),
                9 => (None, false),
                _ => (Some(200), true),
            };
            check(
                "a1",
                i + 1,
                base + Duration::from_secs(i * 60),
                URL,
                status,
                ok,
                (i + 1) as f64 * 10.0,
            )
        })
        .chain([check("a1", 11, base, OTHER, Some(200), true, 5.0)])
        .collect();
    setup.produce_checks(&checks).await;
    setup.wait_for("SELECT count(*) FROM site_checks", 11).await;
}

fn codes(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn assert_totals(site: &SiteAvailability) {
    assert_eq!(site.url, URL);
    assert_eq!((site.checks, site.ok_checks), (10, 7));
    assert_eq!(site.uptime_percent, 70.0);
    assert_eq!(
        (site.response_time_min_ms, site.response_time_max_ms),
        (10.0, 100.0)
    );
    assert_eq!(site.response_time_avg_ms, 55.0);
    assert_eq!(
        site.status_codes,
        codes(&[("200", 7), ("503", 2), ("none", 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_availability_matches_hand_computed_values() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    load_checks(&setup).await;
    let mut history = setup.history(&writer, Role::Operator);

    let request = |ago: Duration| SiteAvailabilityRequest {
        url: URL.to_owned(),
        range: since(ago),
        page_token: String::new(),
    };
    let raw = history
        .get_site_availability(request(Duration::from_secs(2 * 3600)))
        .await
        .unwrap()
        .into_inner()
        .sites;
    assert_eq!(raw.len(), 1);
    assert_totals(&raw[0]);
    assert_eq!(raw[0].source, "raw");
    // percentile_cont over 10, 20, …, 100: p = 10 + q·90.
    assert_eq!(raw[0].response_time_p50_ms, Some(55.0));
    assert_eq!(
        raw[0]
            .response_time_p95_ms
            .map(|v| (v * 1000.0).round() / 1000.0),
        Some(95.5)
    );
    assert_eq!(
        raw[0]
            .response_time_p99_ms
            .map(|v| (v * 1000.0).round() / 1000.0),
        Some(99.1)
    );

    for (ago, source) in [(3 * 86_400, "rollup_minute"), (30 * 86_400, "rollup_hour")] {
        let sites = history
            .get_site_availability(request(Duration::from_secs(ago)))
            .await
            .unwrap()
            .into_inner()
            .sites;
        assert_eq!(sites.len(), 1, "{source}");
        assert_totals(&sites[0]);
        assert_eq!(sites[0].source, source);
        // From the rollups' histograms: the 5th and the 10th of ten times (50 and
        // 100 ms), each within 4.4 % (half a bucket).
        let site = &sites[0];
        for (estimate, exact) in [
            (site.response_time_p50_ms, 50.0),
            (site.response_time_p95_ms, 100.0),
            (site.response_time_p99_ms, 100.0),
        ] {
            let estimate = estimate.unwrap_or_else(|| panic!("{source}: no percentile"));
            assert!(
                (estimate / exact - 1.0).abs() <= 0.045,
                "{source}: {estimate} for {exact}"
            );
        }
    }

    let all = history
        .get_site_availability(SiteAvailabilityRequest {
            url: String::new(),
            range: since(Duration::from_secs(3600)),
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .sites;
    let urls: Vec<&str> = all.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(urls, [URL, OTHER]);

    let recent = history
        .list_recent_checks(RecentChecksRequest {
            url: URL.to_owned(),
            limit: 3,
        })
        .await
        .unwrap()
        .into_inner()
        .checks;
    let seqs: Vec<(u64, Option<u32>)> = recent.iter().map(|c| (c.seq, c.status_code)).collect();
    assert_eq!(seqs, [(10, None), (9, Some(200)), (8, Some(503))]);
    assert_eq!(
        recent[2].failure,
        fleetmon::pb::CheckFailure::StatusMismatch as i32
    );
    assert_eq!(
        (recent[0].check_id.as_str(), recent[0].check_version),
        ("shop-home", 2),
        "the central check's id and version are stored with each row"
    );

    let missing_range = history
        .get_site_availability(SiteAvailabilityRequest {
            url: URL.to_owned(),
            range: None,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing_range.code(), Code::InvalidArgument);
    assert_eq!(
        missing_range.message(),
        "range is required (range.start at least)"
    );

    let agent = setup
        .history(&writer, Role::Agent)
        .list_stored_agents(ListStoredAgentsRequest {})
        .await
        .unwrap_err();
    assert_eq!(agent.code(), Code::PermissionDenied);
    writer.stop().await;
}

/// 2 500 sites answer in pages of at most `SITES_PAGE_ROWS`, from raw rows and from
/// either rollup: every site once, in URL order, with its own figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_of_many_sites_comes_in_pages_of_its_own() {
    const SITES: u64 = 2500;
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    let base = seconds_ago(50 * 60);
    let url = |i: u64| format!("https://s{i:04}.example/");
    let checks: Vec<_> = (0..SITES)
        .map(|i| check("a1", i + 1, base, &url(i), Some(200), i % 2 == 0, 10.0))
        .collect();
    setup.produce_checks(&checks).await;
    setup
        .wait_for("SELECT count(*) FROM site_checks", SITES as i64)
        .await;
    let mut history = setup.history(&writer, Role::Operator);
    let page_rows = fleetmon_writer::api::history::SITES_PAGE_ROWS;
    for (ago, source) in [
        (3600, "raw"),
        (3 * 86_400, "rollup_minute"),
        (30 * 86_400, "rollup_hour"),
    ] {
        let (mut seen, mut sizes, mut page_token) = (Vec::new(), Vec::new(), String::new());
        loop {
            let page = history
                .get_site_availability(SiteAvailabilityRequest {
                    url: String::new(),
                    range: since(Duration::from_secs(ago)),
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            sizes.push(page.sites.len());
            for site in &page.sites {
                assert_eq!(site.source, source);
                assert_eq!(site.checks, 1, "{source}: {}", site.url);
                seen.push((site.url.clone(), site.ok_checks));
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(sizes, [page_rows, page_rows, 500], "{source}: page sizes");
        let expected: Vec<_> = (0..SITES).map(|i| (url(i), 1 - i % 2)).collect();
        assert_eq!(seen, expected, "{source}: every site once, in order");
    }
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_series_averages_per_step_and_agents_are_listed() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    // A whole minute, 30 minutes ago: three samples in it, one in the next minute.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs((now - 1800) / 60 * 60);
    let samples: Vec<_> = [(0u64, 10.0), (20, 20.0), (40, 30.0), (60, 50.0)]
        .iter()
        .enumerate()
        .map(|(i, (offset, cpu))| {
            let mut sample = host("a9", i as u64 + 1, base + Duration::from_secs(*offset));
            sample.cpu_usage_percent = *cpu;
            sample
        })
        .collect();
    setup.produce_hosts(&samples).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 4).await;

    let mut history = setup.history(&writer, Role::Operator);
    let series = history
        .get_host_series(HostSeriesRequest {
            agent_id: "a9".to_owned(),
            range: since(Duration::from_secs(3600)),
            step_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    let points: Vec<(Option<prost_types::Timestamp>, u32, f64)> = series
        .points
        .iter()
        .map(|p| (p.bucket_start, p.samples, p.cpu_usage_percent))
        .collect();
    assert_eq!(
        points,
        [
            (at(base), 3, 20.0),
            (at(base + Duration::from_secs(60)), 1, 50.0)
        ]
    );
    assert_eq!(series.points[0].memory_used_bytes, (3u64 << 30) as f64);
    assert_eq!(series.resolution, "minute");

    // Each step from the coarsest tier it is made of, or raw rows: the same
    // averages per step as the samples give.
    let series_of = |agent: &str, step: u32| {
        let request = HostSeriesRequest {
            agent_id: agent.to_owned(),
            range: Some(TimeRange {
                start: at(base - Duration::from_secs(2 * 86_400)),
                end: None,
            }),
            step_seconds: step,
        };
        let mut history = history.clone();
        async move {
            let series = history.get_host_series(request).await.unwrap().into_inner();
            let points: Vec<(Option<prost_types::Timestamp>, u32, f64)> = series
                .points
                .iter()
                .map(|p| (p.bucket_start, p.samples, p.cpu_usage_percent))
                .collect();
            (series.resolution, points)
        }
    };
    for (step, resolution) in [(20, "raw"), (60, "minute"), (3600, "hour"), (86_400, "day")] {
        let (read_from, points) = series_of("a9", step).await;
        assert_eq!(read_from, resolution, "step {step}");
        let mut expected: Vec<(Option<prost_types::Timestamp>, u32, f64)> = Vec::new();
        for sample in &samples {
            let secs = sample.sampled_at.unwrap().seconds as u64;
            let bucket = at(SystemTime::UNIX_EPOCH
                + Duration::from_secs(secs / u64::from(step) * u64::from(step)));
            match expected.last_mut() {
                Some((b, n, sum)) if *b == bucket => {
                    *n += 1;
                    *sum += sample.cpu_usage_percent;
                }
                _ => expected.push((bucket, 1, sample.cpu_usage_percent)),
            }
        }
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(b, n, sum)| (b, n, sum / f64::from(n)))
            .collect();
        assert_eq!(points, expected, "step {step}");
        // The whole fleet is this one agent here: the same points, from the same tier.
        let fleet = series_of("", step).await;
        assert_eq!(fleet, (read_from, points), "fleet, step {step}");
    }

    let agents = history
        .list_stored_agents(ListStoredAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 1);
    assert_eq!(
        (agents[0].agent_id.as_str(), agents[0].hostname.as_str()),
        ("a9", "a9.example")
    );
    assert_eq!(agents[0].last_seen, at(base + Duration::from_secs(60)));
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_queries_history_with_json() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    load_checks(&setup).await;
    let dir = setup.pki.dir();
    let addr = writer.running.grpc_addr.to_string();
    let grpcurl = |args: &[&str]| grpcurl_operator(dir, args);
    let services = grpcurl(&[&addr, "list"]);
    assert_eq!(
        services.lines().collect::<Vec<_>>(),
        [
            "fleetmon.v1.Alerts",
            "fleetmon.v1.Audit",
            "fleetmon.v1.DeadLetters",
            "fleetmon.v1.History",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"
        ]
    );
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let start = start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = format!(r#"{{"url": "{URL}", "range": {{"start": "{start}"}}}}"#);
    let answer: serde_json::Value = serde_json::from_str(&grpcurl(&[
        "-d",
        &body,
        &addr,
        "fleetmon.v1.History/GetSiteAvailability",
    ]))
    .unwrap();
    let site = &answer["sites"][0];
    assert_eq!(site["url"], URL);
    assert_eq!(site["checks"], "10");
    assert_eq!(site["uptimePercent"], 70.0);
    assert_eq!(site["statusCodes"]["503"], "2");
    assert!(grpcurl(&[&addr, "grpc.health.v1.Health/Check"]).contains("SERVING"));
    writer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_at_a_day_step_reads_day_rollups_and_no_raw_partition() {
    let setup = Setup::new().await;
    let writer = setup.start_writer().await;
    setup.produce_hosts(&[host("a9", 1, seconds_ago(60))]).await;
    setup.wait_for("SELECT count(*) FROM host_samples", 1).await;
    writer.stop().await;
    let db = setup.schema.connect().await;
    let now = SystemTime::now();
    let year_ago = now - Duration::from_secs(365 * 86_400);
    let plan: Vec<String> = db
        .query(
            &format!(
                "EXPLAIN {}",
                fleetmon_writer::store::host_series_sql(
                    Some(fleetmon_writer::store::Tier::Day),
                    false
                )
            ),
            &[&year_ago, &now, &86_400f64, &"a9"],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("host_rollups_day_p"), "{plan}");
    assert!(!plan.contains("host_samples"), "{plan}");
    assert!(!plan.contains("host_rollups_minute"), "{plan}");
    assert!(!plan.contains("host_rollups_hour"), "{plan}");
}

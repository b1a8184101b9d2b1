//! The live fleet view (`Fleet` service) and what grpcurl sees, over real mTLS.

use std::time::Duration;

use fleetmon::pb::sample::Kind;
use fleetmon::pb::{
    GetAgentRequest, GetLatestRequest, ListAgentsRequest, WatchLatestRequest, watch_event,
};
use fleetmon::testkit::{grpcurl_as, kafka_bootstrap};
use fleetmon_collector::testkit::*;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_agents_and_their_latest_samples() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let mut fleet = collector.operator();
    let mut watch = fleet
        .watch_latest(WatchLatestRequest {
            agent_id: "a1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();

    collector
        .agent("a2")
        .push(batch([Kind::Host(host("s2", 1))]))
        .await
        .unwrap();
    collector
        .agent("a1")
        .push(batch([
            Kind::Host(host("s1", 1)),
            Kind::Site(site("s1", 2, "https://a.example/")),
            Kind::Site(site("s1", 3, "https://b.example/")),
            Kind::Host(host("s1", 4)),
        ]))
        .await
        .unwrap();

    let agents = fleet
        .list_agents(ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents;
    let ids: Vec<&str> = agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2"]);
    let a1 = &agents[0];
    assert_eq!(a1.hostname, "web-1.example");
    assert_eq!(a1.samples_received, 4);
    assert!(
        a1.remote_address.starts_with("127.0.0.1:"),
        "{}",
        a1.remote_address
    );
    assert!(a1.last_sample_at.is_some() && a1.client_cert_not_after.is_some());
    assert!(!a1.connected, "unary pushes hold no stream open");

    let latest = fleet
        .get_latest(GetLatestRequest {
            agent_id: "a1".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].host.as_ref().map(|h| h.seq), Some(4));
    let urls: Vec<&str> = latest[0].sites.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(urls, ["https://a.example/", "https://b.example/"]);

    // The watcher asked for a1 only: it sees a1's four samples, in order, and not a2's.
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap();
        seen.push(match event.kind.unwrap() {
            watch_event::Kind::Host(h) => (h.agent_id, h.seq),
            watch_event::Kind::Site(s) => (s.agent_id, s.seq),
        });
    }
    assert!(seen.iter().all(|(agent, _)| agent == "a1"), "{seen:?}");

    let missing = fleet
        .get_agent(GetAgentRequest {
            agent_id: "nobody".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.message(),
        "agent `nobody` has not connected since the collector started"
    );
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_services_and_calls_them_with_json() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let dir = collector.pki.dir();
    let agent = collector
        .pki
        .client(fleetmon::identity::Role::Agent, "curl-agent");
    let addr = collector.running.grpc_addr.to_string();
    let grpcurl = |cert: &std::path::Path, key: &std::path::Path, args: &[&str]| {
        grpcurl_as(dir, cert, key, args)
    };
    let (operator_cert, operator_key) = (dir.join("operator.pem"), dir.join("operator-key.pem"));

    let (ok, stdout, stderr) = grpcurl(&operator_cert, &operator_key, &[&addr, "list"]);
    assert!(ok, "{stderr}");
    let services: Vec<&str> = stdout.lines().collect();
    for expected in [
        "fleetmon.v1.Fleet",
        "fleetmon.v1.Ingest",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} missing from {services:?}"
        );
    }

    let push = r#"{"samples":[{"host":{"streamId":"curl","seq":"1","sampledAt":"NOW","hostname":"curl-host","cpuUsagePercent":3.5}}]}"#
        .replace("NOW", &time_now_rfc3339());
    let (ok, stdout, stderr) = grpcurl(
        &agent.cert,
        &agent.key,
        &["-d", &push, &addr, "fleetmon.v1.Ingest/Push"],
    );
    assert!(ok, "{stderr}");
    let ack: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(ack["streams"][0]["streamId"], "curl");
    assert_eq!(ack["streams"][0]["ackedThroughSeq"], "1");

    let (ok, stdout, stderr) = grpcurl(
        &operator_cert,
        &operator_key,
        &[&addr, "fleetmon.v1.Fleet/ListAgents"],
    );
    assert!(ok, "{stderr}");
    let agents: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(agents["agents"][0]["agentId"], "curl-agent");
    assert_eq!(agents["agents"][0]["hostname"], "curl-host");

    let (ok, stdout, stderr) = grpcurl(
        &operator_cert,
        &operator_key,
        &[&addr, "grpc.health.v1.Health/Check"],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"status\": \"SERVING\""), "{stdout}");

    // An operator certificate on Ingest: grpcurl reports PermissionDenied.
    let (ok, _, stderr) = grpcurl(
        &operator_cert,
        &operator_key,
        &["-d", &push, &addr, "fleetmon.v1.Ingest/Push"],
    );
    assert!(!ok);
    assert!(stderr.contains("Code: PermissionDenied"), "{stderr}");
    collector.shutdown.cancel();
}

fn time_now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flooding_sites_and_streams_is_bounded_and_the_view_answers_in_pages() {
    let collector = TestCollector::start(&kafka_bootstrap(), |c| {
        c.limits.max_latest_sites_per_agent = 100;
        c.limits.max_streams_per_session = 4;
    })
    .await;
    // 10 000 distinct URLs, each stored, but the live view keeps 100 of them.
    let mut flood = collector.agent("flood");
    for chunk in 0..10 {
        let ack = flood
            .push(batch((1..=1000).map(|i| {
                let seq = chunk * 1000 + i;
                Kind::Site(site("s1", seq, &format!("https://flood.example/{seq}")))
            })))
            .await
            .unwrap()
            .into_inner();
        assert!(ack.rejected.is_empty(), "{:?}", ack.rejected.first());
    }
    let mut fleet = collector.operator();
    let latest = fleet
        .get_latest(GetLatestRequest {
            agent_id: "flood".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .agents;
    assert_eq!(latest[0].sites.len(), 100);
    let dropped = fleetmon::testkit::metric_value(
        collector.running.metrics_addr,
        "fleetmon_collector_latest_sites_dropped_total",
    );
    assert_eq!(dropped, Some(9900.0));

    // Ten streams in one call: four are taken, the others refused by name.
    let ack = flood
        .push(batch(
            (1..=10).map(|s| Kind::Host(host(&format!("stream-{s}"), 1))),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.streams.len(), 4);
    assert_eq!(ack.rejected.len(), 6);
    assert_eq!(ack.rejected[0].reason, "too_many_streams");
    assert_eq!(
        ack.rejected[0].message,
        "stream_id `stream-5` would be stream 5 of this connection; at most 4 (limits.max_streams_per_session): an agent uses one stream per start"
    );

    // Paged: three agents, one a page, each page pointing at the next.
    for name in ["a", "b"] {
        collector
            .agent(name)
            .push(hosts("s1", 1..=1))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = fleet
            .list_agents(ListAgentsRequest {
                page_token,
                page_size: 1,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.agents.into_iter().map(|a| a.agent_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ["a", "b", "flood"]);
    let page = fleet
        .get_latest(GetLatestRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = page.agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!((ids, page.next_page_token.as_str()), (vec!["a", "b"], "b"));
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_clock_offset_is_measured_from_its_batch_and_stamped_on_its_samples() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let ahead = std::time::SystemTime::now() + Duration::from_secs(90);
    let mut claimed = host("s1", 1);
    claimed.clock_offset_ms = Some(i64::MIN);
    let mut sent = batch([Kind::Host(claimed)]);
    sent.sent_at = Some(ahead.into());
    collector.agent("fast").push(sent).await.unwrap();

    let records = collector.host_records(1).await;
    let stamped = records[0]
        .1
        .clock_offset_ms
        .expect("stamped by the collector");
    assert!((88_000..=90_500).contains(&stamped), "{stamped}");
    let listed = collector
        .operator()
        .get_agent(GetAgentRequest {
            agent_id: "fast".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.clock_offset_ms, Some(stamped));
    collector.shutdown.cancel();
}

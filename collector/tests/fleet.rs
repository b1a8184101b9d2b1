//! The live fleet view (`Fleet` service) and what grpcurl sees, over real mTLS.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use fleetmon::pb::sample::Kind;
use fleetmon::pb::{
    GetAgentRequest, GetLatestRequest, ListAgentsRequest, WatchLatestRequest, watch_event,
};
use fleetmon::testkit::{grpcurl_binary, kafka_bootstrap};
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
        .list_agents(ListAgentsRequest {})
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
        let out = Command::new(grpcurl_binary())
            .arg("-cacert")
            .arg(dir.join("ca.pem"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .args(args)
            .output()
            .expect("run grpcurl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
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

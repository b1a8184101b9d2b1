//! One agent flooding the real collector binary with distinct sites and long texts:
//! the collector's memory is held (a second flood adds next to nothing), the live view
//! keeps its bounded share, every sample is stored, and `fleetmon status` answers.

use std::time::SystemTime;

use fleetmon::identity::Role;
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::sample::Kind;
use fleetmon::pb::{IngestBatch, Sample, SiteCheck};
use fleetmon::testkit::{CentralRig, eventually};

const SITES: u64 = 10_000;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Pushes `SITES` distinct sites, each with a 4 KB URL and a 4 KB error, on `stream`.
async fn flood(client: &mut IngestClient<tonic::transport::Channel>, stream: &str) {
    let pad = "x".repeat(4000);
    for first in (1..=SITES).step_by(250) {
        let samples = (first..first + 250)
            .map(|seq| Sample {
                kind: Some(Kind::Site(SiteCheck {
                    stream_id: stream.to_owned(),
                    seq,
                    checked_at: Some(SystemTime::now().into()),
                    url: format!("https://flood.example/{stream}/{seq}/{pad}"),
                    method: "GET".to_owned(),
                    error_message: pad.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        let ack = client
            .push(IngestBatch {
                samples,
                sent_at: Some(SystemTime::now().into()),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ack.rejected.is_empty(), "{:?}", ack.rejected.first());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_sites_is_held_in_bounded_memory_and_status_answers() {
    let rig = CentralRig::start("").await;
    let collector = rig.procs.pid("collector");
    let files = rig.pki.client(Role::Agent, "flood");
    let mut client = IngestClient::new(
        fleetmon::tls::endpoint(&format!("https://127.0.0.1:{}", rig.collector), &files)
            .unwrap()
            .connect_lazy(),
    );
    let before = rss_kib(collector);
    flood(&mut client, "flood-1").await;
    let after_one = rss_kib(collector);
    flood(&mut client, "flood-2").await;
    let after_two = rss_kib(collector);
    println!(
        "collector RSS: {before} KiB before, {after_one} KiB after one flood, {after_two} KiB after two"
    );
    // 20 000 distinct sites and 160 MB went through. The first flood sizes the gRPC
    // and Kafka buffers once; what stays is bounded by the limits (the live view keeps
    // 1 000 sites of at most a few KiB), not by the traffic: kept whole, the sites
    // alone would be over 160 MB.
    assert!(
        after_two < before + 64 * 1024 && after_two < after_one + 16 * 1024,
        "collector RSS {before} KiB before, {after_one} KiB after one flood, {after_two} KiB after two"
    );
    eventually(
        &rig.schema,
        "SELECT count(*) FROM site_checks WHERE agent_id = 'flood'",
        "every flooded sample stored",
        |n| n == 2 * SITES as i64,
    )
    .await;
    let status: serde_json::Value =
        serde_json::from_str(&rig.fleetmon_ok(&["status", "--json"])).unwrap();
    let shown = status["sites"]
        .as_array()
        .map(|sites| sites.iter().filter(|s| s["agent_id"] == "flood").count())
        .unwrap_or_default();
    assert_eq!(
        shown, 1000,
        "the live view keeps its bounded share: {shown}"
    );
}

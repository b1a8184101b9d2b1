//! Token enrollment, refusals and revocation on real collectors and Kafka: an agent
//! enrolls with `fleetmon_agent::enroll` (its key made locally, the CA pinned by
//! fingerprint) and streams under its name; every bad request gets its exact status
//! and message and nothing is issued; a revocation on one collector closes the agent's
//! streams on two and refuses its next handshake.

use std::collections::HashMap;
use std::time::Duration;

use fleetmon::identity::Role;
use fleetmon::pb::credentials_client::CredentialsClient;
use fleetmon::pb::enrollment_client::EnrollmentClient;
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::{
    CreateTokenRequest, EnrollRequest, ListAgentCredentialsRequest, ListTokensRequest,
    RevokeAgentRequest, RevokeTokenRequest,
};
use fleetmon::testkit::{kafka_bootstrap, tls_alert, unique_name};
use fleetmon::tls::ClientTlsFiles;
use fleetmon_agent::enroll::{EnrollArgs, EnrollConfig, enroll};
use fleetmon_collector::config::EnrollmentConfig;
use fleetmon_collector::testkit::{TestCollector, hosts};
use tonic::Code;
use tonic::transport::Channel;

/// Enrollment on a free port with the issuing CA of the certificates in `dir`.
fn enrollment_in(dir: &std::path::Path) -> EnrollmentConfig {
    EnrollmentConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        issuing_ca: dir.join("issuing-ca.pem"),
        issuing_ca_key: dir.join("issuing-ca-key.pem"),
        certificate_lifetime_seconds: 3600,
        max_connections: 16,
        requests_per_minute_per_address: 0,
        requests_per_minute_per_token: 0,
    }
}

/// A collector that enrolls with the issuing CA of its certificates, `tweak`ed.
async fn collector_enrolling(
    tweak: impl FnOnce(&mut fleetmon_collector::CollectorConfig, &mut EnrollmentConfig),
) -> TestCollector {
    TestCollector::start(&kafka_bootstrap(), |config| {
        let dir = config.tls.client_ca.parent().unwrap().to_owned();
        let mut enrollment = enrollment_in(&dir);
        tweak(config, &mut enrollment);
        config.enrollment = Some(enrollment);
    })
    .await
}

async fn enrolling_collector(credentials_topic: Option<&str>) -> TestCollector {
    let topic = credentials_topic.map(str::to_owned);
    collector_enrolling(|config, _| {
        if let Some(topic) = topic {
            config.kafka.credentials_topic = topic;
        }
    })
    .await
}

fn enroll_url(collector: &TestCollector) -> String {
    let addr = collector
        .running
        .enroll_addr
        .expect("an enrollment listener");
    format!("https://localhost:{}", addr.port())
}

fn fingerprint(collector: &TestCollector) -> String {
    let ca = fleetmon::tls::read_certs("CA", &collector.pki.dir().join("ca.pem")).unwrap();
    format!("sha256:{}", fleetmon::pki::sha256_hex(ca[0].as_ref()))
}

fn credentials(collector: &TestCollector) -> CredentialsClient<Channel> {
    CredentialsClient::new(collector.channel(&collector.pki.client(Role::Operator, "ops")))
}

async fn token(collector: &TestCollector, request: CreateTokenRequest) -> String {
    credentials(collector)
        .create_token(request)
        .await
        .unwrap()
        .into_inner()
        .token
}

fn args(collector: &TestCollector, token: &str, name: &str) -> EnrollArgs {
    EnrollArgs {
        settings: EnrollConfig {
            collector: enroll_url(collector),
            token: Some(token.to_owned()),
            token_file: None,
            ca_fingerprint: fingerprint(collector),
            name: Some(name.to_owned()),
        },
        dir: tempfile::tempdir().unwrap().keep(),
    }
}

/// An Enrollment client over server-authenticated TLS (the CA known), for requests
/// the agent's own command would never send.
async fn raw_enrollment(collector: &TestCollector) -> EnrollmentClient<Channel> {
    let ca = std::fs::read_to_string(collector.pki.dir().join("ca.pem")).unwrap();
    EnrollmentClient::new(
        fleetmon::tls::server_only_endpoint(&enroll_url(collector), &ca)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// What the enrollment service answers `agent_name` with a made-up token; it must refuse.
async fn refused(
    raw: &mut EnrollmentClient<Channel>,
    agent_name: impl Into<String>,
    csr: &[u8],
) -> tonic::Status {
    raw.enroll(EnrollRequest {
        token: "deadbeef.0000".into(),
        agent_name: agent_name.into(),
        csr_der: csr.to_vec(),
    })
    .await
    .unwrap_err()
}

fn enrolled_client(files: &fleetmon_agent::enroll::EnrolledFiles) -> ClientTlsFiles {
    ClientTlsFiles {
        ca: files.ca.clone(),
        cert: files.cert.clone(),
        key: files.key.clone(),
        server_name: Some("localhost".to_owned()),
    }
}

async fn issued_names(collector: &TestCollector) -> Vec<String> {
    let mut names: Vec<String> = credentials(collector)
        .list_agent_credentials(ListAgentCredentialsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .filter(|a| !a.serial.is_empty() && !a.revoked)
        .map(|a| a.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_streams_under_its_name_with_the_tokens_labels() {
    let collector = enrolling_collector(None).await;
    let token = token(
        &collector,
        CreateTokenRequest {
            max_uses: 1,
            labels: HashMap::from([("location".to_owned(), "eu-west".to_owned())]),
            ..Default::default()
        },
    )
    .await;
    let args = args(&collector, &token, "web-17");
    let (files, labels) = enroll(&args).await.unwrap();
    assert_eq!(labels.get("location").map(String::as_str), Some("eu-west"));
    // The key was made here and is readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&files.key).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // The certificate names the agent and chains through the issuing CA to the root.
    let chain = fleetmon::tls::read_certs("chain", &files.cert).unwrap();
    assert_eq!(
        chain.len(),
        2,
        "the agent's certificate, then the issuing CA's"
    );
    let identity = fleetmon::identity::PeerIdentity::from_der(chain[0].as_ref()).unwrap();
    assert_eq!(identity.uri(), "spiffe://fleetmon/agent/web-17");

    let ack = IngestClient::new(collector.channel(&enrolled_client(&files)))
        .push(hosts("enrolled", 1..=2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.streams[0].acked_through_seq, 2);
    let records = collector.host_records(2).await;
    assert!(
        records
            .iter()
            .all(|(key, sample)| key == "web-17" && sample.agent_id == "web-17"),
        "{records:?}"
    );

    // The token had one use: it is spent, and says so.
    let tokens = credentials(&collector)
        .list_tokens(ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!((tokens[0].uses, tokens[0].max_uses), (1, 1));
    let mut second = args.clone();
    second.settings.name = Some("web-18".into());
    let again = enroll(&second).await.unwrap_err();
    assert_eq!(
        again.to_string(),
        format!(
            "enrollment refused by {}: PermissionDenied: enrollment token {} has been used 1 of 1 times: create a new one with `fleetmon tokens create`",
            args.settings.collector, tokens[0].id
        )
    );
    assert!(tokens[0].secret_sha256.len() == 64 && !token.contains(&tokens[0].secret_sha256));
    assert_eq!(issued_names(&collector).await, ["web-17"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_enrollment_gets_its_exact_status_and_message_and_nothing_is_issued() {
    let collector = enrolling_collector(None).await;
    let good = token(&collector, CreateTokenRequest::default()).await;
    let (_, _) = enroll(&args(&collector, &good, "taken")).await.unwrap();

    let raw = raw_enrollment(&collector).await;
    let (csr, _key) = fleetmon::pki::certificate_request("x").unwrap();
    let refused = |request: EnrollRequest| {
        let mut raw = raw.clone();
        async move { raw.enroll(request).await.unwrap_err() }
    };
    let request = |token: &str, name: &str, csr: &[u8]| EnrollRequest {
        token: token.to_owned(),
        agent_name: name.to_owned(),
        csr_der: csr.to_vec(),
    };

    let revoked = token(&collector, CreateTokenRequest::default()).await;
    let revoked_id = revoked.split_once('.').unwrap().0.to_owned();
    credentials(&collector)
        .revoke_token(RevokeTokenRequest {
            id: revoked_id.clone(),
        })
        .await
        .unwrap();
    let (id, _) = good.split_once('.').unwrap();
    let wrong_secret = format!("{id}.0000");
    let unknown =
        "enrollment token not recognised: check it, or create one with `fleetmon tokens create`";
    let exact = [
        (request("deadbeef.0000", "a1", &csr), Code::Unauthenticated, unknown.to_owned()),
        (request(&wrong_secret, "a1", &csr), Code::Unauthenticated, unknown.to_owned()),
        (
            request(&revoked, "a1", &csr),
            Code::PermissionDenied,
            format!("enrollment token {revoked_id} was revoked: create a new one with `fleetmon tokens create`"),
        ),
        // Another key asking for a name that is enrolled.
        (
            request(&good, "taken", &csr),
            Code::AlreadyExists,
            "agent name `taken` belongs to another key: enroll under another name, or revoke it first (fleetmon certs revoke taken)".to_owned(),
        ),
        (
            request(&good, "../etc", &csr),
            Code::InvalidArgument,
            "invalid agent name: name `../etc` may only contain ASCII letters, digits, '.', '_' and '-', and may not start with '.'".to_owned(),
        ),
        (
            request("", "a1", &csr),
            Code::InvalidArgument,
            "malformed enrollment request: token is empty".to_owned(),
        ),
    ];
    for (request, code, message) in exact {
        let status = refused(request).await;
        assert_eq!((status.code(), status.message()), (code, message.as_str()));
    }

    let created = credentials(&collector)
        .create_token(CreateTokenRequest {
            expires_in_seconds: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let expiring = created.token;
    // Waits for the fact the refusal rests on: the expiry the collector recorded has
    // passed on this clock (the collector's, on this machine).
    let expires_at = std::time::SystemTime::try_from(
        created
            .info
            .and_then(|info| info.expires_at)
            .expect("an expiring token"),
    )
    .unwrap();
    while std::time::SystemTime::now() <= expires_at {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = refused(request(&expiring, "a1", &csr)).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().starts_with(&format!(
            "enrollment token {} expired at 20",
            expiring.split_once('.').unwrap().0
        )) && status
            .message()
            .ends_with(": create a new one with `fleetmon tokens create`"),
        "{}",
        status.message()
    );

    let status = refused(request(&good, "a1", b"not a certificate request")).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("the certificate request cannot be used: "),
        "{}",
        status.message()
    );

    // A fingerprint that is not the fleet's: the token never leaves the host.
    let mut wrong = args(&collector, &good, "a2");
    wrong.settings.ca_fingerprint = format!("sha256:{}", "ab".repeat(32));
    let error = enroll(&wrong).await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "cannot fetch the fleet's CA from {}: ",
            wrong.settings.collector
        )) && error.contains(&format!(
            "no CA the collector presented has fingerprint sha256:{} (it presented sha256:",
            "ab".repeat(32)
        )) && error
            .ends_with("check --ca-fingerprint (`fleetmon certs fingerprint` prints the fleet's)"),
        "{error}"
    );
    assert!(!wrong.dir.join("agent-key.pem").exists());

    assert_eq!(issued_names(&collector).await, ["taken"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_closes_the_agents_streams_on_two_collectors_and_refuses_its_handshakes() {
    let topic = unique_name("fleetmon-test-credentials");
    let first = enrolling_collector(Some(&topic)).await;
    // The second collector shares the credentials topic and the fleet's PKI.
    let second = TestCollector::start(&kafka_bootstrap(), |config| {
        config.kafka.credentials_topic = topic.clone();
        config.tls = first.pki.server("collector");
    })
    .await;
    let token = token(&first, CreateTokenRequest::default()).await;
    let (files, _) = enroll(&args(&first, &token, "leaving")).await.unwrap();
    let agent = enrolled_client(&files);

    // One open ingest stream on each collector.
    let mut streams = Vec::new();
    for collector in [&first, &second] {
        streams.push(open_stream(collector.channel(&agent), "s").await);
    }

    let revoked = credentials(&first)
        .revoke_agent(RevokeAgentRequest {
            name: "leaving".into(),
            serial: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    assert_eq!(revoked.revoked_by, "ops");

    for (_tx, mut acks) in streams {
        let status = tokio::time::timeout(Duration::from_secs(10), acks.message())
            .await
            .expect("the stream ends within seconds")
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.message(),
            format!(
                "spiffe://fleetmon/agent/leaving (certificate {}) was revoked: enroll again under another name",
                revoked.serial
            )
        );
    }
    for collector in [&first, &second] {
        assert_eq!(
            tls_alert(collector.running.grpc_addr, &first.pki, Some(&agent)).await,
            "received fatal alert: CertificateRevoked"
        );
    }
    // Its name cannot be enrolled again, with any token.
    let fresh = self::token(&first, CreateTokenRequest::default()).await;
    let error = enroll(&args(&first, &fresh, "leaving")).await.unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("PermissionDenied: agent `leaving` was revoked: enroll under another name"),
        "{error}"
    );
    // Other agents are not affected.
    IngestClient::new(second.channel(&first.pki.client(Role::Agent, "staying")))
        .push(hosts("t", 1..=1))
        .await
        .unwrap();
}

/// The serial (hex) of the first certificate in a PEM file.
fn serial_of(path: &std::path::Path) -> String {
    let chain = fleetmon::tls::read_certs("certificate", path).unwrap();
    fleetmon::identity::PeerIdentity::from_der(chain[0].as_ref())
        .unwrap()
        .serial
}

fn counter(addr: std::net::SocketAddr, name: &str) -> u64 {
    fleetmon::testkit::metric_value(addr, name).unwrap_or(0.0) as u64
}

/// not_after of the certificate the collector's first agent connected with.
async fn connected_cert_end(
    fleet: &mut fleetmon::pb::fleet_client::FleetClient<Channel>,
) -> Option<i64> {
    fleet
        .list_agents(fleetmon::pb::ListAgentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .agents[0]
        .client_cert_not_after
        .map(|t| t.seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_before_it_expires_with_no_gap_in_samples() {
    let collector =
        collector_enrolling(|_, enrollment| enrollment.certificate_lifetime_seconds = 15).await;
    // Enrolled by the agent itself at start ([enroll]): its certificate file is missing.
    let token = token(&collector, CreateTokenRequest::default()).await;
    let dir = tempfile::tempdir().unwrap().keep();
    let files = fleetmon_agent::enroll::EnrolledFiles::in_dir(&dir.join("tls"));
    let config_path = dir.join("agent.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
host_interval_seconds = 1
metrics_listen = "127.0.0.1:0"

[collector]
endpoint = "{url}"
ca = {ca:?}
cert = {cert:?}
key = {key:?}
server_name = "localhost"

[enroll]
collector = "{enroll_url}"
token = "{token}"
ca_fingerprint = "{fingerprint}"
name = "renewing"

[outbox]
batch_interval_ms = 100
max_backoff_seconds = 1

[remote_checks]
enabled = false
"#,
            url = collector.url(),
            enroll_url = enroll_url(&collector),
            fingerprint = fingerprint(&collector),
            ca = files.ca,
            cert = files.cert,
            key = files.key,
        ),
    )
    .unwrap();
    let config = fleetmon_agent::AgentConfig::load(Some(&config_path), Vec::new()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let agent = fleetmon_agent::start(config, stop.clone()).await.unwrap();
    let first_serial = serial_of(&files.cert);

    // Due at two thirds of 15 s: well before the first certificate expires.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while serial_of(&files.cert) == first_serial {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not renewed within 40 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let renewed = counter(
        agent.metrics_addr,
        "fleetmon_agent_certificate_renewals_total",
    );
    assert!(renewed >= 1);
    // The agent reconnects with the new certificate and keeps sending: the collector
    // sees a certificate that ends later than the first one.
    let mut fleet = collector.operator();
    let first_end = connected_cert_end(&mut fleet).await;
    let acked = || counter(agent.metrics_addr, "fleetmon_agent_samples_acked_total");
    let acked_at_renewal = acked();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if connected_cert_end(&mut fleet).await > first_end && acked() >= acked_at_renewal + 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not go on with the renewed certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = acked() as usize;
    stop.cancel();
    agent.task.await.unwrap();
    let mut seqs: Vec<u64> = collector
        .host_records(sent)
        .await
        .into_iter()
        .filter(|(key, _)| key == "renewing")
        .map(|(_, sample)| sample.seq)
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "no gap");
    assert!(seqs.len() >= sent.min(5));
}

/// An ingest stream open on `channel` whose first batch is acknowledged.
async fn open_stream(
    channel: Channel,
    stream_id: &str,
) -> (
    tokio::sync::mpsc::Sender<fleetmon::pb::IngestBatch>,
    tonic::Streaming<fleetmon::pb::IngestAck>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hosts(stream_id, 1..=1)).await.unwrap();
    let mut acks = IngestClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!(ack.streams[0].acked_through_seq, 1);
    (tx, acks)
}

/// The status an open stream ends with, which must come within 10 s.
async fn stream_end(acks: &mut tonic::Streaming<fleetmon::pb::IngestAck>) -> tonic::Status {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match acks.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends within seconds")
}

/// The raw serial of a certificate file's leaf, for a CRL.
fn serial_bytes(path: &std::path::Path) -> Vec<u8> {
    let hex = serial_of(path);
    let hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_closes_open_streams_and_refuses_renewal_on_the_open_connection() {
    let collector = collector_enrolling(|config, _| {
        let dir = config.tls.client_ca.parent().unwrap().to_owned();
        let ca = fleetmon::pki::CertificateAuthority::load(&dir).unwrap();
        std::fs::write(dir.join("crl.pem"), ca.crl_pem(&[]).unwrap()).unwrap();
        config.tls.crl = Some(dir.join("crl.pem"));
        config.tls.reload_interval_seconds = 1;
    })
    .await;
    let agent = collector.pki.client(Role::Agent, "crl-listed");
    let other = collector.pki.client(Role::Agent, "crl-unlisted");
    // An agent the issuing CA enrolled, whose issuer has no CRL in the file, gets in.
    let enrolled = collector.pki.issued_by_issuing_ca(
        "enrolled",
        &fleetmon::pki::LeafSpec::client(Role::Agent, "crl-enrolled"),
    );
    open_stream(collector.channel(&enrolled), "e").await;
    let channel = collector.channel(&agent);
    let (_tx, mut acks) = open_stream(channel.clone(), "c").await;
    let (other_tx, mut other_acks) = open_stream(collector.channel(&other), "o").await;

    let crl = collector.pki.dir().join("crl.pem");
    let listed = collector
        .pki
        .ca()
        .crl_pem(&[serial_bytes(&agent.cert)])
        .unwrap();
    std::fs::write(&crl, listed).unwrap();

    let status = stream_end(&mut acks).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        format!(
            "spiffe://fleetmon/agent/crl-listed (certificate {}) was revoked: enroll again under another name",
            serial_of(&agent.cert)
        )
    );
    // Renewal over the connection that is still open: refused, no fresh serial.
    let (csr, _key) = fleetmon::pki::certificate_request("crl-listed").unwrap();
    let status = fleetmon::pb::renewal_client::RenewalClient::new(channel)
        .renew(fleetmon::pb::RenewRequest { csr_der: csr })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // New handshakes are refused by the CRL itself.
    assert_eq!(
        tls_alert(collector.running.grpc_addr, &collector.pki, Some(&agent)).await,
        "received fatal alert: CertificateRevoked"
    );
    // The agent the CRL does not list streams on: its next batch is acknowledged.
    other_tx.send(hosts("o", 2..=2)).await.unwrap();
    let ack = other_acks.message().await.unwrap().unwrap();
    assert_eq!(ack.streams[0].acked_through_seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_copied_from_openssl_revokes_by_value_and_a_name_only_its_agent() {
    let collector = enrolling_collector(None).await;
    let agent = collector.pki.client(Role::Agent, "by-serial");
    let (_tx, mut acks) = open_stream(collector.channel(&agent), "s").await;
    // As `openssl x509 -text` prints it: upper case, colon-separated, a leading 00.
    let hex = serial_of(&agent.cert).to_ascii_uppercase();
    let hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    let openssl_form = std::iter::once("00".to_owned())
        .chain((0..hex.len()).step_by(2).map(|i| hex[i..i + 2].to_owned()))
        .collect::<Vec<_>>()
        .join(":");
    let revoked = credentials(&collector)
        .revoke_agent(RevokeAgentRequest {
            name: String::new(),
            serial: openssl_form,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.serial, serial_of(&agent.cert));
    assert_eq!(stream_end(&mut acks).await.code(), Code::PermissionDenied);

    let status = credentials(&collector)
        .revoke_agent(RevokeAgentRequest {
            name: String::new(),
            serial: "not-hex".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "`not-hex` is not a certificate serial: give its hex digits as openssl prints them, \
         e.g. 00:E3:5A:… or e35a…"
    );

    // Revoking agent `ops` leaves operator `ops` (the same name, another role) be.
    credentials(&collector)
        .revoke_agent(RevokeAgentRequest {
            name: "ops".into(),
            serial: String::new(),
        })
        .await
        .unwrap();
    let listed = credentials(&collector)
        .list_agent_credentials(ListAgentCredentialsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.agents.iter().any(|a| a.name == "ops" && a.revoked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrollment_listener_limits_each_source_and_each_request() {
    let collector =
        collector_enrolling(|_, enrollment| enrollment.requests_per_minute_per_address = 3).await;
    let mut raw = raw_enrollment(&collector).await;
    let (csr, _key) = fleetmon::pki::certificate_request("x").unwrap();

    // A name of 100 KB is refused before the service reads it: the request is too large.
    let status = refused(&mut raw, "n".repeat(100_000), &csr).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // A long name that fits is refused with a short message.
    let status = refused(&mut raw, "n".repeat(10_000), &csr).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() < 200, "{}", status.message());
    assert!(
        status
            .message()
            .ends_with("… (10000 bytes)` is longer than 64 characters"),
        "{}",
        status.message()
    );

    // The long name was this address's first request this minute (the oversized one
    // never reached the service); the third is the last served.
    for _ in 2..=3 {
        let status = refused(&mut raw, "a1", &csr).await;
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = refused(&mut raw, "a1", &csr).await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "too many enrollment requests from 127.0.0.1: try again in a minute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolling_at_the_mutual_tls_port_says_where_enrollment_is_served() {
    let collector = enrolling_collector(None).await;
    let token = token(&collector, CreateTokenRequest::default()).await;
    let mut wrong = args(&collector, &token, "lost");
    wrong.settings.collector = format!("https://localhost:{}", collector.running.grpc_addr.port());
    let error = enroll(&wrong).await.unwrap_err().to_string();
    assert!(
        error.ends_with(
            "the collector presented no CA, so this is not its enrollment listener (its mutual-TLS port serves none): enrollment is served on the listener `[enrollment] listen` names in the collector's config, port 7403 by default: --collector https://localhost:7403"
        ),
        "{error}"
    );
    assert!(!wrong.dir.join("agent-key.pem").exists());
}

/// A hand-issued agent's name is taken once it has connected, or once registered: a
/// token cannot enroll another key under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_issued_name_cannot_be_taken_over_by_enrollment() {
    let collector = enrolling_collector(None).await;
    let token = token(&collector, CreateTokenRequest::default()).await;

    // Connected: its control stream records the name.
    let connected = collector.pki.client(Role::Agent, "hand-connected");
    let mut control =
        fleetmon::pb::control_client::ControlClient::new(collector.channel(&connected));
    let (reports, rx) = tokio::sync::mpsc::channel(4);
    reports
        .send(fleetmon::pb::AgentReport::default())
        .await
        .unwrap();
    let mut sets = control
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    sets.message().await.unwrap();

    // Connected to send samples only (no central checks, so no control stream).
    let streaming = collector.pki.client(Role::Agent, "hand-streaming");
    let mut ingest = fleetmon::pb::ingest_client::IngestClient::new(collector.channel(&streaming));
    let (batches, rx) = tokio::sync::mpsc::channel::<fleetmon::pb::IngestBatch>(1);
    let acks = ingest
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();

    // Both connections record their names in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let names = issued_names(&collector).await;
        if ["hand-connected", "hand-streaming"]
            .iter()
            .all(|n| names.iter().any(|name| name == n))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connected names not recorded after 30 s: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Registered without ever connecting.
    let registered = collector.pki.client(Role::Agent, "hand-registered");
    let pem = std::fs::read_to_string(&registered.cert).unwrap();
    let agent = credentials(&collector)
        .register_agent(fleetmon::pb::RegisterAgentRequest {
            certificate_pem: pem,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(agent.name, "hand-registered");

    for name in ["hand-connected", "hand-streaming", "hand-registered"] {
        let error = enroll(&args(&collector, &token, name)).await.unwrap_err();
        assert!(
            error.to_string().ends_with(&format!(
                "AlreadyExists: agent name `{name}` belongs to another key: enroll under another name, or revoke it first (fleetmon certs revoke {name})"
            )),
            "{error}"
        );
    }
    drop((batches, acks));
    // Refused before the token was used: it still enrolls a free name.
    enroll(&args(&collector, &token, "free-name"))
        .await
        .unwrap();
    // An operator certificate is not an agent's to register.
    let operator = std::fs::read_to_string(collector.pki.client(Role::Operator, "o").cert).unwrap();
    let status = credentials(&collector)
        .register_agent(fleetmon::pb::RegisterAgentRequest {
            certificate_pem: operator,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// Connections the enrollment listener holds are capped: past the cap, a new one waits
/// (its TLS handshake does not complete) until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrollment_listener_holds_at_most_its_connections() {
    let collector = collector_enrolling(|_, enrollment| enrollment.max_connections = 2).await;
    let ca = std::fs::read_to_string(collector.pki.dir().join("ca.pem")).unwrap();
    let endpoint = fleetmon::tls::server_only_endpoint(&enroll_url(&collector), &ca).unwrap();
    let connect = || endpoint.connect();
    let first = connect().await.expect("first connection");
    let _second = connect().await.expect("second connection");
    let third = tokio::time::timeout(Duration::from_secs(2), connect()).await;
    assert!(
        third.is_err(),
        "a third connection got in past the cap of 2"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), connect())
        .await
        .expect("a place freed by a closed connection is taken")
        .expect("third connection");
}

//! Hostile input at the collector, each with its exact outcome, and the servers keep
//! serving everyone else; certificate files replaced while it runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetmon::identity::Role;
use fleetmon::pb::ingest_client::IngestClient;
use fleetmon::pb::sample::Kind;
use fleetmon::pb::{IngestAck, IngestBatch};
use fleetmon::pki::{CertificateAuthority, LeafSpec};
use fleetmon::testkit::{handshake_refusal, kafka_bootstrap, server_certificate, tls_alert};
use fleetmon::tls::ClientTlsFiles;
use fleetmon_collector::testkit::*;
use prost::Message as _;
use tokio_stream::StreamExt;
use tonic::Code;

/// Log lines of this test process, for the assertions about what was logged.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || LogSink(sink.clone()))
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn push_ok(collector: &TestCollector, files: &ClientTlsFiles, stream: &str) {
    let ack = IngestClient::new(collector.channel(files))
        .push(hosts(stream, 1..=1))
        .await
        .unwrap_or_else(|status| panic!("push as {}: {status:?}", files.cert.display()))
        .into_inner();
    assert_eq!(ack.streams[0].acked_through_seq, 1);
}

/// Polls `check` (every 200 ms, 15 s at most) until it returns true.
async fn within_15s<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_not_yet_valid_and_revoked_certificates_are_refused() {
    let crl_dir = tempfile::tempdir().unwrap();
    let crl_path = crl_dir.path().join("revoked.crl.pem");
    let collector = TestCollector::start(&kafka_bootstrap(), |c| {
        // Start with an empty CRL of the test CA; it is replaced below.
        let ca_dir = c.tls.client_ca.parent().unwrap();
        let ca = CertificateAuthority::load(ca_dir).unwrap();
        std::fs::write(&crl_path, ca.crl_pem(&[]).unwrap()).unwrap();
        c.tls.crl = Some(crl_path.clone());
        c.tls.reload_interval_seconds = 1;
    })
    .await;
    let addr = collector.running.grpc_addr;
    let now = time::OffsetDateTime::now_utc();

    let mut expired = LeafSpec::client(Role::Agent, "expired");
    expired.not_before = now - time::Duration::days(10);
    expired.not_after = now - time::Duration::days(1);
    let expired = collector.pki.client_from("expired", &expired);
    let mut early = LeafSpec::client(Role::Agent, "early");
    early.not_before = now + time::Duration::days(1);
    early.not_after = now + time::Duration::days(10);
    let early = collector.pki.client_from("early", &early);
    let revoked_cert = collector
        .pki
        .ca()
        .issue(&LeafSpec::client(Role::Agent, "revoked"))
        .unwrap();
    let revoked =
        collector
            .pki
            .client_files("revoked", &revoked_cert.cert_pem, &revoked_cert.key_pem);
    let good = collector.pki.client(Role::Agent, "good");

    assert_eq!(
        tls_alert(addr, &collector.pki, Some(&expired)).await,
        "received fatal alert: CertificateExpired"
    );
    assert_eq!(
        tls_alert(addr, &collector.pki, Some(&early)).await,
        "received fatal alert: CertificateExpired"
    );
    // Not revoked yet: accepted.
    push_ok(&collector, &revoked, "r1").await;
    std::fs::write(
        &crl_path,
        collector
            .pki
            .ca()
            .crl_pem(std::slice::from_ref(&revoked_cert.serial))
            .unwrap(),
    )
    .unwrap();
    within_15s("the new CRL applies", || async {
        handshake_refusal(addr, &collector.pki, Some(&revoked))
            .await
            .is_some_and(|alert| alert == "received fatal alert: CertificateRevoked")
    })
    .await;
    push_ok(&collector, &good, "g1").await;
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_protobuf_are_invalid_argument() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let files = collector.pki.client(Role::Agent, "a1");
    // A batch whose first field claims a length far beyond the message, then junk.
    let garbage: Vec<u8> = vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 0xde, 0xad, 0xbe, 0xef];
    let status = raw_unary(
        &collector,
        &files,
        "/fleetmon.v1.Ingest/Push",
        garbage.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{status:?}"
    );
    // A string field (a host sample's hostname) that is not UTF-8.
    let mut sample = host("s1", 1);
    sample.hostname = "placeholder".to_owned();
    let mut bytes = batch([Kind::Host(sample)]).encode_to_vec();
    let at = bytes.windows(11).position(|w| w == b"placeholder").unwrap();
    bytes[at] = 0xff;
    let status = raw_unary(&collector, &files, "/fleetmon.v1.Ingest/Push", bytes)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{status:?}");
    // The same junk on a stream ends that stream only.
    let mut agent = collector.agent("a1");
    let ok = agent.push(hosts("s1", 1..=2)).await.unwrap().into_inner();
    assert_eq!(ok.streams[0].acked_through_seq, 2);
    collector.shutdown.cancel();
}

/// Calls `path` with `body` as the raw request message.
async fn raw_unary(
    collector: &TestCollector,
    files: &ClientTlsFiles,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(collector.channel(files));
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_message_and_a_million_samples_are_refused_at_the_default_limits() {
    let collector = TestCollector::start(&kafka_bootstrap(), |_| {}).await;
    let files = collector.pki.client(Role::Agent, "a1");
    let huge = raw_unary(
        &collector,
        &files,
        "/fleetmon.v1.Ingest/Push",
        vec![0; 100 * 1024 * 1024],
    )
    .await
    .unwrap_err();
    assert_eq!(huge.code(), Code::ResourceExhausted, "{huge:?}");
    assert_eq!(
        huge.message(),
        "Error, decoded message length too large: found 104857600 bytes, the limit is: 4194304 bytes"
    );

    // A million (small) samples: 4 MiB is reached long before the sample count limit.
    let million = IngestBatch {
        sent_at: None,
        samples: (1..=1_000_000)
            .map(|seq| fleetmon::pb::Sample {
                kind: Some(Kind::Host(fleetmon::pb::HostSample {
                    stream_id: "m".to_owned(),
                    seq,
                    ..Default::default()
                })),
            })
            .collect(),
    };
    let size = million.encoded_len();
    let mut agent = collector.agent("a1");
    let refused = agent.push(million).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.message(),
        format!(
            "Error, decoded message length too large: found {size} bytes, the limit is: 4194304 bytes"
        )
    );
    // And within the byte limit, the count limit names itself.
    let many = hosts("m", 1..=10_001);
    let refused = agent.push(many).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "batch holds 10001 samples; the limit is 10000 (limits.max_samples_per_batch)"
    );
    let ack = agent.push(hosts("m", 1..=3)).await.unwrap().into_inner();
    assert_eq!(ack.streams[0].acked_through_seq, 3);
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_streams_are_closed_and_serving_goes_on() {
    let collector = TestCollector::start(&kafka_bootstrap(), |c| {
        c.limits.idle_stream_seconds = 2;
    })
    .await;
    const STREAMS: usize = 2_000;
    // Several connections (HTTP/2 multiplexes the streams), every stream opened with
    // one batch and then silent.
    let mut acks = Vec::with_capacity(STREAMS);
    let mut senders = Vec::with_capacity(STREAMS);
    let clients: Vec<_> = (0..20)
        .map(|i| collector.agent(&format!("idle-{i}")))
        .collect();
    for n in 0..STREAMS {
        let (tx, rx) = tokio::sync::mpsc::channel::<IngestBatch>(1);
        tx.send(hosts(&format!("idle-{n}"), 1..=1)).await.unwrap();
        let mut client = clients[n % clients.len()].clone();
        let stream = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        acks.push(stream);
        senders.push(tx);
    }
    let mut first_acks = 0;
    let mut ended = std::collections::BTreeMap::<String, usize>::new();
    for stream in &mut acks {
        let ack: IngestAck = stream.next().await.unwrap().unwrap();
        first_acks += ack.streams.len();
        let status = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the idle stream ends")
            .unwrap()
            .unwrap_err();
        *ended
            .entry(format!("{:?}: {}", status.code(), status.message()))
            .or_default() += 1;
    }
    assert_eq!(first_acks, STREAMS);
    assert_eq!(
        ended.into_iter().collect::<Vec<_>>(),
        [(
            "DeadlineExceeded: no batch for 2 s (limits.idle_stream_seconds): stream closed; \
             open a new one when there is something to send"
                .to_owned(),
            STREAMS
        )]
    );
    push_ok(&collector, &collector.pki.client(Role::Agent, "busy"), "b1").await;
    collector.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_apply_to_new_connections_without_a_restart() {
    let logs = captured_logs();
    let live = tempfile::tempdir().unwrap();
    let live_dir = live.path().to_owned();
    let collector = TestCollector::start(&kafka_bootstrap(), |c| {
        // Serve from copies the test may overwrite.
        for (from, to) in [
            (&c.tls.cert, "server.pem"),
            (&c.tls.key, "server-key.pem"),
            (&c.tls.client_ca, "clients-ca.pem"),
        ] {
            std::fs::copy(from, live_dir.join(to)).unwrap();
        }
        c.tls.cert = live_dir.join("server.pem");
        c.tls.key = live_dir.join("server-key.pem");
        c.tls.client_ca = live_dir.join("clients-ca.pem");
        c.tls.reload_interval_seconds = 1;
    })
    .await;
    let addr = collector.running.grpc_addr;
    let agent = collector.pki.client(Role::Agent, "a1");
    push_ok(&collector, &agent, "s1").await;

    // A broken replacement is logged and refused; the last good files stay in force.
    let good_cert = std::fs::read(live.path().join("server.pem")).unwrap();
    std::fs::write(live.path().join("server.pem"), "not a certificate").unwrap();
    within_15s("the broken certificate is logged", || async {
        String::from_utf8_lossy(&logs.lock().unwrap()).contains(
            "TLS files changed but cannot be used: the previous ones stay in force until they are fixed",
        )
    })
    .await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("server.pem"),
        "the log names the file: {text}"
    );
    push_ok(&collector, &agent, "s2").await;
    assert_eq!(
        server_certificate(addr, &collector.pki, &agent)
            .await
            .as_ref(),
        fleetmon::tls::read_certs("x", &collector.pki.dir().join("collector.pem")).unwrap()[0]
            .as_ref()
    );
    drop(good_cert);

    // A new server certificate and key: new connections get it.
    let renewed = collector
        .pki
        .ca()
        .issue(&LeafSpec::server(
            "collector",
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        ))
        .unwrap();
    std::fs::write(live.path().join("server-key.pem"), &renewed.key_pem).unwrap();
    std::fs::write(live.path().join("server.pem"), &renewed.cert_pem).unwrap();
    let renewed_der = rustls_pki_types::pem::PemObject::from_pem_slice(renewed.cert_pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c)
        .unwrap();
    within_15s("the renewed server certificate is served", || async {
        server_certificate(addr, &collector.pki, &agent).await == renewed_der
    })
    .await;
    push_ok(&collector, &agent, "s3").await;

    // A new client CA bundle: agents of the new CA get in, those of the old one not.
    let new_ca = CertificateAuthority::generate("fleetmon rotated CA").unwrap();
    let rotated = new_ca.issue(&LeafSpec::client(Role::Agent, "b1")).unwrap();
    let rotated = collector
        .pki
        .client_files("rotated-b1", &rotated.cert_pem, &rotated.key_pem);
    std::fs::write(live.path().join("clients-ca.pem"), new_ca.cert_pem()).unwrap();
    within_15s("the new client CA applies", || async {
        handshake_refusal(addr, &collector.pki, Some(&agent))
            .await
            .is_some_and(|alert| alert == "received fatal alert: UnknownCA")
    })
    .await;
    push_ok(&collector, &rotated, "b1").await;
    collector.shutdown.cancel();
}

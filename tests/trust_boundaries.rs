//! Who may do what, tried as an attacker would against the real binaries: each test
//! performs the attack and checks that it fails to get in (docs/SECURITY.md).

mod common;

use common::CentralRig;
use fleetmon::identity::Role;
use fleetmon::pki::LeafSpec;
use fleetmon::testkit::grpcurl_as;

/// A collector's issuing CA key (every collector that enrolls holds it) mints an
/// operator certificate: collector and writer refuse it at the handshake, while the
/// root-issued operator certificate and an agent certificate from the same issuing CA
/// still get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_minted_by_the_issuing_ca_is_refused_by_collector_and_writer() {
    let rig = CentralRig::start("").await;
    let certs = rig.certs().to_owned();
    let forged = rig
        .pki
        .issued_by_issuing_ca("forged-admin", &LeafSpec::client(Role::Operator, "admin"));
    let (operator, operator_key) = (certs.join("operator.pem"), certs.join("operator-key.pem"));
    for (server, port) in [("collector", rig.collector), ("writer", rig.writer)] {
        let addr = format!("127.0.0.1:{port}");
        let (ok, stdout, _) = grpcurl_as(
            &certs,
            &forged.cert,
            &forged.key,
            &["-connect-timeout", "2", &addr, "list"],
        );
        assert!(!ok, "{server} let the forged operator in: {stdout}");
        let (ok, stdout, stderr) = grpcurl_as(&certs, &operator, &operator_key, &[&addr, "list"]);
        assert!(ok, "{server} refused the real operator: {stderr}");
        assert!(stdout.contains("grpc.health.v1.Health"), "{stdout}");
        let log = std::fs::read_to_string(rig.logs.path().join(format!("{server}.log"))).unwrap();
        assert!(
            log.contains(
                "spiffe://fleetmon/operator/admin is not an agent identity and was not issued \
                 by the root CA itself: the issuing CA signs agents only"
            ),
            "{server} log: {log}"
        );
    }
    // An agent enrolled through the issuing CA is what it is for: the collector's agent
    // services let it through the handshake (grpcurl lists through reflection).
    let enrolled = rig
        .pki
        .issued_by_issuing_ca("enrolled", &LeafSpec::client(Role::Agent, "web-1"));
    let addr = format!("127.0.0.1:{}", rig.collector);
    let (ok, stdout, stderr) = grpcurl_as(&certs, &enrolled.cert, &enrolled.key, &[&addr, "list"]);
    assert!(ok, "the enrolled agent was refused: {stderr}");
    assert!(stdout.contains("fleetmon.v1.Ingest"), "{stdout}");
}

//! `fleetmon certs`: the dev PKI as an operator meets it, checked with openssl.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use fleetmon::identity::{PeerIdentity, Role};
use fleetmon::pki::LeafSpec;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

fn fleetmon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmon"))
        .args(args)
        .env_remove("FLEETMON_CERTS_DIR")
        .output()
        .expect("run fleetmon")
}

fn ok(args: &[&str]) -> String {
    let out = fleetmon(args);
    assert!(
        out.status.success(),
        "fleetmon {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn failure(args: &[&str]) -> String {
    let out = fleetmon(args);
    assert!(!out.status.success(), "fleetmon {args:?} should fail");
    String::from_utf8(out.stderr).expect("utf-8 error")
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap_or_else(|e| panic!("read {}: {e:?}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn init_writes_the_whole_pki_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let dir_s = dir.to_str().unwrap();
    let stdout = ok(&["certs", "init", "--dir", dir_s]);
    for stem in ["ca", "collector", "writer", "operator"] {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        assert!(
            stdout.contains(&format!("wrote {}", cert.display())),
            "{stdout}"
        );
        assert_eq!(mode(&key), 0o600, "{} must be private", key.display());
        assert_eq!(mode(&cert), 0o644);
    }
    let operator = PeerIdentity::from_der(&der(&dir.join("operator.pem"))).unwrap();
    assert_eq!(
        (operator.role, operator.name.as_str()),
        (Role::Operator, "admin")
    );
}

#[test]
fn existing_files_are_never_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    ok(&["certs", "init", "--dir", dir]);
    let before = std::fs::read(tmp.path().join("ca-key.pem")).unwrap();
    let error = failure(&["certs", "init", "--dir", dir]);
    assert_eq!(
        error,
        format!("error: {dir}/ca.pem already exists; pass --force to overwrite it\n")
    );
    assert_eq!(
        std::fs::read(tmp.path().join("ca-key.pem")).unwrap(),
        before
    );

    ok(&["certs", "init", "--dir", dir, "--force"]);
    assert_ne!(
        std::fs::read(tmp.path().join("ca-key.pem")).unwrap(),
        before
    );
    assert_eq!(mode(&tmp.path().join("ca-key.pem")), 0o600);

    ok(&["certs", "issue-agent", "web-1", "--dir", dir]);
    let error = failure(&["certs", "issue-agent", "web-1", "--dir", dir]);
    assert_eq!(
        error,
        format!("error: {dir}/agents/web-1.pem already exists; pass --force to overwrite it\n")
    );
    ok(&["certs", "issue-agent", "web-1", "--dir", dir, "--force"]);
}

#[test]
fn agent_certificates_carry_the_agent_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    ok(&["certs", "init", "--dir", dir]);
    ok(&["certs", "issue-agent", "db-2.eu_west", "--dir", dir]);
    let cert = tmp.path().join("agents/db-2.eu_west.pem");
    assert_eq!(mode(&tmp.path().join("agents/db-2.eu_west-key.pem")), 0o600);
    let identity = PeerIdentity::from_der(&der(&cert)).unwrap();
    assert_eq!(identity.role, Role::Agent);
    assert_eq!(identity.name, "db-2.eu_west");
    assert_eq!(identity.uri(), "spiffe://fleetmon/agent/db-2.eu_west");
}

#[test]
fn bad_names_get_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    ok(&["certs", "init", "--dir", dir]);
    assert_eq!(
        failure(&["certs", "issue-agent", "", "--dir", dir]),
        "error: invalid agent name: name is empty\n"
    );
    for bad in ["a/b", "a b", "../x"] {
        assert_eq!(
            failure(&["certs", "issue-agent", bad, "--dir", dir]),
            format!(
                "error: invalid agent name: name `{bad}` may only contain ASCII letters, digits, \
                 '.', '_' and '-', and may not start with '.'\n"
            )
        );
    }
    assert!(
        !tmp.path().join("agents").exists(),
        "nothing written for a bad name"
    );
}

#[test]
fn issuing_without_a_ca_says_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    assert_eq!(
        failure(&["certs", "issue-agent", "a1", "--dir", dir]),
        format!(
            "error: cannot read CA {dir}/ca.pem: No such file or directory (os error 2) \
             (run: fleetmon certs init --dir {dir})\n"
        )
    );
}

#[test]
fn server_certificates_name_localhost_loopback_and_extra_sans() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    ok(&[
        "certs",
        "init",
        "--dir",
        dir,
        "--san",
        "collector.example.net",
        "--san",
        "10.1.2.3",
    ]);
    for server in ["collector", "writer"] {
        let der = der(&tmp.path().join(format!("{server}.pem")));
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|name| match name {
                GeneralName::DNSName(dns) => dns.to_string(),
                GeneralName::IPAddress(ip) => {
                    std::net::IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string()
                }
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "localhost",
                "127.0.0.1",
                "collector.example.net",
                "10.1.2.3"
            ]
        );
    }
}

#[test]
fn openssl_verify_accepts_every_certificate_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    ok(&["certs", "init", "--dir", dir]);
    ok(&["certs", "issue-agent", "a1", "--dir", dir]);
    ok(&[
        "certs",
        "issue-operator",
        "alice",
        "--role",
        "viewer",
        "--dir",
        dir,
    ]);
    let certs = [
        "ca.pem",
        "collector.pem",
        "writer.pem",
        "operator.pem",
        "agents/a1.pem",
        "operators/alice.pem",
    ];
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(tmp.path().join("ca.pem"))
        .args(certs.iter().map(|c| tmp.path().join(c)))
        .output()
        .expect("run openssl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for cert in certs {
        assert!(
            stdout.contains(&format!("{}: OK", tmp.path().join(cert).display())),
            "{cert} not verified: {stdout}"
        );
    }
}

/// `openssl verify` with the issuing CA as the untrusted intermediate, as a TLS peer
/// would see a chain the issuing CA signed: (accepted, output).
fn openssl_verify_through_issuing(dir: &Path, cert: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("ca.pem"))
        .arg("-untrusted")
        .arg(dir.join("issuing-ca.pem"))
        .arg(cert)
        .output()
        .expect("run openssl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_issuing_ca_signs_agents_but_no_server_certificate_passes_openssl() {
    let pki = fleetmon::testkit::TestPki::new();
    let dir = pki.dir();
    // What enrollment issues: accepted.
    let agent = pki.issued_by_issuing_ca("agent", &LeafSpec::client(Role::Agent, "web-1.eu"));
    let (ok, output) = openssl_verify_through_issuing(dir, &agent.cert);
    assert!(ok, "{output}");
    // The attack: a server certificate for the writer's names minted by a collector's
    // key. Its DNS name and its IP address are each outside the constraints.
    for (stem, san) in [("fake-dns", "localhost"), ("fake-ip", "127.0.0.1")] {
        let spec = LeafSpec::server("fleetmon writer", vec![san.to_owned()]);
        let fake = pki.issued_by_issuing_ca(stem, &spec);
        let (ok, output) = openssl_verify_through_issuing(dir, &fake.cert);
        assert!(!ok, "{san}: {output}");
        assert!(output.contains("excluded subtree violation"), "{output}");
    }
}

#[test]
fn certs_check_reports_an_unconstrained_issuing_ca_and_its_replacement_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    ok(&["certs", "init", "--dir", dir]);
    let issuing = tmp.path().join("issuing-ca.pem");
    assert_eq!(
        ok(&["certs", "check", "--dir", dir]),
        format!(
            "ok: {} signs agents only (path length 0; no DNS name or IP address)\n",
            issuing.display()
        )
    );

    // An issuing CA as `certs init` made them before name constraints.
    let root = fleetmon::pki::CertificateAuthority::load(tmp.path()).unwrap();
    let root_key = rcgen::KeyPair::from_pem(root.key_pem()).unwrap();
    let root_issuer = rcgen::Issuer::from_ca_cert_pem(root.cert_pem(), root_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let key = rcgen::KeyPair::generate().unwrap();
    let old = params.signed_by(&key, &root_issuer).unwrap();
    std::fs::write(&issuing, old.pem()).unwrap();
    std::fs::write(tmp.path().join("issuing-ca-key.pem"), key.serialize_pem()).unwrap();

    let out = fleetmon(&["certs", "check", "--dir", dir]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!(
            "problem: {}: it may sign server certificates: its name constraints do not exclude every DNS name\n\
             problem: {}: it may sign server certificates: its name constraints do not exclude every IP address\n",
            issuing.display(),
            issuing.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "fleetmon certs issue-issuing-ca --dir {dir} --force"
        )),
        "{stdout}"
    );
    assert!(
        failure(&["certs", "issue-issuing-ca", "--dir", dir]).contains("already exists"),
        "no overwrite without --force"
    );
    ok(&["certs", "issue-issuing-ca", "--dir", dir, "--force"]);
    ok(&["certs", "check", "--dir", dir]);
}

//! A fresh dev PKI per test.

use std::path::Path;

use crate::identity::Role;
use crate::pki::{self, CertificateAuthority, LeafSpec};
use crate::tls::{ClientTlsFiles, ServerTlsFiles};

/// A fresh dev PKI in a temporary directory: `ca`, `collector`, `writer` and the
/// `admin` operator, laid out as `fleetmon certs init` does, plus anything issued later.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertificateAuthority,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// Generates the PKI.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        pki::init(dir.path(), &[], false).expect("generate dev PKI");
        let ca = CertificateAuthority::load(dir.path()).expect("load generated CA");
        TestPki { dir, ca }
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA, to mint certificates with unusual properties.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// Server TLS files for `collector` or `writer`.
    pub fn server(&self, server: &str) -> ServerTlsFiles {
        ServerTlsFiles::from_certs_dir(self.dir(), server)
    }

    /// Client files for a newly issued `spiffe://fleetmon/<role>/<name>` certificate.
    pub fn client(&self, role: Role, name: &str) -> ClientTlsFiles {
        self.client_from(&format!("{role}-{name}"), &LeafSpec::client(role, name))
    }

    /// Client files for a certificate made from `spec` by this CA, stored as `stem`.
    pub fn client_from(&self, stem: &str, spec: &LeafSpec) -> ClientTlsFiles {
        let issued = self.ca.issue(spec).expect("issue test certificate");
        self.client_files(stem, &issued.cert_pem, &issued.key_pem)
    }

    /// Client files for a certificate from a different CA that this PKI does not trust.
    pub fn foreign_client(&self, role: Role, name: &str) -> ClientTlsFiles {
        let other = CertificateAuthority::generate("some other CA").expect("generate foreign CA");
        let issued = other
            .issue(&LeafSpec::client(role, name))
            .expect("issue foreign certificate");
        self.client_files(
            &format!("foreign-{role}-{name}"),
            &issued.cert_pem,
            &issued.key_pem,
        )
    }

    /// The issuing CA `fleetmon certs init` wrote (what collectors enroll agents with).
    pub fn issuing_ca(&self) -> CertificateAuthority {
        let (cert, key) = pki::pair_paths(self.dir(), pki::ISSUING_CA);
        CertificateAuthority::from_files(&cert, &key).expect("load the issuing CA")
    }

    /// Client files for a certificate made from `spec` by the issuing CA, sent with
    /// the issuing CA's certificate as enrolled agents send theirs (the chain a
    /// collector holding that key could mint).
    pub fn issued_by_issuing_ca(&self, stem: &str, spec: &LeafSpec) -> ClientTlsFiles {
        let issuing = self.issuing_ca();
        let issued = issuing.issue(spec).expect("issue through the issuing CA");
        let chain = format!("{}{}", issued.cert_pem, issuing.cert_pem());
        self.client_files(stem, &chain, &issued.key_pem)
    }

    /// Writes a certificate and key made elsewhere (e.g. by [`TestPki::ca`] with a spec
    /// of the test's own) as `stem`, and returns the client files.
    pub fn client_files(&self, stem: &str, cert_pem: &str, key_pem: &str) -> ClientTlsFiles {
        let issued_dir = self.dir().join("issued");
        pki::write_pair(&issued_dir, stem, cert_pem, key_pem).expect("write test certificate");
        let (cert, key) = pki::pair_paths(&issued_dir, stem);
        ClientTlsFiles {
            ca: self.dir().join("ca.pem"),
            cert,
            key,
            server_name: Some("localhost".to_owned()),
        }
    }
}

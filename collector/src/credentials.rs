//! Enrollment tokens and agent credentials: the compacted topic
//! `fleetmon.credentials`, a [`CompactedLog`] every collector reads whole and follows.
//!
//! Keys: `token/ID` (an [`EnrollmentToken`]: only the SHA-256 of the token is kept),
//! `agent/NAME` (an [`AgentCredential`]: the key an enrolled name belongs to, its
//! newest certificate, and whether it was revoked) and `serial/HEX` (a certificate
//! revoked by serial). [`Revocations`] is what the handshake and every agent stream
//! check: a revocation written by one collector closes the agent's streams on all.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fleetmon::grpc::GrpcError;
use fleetmon::identity::{PeerIdentity, Role};
use fleetmon::pb::{
    AgentCredential, CREDENTIAL_RECORD_CONTENT_TYPE, CredentialRecord, EnrollmentToken,
    credential_record::Record,
};
use fleetmon::tls::Reloading;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::compacted_log::{CompactedLog, LogError, LogRecord, LogView};
use crate::config::KafkaConfig;

/// What a revoked agent is told when its stream or call is refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} (certificate {}) was revoked: enroll again under another name", .0.uri(), .0.serial)]
pub struct RevokedPeer(pub PeerIdentity);

impl GrpcError for RevokedPeer {
    fn code(&self) -> tonic::Code {
        tonic::Code::PermissionDenied
    }
}

fleetmon::status_from!(RevokedPeer);
/// The store of tokens and credentials.
pub type CredentialStore = CompactedLog<CredentialRecord>;

/// Agent names and certificate serials revoked, as of one view of the topic.
#[derive(Debug, Default)]
pub struct Revoked {
    agent_names: HashSet<String>,
    serials: HashSet<String>,
}

impl Revoked {
    /// Whether `peer`'s certificate is revoked: by its serial, whatever its role, or by
    /// its name if it is an agent (revoking agent `alice` leaves operator `alice` be).
    pub fn contains(&self, peer: &PeerIdentity) -> bool {
        (peer.role == Role::Agent && self.agent_names.contains(&peer.name))
            || self.serials.contains(&peer.serial)
    }
}

impl LogRecord for CredentialRecord {
    const CONTENT_TYPE: &'static str = CREDENTIAL_RECORD_CONTENT_TYPE;
    const KIND: &'static str = "credential";
    type Index = Revoked;

    fn key(&self) -> &str {
        &self.key
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn index(records: &BTreeMap<String, Arc<Self>>) -> Revoked {
        let mut revoked = Revoked::default();
        for record in records.values() {
            if let Some(Record::Agent(agent)) = &record.record
                && agent.revoked
            {
                if record.key.starts_with(SERIAL_PREFIX) {
                    // Records written before serials were read by value may carry
                    // leading zeros.
                    let serial = fleetmon::identity::parse_serial(&agent.serial)
                        .unwrap_or_else(|_| agent.serial.clone());
                    revoked.serials.insert(serial);
                } else {
                    revoked.agent_names.insert(agent.name.clone());
                }
            }
        }
        revoked
    }
}

const TOKEN_PREFIX: &str = "token/";
const AGENT_PREFIX: &str = "agent/";
const SERIAL_PREFIX: &str = "serial/";

/// The key of token `id`.
pub fn token_key(id: &str) -> String {
    format!("{TOKEN_PREFIX}{id}")
}

/// The key of agent `name`.
pub fn agent_key(name: &str) -> String {
    format!("{AGENT_PREFIX}{name}")
}

/// The key of a certificate revoked by its serial (hex).
pub fn serial_key(serial: &str) -> String {
    format!("{SERIAL_PREFIX}{serial}")
}

/// A record holding a token.
pub fn token_record(token: EnrollmentToken) -> CredentialRecord {
    CredentialRecord {
        key: token_key(&token.id),
        version: 0,
        record: Some(Record::Token(token)),
    }
}

/// A record holding an agent credential under `key`.
pub fn agent_record(key: String, agent: AgentCredential) -> CredentialRecord {
    CredentialRecord {
        key,
        version: 0,
        record: Some(Record::Agent(agent)),
    }
}

impl CompactedLog<CredentialRecord> {
    /// Opens the credentials topic of `config` (created if missing) and follows it
    /// until `shutdown`.
    pub async fn open_credentials(
        config: &KafkaConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, LogError> {
        Self::open(config, &config.credentials_topic, shutdown).await
    }

    /// Token `id` and the version of its record.
    pub fn token(&self, id: &str) -> Option<(EnrollmentToken, u64)> {
        match self.get(&token_key(id))? {
            CredentialRecord {
                version,
                record: Some(Record::Token(token)),
                ..
            } => Some((token, version)),
            _ => None,
        }
    }

    /// The credential of agent `name` and the version of its record.
    pub fn agent(&self, name: &str) -> Option<(AgentCredential, u64)> {
        match self.get(&agent_key(name))? {
            CredentialRecord {
                version,
                record: Some(Record::Agent(agent)),
                ..
            } => Some((agent, version)),
            _ => None,
        }
    }

    /// Every token, by id.
    pub fn tokens(&self) -> Vec<EnrollmentToken> {
        self.view()
            .records
            .values()
            .filter_map(|r| match &r.record {
                Some(Record::Token(token)) => Some(token.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every agent credential and serial revocation, by key.
    pub fn agents(&self) -> Vec<AgentCredential> {
        self.view()
            .records
            .values()
            .filter_map(|r| match &r.record {
                Some(Record::Agent(agent)) => Some(agent.clone()),
                _ => None,
            })
            .collect()
    }

    /// What handshakes, agent calls and agent streams check: this topic's revocations
    /// and the serials of the CRL file (`tls.crl`), if any.
    pub fn revocations(&self, crl: Option<Reloading<Arc<HashSet<String>>>>) -> Revocations {
        Revocations {
            view: self.watch(),
            crl,
        }
    }
}

/// The revoked names and serials, live: from the credentials topic and the CRL file.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Revocations {
    view: watch::Receiver<Arc<LogView<CredentialRecord>>>,
    crl: Option<Reloading<Arc<HashSet<String>>>>,
}

impl Revocations {
    /// Revocations that never revoke anything (for tests and benches without Kafka).
    pub fn none() -> Self {
        Revocations {
            view: watch::channel(Arc::new(LogView::default())).1,
            crl: None,
        }
    }

    /// Whether `peer`'s certificate is revoked now.
    pub fn is_revoked(&self, peer: &PeerIdentity) -> bool {
        self.view.borrow().index().contains(peer)
            || self
                .crl
                .as_ref()
                .is_some_and(|crl| crl.borrow().contains(&peer.serial))
    }

    /// Resolves once `peer`'s certificate is revoked (never, if it is not): as soon
    /// as the topic says so, or the CRL file is reloaded listing it.
    pub async fn revoked(&self, peer: &PeerIdentity) {
        let mut view = self.view.clone();
        let mut crl = self.crl.clone();
        loop {
            view.borrow_and_update();
            if let Some(crl) = crl.as_mut() {
                crl.borrow_and_update();
            }
            if self.is_revoked(peer) {
                return;
            }
            let crl_changed = async {
                match crl.as_mut() {
                    Some(crl) => crl.changed().await,
                    None => std::future::pending().await,
                }
            };
            let open = tokio::select! {
                changed = view.changed() => changed.is_ok(),
                changed = crl_changed => changed.is_ok(),
            };
            if !open {
                return std::future::pending().await;
            }
        }
    }
}

/// Takes hand-issued agents' names as they connect ([`claim_hand_issued`]), off the
/// connection's path: recording waits for the credentials topic, which a broker fault
/// can hold for seconds, and a stream must not wait for it. One claim per name at a
/// time; cheap to clone.
#[derive(Debug, Clone)]
pub struct NameClaims {
    store: CredentialStore,
    pending: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl NameClaims {
    /// Claims recorded in `store`.
    pub fn new(store: CredentialStore) -> Self {
        NameClaims {
            store,
            pending: Arc::default(),
        }
    }

    /// Records `peer`'s name in the background unless a credential or a claim under
    /// way already names it; `request` carries its certificate.
    pub fn claim<T>(&self, request: &tonic::Request<T>, peer: &PeerIdentity) {
        if self.store.agent(&peer.name).is_some() {
            return;
        }
        let Some(leaf) = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
        else {
            return;
        };
        if !self.lock().insert(peer.name.clone()) {
            return;
        }
        let (claims, peer) = (self.clone(), peer.clone());
        tokio::spawn(async move {
            claim_hand_issued(&claims.store, &peer, &leaf).await;
            claims.lock().remove(&peer.name);
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Records that agent `peer`, connected with the certificate `leaf` (DER), holds its
/// name, when no credential names it yet: a certificate issued by hand (not enrolled).
/// Enrollment then refuses the name to any other key while that certificate is valid
/// (`fleetmon certs register` records one before it ever connects). A failure to
/// record is logged; the connection goes on.
async fn claim_hand_issued(store: &CredentialStore, peer: &PeerIdentity, leaf: &[u8]) {
    if store.agent(&peer.name).is_some() {
        return;
    }
    let key = match fleetmon::pki::certificate_key_sha256(leaf) {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!(agent = %peer.name, %error, "cannot read the key of a connected agent's certificate");
            return;
        }
    };
    let credential = hand_issued(&peer.name, key, &peer.serial, peer.not_after);
    match store
        .create(agent_record(agent_key(&peer.name), credential))
        .await
    {
        Ok(_) => {
            tracing::info!(agent = %peer.name, serial = %peer.serial, "hand-issued agent certificate recorded: its name is taken")
        }
        Err(LogError::AlreadyExists { .. }) => {}
        Err(error) => {
            tracing::warn!(agent = %peer.name, %error, "cannot record a hand-issued agent's name")
        }
    }
}

/// The credential of a certificate issued by hand: its key, serial and end, no token.
pub fn hand_issued(
    name: &str,
    public_key_sha256: String,
    serial: &str,
    not_after: std::time::SystemTime,
) -> AgentCredential {
    AgentCredential {
        name: name.to_owned(),
        public_key_sha256,
        serial: serial.to_owned(),
        not_after: Some(prost_types::Timestamp::from(not_after)),
        ..Default::default()
    }
}

/// The interceptor of the services agents call: an agent certificate
/// (checked by [`fleetmon::access::Authorize`]) that is not revoked, for connections
/// opened before the revocation.
#[derive(Debug, Clone)]
pub struct RequireAgent(pub Revocations);

impl tonic::service::Interceptor for RequireAgent {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let peer = fleetmon::identity::peer_identity(&request)?;
        if self.0.is_revoked(&peer) {
            return Err(RevokedPeer(peer).into());
        }
        Ok(request)
    }
}

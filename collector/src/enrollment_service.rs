//! Enrollment, renewal and the operators' credential API, over the credentials topic.
//!
//! - `Enrollment/Enroll` (the enrollment listener, no client certificate): a token and
//!   a certificate request buy a certificate for `spiffe://fleetmon/agent/NAME`, signed
//!   by the issuing CA. The name must be free or already belong to the request's key.
//! - `Renewal/Renew` (mutual TLS, agent certificates): a new certificate for the
//!   caller's own name.
//! - `Credentials` (mutual TLS, operator certificates): tokens and revocations.
//!
//! Every refusal is an [`EnrollError`]; its one `From` impl picks the gRPC status.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetmon::grpc::GrpcError;
use fleetmon::identity::{NameError, Role, peer_identity, validate_name};
use fleetmon::pb::credentials_server::Credentials;
use fleetmon::pb::enrollment_server::Enrollment;
use fleetmon::pb::renewal_server::Renewal;
use fleetmon::pb::{
    AgentCredential, CreateTokenRequest, CreateTokenResponse, EnrollRequest, EnrollmentToken,
    IssuedCertificate, ListAgentCredentialsRequest, ListAgentCredentialsResponse,
    ListTokensRequest, ListTokensResponse, RenewRequest, RevokeAgentRequest, RevokeTokenRequest,
};
use fleetmon::pki::{CertificateAuthority, PkiError, sha256_hex};
use rand::RngCore as _;
use tonic::{Code, Request, Response, Status};

use crate::audit_log::AuditLog;
use crate::compacted_log::LogError;
use crate::credentials::{CredentialStore, agent_key, agent_record, serial_key, token_record};
use crate::rate_limit::RateLimit;
use fleetmon::audit::Author;

/// How long a token is valid unless the request says otherwise.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

const NEW_TOKEN: &str = "create a new one with `fleetmon tokens create`";

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The audit trail could not record the change: it was not made.
    #[error(transparent)]
    Unrecorded(#[from] crate::audit_log::Unrecorded),
    /// A field is missing or malformed.
    #[error("malformed enrollment request: {0}")]
    Malformed(String),
    /// Too many requests from one address or with one token.
    #[error("too many enrollment requests {0}: try again in a minute")]
    RateLimited(String),
    /// A serial to revoke that is not one.
    #[error(transparent)]
    BadSerial(#[from] fleetmon::identity::SerialError),
    /// The agent name breaks the naming rule.
    #[error("invalid agent name: {0}")]
    BadName(#[from] NameError),
    /// No token has this id, or the secret does not match.
    #[error(
        "enrollment token not recognised: check it, or create one with `fleetmon tokens create`"
    )]
    UnknownToken,
    /// The token was revoked.
    #[error("enrollment token {0} was revoked: {NEW_TOKEN}")]
    TokenRevoked(String),
    /// The token is past its expiry.
    #[error("enrollment token {id} expired at {at}: {NEW_TOKEN}")]
    TokenExpired {
        /// The token id.
        id: String,
        /// When it expired (RFC 3339).
        at: String,
    },
    /// The token was used as often as it may be.
    #[error("enrollment token {id} has been used {uses} of {uses} times: {NEW_TOKEN}")]
    TokenUsedUp {
        /// The token id.
        id: String,
        /// Its use limit.
        uses: u32,
    },
    /// The name is enrolled with another key.
    #[error(
        "agent name `{0}` belongs to another key: enroll under another name, or revoke it first (fleetmon certs revoke {0})"
    )]
    NameTaken(String),
    /// The agent was revoked.
    #[error("agent `{0}` was revoked: enroll under another name")]
    AgentRevoked(String),
    /// No token with this id (operator API).
    #[error("enrollment token {0} does not exist (fleetmon tokens list shows them)")]
    NoSuchToken(String),
    /// This collector has no issuing CA.
    #[error(
        "this collector does not issue certificates: set [enrollment] issuing_ca and issuing_ca_key"
    )]
    NotEnabled,
    /// The request could not be signed.
    #[error(transparent)]
    Sign(#[from] PkiError),
    /// The credentials topic did not take the change.
    #[error(transparent)]
    Store(#[from] LogError),
    /// The key of an agent's credential holds something else.
    #[error("{0} holds no agent credential")]
    NotAnAgent(String),
}

impl GrpcError for EnrollError {
    fn code(&self) -> Code {
        match self {
            EnrollError::Malformed(_)
            | EnrollError::BadSerial(_)
            | EnrollError::BadName(_)
            | EnrollError::Sign(PkiError::BadRequest(_)) => Code::InvalidArgument,
            EnrollError::UnknownToken => Code::Unauthenticated,
            EnrollError::TokenRevoked(_)
            | EnrollError::TokenExpired { .. }
            | EnrollError::TokenUsedUp { .. }
            | EnrollError::AgentRevoked(_) => Code::PermissionDenied,
            EnrollError::NameTaken(_) => Code::AlreadyExists,
            EnrollError::RateLimited(_) => Code::ResourceExhausted,
            EnrollError::NoSuchToken(_) => Code::NotFound,
            EnrollError::NotEnabled => Code::Unimplemented,
            EnrollError::Sign(_) | EnrollError::NotAnAgent(_) => Code::Internal,
            EnrollError::Store(LogError::NotFound { .. }) => Code::NotFound,
            // A credential change that met a race or an unavailable Kafka: try again.
            EnrollError::Store(_) | EnrollError::Unrecorded(_) => Code::Unavailable,
        }
    }
}

fleetmon::status_from!(EnrollError);

/// The issuing side: the intermediate that signs agents, and the fleet's root.
#[derive(Debug)]
pub struct Issuer {
    /// The issuing CA (certificate and key).
    pub ca: CertificateAuthority,
    /// The root CA (PEM) collectors' certificates chain to, given to enrolled agents.
    pub root_pem: String,
    /// How long an agent certificate is valid.
    pub lifetime: Duration,
}

/// The three services over one store and issuer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EnrollmentService {
    store: CredentialStore,
    issuer: Option<Arc<Issuer>>,
    per_address: Arc<RateLimit>,
    per_token: Arc<RateLimit>,
    audit: AuditLog,
}

/// A token as its audit record shows it (never its secret or its hash).
fn token_json(token: &EnrollmentToken) -> serde_json::Value {
    serde_json::json!({
        "id": token.id,
        "expires_at": rfc3339(system_time(&token.expires_at)),
        "max_uses": token.max_uses,
        "uses": token.uses,
        "labels": token.labels,
        "revoked": token.revoked,
        "description": token.description,
    })
}

/// A credential as its audit record shows it.
fn credential_json(agent: &AgentCredential) -> serde_json::Value {
    serde_json::json!({
        "name": agent.name,
        "serial": agent.serial,
        "revoked": agent.revoked,
        "token_id": agent.token_id,
    })
}

fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at)
}

fn system_time(at: &Option<prost_types::Timestamp>) -> SystemTime {
    at.and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    fleetmon::pki::hex(&buf)
}

impl EnrollmentService {
    /// The services over `store`, issuing with `issuer` (none: enrollment and renewal
    /// answer UNIMPLEMENTED).
    pub fn new(store: CredentialStore, issuer: Option<Issuer>) -> Self {
        EnrollmentService {
            store,
            issuer: issuer.map(Arc::new),
            per_address: Arc::new(RateLimit::per_minute(0)),
            per_token: Arc::new(RateLimit::per_minute(0)),
            audit: AuditLog::off(),
        }
    }

    /// Records every token and revocation change in `audit`.
    pub fn audited_in(self, audit: AuditLog) -> Self {
        EnrollmentService { audit, ..self }
    }

    /// At most `per_address` enrollment requests a minute from one source address and
    /// `per_token` naming one token (0: no limit).
    pub fn limited(self, per_address: u32, per_token: u32) -> Self {
        EnrollmentService {
            per_address: Arc::new(RateLimit::per_minute(per_address)),
            per_token: Arc::new(RateLimit::per_minute(per_token)),
            ..self
        }
    }

    /// Refuses a request over a rate limit, before any work is done for it.
    fn within_limits(
        &self,
        remote: Option<std::net::SocketAddr>,
        token: &str,
    ) -> Result<(), EnrollError> {
        if let Some(remote) = remote
            && !self.per_address.allow(&remote.ip().to_string())
        {
            return Err(EnrollError::RateLimited(format!("from {}", remote.ip())));
        }
        let id = token.split_once('.').map_or(token, |(id, _)| id);
        if !self.per_token.allow(&fleetmon::identity::preview(id)) {
            return Err(EnrollError::RateLimited("with this token".into()));
        }
        Ok(())
    }

    /// Gives back the use [`EnrollmentService::take_token`] took, when no certificate
    /// came of it.
    async fn give_back(&self, id: &str) {
        for _ in 0..5 {
            let Some((current, version)) = self.store.token(id) else {
                return;
            };
            let mut restored = current.clone();
            restored.uses = restored.uses.saturating_sub(1);
            match self.store.update(token_record(restored), version).await {
                Ok(_) => return,
                Err(LogError::Stale { .. }) => continue,
                Err(error) => {
                    tracing::warn!(token_id = id, %error, "cannot give back a use of a token that issued nothing");
                    return;
                }
            }
        }
    }

    fn issuer(&self) -> Result<&Issuer, EnrollError> {
        self.issuer.as_deref().ok_or(EnrollError::NotEnabled)
    }

    /// Checks the token `ID.SECRET` and takes one use of it (compare-and-set: two
    /// collectors cannot both take the last one).
    async fn take_token(&self, token: &str) -> Result<EnrollmentToken, EnrollError> {
        let (id, _) = token.split_once('.').ok_or(EnrollError::UnknownToken)?;
        let hash = sha256_hex(token.as_bytes());
        for _ in 0..5 {
            let (current, version) = self.store.token(id).ok_or(EnrollError::UnknownToken)?;
            if current.secret_sha256 != hash {
                return Err(EnrollError::UnknownToken);
            }
            if current.revoked {
                return Err(EnrollError::TokenRevoked(current.id));
            }
            let expires = system_time(&current.expires_at);
            if SystemTime::now() >= expires {
                return Err(EnrollError::TokenExpired {
                    id: current.id,
                    at: rfc3339(expires),
                });
            }
            if current.max_uses != 0 && current.uses >= current.max_uses {
                return Err(EnrollError::TokenUsedUp {
                    id: current.id,
                    uses: current.max_uses,
                });
            }
            let mut used = current.clone();
            used.uses += 1;
            match self.store.update(token_record(used.clone()), version).await {
                Ok(_) => return Ok(used),
                Err(LogError::Stale { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(EnrollError::Store(LogError::Kafka {
            topic: "credentials".into(),
            reason: "the token changed five times in a row: try again".into(),
        }))
    }

    /// Signs `csr_der` for `name` and records the credential (created, or updated
    /// when `existing` has the version it was read at).
    async fn issue(
        &self,
        name: &str,
        csr_der: &[u8],
        existing: Option<(AgentCredential, u64)>,
        token: Option<&EnrollmentToken>,
    ) -> Result<IssuedCertificate, EnrollError> {
        let issuer = self.issuer()?;
        let signed = issuer.ca.sign_request(
            csr_der,
            Role::Agent,
            name,
            time::Duration::try_from(issuer.lifetime).unwrap_or(time::Duration::days(30)),
        )?;
        let now = timestamp(SystemTime::now());
        let not_after = timestamp(SystemTime::from(signed.not_after));
        let (mut credential, version) = existing.unwrap_or_default();
        credential.name = name.to_owned();
        credential.public_key_sha256 = signed.public_key_sha256.clone();
        credential.serial = signed.serial.clone();
        credential.not_after = Some(not_after);
        match token {
            Some(token) => {
                credential.labels = token.labels.clone();
                credential.token_id = token.id.clone();
                credential.enrolled_at = Some(now);
            }
            None => credential.renewed_at = Some(now),
        }
        let record = agent_record(agent_key(name), credential.clone());
        let stored = if version == 0 {
            self.store.create(record).await
        } else {
            self.store.update(record, version).await
        };
        match stored {
            Ok(_) => {}
            Err(LogError::AlreadyExists { .. } | LogError::Stale { .. }) => {
                return Err(EnrollError::NameTaken(name.to_owned()));
            }
            Err(error) => return Err(error.into()),
        }
        tracing::info!(agent = name, serial = %signed.serial, not_after = %rfc3339(SystemTime::from(signed.not_after)), renewal = token.is_none(), "agent certificate issued");
        Ok(IssuedCertificate {
            agent_name: name.to_owned(),
            certificate_chain_pem: signed.chain_pem,
            ca_pem: issuer.root_pem.clone(),
            not_after: Some(not_after),
            labels: credential.labels,
            serial: signed.serial,
        })
    }

    async fn enroll(&self, request: EnrollRequest) -> Result<IssuedCertificate, EnrollError> {
        self.issuer()?;
        if request.token.is_empty() {
            return Err(EnrollError::Malformed("token is empty".into()));
        }
        if request.csr_der.is_empty() {
            return Err(EnrollError::Malformed(
                "csr_der is empty: send a PKCS#10 certificate request".into(),
            ));
        }
        validate_name(&request.agent_name)?;
        let key_hash = fleetmon::pki::request_key_sha256(&request.csr_der)?;
        let existing = self.store.agent(&request.agent_name);
        if let Some((credential, _)) = &existing {
            if credential.revoked {
                return Err(EnrollError::AgentRevoked(request.agent_name));
            }
            // A hand-issued certificate (no token) holds its name until it expires.
            let lapsed_by_hand = credential.token_id.is_empty()
                && system_time(&credential.not_after) <= SystemTime::now();
            if credential.public_key_sha256 != key_hash && !lapsed_by_hand {
                return Err(EnrollError::NameTaken(request.agent_name));
            }
        }
        let token = self.take_token(&request.token).await?;
        // A use is spent only when a certificate is issued.
        let issued = self
            .issue(
                &request.agent_name,
                &request.csr_der,
                existing,
                Some(&token),
            )
            .await;
        if issued.is_err() {
            self.give_back(&token.id).await;
        }
        issued
    }

    async fn renew(&self, name: &str, csr_der: &[u8]) -> Result<IssuedCertificate, EnrollError> {
        self.issuer()?;
        if csr_der.is_empty() {
            return Err(EnrollError::Malformed(
                "csr_der is empty: send a PKCS#10 certificate request".into(),
            ));
        }
        let existing = self.store.agent(name);
        if existing.as_ref().is_some_and(|(c, _)| c.revoked) {
            return Err(EnrollError::AgentRevoked(name.to_owned()));
        }
        self.issue(name, csr_der, existing, None).await
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<IssuedCertificate>, Status> {
        let remote = request.remote_addr();
        let request = request.into_inner();
        // Whatever length it came in, the name is logged short and escaped.
        let name = fleetmon::identity::preview(&request.agent_name);
        let result = match self.within_limits(remote, &request.token) {
            Ok(()) => EnrollmentService::enroll(self, request).await,
            Err(refused) => Err(refused),
        };
        match result {
            Ok(issued) => Ok(Response::new(issued)),
            Err(error) => {
                tracing::warn!(agent = %name, ?remote, %error, "enrollment refused");
                Err(error.into())
            }
        }
    }
}

#[tonic::async_trait]
impl Renewal for EnrollmentService {
    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<IssuedCertificate>, Status> {
        let peer = peer_identity(&request)?;
        let issued = EnrollmentService::renew(self, &peer.name, &request.get_ref().csr_der)
            .await
            .inspect_err(|error| tracing::warn!(agent = %peer.name, %error, "renewal refused"))?;
        Ok(Response::new(issued))
    }
}

#[tonic::async_trait]
impl Credentials for EnrollmentService {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let author = Author::of(&request)?;
        let operator = author.peer.clone();
        let request = request.into_inner();
        for (key, value) in &request.labels {
            if key.is_empty() || value.is_empty() {
                return Err(EnrollError::Malformed(format!(
                    "label `{key}={value}`: keys and values may not be empty"
                ))
                .into());
            }
        }
        let lifetime = match request.expires_in_seconds {
            0 => DEFAULT_TOKEN_LIFETIME,
            seconds => Duration::from_secs(seconds),
        };
        let id = random_hex(4);
        let token = format!("{id}.{}", random_hex(16));
        let now = SystemTime::now();
        let info = EnrollmentToken {
            id,
            secret_sha256: sha256_hex(token.as_bytes()),
            created_at: Some(timestamp(now)),
            expires_at: Some(timestamp(now + lifetime)),
            max_uses: request.max_uses,
            uses: 0,
            labels: request.labels,
            revoked: false,
            created_by: operator.name,
            description: request.description,
        };
        let pending = self
            .audit
            .request(&author, "tokens.create", &info.id, None)
            .await
            .map_err(EnrollError::from)?;
        let created = self
            .store
            .create(token_record(info.clone()))
            .await
            .map_err(EnrollError::from);
        pending.settle(created, |_| Some(token_json(&info))).await?;
        tracing::info!(token_id = %info.id, by = %info.created_by, max_uses = info.max_uses, "enrollment token created");
        Ok(Response::new(CreateTokenResponse {
            token,
            info: Some(info),
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        Ok(Response::new(ListTokensResponse {
            tokens: self.store.tokens(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<EnrollmentToken>, Status> {
        let author = Author::of(&request)?;
        let id = request.into_inner().id;
        let Some((before, _)) = self.store.token(&id) else {
            return Err(EnrollError::NoSuchToken(id).into());
        };
        let pending = self
            .audit
            .request(&author, "tokens.revoke", &id, Some(token_json(&before)))
            .await
            .map_err(EnrollError::from)?;
        let record = self
            .store
            .modify(&crate::credentials::token_key(&id), |current| {
                let mut changed = current.clone();
                match &mut changed.record {
                    Some(fleetmon::pb::credential_record::Record::Token(t)) if !t.revoked => {
                        t.revoked = true;
                        Some(changed)
                    }
                    _ => None,
                }
            })
            .await
            .map_err(EnrollError::from)
            .and_then(|record| match record.record {
                Some(fleetmon::pb::credential_record::Record::Token(token)) => Ok(token),
                _ => Err(EnrollError::NoSuchToken(id.clone())),
            });
        let token = pending
            .settle(record, |token| Some(token_json(token)))
            .await?;
        tracing::info!(token_id = %token.id, "enrollment token revoked");
        Ok(Response::new(token))
    }

    async fn revoke_agent(
        &self,
        request: Request<RevokeAgentRequest>,
    ) -> Result<Response<AgentCredential>, Status> {
        let author = Author::of(&request)?;
        let operator = author.peer.clone();
        let request = request.into_inner();
        let (key, serial) = match (request.name.is_empty(), request.serial.is_empty()) {
            (false, true) => {
                validate_name(&request.name).map_err(EnrollError::from)?;
                (agent_key(&request.name), String::new())
            }
            (true, false) => {
                let serial =
                    fleetmon::identity::parse_serial(&request.serial).map_err(EnrollError::from)?;
                (serial_key(&serial), serial)
            }
            _ => {
                return Err(EnrollError::Malformed(
                    "give an agent name or a certificate serial (hex), not both".into(),
                )
                .into());
            }
        };
        let revoke = |mut agent: AgentCredential| {
            agent.revoked = true;
            agent.revoked_at = Some(timestamp(SystemTime::now()));
            agent.revoked_by = operator.name.clone();
            agent
        };
        // A name never enrolled (a certificate issued by hand) or a bare serial gets a
        // record of its own, so that it is refused everywhere all the same.
        let fresh = AgentCredential {
            name: request.name.clone(),
            serial,
            ..Default::default()
        };
        let subject = if request.name.is_empty() {
            format!("serial {}", fresh.serial)
        } else {
            request.name.clone()
        };
        let pending = self
            .audit
            .request(&author, "agents.revoke", &subject, None)
            .await
            .map_err(EnrollError::from)?;
        let stored = match self
            .store
            .create(agent_record(key.clone(), revoke(fresh)))
            .await
        {
            Err(LogError::AlreadyExists { .. }) => {
                self.store
                    .modify(&key, |current| match &current.record {
                        Some(fleetmon::pb::credential_record::Record::Agent(a)) if !a.revoked => {
                            Some(agent_record(key.clone(), revoke(a.clone())))
                        }
                        _ => None,
                    })
                    .await
            }
            other => other,
        }
        .map_err(EnrollError::from)
        .and_then(|stored| match stored.record {
            Some(fleetmon::pb::credential_record::Record::Agent(agent)) => Ok(agent),
            _ => Err(EnrollError::NotAnAgent(key.clone())),
        });
        let agent = pending
            .settle(stored, |agent| Some(credential_json(agent)))
            .await?;
        tracing::warn!(agent = %agent.name, serial = %agent.serial, by = %operator.name, "agent revoked");
        Ok(Response::new(agent))
    }

    async fn register_agent(
        &self,
        request: Request<fleetmon::pb::RegisterAgentRequest>,
    ) -> Result<Response<AgentCredential>, Status> {
        let author = Author::of(&request)?;
        let pem = request.into_inner().certificate_pem;
        let der = fleetmon::tls::first_certificate(&pem).ok_or_else(|| {
            EnrollError::Malformed("certificate_pem holds no PEM certificate".into())
        })?;
        let peer = fleetmon::identity::PeerIdentity::from_der(der.as_ref())
            .map_err(|e| EnrollError::Malformed(format!("certificate_pem: {e}")))?;
        if peer.role != Role::Agent {
            return Err(EnrollError::Malformed(format!(
                "certificate_pem is {}, not an agent's certificate",
                peer.uri
            ))
            .into());
        }
        let key = fleetmon::pki::certificate_key_sha256(der.as_ref()).map_err(EnrollError::from)?;
        if let Some((existing, _)) = self.store.agent(&peer.name) {
            if existing.public_key_sha256 == key {
                return Ok(Response::new(existing));
            }
            return Err(EnrollError::NameTaken(peer.name).into());
        }
        let credential =
            crate::credentials::hand_issued(&peer.name, key, &peer.serial, peer.not_after);
        let pending = self
            .audit
            .request(&author, "agents.register", &peer.name, None)
            .await
            .map_err(EnrollError::from)?;
        let stored = self
            .store
            .create(agent_record(agent_key(&peer.name), credential.clone()))
            .await
            .map_err(|error| match error {
                LogError::AlreadyExists { .. } => EnrollError::NameTaken(peer.name.clone()),
                other => EnrollError::from(other),
            });
        let stored = pending
            .settle(stored, |_| Some(credential_json(&credential)))
            .await?;
        tracing::info!(agent = %peer.name, serial = %peer.serial, "hand-issued agent certificate registered");
        match stored.record {
            Some(fleetmon::pb::credential_record::Record::Agent(agent)) => Ok(Response::new(agent)),
            _ => Ok(Response::new(credential)),
        }
    }

    async fn list_agent_credentials(
        &self,
        _request: Request<ListAgentCredentialsRequest>,
    ) -> Result<Response<ListAgentCredentialsResponse>, Status> {
        Ok(Response::new(ListAgentCredentialsResponse {
            agents: self.store.agents(),
        }))
    }
}

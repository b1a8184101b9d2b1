//! The `Control` gRPC service (agent certificates only): each connected agent's
//! effective check set, sent when the stream opens and again whenever the catalog or the
//! agent's labels change it; the agent's reports of what it applied come back up.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use fleetmon::check_secrets::{CheckSecrets, has_secrets};
use fleetmon::grpc::GrpcError;
use fleetmon::identity::{PeerIdentity, peer_identity};
use fleetmon::pb::control_server::Control;
use fleetmon::pb::{AgentReport, CheckSet, PingRequest, PingResponse};

use crate::assignment::effective_set;
use crate::check_catalog::CheckCatalog;
use crate::credentials::RevokedPeer;
use crate::credentials::{CredentialStore, NameClaims, Revocations};
use crate::fleet_state::FleetState;
use crate::vote_gate::MAX_RESULT_GRACE;

/// Why a control stream was closed by the collector.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No report in time.
    #[error("send an AgentReport first on the control stream")]
    NoFirstReport,
    /// The agent reported nothing for `limits.idle_control_seconds`.
    #[error(
        "no report for {0} s (limits.idle_control_seconds): control stream closed; agents report every 60 s"
    )]
    Idle(u64),
    /// The stream ended before its first report.
    #[error("control stream closed before its first report")]
    ClosedBeforeFirstReport,
    /// A ping names no check.
    #[error("no check `{0}`: ping a heartbeat check by its id (fleetmon checks list)")]
    NoSuchCheck(String),
    /// A ping names a check that is not a heartbeat.
    #[error("check `{0}` is not a heartbeat: only heartbeat checks take pings")]
    NotHeartbeat(String),
    /// A ping from an agent the check's assignment does not select.
    #[error(
        "heartbeat `{check}` does not select agent {agent}: add it to the check's agents or labels (fleetmon checks edit {check} --agents …)"
    )]
    NotSelected {
        /// The check.
        check: String,
        /// The agent.
        agent: String,
    },
    /// A ping with a signal that is not one.
    #[error("signal `{0}` is not one: send \"\" (a success), start, fail or an exit code 0-255")]
    BadSignal(String),
    /// A ping with a message longer than allowed.
    #[error("message is {0} bytes: keep at most 10240")]
    MessageTooLong(usize),
    /// This collector takes no pings (no `[heartbeat]`).
    #[error("this collector takes no heartbeat pings: give it a [heartbeat] section")]
    NoHeartbeats,
    /// Kafka did not take the ping.
    #[error("{0}; the ping was not stored: send it again")]
    Undelivered(crate::kafka_publisher::PublishError),
}

impl GrpcError for ControlError {
    fn code(&self) -> tonic::Code {
        match self {
            ControlError::NoFirstReport | ControlError::Idle(_) => tonic::Code::DeadlineExceeded,
            ControlError::ClosedBeforeFirstReport => tonic::Code::Cancelled,
            ControlError::NoSuchCheck(_) => tonic::Code::NotFound,
            ControlError::NotHeartbeat(_) => tonic::Code::FailedPrecondition,
            ControlError::NotSelected { .. } => tonic::Code::PermissionDenied,
            ControlError::BadSignal(_) | ControlError::MessageTooLong(_) => {
                tonic::Code::InvalidArgument
            }
            ControlError::NoHeartbeats => tonic::Code::Unimplemented,
            ControlError::Undelivered(_) => tonic::Code::Unavailable,
        }
    }
}

fleetmon::status_from!(ControlError);
/// How long a new control stream may take to send its first report.
const FIRST_REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The service over the catalog and the fleet view.
#[derive(Debug, Clone)]
pub struct ControlService {
    catalog: CheckCatalog,
    fleet: FleetState,
    credentials: CredentialStore,
    /// Hand-issued agents' names, taken as they connect.
    claims: NameClaims,
    revocations: Revocations,
    trust_agent_labels: bool,
    /// A stream with no report for this long is closed.
    idle: Duration,
    /// Opens secret header values into the sets sent.
    secrets: OpenSets,
    /// Where agents' heartbeat pings go (`None`: this collector takes none).
    heartbeats: Option<Arc<crate::heartbeat::Heartbeats>>,
}

/// Opens the secret header values of the checks in a set. A check whose values do not
/// open is left out of it (an agent never runs it without its headers), and said once
/// per check version in the log.
#[derive(Debug, Clone)]
struct OpenSets {
    secrets: CheckSecrets,
    reported: Arc<Mutex<BTreeSet<(String, u64)>>>,
}

impl OpenSets {
    fn open(&self, mut set: CheckSet) -> CheckSet {
        if !set.checks.iter().any(has_secrets) {
            return set;
        }
        set.checks = std::mem::take(&mut set.checks)
            .into_iter()
            .filter_map(|check| match self.secrets.open(&check) {
                Ok(opened) => Some(opened),
                Err(error) => {
                    let first = self
                        .reported
                        .lock()
                        .expect("never held across a panic")
                        .insert((check.id.clone(), check.version));
                    if first {
                        tracing::error!(check_id = %check.id, version = check.version, %error, "check not sent to agents");
                    }
                    None
                }
            })
            .collect();
        set
    }
}

impl ControlService {
    /// A service sending from `catalog`, recording into `fleet`. An agent's labels are
    /// its token's, and its own only with `trust_agent_labels` ([`assignment_labels`]);
    /// a stream whose agent `revocations` revoke ends. Secret header values are opened
    /// with `secrets` into the sets sent.
    pub fn new(
        catalog: CheckCatalog,
        fleet: FleetState,
        credentials: CredentialStore,
        revocations: Revocations,
        trust_agent_labels: bool,
        idle: Duration,
        secrets: CheckSecrets,
    ) -> Self {
        ControlService {
            catalog,
            fleet,
            claims: NameClaims::new(credentials.clone()),
            credentials,
            revocations,
            trust_agent_labels,
            idle,
            secrets: OpenSets {
                secrets,
                reported: Arc::default(),
            },
            heartbeats: None,
        }
    }

    /// Takes agents' heartbeat pings into `heartbeats`.
    pub fn pinging(self, heartbeats: Arc<crate::heartbeat::Heartbeats>) -> Self {
        ControlService {
            heartbeats: Some(heartbeats),
            ..self
        }
    }

    /// Stores `request`, a ping of `peer`'s, once Kafka has it.
    async fn ping(&self, peer: &PeerIdentity, request: PingRequest) -> Result<(), ControlError> {
        let heartbeats = self.heartbeats.as_ref().ok_or(ControlError::NoHeartbeats)?;
        let signal = fleetmon::checks::heartbeat::Signal::parse(Some(&request.signal))
            .ok_or_else(|| ControlError::BadSignal(request.signal.clone()))?;
        if request.message.len() > MAX_PING_MESSAGE {
            return Err(ControlError::MessageTooLong(request.message.len()));
        }
        let check = heartbeats
            .by_id(&request.check_id)
            .ok_or_else(|| ControlError::NoSuchCheck(request.check_id.clone()))?;
        if fleetmon::checks::heartbeat::of(&check).is_none() {
            return Err(ControlError::NotHeartbeat(check.id.clone()));
        }
        let mut labels = assignment_labels(
            &self.credentials,
            &peer.name,
            &AgentReport::default(),
            false,
        );
        labels.extend(self.fleet.labels(&peer.name));
        let assignment = check.assignment.clone().unwrap_or_default();
        if !crate::assignment::selects(&assignment, &peer.name, &labels) {
            return Err(ControlError::NotSelected {
                check: check.id.clone(),
                agent: peer.name.clone(),
            });
        }
        heartbeats
            .signal(&check, &peer.name, signal, request.message)
            .await
            .map_err(ControlError::Undelivered)
    }
}

/// The longest message a ping over the control service carries.
const MAX_PING_MESSAGE: usize = 10 * 1024;

/// The labels that select `agent` into checks: its enrollment token's, and, only when
/// `trust_agent_labels`, those it reports (which then override the token's). An agent
/// without a token (a hand-issued certificate) is selected by label only when trusted.
pub fn assignment_labels(
    credentials: &CredentialStore,
    agent: &str,
    report: &AgentReport,
    trust_agent_labels: bool,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = credentials
        .agent(agent)
        .map(|(credential, _)| credential.labels.into_iter().collect())
        .unwrap_or_default();
    if trust_agent_labels {
        labels.extend(report.labels.clone());
    }
    labels
}

type SetStream = Pin<Box<dyn Stream<Item = Result<CheckSet, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type SubscribeStream = SetStream;

    #[instrument(skip_all)]
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let peer = peer_identity(&request)?;
        ControlService::ping(self, &peer, request.into_inner()).await?;
        Ok(Response::new(PingResponse {}))
    }

    #[instrument(skip_all)]
    async fn subscribe(
        &self,
        request: Request<Streaming<AgentReport>>,
    ) -> Result<Response<SetStream>, Status> {
        let peer = peer_identity(&request)?;
        self.claims.claim(&request, &peer);
        let mut reports = request.into_inner();
        let first = tokio::time::timeout(FIRST_REPORT_TIMEOUT, reports.message())
            .await
            .map_err(|_| Status::from(ControlError::NoFirstReport))??
            .ok_or_else(|| Status::from(ControlError::ClosedBeforeFirstReport))?;
        let guard = self.fleet.control_connected(&peer);
        let credentials = self.credentials.clone();
        let trust = self.trust_agent_labels;
        self.fleet.reported(
            &peer.name,
            &first,
            assignment_labels(&credentials, &peer.name, &first, trust),
        );
        let fleet = self.fleet.clone();
        let mut catalog = self.catalog.watch();
        let agent_id = peer.name.clone();
        let revocations = self.revocations.clone();
        let (tx, rx) = mpsc::channel::<Result<CheckSet, Status>>(4);
        let idle_limit = self.idle;
        let secrets = self.secrets.clone();
        tokio::spawn(async move {
            let idle = tokio::time::sleep(idle_limit);
            tokio::pin!(idle);
            let _guard = guard;
            let revoked = revocations.revoked(&peer);
            tokio::pin!(revoked);
            let mut last_sent = String::new();
            let mut labels = fleet.labels(&agent_id);
            loop {
                let view = catalog.borrow_and_update().clone();
                if let Some(set) = effective_set(&view, &agent_id, &labels, &last_sent) {
                    last_sent = set.hash.clone();
                    let set = secrets.open(set);
                    fleet.sent_set(
                        &agent_id,
                        set.checks.iter().map(|c| c.id.as_str()),
                        Instant::now(),
                        MAX_RESULT_GRACE,
                    );
                    tracing::debug!(%agent_id, checks = set.checks.len(), hash = %set.hash, "check set sent");
                    if tx.send(Ok(set)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = catalog.changed() => if changed.is_err() { return },
                    () = &mut idle => {
                        // The agent may be gone already: then there is no one to tell.
                        let _ = tx.send(Err(ControlError::Idle(idle_limit.as_secs()).into())).await;
                        return;
                    }
                    report = reports.message() => match report {
                        Ok(Some(report)) => {
                            idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                            let assigned = assignment_labels(&credentials, &agent_id, &report, trust);
                            fleet.reported(&agent_id, &report, assigned);
                            labels = fleet.labels(&agent_id);
                        }
                        Ok(None) | Err(_) => return,
                    },
                    () = tx.closed() => return,
                    () = &mut revoked => {
                        // The agent may be gone already: then there is no one to tell.
                        let _ = tx.send(Err(RevokedPeer(peer.clone()).into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

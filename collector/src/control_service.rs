//! The `Control` gRPC service (agent certificates only): each connected agent's
//! effective check set, sent when the stream opens and again whenever the catalog or the
//! agent's labels change it; the agent's reports of what it applied come back up.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use fleetmon::identity::peer_identity;
use fleetmon::pb::control_server::Control;
use fleetmon::pb::{AgentReport, CheckSet};

use crate::assignment::effective_set;
use crate::check_catalog::CheckCatalog;
use crate::credentials::CredentialStore;
use crate::fleet_state::FleetState;
use crate::service_error::{RevokedPeer, ServiceError};

/// How long a new control stream may take to send its first report.
const FIRST_REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The service over the catalog and the fleet view.
#[derive(Debug, Clone)]
pub struct ControlService {
    catalog: CheckCatalog,
    fleet: FleetState,
    credentials: CredentialStore,
}

impl ControlService {
    /// A service sending from `catalog`, recording into `fleet`. An enrolled agent's
    /// labels are its token's, overridden by those it reports; a stream whose agent
    /// is revoked ends.
    pub fn new(catalog: CheckCatalog, fleet: FleetState, credentials: CredentialStore) -> Self {
        ControlService {
            catalog,
            fleet,
            credentials,
        }
    }
}

/// `report` with the labels the agent enrolled with under the ones it reports.
fn with_enrolled_labels(
    credentials: &CredentialStore,
    agent: &str,
    report: &AgentReport,
) -> AgentReport {
    let Some((credential, _)) = credentials.agent(agent) else {
        return report.clone();
    };
    let mut labels = credential.labels;
    labels.extend(report.labels.clone());
    AgentReport {
        labels,
        ..report.clone()
    }
}

type SetStream = Pin<Box<dyn Stream<Item = Result<CheckSet, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type SubscribeStream = SetStream;

    #[instrument(skip_all)]
    async fn subscribe(
        &self,
        request: Request<Streaming<AgentReport>>,
    ) -> Result<Response<SetStream>, Status> {
        let peer = peer_identity(&request)?;
        let mut reports = request.into_inner();
        let first = tokio::time::timeout(FIRST_REPORT_TIMEOUT, reports.message())
            .await
            .map_err(|_| Status::from(ServiceError::NoFirstReport))??
            .ok_or_else(|| Status::from(ServiceError::ClosedBeforeFirstReport))?;
        let guard = self.fleet.control_connected(&peer);
        let credentials = self.credentials.clone();
        self.fleet.reported(
            &peer.name,
            &with_enrolled_labels(&credentials, &peer.name, &first),
        );
        let fleet = self.fleet.clone();
        let mut catalog = self.catalog.watch();
        let agent_id = peer.name.clone();
        let revocations = credentials.revocations();
        let (tx, rx) = mpsc::channel::<Result<CheckSet, Status>>(4);
        tokio::spawn(async move {
            let _guard = guard;
            let revoked = revocations.revoked(&peer);
            tokio::pin!(revoked);
            let mut last_sent = String::new();
            let mut labels = fleet.labels(&agent_id);
            loop {
                let view = catalog.borrow_and_update().clone();
                if let Some(set) = effective_set(&view, &agent_id, &labels, &last_sent) {
                    last_sent = set.hash.clone();
                    tracing::debug!(%agent_id, checks = set.checks.len(), hash = %set.hash, "check set sent");
                    if tx.send(Ok(set)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = catalog.changed() => if changed.is_err() { return },
                    report = reports.message() => match report {
                        Ok(Some(report)) => {
                            fleet.reported(&agent_id, &with_enrolled_labels(&credentials, &agent_id, &report));
                            labels = fleet.labels(&agent_id);
                        }
                        Ok(None) | Err(_) => return,
                    },
                    () = tx.closed() => return,
                    () = &mut revoked => {
                        let _ = tx.send(Err(RevokedPeer(peer.clone()).into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

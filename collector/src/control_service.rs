//! The `Control` gRPC service (agent certificates only): each connected agent's
//! effective check set, sent when the stream opens and again whenever the catalog or the
//! agent's labels change it; the agent's reports of what it applied come back up.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;

use fleetmon::identity::peer_identity;
use fleetmon::pb::control_server::Control;
use fleetmon::pb::{AgentReport, Assignment, CheckDefinition, CheckSet};

use crate::check_catalog::{CatalogView, CheckCatalog};
use crate::fleet_state::FleetState;

/// How long a new control stream may take to send its first report.
const FIRST_REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `assignment` selects the agent `agent_id` with `labels`.
pub fn selects(assignment: &Assignment, agent_id: &str, labels: &BTreeMap<String, String>) -> bool {
    assignment.all
        || assignment.agents.iter().any(|a| a == agent_id)
        || (!assignment.labels.is_empty()
            && assignment
                .labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value)))
}

/// The checks `agent_id` should run now (not paused, selected), by id, with their hash.
pub fn effective_set(
    view: &CatalogView,
    agent_id: &str,
    labels: &BTreeMap<String, String>,
) -> CheckSet {
    let checks: Vec<CheckDefinition> = view
        .checks
        .values()
        .filter(|c| !c.paused)
        .filter(|c| {
            c.assignment
                .as_ref()
                .is_some_and(|a| selects(a, agent_id, labels))
        })
        .cloned()
        .collect();
    let mut hasher = Sha256::new();
    for check in &checks {
        hasher.update(check.id.as_bytes());
        hasher.update([0]);
        hasher.update(check.version.to_be_bytes());
    }
    let hash = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    CheckSet {
        checks,
        hash,
        sent_at: Some(SystemTime::now().into()),
    }
}

/// The service over the catalog and the fleet view.
#[derive(Debug, Clone)]
pub struct ControlService {
    catalog: CheckCatalog,
    fleet: FleetState,
}

impl ControlService {
    /// A service sending from `catalog`, recording into `fleet`.
    pub fn new(catalog: CheckCatalog, fleet: FleetState) -> Self {
        ControlService { catalog, fleet }
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
            .map_err(|_| {
                Status::deadline_exceeded("send an AgentReport first on the control stream")
            })??
            .ok_or_else(|| Status::cancelled("control stream closed before its first report"))?;
        let guard = self.fleet.control_connected(&peer);
        self.fleet.reported(&peer.name, &first);
        let fleet = self.fleet.clone();
        let mut catalog = self.catalog.watch();
        let agent_id = peer.name.clone();
        let (tx, rx) = mpsc::channel::<Result<CheckSet, Status>>(4);
        tokio::spawn(async move {
            let _guard = guard;
            let mut last_sent = String::new();
            let mut labels = fleet.labels(&agent_id);
            loop {
                let set = effective_set(&catalog.borrow_and_update(), &agent_id, &labels);
                if set.hash != last_sent {
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
                            fleet.reported(&agent_id, &report);
                            labels = fleet.labels(&agent_id);
                        }
                        Ok(None) | Err(_) => return,
                    },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_assignment_selects_by_name_label_or_all() {
        let by_label = Assignment {
            labels: [("location".to_owned(), "eu-west".to_owned())].into(),
            ..Default::default()
        };
        assert!(selects(
            &by_label,
            "a",
            &labels(&[("location", "eu-west"), ("role", "edge")])
        ));
        assert!(!selects(
            &by_label,
            "a",
            &labels(&[("location", "us-east")])
        ));
        let by_name = Assignment {
            agents: vec!["web-1".into()],
            ..Default::default()
        };
        assert!(selects(&by_name, "web-1", &labels(&[])));
        assert!(!selects(&by_name, "web-2", &labels(&[])));
        assert!(!selects(&Assignment::default(), "web-1", &labels(&[])));
        let all = Assignment {
            all: true,
            ..Default::default()
        };
        assert!(selects(&all, "anyone", &labels(&[])));
    }

    #[test]
    fn paused_checks_are_left_out_and_the_hash_follows_versions() {
        let check = |id: &str, version: u64, paused: bool| CheckDefinition {
            id: id.into(),
            version,
            paused,
            assignment: Some(Assignment {
                all: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut view = CatalogView::default();
        view.checks.insert("a".into(), check("a", 1, false));
        view.checks.insert("b".into(), check("b", 1, true));
        let first = effective_set(&view, "x", &labels(&[]));
        assert_eq!(first.checks.len(), 1);
        view.checks.insert("a".into(), check("a", 2, false));
        let second = effective_set(&view, "x", &labels(&[]));
        assert_ne!(first.hash, second.hash);
        assert_eq!(second.hash, effective_set(&view, "x", &labels(&[])).hash);
    }
}

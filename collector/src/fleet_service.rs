//! The `Fleet` gRPC service: operators' live view of the fleet, from memory.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;
use prometheus_client::metrics::counter::Counter;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};
use tracing::instrument;

use fleetmon::grpc::GrpcError;
use fleetmon::pb::fleet_server::Fleet;
use fleetmon::pb::{
    AgentInfo, GetAgentRequest, GetLatestRequest, LatestSamples, ListAgentsRequest,
    ListAgentsResponse, WatchEvent, WatchLatestRequest, watch_event,
};
use fleetmon::telemetry::LogEvery;

use crate::fleet_state::{FleetState, LATEST_PAGE_BYTES};

/// A query named an agent the fleet view does not hold.
#[derive(Debug, thiserror::Error)]
#[error("agent `{0}` has not connected since the collector started")]
pub struct UnknownAgent(pub String);

impl GrpcError for UnknownAgent {
    fn code(&self) -> tonic::Code {
        tonic::Code::NotFound
    }
}

fleetmon::status_from!(UnknownAgent);
/// Agents a `ListAgents` page holds unless the request says.
pub const DEFAULT_AGENTS_PAGE: u32 = 1000;
/// The most a `ListAgents` page holds.
pub const MAX_AGENTS_PAGE: u32 = 5000;
/// Agents a `GetLatest` page holds unless the request says (and the byte budget allows).
pub const DEFAULT_LATEST_PAGE: u32 = 100;
/// The most agents a `GetLatest` page holds.
pub const MAX_LATEST_PAGE: u32 = 1000;

/// The service over the shared fleet state.
#[derive(Debug, Clone)]
pub struct FleetService {
    state: FleetState,
    /// Events watchers missed by reading too slowly.
    skipped: Counter,
}

impl FleetService {
    /// A service reading `state`, counting in `skipped` the events slow watchers miss.
    pub fn new(state: FleetState, skipped: Counter) -> Self {
        FleetService { state, skipped }
    }
}

fn event_agent(event: &WatchEvent) -> &str {
    event.kind.as_ref().map_or("", watch_event::Kind::agent_id)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Fleet for FleetService {
    type WatchLatestStream = WatchStream;

    #[instrument(skip_all)]
    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let request = request.into_inner();
        let size = match request.page_size {
            0 => DEFAULT_AGENTS_PAGE,
            n => n.min(MAX_AGENTS_PAGE),
        };
        let (agents, next_page_token) = self.state.list_page(&request.page_token, size as usize);
        Ok(Response::new(ListAgentsResponse {
            agents,
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<AgentInfo>, Status> {
        let agent_id = request.into_inner().agent_id;
        self.state
            .get(&agent_id)
            .map(Response::new)
            .ok_or_else(|| UnknownAgent(agent_id).into())
    }

    #[instrument(skip_all)]
    async fn get_latest(
        &self,
        request: Request<GetLatestRequest>,
    ) -> Result<Response<LatestSamples>, Status> {
        let request = request.into_inner();
        if !request.agent_id.is_empty() {
            return self
                .state
                .latest(&request.agent_id)
                .map(|one| {
                    Response::new(LatestSamples {
                        agents: vec![one],
                        next_page_token: String::new(),
                    })
                })
                .ok_or_else(|| UnknownAgent(request.agent_id).into());
        }
        let size = match request.page_size {
            0 => DEFAULT_LATEST_PAGE,
            n => n.min(MAX_LATEST_PAGE),
        };
        let (agents, next_page_token) =
            self.state
                .latest_page(&request.page_token, size as usize, LATEST_PAGE_BYTES);
        Ok(Response::new(LatestSamples {
            agents,
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn watch_latest(
        &self,
        request: Request<WatchLatestRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let agent_id = request.into_inner().agent_id;
        let skipped = self.skipped.clone();
        let mut lag_log = LogEvery::new(LAG_LOG_EVERY);
        // Read from the broadcast by the client's connection itself, with no task or
        // queue between: a busy collector serves a watcher as often as its connection.
        // A client that leaves drops the stream and with it its place in the broadcast.
        let stream =
            BroadcastStream::new(self.state.subscribe()).filter_map(
                move |received| match received {
                    Ok(event) => (agent_id.is_empty() || event_agent(&event) == agent_id)
                        .then(|| Ok((*event).clone())),
                    Err(BroadcastStreamRecvError::Lagged(missed)) => {
                        skipped.inc_by(missed);
                        if let Some(missed) = lag_log.count(missed, Instant::now()) {
                            tracing::warn!(missed, "watcher too slow, events skipped (logged at most once a minute a watcher; all are counted in fleetmon_collector_watch_events_skipped_total)");
                        }
                        None
                    }
                },
            );
        Ok(Response::new(Box::pin(stream)))
    }
}

/// How often a slow watcher's skipped events are logged: a watcher reading half as
/// fast as events come lags about once a second, and each lag is counted anyway.
const LAG_LOG_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watcher_that_leaves_is_forgotten_even_if_nothing_it_asked_for_came() {
        let state = FleetState::new();
        let service = FleetService::new(state.clone(), Counter::default());
        let watch = service
            .watch_latest(Request::new(WatchLatestRequest {
                agent_id: "nobody-sends-this".into(),
            }))
            .await
            .unwrap();
        assert_eq!(state.watchers(), 1);
        drop(watch);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while state.watchers() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the watcher was forgotten when its client left");
    }

    #[tokio::test]
    async fn a_watcher_that_reads_too_slowly_misses_events_and_they_are_counted() {
        let state = FleetState::new();
        let skipped = Counter::default();
        let service = FleetService::new(state.clone(), skipped.clone());
        let mut watch = service
            .watch_latest(Request::new(WatchLatestRequest::default()))
            .await
            .unwrap()
            .into_inner();
        // Far more than the watch buffer holds, none read yet.
        let sent = 10_000u64;
        for n in 0..sent {
            state.delivered([crate::validation::ValidSample::Site(
                fleetmon::pb::SiteCheck {
                    agent_id: "a1".into(),
                    url: format!("https://{n}.example/"),
                    ..Default::default()
                },
            )]);
        }
        let mut read = 0u64;
        while read + skipped.get() < sent {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next());
            let Ok(event) = next.await else {
                panic!(
                    "{read} of {sent} read and {} counted as missed",
                    skipped.get()
                );
            };
            event.expect("the stream goes on").unwrap();
            read += 1;
        }
        assert!(
            skipped.get() > 0,
            "{read} of {sent} read, none counted as missed"
        );
        assert_eq!(read + skipped.get(), sent, "each event read or counted");
    }
}

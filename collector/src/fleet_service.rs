//! The `Fleet` gRPC service: operators' live view of the fleet, from memory.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};
use tracing::instrument;

use fleetmon::pb::fleet_server::Fleet;
use fleetmon::pb::{
    AgentInfo, GetAgentRequest, GetLatestRequest, LatestSamples, ListAgentsRequest,
    ListAgentsResponse, WatchEvent, WatchLatestRequest, watch_event,
};

use crate::fleet_state::FleetState;
use crate::service_error::ServiceError;

/// The service over the shared fleet state.
#[derive(Debug, Clone)]
pub struct FleetService {
    state: FleetState,
}

impl FleetService {
    /// A service reading `state`.
    pub fn new(state: FleetState) -> Self {
        FleetService { state }
    }
}

fn event_agent(event: &WatchEvent) -> &str {
    match &event.kind {
        Some(watch_event::Kind::Host(h)) => &h.agent_id,
        Some(watch_event::Kind::Site(s)) => &s.agent_id,
        None => "",
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Fleet for FleetService {
    type WatchLatestStream = WatchStream;

    #[instrument(skip_all)]
    async fn list_agents(
        &self,
        _request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        Ok(Response::new(ListAgentsResponse {
            agents: self.state.list(),
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
            .ok_or_else(|| ServiceError::UnknownAgent(agent_id).into())
    }

    #[instrument(skip_all)]
    async fn get_latest(
        &self,
        request: Request<GetLatestRequest>,
    ) -> Result<Response<LatestSamples>, Status> {
        let agent_id = request.into_inner().agent_id;
        self.state
            .latest(&agent_id)
            .map(|agents| Response::new(LatestSamples { agents }))
            .ok_or_else(|| ServiceError::UnknownAgent(agent_id).into())
    }

    #[instrument(skip_all)]
    async fn watch_latest(
        &self,
        request: Request<WatchLatestRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let agent_id = request.into_inner().agent_id;
        let mut events = self.state.subscribe();
        let stream = async_stream(move |tx| async move {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if (agent_id.is_empty() || event_agent(&event) == agent_id)
                            && tx.send(Ok((*event).clone())).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "watcher too slow, events skipped");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task; ends when the client goes away.
fn async_stream<F, Fut>(produce: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<WatchEvent, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

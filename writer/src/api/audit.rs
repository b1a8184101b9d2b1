//! The audit trail in PostgreSQL: storing events ([`store`]: from the audit topic, and
//! the writer's own changes, [`record`]) and `Audit/ListAuditEvents`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetmon::pb::audit_server::Audit;
use fleetmon::pb::{AuditEvent, ListAuditEventsRequest, ListAuditEventsResponse};
use tonic::{Request, Response, Status};

use super::error::ServiceError;
use crate::store::{PostgresSink, SinkError};

const INSERT_AUDIT_EVENT: &str = include_str!("../../sql/insert_audit_event.sql");
const LIST_AUDIT_EVENTS: &str = include_str!("../../sql/list_audit_events.sql");

/// Events a list holds unless the request says.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most events a list holds.
pub const MAX_LIMIT: u32 = 1000;
/// How far back a list goes unless the request says.
const DEFAULT_SINCE: Duration = Duration::from_secs(24 * 3600);

fn at(event: &AuditEvent) -> SystemTime {
    event
        .at
        .and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or_else(SystemTime::now)
}

/// Stores `event` once (by its id) with `client` (a connection or a transaction).
pub async fn insert(
    client: &impl deadpool_postgres::GenericClient,
    event: &AuditEvent,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            INSERT_AUDIT_EVENT,
            &[
                &event.id,
                &at(event),
                &event.actor_uri,
                &event.actor,
                &event.actor_role,
                &event.remote_address,
                &event.action,
                &event.subject,
                &event.before_json,
                &event.after_json,
                &fleetmon::audit::outcome(event),
                &event.error,
            ],
        )
        .await?;
    Ok(())
}

/// Stores `event` once (by its id), on a connection of `pool`.
pub async fn store(pool: &deadpool_postgres::Pool, event: &AuditEvent) -> Result<(), SinkError> {
    insert(&pool.get().await?, event).await?;
    Ok(())
}

/// The audit events of the caller's request, in the Audit service.
#[derive(Debug, Clone)]
pub struct AuditService {
    sink: Arc<PostgresSink>,
}

impl AuditService {
    /// Serves from `sink`'s query pool.
    pub fn new(sink: Arc<PostgresSink>) -> Self {
        AuditService { sink }
    }

    async fn list(
        &self,
        request: ListAuditEventsRequest,
    ) -> Result<ListAuditEventsResponse, ServiceError> {
        let limit = super::limit(request.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        let since = request
            .since
            .and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or_else(|| SystemTime::now() - DEFAULT_SINCE);
        let rows = self
            .sink
            .queries()
            .get()
            .await?
            .query(
                LIST_AUDIT_EVENTS,
                &[&since, &request.actor, &i64::from(limit)],
            )
            .await?;
        let events = rows
            .iter()
            .map(|row| AuditEvent {
                id: row.get("event_id"),
                at: Some(prost_types::Timestamp::from(row.get::<_, SystemTime>("at"))),
                actor_uri: row.get("actor_uri"),
                actor: row.get("actor"),
                actor_role: row.get("actor_role"),
                remote_address: row.get("remote_address"),
                action: row.get("action"),
                subject: row.get("subject"),
                before_json: row.get("before"),
                after_json: row.get("after"),
                outcome: row.get("outcome"),
                error: row.get("error"),
            })
            .collect();
        Ok(ListAuditEventsResponse { events })
    }
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }
}

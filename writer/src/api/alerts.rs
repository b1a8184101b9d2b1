//! The `Alerts` gRPC service: operators read alerts and their timelines, and manage
//! silences. Alerts themselves change only where rows are written.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::{Request, Response, Status};

use fleetmon::audit::Author;
use fleetmon::pb::alerts_server::Alerts;
use fleetmon::pb::{
    Alert, AlertEvent, CreateMaintenanceRequest, CreateSilenceRequest, ExpireSilenceRequest,
    GetAlertRequest, GetAlertResponse, GetIncidentRequest, Incident, ListAlertsRequest,
    ListAlertsResponse, ListIncidentsRequest, ListIncidentsResponse, ListMaintenanceRequest,
    ListMaintenanceResponse, ListSilencesRequest, ListSilencesResponse, MaintenanceWindow,
    Notification, OpenIncidentRequest, RemoveMaintenanceRequest, Silence, TestChannelRequest,
    TestChannelResponse, UpdateIncidentRequest,
};

use crate::alerts::sender::Sender;
use crate::api::error::ServiceError;
use crate::api::{incidents, maintenance, matcher};
use crate::store::PostgresSink;

const ALERT_TIMELINE: &str = include_str!("../../sql/alert_timeline.sql");
const ALERT_NOTIFICATIONS: &str = include_str!("../../sql/alert_notifications.sql");
const LIST_ALERTS: &str = include_str!("../../sql/list_alerts.sql");
const GET_ALERT: &str = include_str!("../../sql/get_alert.sql");
const CREATE_SILENCE: &str = include_str!("../../sql/create_silence.sql");
const ACTIVE_SILENCES: &str = include_str!("../../sql/active_silences.sql");
const EXPIRE_SILENCE: &str = include_str!("../../sql/expire_silence.sql");

/// Alerts `ListAlerts` returns when the request names no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most alerts `ListAlerts` returns.
pub const MAX_LIMIT: u32 = 1000;
/// Longest silence.
pub const MAX_SILENCE: Duration = Duration::from_secs(31 * 24 * 3600);

/// The service over the writer's pool.
#[derive(Debug, Clone)]
pub struct AlertsService {
    sink: Arc<PostgresSink>,
    /// What `TestChannel` sends with (none: no channel is known).
    sender: Option<Arc<Sender>>,
}

impl AlertsService {
    /// Serves from `sink`'s pool.
    pub fn new(sink: Arc<PostgresSink>) -> Self {
        AlertsService { sink, sender: None }
    }

    /// Tests channels with `sender`.
    pub fn sending_with(self, sender: Arc<Sender>) -> Self {
        AlertsService {
            sender: Some(sender),
            ..self
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ServiceError> {
        Ok(self.sink.queries().get().await?)
    }
}

fn timestamp(t: Option<SystemTime>) -> Option<prost_types::Timestamp> {
    t.map(prost_types::Timestamp::from)
}

fn id(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

fn alert(row: &tokio_postgres::Row) -> Alert {
    Alert {
        id: id(row.get("alert_id")),
        kind: row.get("kind"),
        subject: row.get("subject"),
        agent_id: row.get("agent_id"),
        cause: row.get("cause"),
        locations: row.get("locations"),
        opened_at: timestamp(Some(row.get("opened_at"))),
        resolved_at: timestamp(row.get("resolved_at")),
        last_notified_at: timestamp(row.get("last_notified_at")),
        silenced: row.get("silenced"),
        in_maintenance: row.get("in_maintenance"),
    }
}

fn silence(row: &tokio_postgres::Row) -> Silence {
    Silence {
        id: id(row.get("silence_id")),
        check_id: row.get("check_id"),
        agent_id: row.get("agent_id"),
        reason: row.get("reason"),
        created_by: row.get("created_by"),
        created_at: timestamp(Some(row.get("created_at"))),
        ends_at: timestamp(Some(row.get("ends_at"))),
    }
}

fn db_id(value: u64, what: &str) -> Result<i64, ServiceError> {
    i64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ServiceError::invalid(format!("{what} must be a positive id")))
}

impl AlertsService {
    async fn list_alerts_call(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, ServiceError> {
        let request = request.into_inner();
        let limit = super::limit(request.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
        let rows = self
            .client()
            .await?
            .query(LIST_ALERTS, &[&request.open_only, &i64::from(limit)])
            .await?;
        Ok(Response::new(ListAlertsResponse {
            alerts: rows.iter().map(alert).collect(),
        }))
    }

    async fn get_alert_call(
        &self,
        request: Request<GetAlertRequest>,
    ) -> Result<Response<GetAlertResponse>, ServiceError> {
        let alert_id = db_id(request.into_inner().id, "id")?;
        let client = self.client().await?;
        let Some(row) = client.query_opt(GET_ALERT, &[&alert_id]).await? else {
            return Err(ServiceError::not_found(format!("no alert {alert_id}")));
        };
        let timeline = client
            .query(ALERT_TIMELINE, &[&alert_id])
            .await?
            .iter()
            .map(|row| AlertEvent {
                at: timestamp(Some(row.get("at"))),
                event: row.get("event"),
                detail: row.get("detail"),
                locations: row.get("locations"),
            })
            .collect();
        let notifications = client
            .query(ALERT_NOTIFICATIONS, &[&alert_id])
            .await?
            .iter()
            .map(|row| Notification {
                channel: row.get("channel"),
                event: row.get("event"),
                created_at: timestamp(Some(row.get("created_at"))),
                delivery_key: row.get("delivery_key"),
                attempts: u32::try_from(row.get::<_, i32>("attempts")).unwrap_or_default(),
                delivered_at: timestamp(row.get("delivered_at")),
                silenced_by: id(row.get("silenced_by")),
                last_error: row.get("last_error"),
                held_by_window: id(row.get("held_by_window")),
            })
            .collect();
        Ok(Response::new(GetAlertResponse {
            alert: Some(alert(&row)),
            timeline,
            notifications,
        }))
    }

    async fn create_silence_call(
        &self,
        author: Author,
        request: CreateSilenceRequest,
    ) -> Result<Response<Silence>, ServiceError> {
        let operator = author.peer.name.clone();
        let (check_id, agent_id) = (request.check_id.trim(), request.agent_id.trim());
        if request.duration_seconds == 0 || request.duration_seconds > MAX_SILENCE.as_secs() {
            return Err(ServiceError::invalid(format!(
                "duration_seconds must be from 1 to {} (31 days)",
                MAX_SILENCE.as_secs()
            )));
        }
        let mut client = self.client().await?;
        matcher::reason(&request.reason)?;
        matcher::check(&client, "a silence", check_id, agent_id, None).await?;
        let seconds = request.duration_seconds as f64;
        // The silence and its audit record commit together.
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                CREATE_SILENCE,
                &[&check_id, &agent_id, &request.reason, &operator, &seconds],
            )
            .await?;
        let created = silence(&row);
        record(
            &tx,
            &author,
            "silences.create",
            &created,
            None,
            Some(&created),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(%operator, check_id, agent_id, seconds, "silence created");
        Ok(Response::new(created))
    }

    async fn list_silences_call(
        &self,
        _request: Request<ListSilencesRequest>,
    ) -> Result<Response<ListSilencesResponse>, ServiceError> {
        let rows = self.client().await?.query(ACTIVE_SILENCES, &[]).await?;
        Ok(Response::new(ListSilencesResponse {
            silences: rows.iter().map(silence).collect(),
        }))
    }

    async fn expire_silence_call(
        &self,
        author: Author,
        request: ExpireSilenceRequest,
    ) -> Result<Response<Silence>, ServiceError> {
        let silence_id = db_id(request.id, "id")?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(EXPIRE_SILENCE, &[&silence_id])
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("no silence {silence_id}")))?;
        let expired = silence(&row);
        record(
            &tx,
            &author,
            "silences.expire",
            &expired,
            None,
            Some(&expired),
        )
        .await?;
        tx.commit().await?;
        Ok(Response::new(expired))
    }
}

/// Records, in `tx`, that `author` did `action` to `subject`.
async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    author: &Author,
    action: &str,
    subject: &Silence,
    before: Option<&Silence>,
    after: Option<&Silence>,
) -> Result<(), ServiceError> {
    let json = |s: &Silence| {
        serde_json::json!({
            "id": s.id,
            "check_id": s.check_id,
            "agent_id": s.agent_id,
            "reason": s.reason,
            "created_by": s.created_by,
            "ends_at": s.ends_at.map(|t| t.seconds),
        })
    };
    let event = author.event(
        action,
        &format!("silence {}", subject.id),
        before.map(json),
        after.map(json),
    );
    crate::api::audit::insert(tx, &event).await?;
    Ok(())
}

/// Each call's errors become statuses in one place, [`ServiceError`]'s `From`.
#[tonic::async_trait]
impl Alerts for AlertsService {
    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        Ok(self.list_alerts_call(request).await?)
    }

    async fn get_alert(
        &self,
        request: Request<GetAlertRequest>,
    ) -> Result<Response<GetAlertResponse>, Status> {
        Ok(self.get_alert_call(request).await?)
    }

    async fn create_silence(
        &self,
        request: Request<CreateSilenceRequest>,
    ) -> Result<Response<Silence>, Status> {
        let author = Author::of(&request)?;
        Ok(self
            .create_silence_call(author, request.into_inner())
            .await?)
    }

    async fn list_silences(
        &self,
        request: Request<ListSilencesRequest>,
    ) -> Result<Response<ListSilencesResponse>, Status> {
        Ok(self.list_silences_call(request).await?)
    }

    async fn expire_silence(
        &self,
        request: Request<ExpireSilenceRequest>,
    ) -> Result<Response<Silence>, Status> {
        let author = Author::of(&request)?;
        Ok(self
            .expire_silence_call(author, request.into_inner())
            .await?)
    }

    async fn create_maintenance(
        &self,
        request: Request<CreateMaintenanceRequest>,
    ) -> Result<Response<MaintenanceWindow>, Status> {
        let author = Author::of(&request)?;
        let mut client = self.client().await?;
        let created = maintenance::create(&mut client, &author, request.into_inner()).await?;
        Ok(Response::new(created))
    }

    async fn list_maintenance(
        &self,
        _request: Request<ListMaintenanceRequest>,
    ) -> Result<Response<ListMaintenanceResponse>, Status> {
        let client = self.client().await?;
        Ok(Response::new(ListMaintenanceResponse {
            windows: maintenance::list(&client).await?,
        }))
    }

    async fn test_channel(
        &self,
        request: Request<TestChannelRequest>,
    ) -> Result<Response<TestChannelResponse>, Status> {
        let author = Author::of(&request)?;
        let name = request.into_inner().channel;
        let channel = self
            .sender
            .as_ref()
            .and_then(|sender| sender.channels().iter().find(|c| c.name == name))
            .ok_or_else(|| {
                ServiceError::not_found(format!(
                    "channel: no channel `{}` in this writer's [alerts] (webhooks and channels)",
                    name.chars().take(64).collect::<String>()
                ))
            })?;
        let sender = self.sender.as_ref().expect("a channel was found in it");
        let (delivered, answer) =
            match crate::alerts::sender::test(sender, channel, &author.peer.name).await {
                Ok(()) => (true, "accepted".to_owned()),
                Err(error) => (false, error.to_string()),
            };
        tracing::info!(channel = %name, delivered, %answer, by = %author.peer.name, "channel tested");
        Ok(Response::new(TestChannelResponse {
            channel: name,
            kind: format!("{:?}", channel.kind).to_lowercase(),
            delivered,
            answer,
        }))
    }

    async fn remove_maintenance(
        &self,
        request: Request<RemoveMaintenanceRequest>,
    ) -> Result<Response<MaintenanceWindow>, Status> {
        let author = Author::of(&request)?;
        let mut client = self.client().await?;
        let removed = maintenance::remove(&mut client, &author, request.into_inner().id).await?;
        Ok(Response::new(removed))
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        let client = self.client().await?;
        let days = request.into_inner().resolved_within_days;
        Ok(Response::new(ListIncidentsResponse {
            incidents: incidents::list(&client, days).await?,
        }))
    }

    async fn get_incident(
        &self,
        request: Request<GetIncidentRequest>,
    ) -> Result<Response<Incident>, Status> {
        let client = self.client().await?;
        Ok(Response::new(
            incidents::get(&client, request.into_inner().id).await?,
        ))
    }

    async fn open_incident(
        &self,
        request: Request<OpenIncidentRequest>,
    ) -> Result<Response<Incident>, Status> {
        let author = Author::of(&request)?;
        let mut client = self.client().await?;
        let opened = incidents::open(&mut client, &author, request.into_inner()).await?;
        tracing::info!(id = opened.id, by = %author.peer.name, "incident opened");
        Ok(Response::new(opened))
    }

    async fn update_incident(
        &self,
        request: Request<UpdateIncidentRequest>,
    ) -> Result<Response<Incident>, Status> {
        let author = Author::of(&request)?;
        let mut client = self.client().await?;
        let updated = incidents::update(&mut client, &author, request.into_inner()).await?;
        tracing::info!(id = updated.id, status = %updated.status, by = %author.peer.name, "incident updated");
        Ok(Response::new(updated))
    }
}

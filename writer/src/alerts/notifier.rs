//! Delivers the notification outbox to every channel, at least once.
//!
//! Per channel: pending rows are taken under `FOR UPDATE SKIP LOCKED` (so writers
//! share the work), grouped into one delivery whose key is stored with them and
//! leased for [`LEASE`]; the delivery is POSTed with that key as `Idempotency-Key`,
//! then marked delivered, or retried with backoff. A writer that dies mid-delivery
//! leaves the rows keyed and leased: whoever takes them after the lease sends the
//! same key again. Rows of alerts under an active silence or maintenance window are
//! marked delivered without a request, naming the silence or the window. What each kind of channel is sent is
//! [`super::channels`]'; an Alertmanager channel is also sent every open alert again
//! every `resend_seconds`, since Alertmanager ends an alert that is not.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alerts::channels;
use crate::alerts::sender::Sender;
use crate::config::{AlertsConfig, ChannelConfig, ChannelKind};
use crate::store::SinkError;

const MARK_DELIVERED: &str = include_str!("../../sql/mark_delivered.sql");
const MARK_ALERTS_NOTIFIED: &str = include_str!("../../sql/mark_alerts_notified.sql");
const DELIVERY_FAILED: &str = include_str!("../../sql/delivery_failed.sql");
const DUE_NOTIFICATIONS: &str = include_str!("../../sql/due_notifications.sql");
const SILENCED_NOTIFICATIONS: &str = include_str!("../../sql/silenced_notifications.sql");
const MARK_SILENCED: &str = include_str!("../../sql/mark_silenced.sql");
const HELD_NOTIFICATIONS: &str = include_str!("../../sql/held_notifications.sql");
const MARK_HELD: &str = include_str!("../../sql/mark_held.sql");
const LEASE_DELIVERY: &str = include_str!("../../sql/lease_delivery.sql");
const NOTIFICATION_BODIES: &str = include_str!("../../sql/notification_bodies.sql");
const ALERTMANAGER_ALERTS: &str = include_str!("../../sql/alertmanager_alerts.sql");

/// How long a delivery in progress is left alone by other writers.
pub const LEASE: Duration = Duration::from_secs(15);
/// Longest wait between two attempts at a failing delivery.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Most notifications in one delivery.
pub const MAX_GROUP: i64 = 500;
/// How often the outbox is read when nothing woke the notifier (rows written by
/// other writers, retries coming due).
const POLL: Duration = Duration::from_secs(1);

/// The outbox's deliverer.
#[derive(Debug)]
pub struct Notifier {
    pool: Pool,
    sender: Arc<Sender>,
    group_wait: Duration,
    wake: Arc<Notify>,
}

/// One delivery: its key and the notifications in it.
struct Delivery {
    key: String,
    ids: Vec<i64>,
    attempts: i32,
}

impl Notifier {
    /// A notifier sending with `sender`, grouping as `config` says, woken by `wake`
    /// when rows are committed.
    pub fn new(pool: Pool, sender: Arc<Sender>, config: &AlertsConfig, wake: Arc<Notify>) -> Self {
        Notifier {
            pool,
            sender,
            group_wait: Duration::from_millis(config.group_wait_ms),
            wake,
        }
    }

    /// Delivers until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.sender.channels().is_empty() {
            return;
        }
        let mut resent: HashMap<String, Instant> = HashMap::new();
        loop {
            let mut busy = false;
            for channel in self.sender.channels() {
                match self.deliver_next(channel).await {
                    Ok(delivered) => busy |= delivered,
                    Err(error) => {
                        tracing::warn!(channel = %channel.name, %error, "notification delivery failed");
                    }
                }
                if channel.kind == ChannelKind::Alertmanager {
                    let every = Duration::from_secs(channel.resend_seconds);
                    let due = resent
                        .get(&channel.name)
                        .is_none_or(|last| last.elapsed() >= every);
                    if due {
                        resent.insert(channel.name.clone(), Instant::now());
                        if let Err(error) = self.resend_open(channel).await {
                            tracing::warn!(channel = %channel.name, %error, "resending open alerts failed");
                        }
                    }
                }
            }
            if busy {
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {
                    // Whatever else commits meanwhile goes out in the same delivery.
                    tokio::select! {
                        () = tokio::time::sleep(self.group_wait) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
                () = tokio::time::sleep(POLL) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Sends every open alert (and those just resolved) to the Alertmanager `channel`
    /// again, so that it keeps them firing (or ends them).
    async fn resend_open(&self, channel: &ChannelConfig) -> Result<(), SinkError> {
        let window = 2.0 * channel.resend_seconds as f64;
        let rows = self
            .pool
            .get()
            .await?
            .query(ALERTMANAGER_ALERTS, &[&window, &channel.kinds])
            .await?;
        if rows.is_empty() {
            return Ok(());
        }
        let text = |alert: &serde_json::Value, key: &str| -> String {
            alert[key].as_str().unwrap_or_default().to_owned()
        };
        let alerts: Vec<serde_json::Value> = rows
            .iter()
            .filter_map(|row| {
                let alert: serde_json::Value =
                    serde_json::from_str(row.get::<_, &str>("alert")).ok()?;
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(row.get("agent_labels")).unwrap_or_default();
                channel
                    .takes(
                        &text(&alert, "kind"),
                        &text(&alert, "subject"),
                        &text(&alert, "agent_id"),
                        &labels,
                    )
                    .then_some(alert)
            })
            .collect();
        if alerts.is_empty() {
            return Ok(());
        }
        let request = channels::Outgoing {
            url: channel.endpoint(),
            body: channels::alertmanager_alerts(&alerts, channel, SystemTime::now()),
            headers: Vec::new(),
        };
        match self.sender.send(channel, "", &request).await {
            Ok(()) => {
                tracing::debug!(channel = %channel.name, alerts = alerts.len(), "open alerts sent again");
            }
            Err(error) => {
                tracing::warn!(channel = %channel.name, %error, "resending open alerts failed");
            }
        }
        Ok(())
    }

    /// Takes, sends and settles one delivery of `channel`; false when nothing was due.
    async fn deliver_next(&self, channel: &ChannelConfig) -> Result<bool, SinkError> {
        let Some(delivery) = self.claim(channel).await? else {
            return Ok(false);
        };
        if delivery.ids.is_empty() {
            // Everything claimed was silenced or held back.
            return Ok(true);
        }
        let notifications = self.notifications(&delivery).await?;
        // No connection is held while the endpoint takes its time (up to the request
        // timeout each): the lease keeps the rows this writer's meanwhile.
        let sent = self
            .sender
            .deliver(channel, &delivery.key, &notifications)
            .await;
        let client = self.pool.get().await?;
        match sent {
            Ok(()) => {
                client.execute(MARK_DELIVERED, &[&delivery.ids]).await?;
                client
                    .execute(MARK_ALERTS_NOTIFIED, &[&delivery.ids])
                    .await?;
                tracing::info!(channel = %channel.name, key = %delivery.key, notifications = delivery.ids.len(), "notifications delivered");
            }
            Err(error) => {
                let backoff = backoff(delivery.attempts);
                client
                    .execute(
                        DELIVERY_FAILED,
                        &[&delivery.ids, &error.to_string(), &backoff.as_secs_f64()],
                    )
                    .await?;
                tracing::warn!(channel = %channel.name, key = %delivery.key, %error, retry_in = ?backoff, "delivery failed");
            }
        }
        Ok(true)
    }

    /// In one transaction: the next due delivery of `channel` (a keyed one being
    /// retried, else the pending rows grouped under a new key), silenced rows settled,
    /// the rest leased.
    async fn claim(&self, channel: &ChannelConfig) -> Result<Option<Delivery>, SinkError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let due = tx
            .query(DUE_NOTIFICATIONS, &[&channel.name, &MAX_GROUP])
            .await?;
        let Some(first) = due.first() else {
            return Ok(None);
        };
        let key: Option<String> = first.get("delivery_key");
        let (key, ids, attempts) = match key {
            // A delivery begun before: the same rows, the same key.
            Some(key) => {
                let ids = due
                    .iter()
                    .filter(|row| row.get::<_, Option<&str>>("delivery_key") == Some(key.as_str()))
                    .map(|row| row.get::<_, i64>("notification_id"))
                    .collect::<Vec<_>>();
                (key, ids, first.get::<_, i32>("attempts"))
            }
            None => {
                let ids: Vec<i64> = due
                    .iter()
                    .filter(|row| row.get::<_, Option<&str>>("delivery_key").is_none())
                    .map(|row| row.get("notification_id"))
                    .collect();
                let key = format!("fleetmon-{}-{}", channel.name, ids[0]);
                (key, ids, 0)
            }
        };
        let silenced: Vec<(i64, i64)> = tx
            .query(SILENCED_NOTIFICATIONS, &[&ids])
            .await?
            .iter()
            .map(|row| (row.get("notification_id"), row.get("silence_id")))
            .collect();
        for (id, silence) in &silenced {
            tx.execute(MARK_SILENCED, &[id, silence, &key]).await?;
        }
        let ids: Vec<i64> = ids
            .into_iter()
            .filter(|id| !silenced.iter().any(|(s, _)| s == id))
            .collect();
        let held: Vec<(i64, i64)> = tx
            .query(HELD_NOTIFICATIONS, &[&ids])
            .await?
            .iter()
            .map(|row| (row.get("notification_id"), row.get("window_id")))
            .collect();
        for (id, window) in &held {
            tx.execute(MARK_HELD, &[id, window, &key]).await?;
        }
        let ids: Vec<i64> = ids
            .into_iter()
            .filter(|id| !held.iter().any(|(h, _)| h == id))
            .collect();
        tx.execute(LEASE_DELIVERY, &[&ids, &key, &LEASE.as_secs_f64()])
            .await?;
        tx.commit().await?;
        if !silenced.is_empty() {
            tracing::info!(channel = %channel.name, notifications = silenced.len(), "notifications held back by silences");
        }
        if !held.is_empty() {
            tracing::info!(channel = %channel.name, notifications = held.len(), "notifications held back by maintenance windows");
        }
        Ok(Some(Delivery {
            key,
            ids,
            attempts: attempts + 1,
        }))
    }

    /// The notifications of `delivery`, each with its alert as it stands now.
    async fn notifications(
        &self,
        delivery: &Delivery,
    ) -> Result<Vec<serde_json::Value>, SinkError> {
        let client = self.pool.get().await?;
        let rows = client.query(NOTIFICATION_BODIES, &[&delivery.ids]).await?;
        Ok(rows
            .iter()
            .filter_map(|row| serde_json::from_str(row.get::<_, &str>("body")).ok())
            .collect())
    }
}

/// 1 s after the first failure, doubling, at most [`MAX_BACKOFF`].
fn backoff(attempts: i32) -> Duration {
    fleetmon::backoff::Backoff::new(Duration::from_secs(1), MAX_BACKOFF)
        .delay(u32::try_from(attempts).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}

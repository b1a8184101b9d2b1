//! What sends to the channels: one HTTP client and one mail transport per `email`
//! channel, shared by the notifier (the outbox) and `fleetmon alerts test-channel`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::alerts::channels;
use crate::alerts::email::{MailError, Mailer};
use crate::config::{AlertsConfig, ChannelConfig, ChannelKind};

/// How long one request to a channel may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the channels' clients could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The HTTP client.
    #[error("cannot build the HTTP client of the channels: {0}")]
    Http(#[from] reqwest::Error),
    /// An email channel's transport.
    #[error(transparent)]
    Mail(#[from] MailError),
}

/// Why a delivery failed; its text is kept in `notifications.last_error`, and it never
/// holds a channel's URL whole (Slack's carries its secret in the path).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No answer (connection, TLS, timeout), with the causes.
    #[error("{0}")]
    Request(String),
    /// The mail server refused or could not be reached.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// The endpoint answered with a status that is not success.
    #[error("{url} answered {status}")]
    Refused {
        /// The channel's URL, redacted ([`fleetmon::redact::url`]).
        url: String,
        /// Its answer.
        status: reqwest::StatusCode,
    },
}

/// The channels and their clients.
#[derive(Debug)]
pub struct Sender {
    channels: Vec<ChannelConfig>,
    /// The transport of each `email` channel, by name.
    mailers: HashMap<String, Mailer>,
    http: reqwest::Client,
}

impl Sender {
    /// The clients of every channel of `config`.
    pub fn new(config: &AlertsConfig) -> Result<Self, SenderError> {
        fleetmon::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("fleetmon-writer/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let channels = config.all_channels();
        let mailers = channels
            .iter()
            .filter(|channel| channel.kind == ChannelKind::Email)
            .map(|channel| Ok((channel.name.clone(), Mailer::new(channel, REQUEST_TIMEOUT)?)))
            .collect::<Result<_, MailError>>()?;
        Ok(Sender {
            channels,
            mailers,
            http,
        })
    }

    /// Every channel.
    pub fn channels(&self) -> &[ChannelConfig] {
        &self.channels
    }

    /// Sends `notifications` to `channel` as the delivery `key`: a message for email,
    /// the kind's requests otherwise.
    pub async fn deliver(
        &self,
        channel: &ChannelConfig,
        key: &str,
        notifications: &[serde_json::Value],
    ) -> Result<(), DeliveryError> {
        match self.mailers.get(&channel.name) {
            Some(mailer) => mailer
                .send(key, notifications)
                .await
                .map_err(DeliveryError::from),
            None => self.post_all(channel, key, notifications).await,
        }
    }

    /// POSTs the requests that carry `notifications` to `channel`, in order, stopping
    /// at the first failure.
    pub async fn post_all(
        &self,
        channel: &ChannelConfig,
        key: &str,
        notifications: &[serde_json::Value],
    ) -> Result<(), DeliveryError> {
        for request in channels::requests(channel, key, notifications, SystemTime::now()) {
            self.send(channel, key, &request).await?;
        }
        Ok(())
    }

    /// POSTs `outgoing` for `channel`, with `key` (if any) as `Idempotency-Key`.
    pub async fn send(
        &self,
        channel: &ChannelConfig,
        key: &str,
        outgoing: &channels::Outgoing,
    ) -> Result<(), DeliveryError> {
        let url = &outgoing.url;
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(outgoing.body.to_string());
        if !key.is_empty() {
            request = request.header("Idempotency-Key", key);
        }
        for (name, value) in &outgoing.headers {
            request = request.header(*name, value);
        }
        for (name, value) in &channel.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| {
            let e = e.without_url();
            let mut message = format!("{}: {e}", fleetmon::redact::url(url));
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            DeliveryError::Request(message)
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Refused {
                url: fleetmon::redact::url(url),
                status,
            })
        }
    }
}

/// Sends a test alert's opening and resolution to `channel` as one delivery, by
/// `operator`: what `fleetmon alerts test-channel` does.
pub async fn test(
    sender: &Sender,
    channel: &ChannelConfig,
    operator: &str,
) -> Result<(), DeliveryError> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let alert = |resolved: bool| {
        serde_json::json!({
            "id": 0, "kind": "test", "subject": format!("channel {}", channel.name),
            "agent_id": "", "locations": [],
            "cause": format!("a test notification: `fleetmon alerts test-channel {}` by {operator}", channel.name),
            "opened_at": now, "resolved_at": if resolved { Some(&now) } else { None },
        })
    };
    let notifications = [
        serde_json::json!({"event": "opened", "alert": alert(false)}),
        serde_json::json!({"event": "resolved", "alert": alert(true)}),
    ];
    let key = format!(
        "fleetmon-test-{}-{}",
        channel.name,
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    sender.deliver(channel, &key, &notifications).await
}

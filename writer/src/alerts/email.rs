//! The `email` channel: one message a delivery over SMTP (STARTTLS, TLS, or in clear to
//! a relay on this machine), plain text and HTML. Its `Message-ID` is the delivery's
//! key, so a delivery retried after a failure is the same message to the mail client.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use crate::config::{ChannelConfig, SmtpTls};

/// Why mail could not be set up or sent; the text names the channel's server, never
/// its password.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The channel's settings do not make a transport (validated at start, so this
    /// names what changed since).
    #[error("email channel `{channel}`: {message}")]
    Setup {
        /// The channel.
        channel: String,
        /// What is wrong.
        message: String,
    },
    /// The message could not be built.
    #[error("cannot build the message: {0}")]
    Build(String),
    /// The SMTP server refused or could not be reached.
    #[error("smtp://{server}: {message}")]
    Send {
        /// `host:port`.
        server: String,
        /// lettre's explanation.
        message: String,
    },
}

/// An `email` channel ready to send.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The transport of `channel` (an `email` one), with the request timeout.
    pub fn new(channel: &ChannelConfig, timeout: std::time::Duration) -> Result<Mailer, MailError> {
        let setup = |message: String| MailError::Setup {
            channel: channel.name.clone(),
            message,
        };
        let (host, port) = channel
            .smtp_server()
            .ok_or_else(|| setup("`url` is not smtp://HOST[:PORT]".to_owned()))?;
        let mut parameters = TlsParameters::builder(host.clone());
        if let Some(ca) = &channel.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| setup(format!("cannot read `ca` {}: {e}", ca.display())))?;
            let certificate = Certificate::from_pem(&pem)
                .map_err(|e| setup(format!("`ca` {}: {e}", ca.display())))?;
            parameters = parameters.add_root_certificate(certificate);
        }
        let parameters = || {
            parameters
                .clone()
                .build_rustls()
                .map_err(|e| setup(format!("TLS: {e}")))
        };
        let tls = match channel.smtp_tls {
            SmtpTls::Starttls => Tls::Required(parameters()?),
            SmtpTls::Tls => Tls::Wrapper(parameters()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        if !channel.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                channel.username.clone(),
                channel.password.clone(),
            ));
        }
        let mailbox = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| setup(format!("`{text}` is not a mail address: {e}")))
        };
        Ok(Mailer {
            transport: builder.build(),
            server: format!("{host}:{port}"),
            from: mailbox(&channel.from)?,
            to: channel
                .to
                .iter()
                .map(|to| mailbox(to))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Sends the delivery `key` of `notifications` as one message.
    pub async fn send(&self, key: &str, notifications: &[Value]) -> Result<(), MailError> {
        let message = self.message(key, notifications)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Send {
                server: self.server.clone(),
                message: e.to_string(),
            })
    }

    fn message(&self, key: &str, notifications: &[Value]) -> Result<Message, MailError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(super::channels::subject(notifications))
            .message_id(Some(format!("<{key}@fleetmon>")));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                plain_text(notifications),
                html(notifications),
            ))
            .map_err(|e| MailError::Build(e.to_string()))
    }
}

/// One notification's fields as the message shows them.
fn fields(notification: &Value) -> (&str, &str, &str, &str) {
    let alert = &notification["alert"];
    (
        notification["event"].as_str().unwrap_or_default(),
        alert["kind"].as_str().unwrap_or_default(),
        alert["subject"].as_str().unwrap_or_default(),
        alert["cause"].as_str().unwrap_or_default(),
    )
}

fn plain_text(notifications: &[Value]) -> String {
    let mut text = String::new();
    for notification in notifications {
        let (event, kind, subject, cause) = fields(notification);
        let alert = &notification["alert"];
        text.push_str(&format!(
            "[{event}] {kind} {subject}\n  {cause}\n  alert {} opened {}\n\n",
            alert["id"],
            alert["opened_at"].as_str().unwrap_or_default()
        ));
    }
    text.push_str("-- \nfleetmon: `fleetmon alerts show ID` for the timeline\n");
    text
}

fn html(notifications: &[Value]) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut html = String::from("<!doctype html><html><body><ul>");
    for notification in notifications {
        let (event, kind, subject, cause) = fields(notification);
        html.push_str(&format!(
            "<li><strong>[{}] {} {}</strong><br>{}</li>",
            escape(event),
            escape(kind),
            escape(subject),
            escape(cause)
        ));
    }
    html.push_str("</ul></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_group_is_one_message_whose_subject_counts_its_events_and_whose_html_is_escaped() {
        let notifications = [
            json!({"event": "opened", "alert": {"id": 1, "kind": "check_down", "subject": "shop", "cause": "down <b>"}}),
            json!({"event": "opened", "alert": {"id": 2, "kind": "disk_full", "subject": "db-1", "cause": "full"}}),
            json!({"event": "resolved", "alert": {"id": 3, "kind": "cpu_busy", "subject": "web-1", "cause": "busy"}}),
        ];
        assert_eq!(
            super::super::channels::subject(&notifications),
            "fleetmon: 3 notifications (2 opened, 1 resolved)"
        );
        assert_eq!(
            super::super::channels::subject(&notifications[..1]),
            "fleetmon: [opened] check_down shop"
        );
        assert!(html(&notifications).contains("down &lt;b&gt;"));
        assert!(plain_text(&notifications).contains("[resolved] cpu_busy web-1\n  busy\n"));
    }
}

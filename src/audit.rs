//! The audit trail's events: who changed what, when, from where ([`pb::AuditEvent`]).
//! Collectors publish theirs to the audit topic; writers store them with their own in
//! `audit_log` (docs/SECURITY.md).

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::identity::PeerIdentity;
use crate::pb;

/// The content type of an audit record in Kafka.
pub const AUDIT_EVENT_CONTENT_TYPE: &str = "application/x-protobuf; message=fleetmon.v1.AuditEvent";

/// A change recorded before it is attempted ([`pb::AuditEvent::outcome`]).
pub const REQUESTED: &str = "requested";
/// A change that was made.
pub const DONE: &str = "done";
/// A change that was not made.
pub const FAILED: &str = "failed";

/// What became of `event`'s change: [`REQUESTED`], [`DONE`] (also for events without an
/// outcome, as older ones) or [`FAILED`].
pub fn outcome(event: &pb::AuditEvent) -> &str {
    if event.outcome.is_empty() {
        DONE
    } else {
        &event.outcome
    }
}

/// Who asked for a change: the operator and the address the request came from.
#[derive(Debug, Clone)]
pub struct Author {
    /// The operator.
    pub peer: PeerIdentity,
    /// Where the request came from.
    pub remote: Option<SocketAddr>,
}

impl Author {
    /// The author of `request`: the identity [`crate::access::Authorize`] verified, and
    /// its address.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, tonic::Status> {
        Ok(Author {
            peer: crate::identity::peer_identity(request)?,
            remote: request.remote_addr(),
        })
    }

    /// The event of this author doing `action` to `subject`, changing it from `before`
    /// to `after` (JSON, secrets left out; `None`: it did not exist).
    pub fn event(
        &self,
        action: &str,
        subject: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> pb::AuditEvent {
        event(&self.peer, self.remote, action, subject, before, after)
    }
}

fn event(
    actor: &PeerIdentity,
    remote: Option<SocketAddr>,
    action: &str,
    subject: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> pb::AuditEvent {
    use rand::RngCore as _;
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let json = |value: Option<serde_json::Value>| value.map(|v| v.to_string()).unwrap_or_default();
    pb::AuditEvent {
        id: crate::identity::hex(&id),
        at: Some(prost_types::Timestamp::from(SystemTime::now())),
        actor_uri: actor.uri.clone(),
        actor: actor.name.clone(),
        actor_role: actor
            .operator_role
            .map(|role| role.as_str().to_owned())
            .unwrap_or_default(),
        remote_address: remote.map(|a| a.to_string()).unwrap_or_default(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        before_json: json(before),
        after_json: json(after),
        outcome: DONE.to_owned(),
        error: String::new(),
    }
}

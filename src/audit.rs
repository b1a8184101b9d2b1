//! The audit trail's events: who changed what, when, from where ([`pb::AuditEvent`]).
//! Collectors publish theirs to the audit topic; writers store them with their own in
//! `audit_log` (docs/SECURITY.md).

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::identity::PeerIdentity;
use crate::pb;

/// The content type of an audit record in Kafka.
pub const AUDIT_EVENT_CONTENT_TYPE: &str = "application/x-protobuf; message=fleetmon.v1.AuditEvent";

/// An event: `actor` did `action` to `subject` from `remote`, changing it from `before`
/// to `after` (JSON; `None`: it did not exist).
pub fn event(
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
    }
}

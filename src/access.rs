//! Who may call what. Each server declares, once, in one table, the caller every gRPC
//! method needs ([`Rules`]); one tower layer ([`Authorize`]) enforces it on every call,
//! before any service runs, and hands the caller's [`PeerIdentity`] to the service
//! (read back with [`crate::identity::peer_identity`]). A method the table does not
//! name is refused: a new method is closed until someone decides who may call it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::identity::{IdentityError, OperatorRole, PeerIdentity, Role};

/// The caller a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// An agent certificate.
    Agent,
    /// An operator certificate of this role or a higher one.
    Operator(OperatorRole),
    /// Any fleetmon certificate (health, reflection).
    AnyPeer,
}

/// One server's table: `/package.Service/Method` for one method, or `/package.Service/`
/// for every method of a service that no exact entry names.
pub type Rules = &'static [(&'static str, Caller)];

/// The caller the call to `path` needs, if the table names it.
pub fn required(rules: Rules, path: &str) -> Option<Caller> {
    rules
        .iter()
        .find(|(rule, _)| *rule == path)
        .or_else(|| {
            rules
                .iter()
                .filter(|(rule, _)| rule.ends_with('/') && path.starts_with(rule))
                .max_by_key(|(rule, _)| rule.len())
        })
        .map(|(_, caller)| *caller)
}

/// Whether `peer` may make a call that needs `caller`: `Err` is the refusal.
pub fn check(peer: &PeerIdentity, caller: Caller, method: &str) -> Result<(), Status> {
    let method = method.trim_start_matches('/');
    match (caller, peer.role, peer.operator_role) {
        (Caller::AnyPeer, ..) | (Caller::Agent, Role::Agent, _) => Ok(()),
        (Caller::Operator(needed), Role::Operator, Some(has)) if has >= needed => Ok(()),
        (Caller::Operator(needed), Role::Operator, has) => {
            tracing::warn!(peer = %peer.uri, method, %needed, "call refused: role too low");
            Err(Status::permission_denied(format!(
                "{} may not call {method}: it needs the {needed} role, this certificate has {} (fleetmon certs issue-operator NAME --role {needed})",
                peer.uri,
                has.map_or("none", OperatorRole::as_str)
            )))
        }
        (Caller::Agent, Role::Operator, _) | (Caller::Operator(_), Role::Agent, _) => {
            let kind = if caller == Caller::Agent {
                "agent"
            } else {
                "operator"
            };
            tracing::warn!(peer = %peer.uri, method, "call refused: wrong kind of certificate");
            Err(Status::permission_denied(format!(
                "{} may not call this service (it is for {kind} certificates only)",
                peer.uri
            )))
        }
    }
}

/// The tower layer of [`Rules`]; add it with `Server::builder().layer(..)`.
#[derive(Debug, Clone, Copy)]
pub struct Authorize(pub Rules);

impl<S> tower::Layer<S> for Authorize {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorized {
            inner,
            rules: self.0,
        }
    }
}

/// The service [`Authorize`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    rules: Rules,
}

fn peer_of<B>(request: &Request<B>) -> Result<PeerIdentity, IdentityError> {
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .ok_or(IdentityError::NoCertificate)?;
    let leaf = certs.first().ok_or(IdentityError::NoCertificate)?;
    PeerIdentity::from_der(leaf.as_ref())
}

/// The decision for one call: the identity to hand on, or the refusal.
fn decide<B>(rules: Rules, request: &Request<B>) -> Result<PeerIdentity, Status> {
    let path = request.uri().path();
    let peer = peer_of(request).map_err(|error| {
        tracing::warn!(%error, path, "call without a usable identity refused");
        Status::unauthenticated(error.to_string())
    })?;
    let Some(caller) = required(rules, path) else {
        tracing::warn!(peer = %peer.uri, path, "call to a method no access rule names refused");
        return Err(Status::permission_denied(format!(
            "{path}: no access rule names this method"
        )));
    };
    check(&peer, caller, path)?;
    Ok(peer)
}

impl<S, B> tower::Service<Request<B>> for Authorized<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match decide(self.rules, &request) {
            Ok(peer) => {
                request.extensions_mut().insert(peer);
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = &[
        (
            "/fleetmon.v1.Checks/ListChecks",
            Caller::Operator(OperatorRole::Viewer),
        ),
        (
            "/fleetmon.v1.Checks/",
            Caller::Operator(OperatorRole::Editor),
        ),
        ("/fleetmon.v1.Ingest/", Caller::Agent),
    ];

    #[test]
    fn exact_methods_first_then_their_service_and_nothing_else() {
        assert_eq!(
            required(RULES, "/fleetmon.v1.Checks/ListChecks"),
            Some(Caller::Operator(OperatorRole::Viewer))
        );
        assert_eq!(
            required(RULES, "/fleetmon.v1.Checks/PauseCheck"),
            Some(Caller::Operator(OperatorRole::Editor))
        );
        assert_eq!(
            required(RULES, "/fleetmon.v1.Ingest/Stream"),
            Some(Caller::Agent)
        );
        assert_eq!(
            required(RULES, "/fleetmon.v1.Credentials/RevokeAgent"),
            None
        );
    }
}

//! What stands between a browser and the operator certificate the dashboard acts with:
//! the Host allow-list (no DNS rebinding), authentication (a session from the access
//! token, the token itself as a bearer, or, behind mutual TLS, an operator certificate),
//! CSRF defence on every state-changing request (same-origin `Origin`/`Sec-Fetch-Site`
//! and a per-session token), the role the token or certificate grants, and the security
//! headers of every response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie a browser keeps its session in.
pub(super) const SESSION_COOKIE: &str = "fleetmon_session";
/// The header the page sends its session's CSRF token in.
pub(super) const CSRF_HEADER: &str = "x-fleetmon-csrf";
/// How long a session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 1000;

/// Every response carries these.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// What the dashboard's token lets a browser do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DashboardRole {
    /// Read only: Pause/Resume are hidden and refused.
    Viewer,
    /// Read, and pause or resume checks.
    Editor,
}

/// Behind mutual TLS, the identity a connection's certificate carries (the connect
/// info of every request on it).
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The verified client certificate's identity, if one was presented.
    pub(crate) identity: Option<fleetmon::identity::PeerIdentity>,
}

/// Who a request comes from: what it may do and, for a browser, the CSRF token it must
/// send back with changes.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    /// `None` for the access token in `Authorization: Bearer` (a script: no ambient
    /// credential, so no CSRF token is needed); a browser session's, a certificate's or
    /// `--insecure-no-auth`'s token otherwise.
    csrf: Option<String>,
    role: DashboardRole,
}

impl Caller {
    /// The CSRF token the page must send back, if it is a browser.
    pub(super) fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }

    /// What it may do.
    pub(super) fn role(&self) -> DashboardRole {
        self.role
    }
}

/// What an operator certificate lets a browser do: viewers read; editors and admins
/// also pause and resume.
fn certificate_role(identity: &fleetmon::identity::PeerIdentity) -> Option<DashboardRole> {
    use fleetmon::identity::OperatorRole;
    match identity.operator_role? {
        OperatorRole::Viewer => Some(DashboardRole::Viewer),
        OperatorRole::Editor | OperatorRole::Admin => Some(DashboardRole::Editor),
    }
}

struct Session {
    csrf: String,
    expires: Instant,
}

/// The dashboard's access rules.
pub(super) struct Guard {
    /// SHA-256 of the access token; `None` with `--insecure-no-auth`.
    token_sha256: Option<[u8; 32]>,
    /// `host[:port]` values the Host header may carry, lower case.
    hosts: Vec<String>,
    /// `https` or `http`.
    scheme: &'static str,
    role: DashboardRole,
    sessions: Mutex<HashMap<String, Session>>,
    /// The CSRF token of `--insecure-no-auth` mode.
    open_csrf: String,
    /// Behind mutual TLS: a client certificate signs in.
    certificates: bool,
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    fleetmon::identity::hex(&buf)
}

fn sha256(text: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// Equal in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Guard {
    /// Rules for a dashboard served over `scheme` to `hosts`, with `token` granting
    /// `role`; with `certificates`, the client certificate of the connection signs in
    /// (with neither: open to anyone who reaches the port).
    pub(super) fn new(
        token: Option<&str>,
        hosts: Vec<String>,
        scheme: &'static str,
        role: DashboardRole,
        certificates: bool,
    ) -> Self {
        Guard {
            token_sha256: token.map(sha256),
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            scheme,
            role,
            sessions: Mutex::new(HashMap::new()),
            open_csrf: random_hex(32),
            certificates,
        }
    }

    fn token_is(&self, given: &str) -> bool {
        self.token_sha256
            .is_some_and(|expected| same(&sha256(given), &expected))
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        self.hosts.iter().any(|allowed| {
            *allowed == host
                || (self.scheme == "https" && format!("{allowed}:443") == host)
                || (self.scheme == "http" && format!("{allowed}:80") == host)
                || allowed
                    .strip_suffix(":443")
                    .is_some_and(|h| h == host && self.scheme == "https")
                || allowed
                    .strip_suffix(":80")
                    .is_some_and(|h| h == host && self.scheme == "http")
        })
    }

    fn new_session(&self) -> String {
        let id = random_hex(32);
        self.add_session(&id);
        id
    }

    /// Keeps a session `id` with a fresh CSRF token, the oldest going first when full.
    fn add_session(&self, id: &str) -> String {
        let csrf = random_hex(32);
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.to_owned(),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        csrf
    }

    /// The CSRF token of the browser holding this certificate (a session of its own,
    /// made at its first request).
    fn certificate_session(&self, identity: &fleetmon::identity::PeerIdentity) -> String {
        let id = format!("certificate {} {}", identity.uri, identity.serial);
        self.session(&id).unwrap_or_else(|| self.add_session(&id))
    }

    fn session(&self, id: &str) -> Option<String> {
        let sessions = self.sessions.lock().expect("sessions lock");
        let session = sessions.get(id)?;
        (session.expires > Instant::now()).then(|| session.csrf.clone())
    }

    /// Who is calling (the connection's verified certificate, then the token), or
    /// why nobody is.
    fn caller(
        &self,
        headers: &HeaderMap,
        certificate: Option<&fleetmon::identity::PeerIdentity>,
    ) -> Result<Caller, Refusal> {
        if self.certificates {
            let identity = certificate.ok_or_else(|| {
                Refusal(
                    StatusCode::UNAUTHORIZED,
                    "this dashboard signs in with a client certificate: present an operator certificate".to_owned(),
                )
            })?;
            let role = certificate_role(identity).ok_or_else(|| {
                Refusal(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} is not an operator: sign in with an operator certificate (fleetmon certs issue-operator NAME --role viewer)",
                        identity.uri
                    ),
                )
            })?;
            return Ok(Caller {
                csrf: Some(self.certificate_session(identity)),
                role,
            });
        }
        if self.token_sha256.is_none() {
            return Ok(Caller {
                csrf: Some(self.open_csrf.clone()),
                role: self.role,
            });
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|t| self.token_is(t)) {
            return Ok(Caller {
                csrf: None,
                role: self.role,
            });
        }
        cookie(headers, SESSION_COOKIE)
            .and_then(|id| self.session(&id))
            .map(|csrf| Caller {
                csrf: Some(csrf),
                role: self.role,
            })
            .ok_or_else(|| {
                Refusal(
                    StatusCode::UNAUTHORIZED,
                    "this dashboard needs its access token: open the address `fleetmon dashboard` printed (/?token=…)".to_owned(),
                )
            })
    }

    /// Why a state-changing request from `caller` is refused, if it is.
    fn refuse_change(&self, caller: &Caller, headers: &HeaderMap) -> Option<Response> {
        let Some(csrf) = caller.csrf() else {
            return refuse_role(caller);
        };
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let fetch_site = text("sec-fetch-site");
        let origin = text("origin");
        let host = text("host").unwrap_or_default().to_ascii_lowercase();
        let own_origin = format!("{}://{host}", self.scheme);
        let same_origin = match (fetch_site, origin) {
            (None, None) => false,
            (site, origin) => {
                site.is_none_or(|s| s == "same-origin")
                    && origin.is_none_or(|o| o.eq_ignore_ascii_case(&own_origin))
            }
        };
        if !same_origin {
            return Some(refusal(
                StatusCode::FORBIDDEN,
                &format!(
                    "cross-site request refused: changes are accepted from {own_origin} pages only (Origin {}, Sec-Fetch-Site {})",
                    origin.unwrap_or("absent"),
                    fetch_site.unwrap_or("absent")
                ),
            ));
        }
        if !text(CSRF_HEADER).is_some_and(|given| same(given.as_bytes(), csrf.as_bytes())) {
            return Some(refusal(
                StatusCode::FORBIDDEN,
                "missing or stale CSRF token: reload the page",
            ));
        }
        refuse_role(caller)
    }
}

/// The refusal of a change to a viewer.
fn refuse_role(caller: &Caller) -> Option<Response> {
    (caller.role == DashboardRole::Viewer).then(|| {
        refusal(
            StatusCode::FORBIDDEN,
            "you are a viewer here: pausing and resuming checks need an editor (an operator certificate with --role editor, or a dashboard started with --token-role editor)",
        )
    })
}

/// A request refused: its status and why.
struct Refusal(StatusCode, String);

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
}

/// The token in `/?token=…`, if that is what `request` is.
fn login_token(request: &Request) -> Option<String> {
    if request.uri().path() != "/" {
        return None;
    }
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_owned)
}

/// The middleware: Host, then authentication, then (for changes) CSRF and role; every
/// answer gets the security headers.
pub(super) async fn guard(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = check(&guard, request, next).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn check(guard: &Guard, mut request: Request, next: Next) -> Response {
    if !guard.host_allowed(request.headers()) {
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "this dashboard answers to {}: open it by one of those names (--allowed-host adds one)",
                guard.hosts.join(", ")
            ),
        );
    }
    // With --insecure-no-auth or behind mutual TLS there is no token to log in with:
    // `?token=` is ignored.
    if guard.token_sha256.is_some()
        && !guard.certificates
        && let Some(token) = login_token(&request)
    {
        if !guard.token_is(&token) {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "wrong access token: open the address `fleetmon dashboard` printed",
            );
        }
        // The token leaves the address bar (and history) at once.
        let secure = if guard.scheme == "https" {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
            guard.new_session(),
            SESSION_LIFETIME.as_secs()
        );
        let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    let certificate = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .and_then(|peer| peer.0.identity.clone());
    let caller = match guard.caller(request.headers(), certificate.as_ref()) {
        Ok(caller) => caller,
        Err(Refusal(status, message)) => return refusal(status, &message),
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && let Some(refused) = guard.refuse_change(&caller, request.headers()) {
        return refused;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        let guard = Guard::new(
            Some("s3cret"),
            vec!["127.0.0.1:8080".into()],
            "http",
            DashboardRole::Editor,
            false,
        );
        assert!(guard.token_is("s3cret"));
        assert!(!guard.token_is("s3cre"));
    }

    #[test]
    fn hosts_match_with_or_without_the_default_port() {
        let guard = Guard::new(
            None,
            vec!["dash.example:443".into(), "127.0.0.1:8080".into()],
            "https",
            DashboardRole::Editor,
            false,
        );
        let host = |h: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(h).unwrap());
            guard.host_allowed(&headers)
        };
        assert!(host("dash.example"));
        assert!(host("DASH.example:443"));
        assert!(host("127.0.0.1:8080"));
        assert!(!host("evil.example"));
        assert!(!host("127.0.0.1:8081"));
    }
}

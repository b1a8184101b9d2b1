//! `fleetmon dashboard`: a web page of the fleet, its checks and alerts, served by the
//! operator CLI. The CLI holds the operator certificate and speaks gRPC to the
//! collector and the writer; the browser only ever talks to it (like `kubectl proxy`).
//!
//! The page (`dashboard/index.html`, `app.js`, `app.css`) and uPlot are compiled into
//! the binary. Live values come from `Fleet/WatchLatest` as Server-Sent Events; history,
//! availability, alerts and checks from JSON endpoints under `/api/`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use fleetmon::pb::alerts_client::AlertsClient;
use fleetmon::pb::audit_client::AuditClient;
use fleetmon::pb::checks_client::ChecksClient;
use fleetmon::pb::fleet_client::FleetClient;
use fleetmon::pb::history_client::HistoryClient;
use fleetmon::pb::{
    CheckRef, HostSample, HostSeriesRequest, ListAlertsRequest, ListAuditEventsRequest,
    ListChecksRequest, ListMaintenanceRequest, MaintenanceWindow, SiteCheck, TimeRange,
    WatchLatestRequest, watch_event,
};
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use super::Connection;

mod guard;

use guard::{Caller, DashboardRole, Guard, Peer};

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");
const UPLOT_JS: &str = include_str!("dashboard/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("dashboard/vendor/uPlot.min.css");

/// Live views (`/api/events` streams) served at once by default.
const DEFAULT_MAX_LIVE_VIEWS: usize = 32;

/// `fleetmon dashboard`'s flags.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Where the page is served. Beyond loopback it needs --tls-cert, --tls-key and --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Server certificate (PEM) for HTTPS.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The access token (open `/?token=SECRET` once: a session cookie keeps you in;
    /// scripts send `Authorization: Bearer SECRET`). Without it one is made up and the
    /// address to open is printed.
    #[arg(long, env = "FLEETMON_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// What the token lets a browser do: `viewer` hides and refuses Pause/Resume.
    #[arg(long, value_enum, default_value = "editor")]
    token_role: DashboardRole,
    /// Another host name browsers reach the dashboard by (repeatable), e.g.
    /// `dash.example.com` behind a proxy; any other Host header is refused.
    #[arg(long = "allowed-host", value_name = "HOST[:PORT]")]
    allowed_hosts: Vec<String>,
    /// Serve without any authentication, on loopback only: any program or user on
    /// this machine can then pause checks with your operator certificate.
    #[arg(long, conflicts_with_all = ["token", "client_ca"])]
    insecure_no_auth: bool,
    /// Require a client certificate chained to this CA (the fleet's `ca.pem`): a
    /// browser signs in with an operator certificate, whose role decides what it may do
    /// (viewer: read; editor or admin: also pause and resume). No token is needed.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    client_ca: Option<PathBuf>,
    /// Live views (browser tabs following `/api/events`) served at once.
    #[arg(long, default_value_t = DEFAULT_MAX_LIVE_VIEWS)]
    max_live_views: usize,
    #[command(flatten)]
    connection: Connection,
}

struct Servers {
    fleet: FleetClient<Channel>,
    history: HistoryClient<Channel>,
    alerts: AlertsClient<Channel>,
    audit: AuditClient<Channel>,
    checks: ChecksClient<Channel>,
    live_views: Arc<tokio::sync::Semaphore>,
    max_live_views: usize,
}

type Shared = Arc<Servers>;

/// The refusal to listen beyond loopback without TLS and a token, or `None`.
fn exposure_error(args: &DashboardArgs) -> Option<String> {
    if args.listen.ip().is_loopback() {
        return None;
    }
    if args.insecure_no_auth {
        return Some(format!(
            "--insecure-no-auth is for loopback only, and --listen {} is not: give --token",
            args.listen
        ));
    }
    let missing: Vec<&str> = [
        (args.tls_cert.is_none(), "--tls-cert"),
        (args.tls_key.is_none(), "--tls-key"),
        (
            args.token.is_none() && args.client_ca.is_none(),
            "--token (or FLEETMON_DASHBOARD_TOKEN) or --client-ca",
        ),
    ]
    .into_iter()
    .filter_map(|(absent, flag)| absent.then_some(flag))
    .collect();
    if !missing.is_empty() {
        return Some(format!(
            "--listen {} is not a loopback address: the dashboard acts with the operator certificate, so beyond loopback it needs {}",
            args.listen,
            missing.join(", ")
        ));
    }
    (args.listen.ip().is_unspecified() && args.allowed_hosts.is_empty()).then(|| {
        format!(
            "--listen {} answers on every address: name the host names browsers use with --allowed-host (e.g. --allowed-host dash.example.com), so that no other name (DNS rebinding) is served",
            args.listen
        )
    })
}

/// Serves the dashboard until Ctrl-C.
pub(crate) async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    if let Some(refusal) = exposure_error(&args) {
        anyhow::bail!(refusal);
    }
    let files = args.connection.tls();
    let collector = fleetmon::tls::endpoint(&args.connection.collector, &files)?.connect_lazy();
    let writer = fleetmon::tls::endpoint(&args.connection.writer, &files)?.connect_lazy();
    let https = args.tls_cert.is_some() && args.tls_key.is_some();
    let scheme = if https { "https" } else { "http" };
    // No token given: one is made up, and the address to open carries it (behind
    // mutual TLS the certificate signs in instead).
    let token = match (&args.token, args.insecure_no_auth) {
        (_, true) => None,
        (Some(token), false) => Some(token.clone()),
        (None, false) if args.client_ca.is_some() => None,
        (None, false) => {
            use rand::RngCore as _;
            let mut bytes = [0u8; 24];
            rand::rng().fill_bytes(&mut bytes);
            Some(fleetmon::identity::hex(&bytes))
        }
    };
    let guard = Arc::new(Guard::new(
        token.as_deref(),
        allowed_hosts(&args),
        scheme,
        args.token_role,
        args.client_ca.is_some(),
    ));
    let servers = Arc::new(Servers {
        fleet: FleetClient::new(collector.clone()),
        history: HistoryClient::new(writer.clone()),
        alerts: AlertsClient::new(writer.clone()),
        audit: AuditClient::new(writer),
        checks: ChecksClient::new(collector),
        live_views: Arc::new(tokio::sync::Semaphore::new(args.max_live_views)),
        max_live_views: args.max_live_views,
    });
    let app = Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route("/app.js", get(|| asset("text/javascript", APP_JS)))
        .route("/app.css", get(|| asset("text/css", APP_CSS)))
        .route(
            "/vendor/uPlot.js",
            get(|| asset("text/javascript", UPLOT_JS)),
        )
        .route("/vendor/uPlot.css", get(|| asset("text/css", UPLOT_CSS)))
        .route("/api/fleet", get(fleet))
        .route("/api/events", get(events))
        .route("/api/series/{agent}", get(series))
        .route("/api/sites", get(sites))
        .route("/api/alerts", get(alerts))
        .route("/api/report", get(report))
        .route("/api/audit", get(audit))
        .route("/api/checks", get(checks))
        .route("/api/checks/{id}/{action}", post(pause_or_resume))
        .route("/api/session", get(session))
        .with_state(servers)
        .layer(axum::middleware::from_fn_with_state(guard, guard::guard));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let stop = async {
        // Without a Ctrl-C handler (an error) the dashboard stops at once rather than
        // run unstoppable.
        let _ = tokio::signal::ctrl_c().await;
    };
    let open = match &token {
        Some(token) => format!("{scheme}://{addr}/?token={token}"),
        None if args.client_ca.is_some() => format!(
            "{scheme}://{addr}/ (sign in with an operator certificate issued under {})",
            args.client_ca
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        ),
        None => format!(
            "{scheme}://{addr}/ — NO AUTHENTICATION (--insecure-no-auth): any program or user on this machine can use it"
        ),
    };
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let config = https_config(cert, key, args.client_ca.as_deref())?;
            println!("dashboard: {open}");
            let incoming = TlsListener::new(listener, config);
            axum::serve(incoming, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stop)
                .await?;
        }
        _ => {
            println!("dashboard: {open}");
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?;
        }
    }
    Ok(())
}

/// HTTPS with `cert` and `key`; with `client_ca`, a client certificate chained to it
/// is required (verified as every fleetmon server verifies one).
pub(super) fn https_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = match client_ca {
        Some(client_ca) => (*fleetmon::tls::server_config(&fleetmon::tls::ServerTlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            client_ca: client_ca.to_owned(),
            crl: None,
            reload_interval_seconds: 0,
        })?)
        .clone(),
        None => {
            let certs = fleetmon::tls::read_certs("dashboard certificate", cert)?;
            let key = fleetmon::tls::read_key("dashboard key", key)?;
            rustls::ServerConfig::builder_with_provider(fleetmon::tls::crypto_provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// TCP connections with their TLS handshake done, for `axum::serve`.
pub(super) struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsListener {
    pub(super) fn new(tcp: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let identity = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|leaf| {
                            fleetmon::identity::PeerIdentity::from_der(leaf.as_ref()).ok()
                        });
                    return (stream, Peer { identity });
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "dashboard tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "dashboard tls handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()?;
        Ok(Peer { identity: None })
    }
}

/// The Host values the dashboard answers to: its listen address (and the loopback
/// names of its port), and every `--allowed-host` (with and without the port).
fn allowed_hosts(args: &DashboardArgs) -> Vec<String> {
    let port = args.listen.port();
    let mut hosts = Vec::new();
    if !args.listen.ip().is_unspecified() {
        hosts.push(args.listen.to_string());
    }
    if args.listen.ip().is_loopback() {
        hosts.extend([
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ]);
    }
    for host in &args.allowed_hosts {
        hosts.push(host.clone());
        if !host.contains(':') {
            hosts.push(format!("{host}:{port}"));
        }
    }
    // The listen address is one of the loopback names too: each once, in order.
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|host| seen.insert(host.clone()));
    hosts
}

/// `GET /api/session`: the CSRF token the page sends with changes, and its role.
/// Same-origin pages only can read it (no CORS headers are ever sent).
async fn session(axum::Extension(caller): axum::Extension<Caller>) -> Response {
    json_response(json!({
        "csrf": caller.csrf(),
        "role": caller.role(),
        "csrf_header": guard::CSRF_HEADER,
    }))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The query string as key → value (no percent-decoding beyond `+`; values here are
/// ids, ranges and tokens).
fn query(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn json_response(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn upstream(call: &str, status: tonic::Status) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        format!("{call}: {:?}: {}\n", status.code(), status.message()),
    )
        .into_response()
}

fn millis(t: Option<prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn host_json(agent_id: &str, h: &HostSample) -> Value {
    json!({
        "agent_id": agent_id,
        "sampled_at": millis(h.sampled_at),
        "hostname": h.hostname,
        "cpu_percent": h.cpu_usage_percent,
        "memory_used_bytes": h.memory_used_bytes,
        "memory_total_bytes": h.memory_total_bytes,
        "disk_used_bytes": h.disk_used_bytes,
        "disk_total_bytes": h.disk_total_bytes,
        "load_1m": h.load_average_1m,
        "load_5m": h.load_average_5m,
        "load_15m": h.load_average_15m,
        "rx_bytes_per_second": h.network_rx_bytes_per_second,
        "tx_bytes_per_second": h.network_tx_bytes_per_second,
        "interval_seconds": h.interval_seconds,
        "processes": h.processes.iter().map(|p| json!({
            "pid": p.pid,
            "name": p.name,
            "user": p.user,
            "command_line": p.command_line,
            "cpu_percent": p.cpu_usage_percent,
            "resident_bytes": p.resident_bytes,
            "threads": p.threads,
            "started_at": millis(p.started_at),
            "cpu_rank": p.cpu_rank,
            "memory_rank": p.memory_rank,
        })).collect::<Vec<_>>(),
    })
}

fn site_json(agent_id: &str, s: &SiteCheck) -> Value {
    json!({
        "agent_id": agent_id,
        "checked_at": millis(s.checked_at),
        "url": s.url,
        "check_id": s.check_id,
        "ok": s.ok,
        "status_code": s.status_code,
        "failure": fleetmon::check_failure::name_of(s.failure).unwrap_or_default(),
        "error": s.error_message,
        "response_time_ms": s.response_time_ms,
        "tls_cert_not_after": millis(s.tls_cert_not_after),
    })
}

/// Every agent with its labels and latest host sample and site results.
async fn fleet(State(servers): State<Shared>) -> Response {
    let mut fleet = servers.fleet.clone();
    let agents = match super::queries::every_agent(&mut fleet).await {
        Ok(agents) => agents,
        Err(status) => return upstream("Fleet/ListAgents", status),
    };
    let latest = match super::queries::every_latest(&mut fleet).await {
        Ok(latest) => latest,
        Err(status) => return upstream("Fleet/GetLatest", status),
    };
    let latest: HashMap<&str, &fleetmon::pb::AgentLatest> =
        latest.iter().map(|l| (l.agent_id.as_str(), l)).collect();
    let agents: Vec<Value> = agents
        .iter()
        .map(|a| {
            let latest = latest.get(a.agent_id.as_str());
            json!({
                "agent_id": a.agent_id,
                "hostname": a.hostname,
                "connected": a.connected,
                "last_sample_at": millis(a.last_sample_at),
                "labels": a.labels,
                "host": latest.and_then(|l| l.host.as_ref()).map(|h| host_json(&a.agent_id, h)),
                "sites": latest.map(|l| l.sites.iter().map(|s| site_json(&a.agent_id, s)).collect::<Vec<_>>()).unwrap_or_default(),
            })
        })
        .collect();
    json_response(json!({ "now": millis(Some(SystemTime::now().into())), "agents": agents }))
}

/// Every acknowledged sample, as it arrives: `host` and `site` events. At most
/// `--max-live-views` at once; the view's place is freed when its browser leaves.
async fn events(State(servers): State<Shared>) -> Response {
    let Ok(place) = servers.live_views.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} live views are open already: close another dashboard tab (--max-live-views)\n",
                servers.max_live_views
            ),
        )
            .into_response();
    };
    let mut fleet = servers.fleet.clone();
    let stream = match fleet.watch_latest(WatchLatestRequest::default()).await {
        Ok(response) => response.into_inner(),
        Err(status) => return upstream("Fleet/WatchLatest", status),
    };
    let events = stream.map_while(move |event| {
        let _place = &place;
        let event = event.ok()?;
        Some(Ok::<_, Infallible>(match event.kind {
            Some(watch_event::Kind::Host(h)) => Event::default()
                .event("host")
                .data(host_json(&h.agent_id, &h).to_string()),
            Some(watch_event::Kind::Site(s)) => Event::default()
                .event("site")
                .data(site_json(&s.agent_id, &s).to_string()),
            None => Event::default().comment("empty"),
        }))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `1h`, `24h`, `7d`, `30d`, `1y` as a duration and a chart step. Steps of whole
/// minutes, hours or days read host rollups (History picks the tier): only the
/// hour's chart reads raw rows.
fn range_of(text: Option<&String>) -> (Duration, u32) {
    match text.map(String::as_str) {
        Some("24h") => (Duration::from_secs(86_400), 300),
        Some("7d") => (Duration::from_secs(7 * 86_400), 3600),
        Some("30d") => (Duration::from_secs(30 * 86_400), 3 * 3600),
        Some("1y") => (Duration::from_secs(365 * 86_400), 86_400),
        _ => (Duration::from_secs(3600), 10),
    }
}

fn since(ago: Duration) -> Option<TimeRange> {
    Some(TimeRange {
        start: Some((SystemTime::now() - ago).into()),
        end: None,
    })
}

/// One agent's host series: columns for the charts.
async fn series(State(servers): State<Shared>, Path(agent): Path<String>, uri: Uri) -> Response {
    let (ago, step) = range_of(query(&uri).get("range"));
    let mut history = servers.history.clone();
    let series = match history
        .get_host_series(HostSeriesRequest {
            agent_id: agent.clone(),
            range: since(ago),
            step_seconds: step,
        })
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return upstream("History/GetHostSeries", status),
    };
    let column = |f: fn(&fleetmon::pb::HostSeriesPoint) -> f64| -> Vec<f64> {
        series.points.iter().map(f).collect()
    };
    json_response(json!({
        "agent_id": agent,
        "step_seconds": series.step_seconds,
        "resolution": series.resolution,
        "t": series.points.iter().map(|p| p.bucket_start.map_or(0, |t| t.seconds)).collect::<Vec<_>>(),
        "cpu_percent": column(|p| p.cpu_usage_percent),
        "memory_used_bytes": column(|p| p.memory_used_bytes),
        "disk_used_bytes": column(|p| p.disk_used_bytes),
        "load_1m": column(|p| p.load_average_1m),
        "rx_bytes_per_second": column(|p| p.network_rx_bytes_per_second),
        "tx_bytes_per_second": column(|p| p.network_tx_bytes_per_second),
    }))
}

/// Availability of every stored site over `?range=` (24h, 7d, 30d).
async fn sites(State(servers): State<Shared>, uri: Uri) -> Response {
    let range = query(&uri).get("range").cloned();
    let (ago, _) = range_of(range.as_ref().or(Some(&"24h".to_owned())));
    let mut history = servers.history.clone();
    match super::queries::every_site(&mut history, "", since(ago)).await {
        Ok(sites) => json_response(Value::from(
            sites
                .iter()
                .map(|s| {
                    json!({
                        "url": s.url,
                        "checks": s.checks,
                        "uptime_percent": s.uptime_percent,
                        "p50_ms": s.response_time_p50_ms,
                        "p95_ms": s.response_time_p95_ms,
                        "avg_ms": s.response_time_avg_ms,
                        "status_codes": s.status_codes,
                    })
                })
                .collect::<Vec<_>>(),
        )),
        Err(status) => upstream("History/GetSiteAvailability", status),
    }
}

/// The availability report over `?from=&to=` (dates or RFC 3339 times, as the CLI
/// takes them), optionally of one `&check=`; `&format=csv` for CSV.
async fn report(State(servers): State<Shared>, uri: Uri) -> Response {
    let query = query(&uri);
    let time = |field: &str| -> Result<prost_types::Timestamp, String> {
        let text = query
            .get(field)
            .ok_or_else(|| format!("{field} is required: a date such as 2026-11-01"))?;
        super::table::parse_time(text, true).map_err(|e| format!("{field}: {e}"))
    };
    let (from, to) = match (time("from"), time("to")) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(error), _) | (_, Err(error)) => {
            return (StatusCode::BAD_REQUEST, error + "\n").into_response();
        }
    };
    let checks: Vec<String> = query
        .get("check")
        .filter(|c| !c.is_empty())
        .map(|c| vec![c.clone()])
        .unwrap_or_default();
    let mut history = servers.history.clone();
    match history
        .get_availability_report(super::report::request(from, to, checks))
        .await
    {
        Ok(response) if query.get("format").is_some_and(|f| f == "csv") => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            super::report::csv(&response.into_inner()),
        )
            .into_response(),
        Ok(response) => json_response(super::report::report_json(&response.into_inner())),
        Err(status) => upstream("History/GetAvailabilityReport", status),
    }
}

/// Open alerts, newest first.
async fn alerts(State(servers): State<Shared>) -> Response {
    let mut alerts = servers.alerts.clone();
    match alerts
        .list_alerts(ListAlertsRequest {
            open_only: true,
            limit: 0,
        })
        .await
    {
        Ok(response) => json_response(Value::from(
            response
                .into_inner()
                .alerts
                .iter()
                .map(|a| {
                    json!({
                        "id": a.id, "kind": a.kind, "subject": a.subject, "cause": a.cause,
                        "locations": a.locations, "opened_at": millis(a.opened_at),
                        "silenced": a.silenced,
                    })
                })
                .collect::<Vec<_>>(),
        )),
        Err(status) => upstream("Alerts/ListAlerts", status),
    }
}

/// The operators' changes of the last 24 hours, newest first (`Audit/ListAuditEvents`).
async fn audit(State(servers): State<Shared>) -> Response {
    let mut audit = servers.audit.clone();
    let since = SystemTime::now() - Duration::from_secs(86_400);
    let request = ListAuditEventsRequest {
        since: Some(since.into()),
        actor: String::new(),
        limit: 50,
    };
    match audit.list_audit_events(request).await {
        Ok(response) => json_response(Value::from(
            response
                .into_inner()
                .events
                .iter()
                .map(|e| {
                    json!({
                        "at": millis(e.at), "actor": e.actor, "role": e.actor_role,
                        "action": e.action, "subject": e.subject, "from": e.remote_address,
                    })
                })
                .collect::<Vec<_>>(),
        )),
        Err(status) => upstream("Audit/ListAuditEvents", status),
    }
}

/// The central checks with each agent's state.
async fn checks(State(servers): State<Shared>) -> Response {
    let mut checks = servers.checks.clone();
    // Active maintenance windows mark the checks and locations they cover; without the
    // writer the checks still show, unmarked.
    let windows: Vec<MaintenanceWindow> = servers
        .alerts
        .clone()
        .list_maintenance(ListMaintenanceRequest {})
        .await
        .map(|r| r.into_inner().windows)
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.active)
        .collect();
    // A window by labels covers the locations whose agents carry them (the labels of
    // the tokens they enrolled with, which the writer mirrors too).
    let labels: HashMap<String, HashMap<String, String>> =
        if windows.iter().any(|w| !w.labels.is_empty()) {
            let mut fleet = servers.fleet.clone();
            super::queries::every_agent(&mut fleet)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|a| (a.agent_id, a.labels))
                .collect()
        } else {
            HashMap::new()
        };
    let window_json = |w: &MaintenanceWindow| json!({"id": w.id, "reason": w.reason});
    let whole_check = |id: &str| {
        windows
            .iter()
            .find(|w| w.check_id == id && w.agent_id.is_empty() && w.labels.is_empty())
            .map(window_json)
    };
    let location = |id: &str, agent: &str| {
        let carries = |w: &MaintenanceWindow| {
            fleetmon::labels::includes(&w.labels, |k| labels.get(agent).and_then(|l| l.get(k)))
        };
        windows
            .iter()
            .find(|w| {
                (w.check_id.is_empty() || w.check_id == id)
                    && (w.agent_id == agent || (w.agent_id.is_empty() && !w.labels.is_empty()))
                    && carries(w)
            })
            .map(window_json)
    };
    match checks.list_checks(ListChecksRequest {}).await {
        Ok(response) => json_response(Value::from(
            response
                .into_inner()
                .checks
                .iter()
                .map(|status| {
                    let check = status.check.clone().unwrap_or_default();
                    let (_, target) = fleetmon::checks::kind_and_target(&check);
                    json!({
                        "id": check.id, "version": check.version, "paused": check.paused,
                        "target": target,
                        "maintenance": whole_check(&check.id),
                        "agents": status.agents.iter().map(|a| json!({
                            "agent_id": a.agent_id, "connected": a.connected,
                            "applied_version": a.applied_version, "error": a.error,
                            "last": a.last_result.as_ref().map(|r| site_json(&a.agent_id, r)),
                            "maintenance": location(&check.id, &a.agent_id),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect::<Vec<_>>(),
        )),
        Err(status) => upstream("Checks/ListChecks", status),
    }
}

/// `POST /api/checks/{id}/pause` or `…/resume`.
async fn pause_or_resume(
    State(servers): State<Shared>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let mut checks = servers.checks.clone();
    let result = match action.as_str() {
        "pause" => checks.pause_check(CheckRef { id }).await,
        "resume" => checks.resume_check(CheckRef { id }).await,
        _ => return (StatusCode::NOT_FOUND, "pause or resume\n").into_response(),
    };
    match result {
        Ok(status) => {
            let check = status.into_inner().check.unwrap_or_default();
            json_response(json!({"id": check.id, "version": check.version, "paused": check.paused}))
        }
        Err(status) => upstream("Checks/PauseCheck", status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: DashboardArgs,
    }

    #[test]
    fn beyond_loopback_it_needs_tls_and_a_token() {
        let args = |line: &[&str]| {
            Cli::try_parse_from([&["dashboard"], line].concat())
                .unwrap()
                .args
        };
        assert_eq!(exposure_error(&args(&[])), None);
        assert_eq!(
            exposure_error(&args(&["--listen", "0.0.0.0:8080"])).unwrap(),
            "--listen 0.0.0.0:8080 is not a loopback address: the dashboard acts with the operator certificate, so beyond loopback it needs --tls-cert, --tls-key, --token (or FLEETMON_DASHBOARD_TOKEN) or --client-ca"
        );
        let exposed = [
            "--listen",
            "0.0.0.0:8080",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--token",
            "s",
        ];
        assert_eq!(
            exposure_error(&args(&exposed)).unwrap(),
            "--listen 0.0.0.0:8080 answers on every address: name the host names browsers use with --allowed-host (e.g. --allowed-host dash.example.com), so that no other name (DNS rebinding) is served"
        );
        assert_eq!(
            exposure_error(&args(
                &[&exposed[..], &["--allowed-host", "dash.example.com"]].concat()
            )),
            None
        );
        assert_eq!(
            exposure_error(&args(&["--listen", "10.0.0.5:8080", "--insecure-no-auth"])).unwrap(),
            "--insecure-no-auth is for loopback only, and --listen 10.0.0.5:8080 is not: give --token"
        );
    }
}

//! `fleetmon status-page --config status.toml`: public status pages, safe to put on the
//! internet. Read-only and without login: it holds no certificate the servers would
//! accept and reads PostgreSQL as a role that can only read (it refuses to start as
//! one that can write). Only the checks a page lists appear, by the names it gives.
//!
//! One task reads a snapshot every `refresh_seconds` and renders every answer once
//! (HTML, JSON, feed, badges; each also gzip-compressed, with an `ETag`); requests are
//! served from the latest rendering, so a traffic spike never reaches the database.
//! When a reading fails, the last one keeps being served and the failure is logged.

mod config;
mod render;
mod snapshot;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use sha2::Digest as _;
use tokio::sync::watch;

use config::StatusConfig;

const STATUS_CSS: &str = include_str!("status.css");
const STATUS_JS: &str = include_str!("status.js");
const CAN_WRITE: &str = include_str!("sql/can_write.sql");

/// `fleetmon status-page`'s flags.
#[derive(Debug, Args)]
pub(crate) struct StatusPageArgs {
    /// The config file (`deploy/etc/status-page.toml` shows every key); `FLEETMON_STATUS__…`
    /// variables override its keys, e.g. `FLEETMON_STATUS__POSTGRES__URL`.
    #[arg(long, env = "FLEETMON_STATUS_CONFIG")]
    config: PathBuf,
    /// Where to serve (overrides `listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Log format.
    #[arg(long, env = "FLEETMON_LOG_FORMAT", default_value = "text")]
    log_format: fleetmon::telemetry::LogFormat,
}

/// One answer, rendered once: its body, gzip-compressed body, entity tag and cache
/// lifetime. Bodies are `Bytes`, so answering shares them rather than copying.
struct Rendered {
    content_type: &'static str,
    body: Bytes,
    gzip: Bytes,
    etag: HeaderValue,
    cache_control: HeaderValue,
}

impl Rendered {
    fn new(content_type: &'static str, body: Vec<u8>, cache_control: &HeaderValue) -> Self {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to a Vec cannot fail.
        let gzip = encoder
            .write_all(&body)
            .and_then(|()| encoder.finish())
            .unwrap_or_default();
        let digest = sha2::Sha256::digest(&body);
        let etag =
            HeaderValue::from_str(&format!("\"{}\"", fleetmon::identity::hex(&digest[..12])))
                .expect("hex is a valid header value");
        Rendered {
            content_type,
            body: Bytes::from(body),
            gzip: Bytes::from(gzip),
            etag,
            cache_control: cache_control.clone(),
        }
    }

    /// The answer to a request with `headers`: 304 when its tag matches, gzip when
    /// accepted.
    fn respond(&self, headers: &HeaderMap) -> Response {
        let matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|tags| {
                tags.split(',').any(|tag| {
                    tag.trim() == self.etag.to_str().unwrap_or_default() || tag.trim() == "*"
                })
            });
        let common = [
            (header::ETAG, self.etag.clone()),
            (header::CACHE_CONTROL, self.cache_control.clone()),
            (header::VARY, HeaderValue::from_static("accept-encoding")),
            // Its own script and style only; never sniffed as another type.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ];
        if matches {
            return (StatusCode::NOT_MODIFIED, common).into_response();
        }
        let gzip = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accepted| accepted.split(',').any(|e| e.trim().starts_with("gzip")));
        let content_type = HeaderValue::from_static(self.content_type);
        if gzip {
            (
                common,
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                ],
                Body::from(self.gzip.clone()),
            )
                .into_response()
        } else {
            (
                common,
                [(header::CONTENT_TYPE, content_type)],
                Body::from(self.body.clone()),
            )
                .into_response()
        }
    }
}

/// Every answer of every page, by request path.
#[derive(Default)]
struct Site {
    answers: HashMap<String, Rendered>,
}

/// Renders every page of `config` from `snapshot`.
fn render_site(config: &StatusConfig, snapshot: &snapshot::Snapshot) -> Site {
    let mut answers = HashMap::new();
    // Proxies and browsers may keep an answer until the next reading.
    let cache = HeaderValue::from_str(&format!("public, max-age={}", config.refresh_seconds))
        .expect("a valid header value");
    let rendered = |content_type, body: Vec<u8>| Rendered::new(content_type, body, &cache);
    let public_url = config
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    for page in &config.pages {
        let base = page.path.trim_end_matches('/');
        let html = render::html(page, snapshot, config.refresh_seconds);
        let json = render::json(page, snapshot).to_string();
        let atom = render::atom(page, snapshot, public_url);
        answers.insert(
            if base.is_empty() {
                "/".to_owned()
            } else {
                base.to_owned()
            },
            rendered("text/html; charset=utf-8", html.into_bytes()),
        );
        answers.insert(
            format!("{base}/api/v1/status.json"),
            rendered("application/json", json.into_bytes()),
        );
        answers.insert(
            format!("{base}/feed.atom"),
            rendered("application/atom+xml; charset=utf-8", atom.into_bytes()),
        );
        for check in page.groups.iter().flat_map(|g| &g.checks) {
            let status = snapshot.checks.get(&check.id);
            answers.insert(
                format!("{base}/badge/{}/status.svg", check.id),
                rendered("image/svg+xml", render::status_badge(status).into_bytes()),
            );
            answers.insert(
                format!("{base}/badge/{}/uptime-30d.svg", check.id),
                rendered("image/svg+xml", render::uptime_badge(status).into_bytes()),
            );
        }
    }
    answers.insert(
        "/static/status.css".to_owned(),
        rendered("text/css", STATUS_CSS.as_bytes().to_vec()),
    );
    answers.insert(
        "/static/status.js".to_owned(),
        rendered("text/javascript", STATUS_JS.as_bytes().to_vec()),
    );
    Site { answers }
}

/// Any GET: the rendered answer at its path, or 404.
async fn answer(
    State(site): State<watch::Receiver<Arc<Site>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let site = site.borrow().clone();
    let path = uri.path();
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    match site.answers.get(path) {
        Some(rendered) => rendered.respond(&headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response(),
    }
}

/// Connects to PostgreSQL as `config` says, with the writer's schema as the search
/// path and every transaction read-only. A server that cannot be reached is waited for
/// (logged, with backoff up to 30 s); one that answers and refuses ends the start with
/// what to change.
async fn connect(config: &StatusConfig) -> anyhow::Result<tokio_postgres::Client> {
    let files = config.postgres.tls_files();
    let (mode, mut pg) = files
        .config()
        .context("`postgres.url` is not a PostgreSQL URL")?;
    pg.options(format!(
        "-c search_path={} -c default_transaction_read_only=on",
        config.postgres.schema
    ));
    pg.application_name("fleetmon-status-page");
    pg.connect_timeout(Duration::from_secs(10));
    let connector = fleetmon::postgres::connector(mode, &files)?;
    let address = fleetmon::redact::url(&config.postgres.url);
    let mut retries =
        fleetmon::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).retries();
    let (client, connection) = loop {
        match pg.connect(connector.clone()).await {
            Ok(connected) => break connected,
            Err(error) => {
                let reason = fleetmon::postgres::describe(&error);
                // No answer from the server (nothing listens, or it is starting): wait.
                let unreachable = fleetmon::postgres::is_unreachable(&error);
                match fleetmon::postgres::hint(&reason, mode) {
                    Some(hint) => {
                        anyhow::bail!("cannot connect to PostgreSQL at {address}: {reason}: {hint}")
                    }
                    None if !unreachable => anyhow::bail!(
                        "cannot connect to PostgreSQL at {address}: {reason}: fix the user, password or database in postgres.url"
                    ),
                    None => {
                        let delay = retries.failed();
                        tracing::warn!(%address, %reason, retry_in_seconds = delay.as_secs(), "waiting for PostgreSQL");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    };
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Refuses a role that could change anything: the page must hold no credential that
/// can write.
async fn refuse_writers(client: &tokio_postgres::Client, schema: &str) -> anyhow::Result<()> {
    let powers = client.query(CAN_WRITE, &[&schema]).await?;
    if let Some(power) = powers.first() {
        let power: String = power.get("power");
        anyhow::bail!(
            "the status page reads PostgreSQL with a role that can write ({power}): give it a role that can only read (docs/STATUS_PAGES.md shows how)"
        );
    }
    Ok(())
}

/// Serves the pages until SIGTERM or Ctrl-C.
pub(crate) async fn run(args: StatusPageArgs) -> anyhow::Result<()> {
    fleetmon::telemetry::init_tracing(args.log_format);
    let mut config = StatusConfig::load(&args.config, std::env::vars())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let https = match &config.tls {
        Some(files) => Some(https_config(files)?),
        None => None,
    };
    let ids = config.check_ids();
    let mut client = connect(&config).await?;
    refuse_writers(&client, &config.postgres.schema).await?;
    let first = snapshot::read(&client, &ids)
        .await
        .context("cannot read the published checks")?;
    for id in ids.iter().filter(|id| !first.checks.contains_key(*id)) {
        tracing::warn!(check = %id, "a published check is not defined (yet): it shows as no data");
    }
    let (publish, site) = watch::channel(Arc::new(render_site(&config, &first)));
    let app = Router::new().fallback(get(answer)).with_state(site);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if https.is_some() { "https" } else { "http" };
    println!("status page: {scheme}://{addr}/");
    let refresh = Duration::from_secs(config.refresh_seconds);
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(refresh).await;
            if client.is_closed() {
                match connect(&config).await {
                    Ok(fresh) => client = fresh,
                    Err(error) => {
                        tracing::warn!(%error, "status page: still serving the last reading");
                        continue;
                    }
                }
            }
            match snapshot::read(&client, &ids).await {
                Ok(snapshot) => {
                    // Every reading differs from the last (its time, an open outage's
                    // length), so each is rendered anew. Sending fails only without
                    // receivers, once serving has ended.
                    let _ = publish.send(Arc::new(render_site(&config, &snapshot)));
                }
                Err(error) => {
                    tracing::warn!(%error, "status page: cannot read PostgreSQL; still serving the last reading");
                }
            }
        }
    });
    // SIGTERM (systemd) or Ctrl-C.
    let stop = fleetmon::shutdown::shutdown_signal();
    let served = match https {
        Some(tls) => {
            let incoming = super::dashboard::TlsListener::new(listener, tls);
            axum::serve(incoming, app)
                .with_graceful_shutdown(stop)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        }
    };
    refresher.abort();
    Ok(served?)
}

/// HTTPS with `[tls]`'s certificate, which must be a plain web server's: a certificate
/// that carries a fleetmon identity (an operator's or an agent's) is refused, since the
/// page must hold nothing the servers would accept.
fn https_config(files: &config::HttpsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = fleetmon::tls::read_certs("status page certificate (tls.cert)", &files.cert)?;
    if let Some(leaf) = certs.first()
        && let Ok(identity) = fleetmon::identity::PeerIdentity::from_der(leaf.as_ref())
    {
        anyhow::bail!(
            "`tls.cert` {} is a fleetmon {} certificate ({}): the status page must hold no credential the servers accept; give it a web server certificate",
            files.cert.display(),
            identity.role.as_str(),
            identity.name
        );
    }
    super::dashboard::https_config(&files.cert, &files.key, None)
}

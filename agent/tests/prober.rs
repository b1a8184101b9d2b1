//! The site prober against local HTTP and HTTPS servers started by the test: one
//! test per outcome a user relies on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use fleetmon::checks::{ProbeDefaults, Site, SiteConfig, StatusSpec};
use fleetmon::pb::{CheckFailure, SiteCheck};
use fleetmon::pki::{CertificateAuthority, LeafSpec};
use fleetmon_agent::site_prober::SiteProber;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;

fn app() -> Router {
    Router::new()
        .route(
            "/ok",
            get(|| async { "<h1>Welcome to fleetmon</h1> all systems go" }),
        )
        .route(
            "/status/503",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/big", get(|| async { "x".repeat(64 * 1024) }))
        .route(
            "/health.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"ok","queue":{"depth":42},"checks":[{"state":"up"},{"state":"down"}]}"#,
                )
            }),
        )
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")]) }),
        )
        .route(
            "/long-redirect",
            get(|| async {
                let target = format!("/status/503?pad={}", "x".repeat(10 * 1024));
                (StatusCode::FOUND, [(header::LOCATION, target)])
            }),
        )
        .route(
            "/loop",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
        )
        .route(
            "/echo",
            any(
                |method: Method, headers: HeaderMap, body: String| async move {
                    let probe = headers
                        .get("x-probe")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    format!("method={method} x-probe={probe} body={body}").into_response()
                },
            ),
        )
}

async fn http_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app()).await.unwrap() });
    addr
}

/// An HTTPS server whose certificate (from a CA nobody trusts) expires at `not_after`.
async fn https_server(not_after: time::OffsetDateTime) -> SocketAddr {
    let ca = CertificateAuthority::generate("test site CA").unwrap();
    let mut spec = LeafSpec::server("localhost", vec!["localhost".into(), "127.0.0.1".into()]);
    spec.not_after = not_after;
    let issued = ca.issue(&spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    fleetmon::pki::write_pair(dir.path(), "site", &issued.cert_pem, &issued.key_pem).unwrap();
    let chain = fleetmon::tls::read_certs("cert", &dir.path().join("site.pem")).unwrap();
    let key = fleetmon::tls::read_key("key", &dir.path().join("site-key.pem")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(fleetmon::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = TowerToHyperService::new(app());
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

async fn probe(site: SiteConfig) -> SiteCheck {
    let site = Site::from_config(0, &site, &ProbeDefaults::default()).unwrap();
    SiteProber::new(std::slice::from_ref(&site))
        .unwrap()
        .check(&site)
        .await
}

fn site(addr: SocketAddr, path: &str) -> SiteConfig {
    SiteConfig::get(&format!("http://{addr}{path}"))
}

fn failure(check: &SiteCheck) -> CheckFailure {
    CheckFailure::try_from(check.failure).unwrap()
}

#[tokio::test]
async fn status_mismatch_keeps_the_real_code() {
    let addr = http_server().await;
    let check = probe(site(addr, "/status/503")).await;
    assert!(!check.ok);
    assert_eq!(failure(&check), CheckFailure::StatusMismatch);
    assert_eq!(check.status_code, Some(503));
    assert_eq!(
        check.error_message,
        "status 503 is not in the expected 200-299"
    );
    assert!(check.response_time_ms > 0.0 && check.time_to_first_byte_ms.is_some());

    let mut accepting = site(addr, "/status/503");
    accepting.expected_status = vec![StatusSpec::Code(200), StatusSpec::Text("500-599".into())];
    let check = probe(accepting).await;
    assert!(check.ok, "{check:?}");
    assert_eq!(check.status_code, Some(503));
}

#[tokio::test]
async fn a_site_that_redirects_to_a_10_kb_url_and_fails_still_yields_a_result_the_collector_accepts()
 {
    let addr = http_server().await;
    let check = probe(site(addr, "/long-redirect")).await;
    assert!(!check.ok);
    assert_eq!(failure(&check), CheckFailure::StatusMismatch);
    assert_eq!(check.status_code, Some(503));
    let limit = fleetmon::samples::bounds::TARGET_TEXT_BYTES;
    assert!(check.final_url.len() <= limit, "{}", check.final_url.len());
    assert!(
        check
            .final_url
            .starts_with(&format!("http://{addr}/status/503?pad=xxx")),
        "{}",
        check.final_url
    );
    assert!(check.final_url.ends_with(fleetmon::samples::TRUNCATED_MARK));
    // The collector's text rule at its default limit takes it.
    fleetmon::samples::check_text(&check, Some(limit)).unwrap();
}

#[tokio::test]
async fn regex_match_reports_the_matched_text() {
    let addr = http_server().await;
    let mut config = site(addr, "/ok");
    config.regex = Some(r"Welcome to (\w+)".into());
    let check = probe(config).await;
    assert!(check.ok, "{check:?}");
    assert_eq!(check.regex_matched, Some(true));
    assert_eq!(check.matched_text, "Welcome to fleetmon");
    assert_eq!(check.regex, r"Welcome to (\w+)");
    assert_eq!(check.body_bytes, 43);

    let mut config = site(addr, "/ok");
    config.regex = Some("Goodbye".into());
    let check = probe(config).await;
    assert_eq!(failure(&check), CheckFailure::RegexMismatch);
    assert_eq!(
        (check.regex_matched, check.status_code),
        (Some(false), Some(200))
    );
    assert_eq!(check.error_message, "body does not match regex `Goodbye`");
}

#[tokio::test]
async fn regex_absent_fails_when_present() {
    let addr = http_server().await;
    let mut config = site(addr, "/ok");
    config.regex_absent = Some("(?i)all systems \\w+".into());
    let check = probe(config).await;
    assert_eq!(failure(&check), CheckFailure::RegexPresent);
    assert_eq!(
        check.error_message,
        "body matches regex_absent `(?i)all systems \\w+`: `all systems go`"
    );
    let mut config = site(addr, "/ok");
    config.regex_absent = Some("maintenance".into());
    assert!(probe(config).await.ok);
}

#[tokio::test]
async fn a_backtracking_bomb_regex_runs_in_linear_time_and_does_not_match() {
    // `(x+x+)+y` over 64 KiB of `x` takes exponential time in backtracking engines;
    // Rust's regex engine answers in one pass.
    let addr = http_server().await;
    let mut config = site(addr, "/big");
    config.regex = Some("(x+x+)+y".into());
    let check = probe(config).await;
    assert_eq!(failure(&check), CheckFailure::RegexMismatch);
    assert_eq!(check.regex_matched, Some(false));
    assert_eq!(check.status_code, Some(200));
}

#[tokio::test]
async fn a_slow_site_times_out() {
    let addr = http_server().await;
    let mut config = site(addr, "/slow");
    config.timeout_seconds = Some(0.5);
    let check = probe(config).await;
    assert_eq!(
        failure(&check),
        CheckFailure::Timeout,
        "{}",
        check.error_message
    );
    assert_eq!(check.status_code, None);
    assert!(
        check.response_time_ms >= 500.0 && check.response_time_ms < 3000.0,
        "{}",
        check.response_time_ms
    );
}

#[tokio::test]
async fn refused_connections_and_unknown_names_are_told_apart() {
    let port = fleetmon::testkit::free_port();
    let check = probe(SiteConfig::get(&format!("http://127.0.0.1:{port}/"))).await;
    assert_eq!(
        failure(&check),
        CheckFailure::Connect,
        "{}",
        check.error_message
    );
    assert!(
        check.error_message.contains("Connection refused"),
        "{}",
        check.error_message
    );

    let check = probe(SiteConfig::get("http://fleetmon-test.invalid/")).await;
    assert_eq!(
        failure(&check),
        CheckFailure::Dns,
        "{}",
        check.error_message
    );
    assert_eq!(check.status_code, None);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_failure_and_expiry_is_reported() {
    let not_after = time::macros::datetime!(2031-02-03 04:05:06 UTC);
    let addr = https_server(not_after).await;
    let url = format!("https://localhost:{}/ok", addr.port());
    let check = probe(SiteConfig::get(&url)).await;
    assert_eq!(
        failure(&check),
        CheckFailure::Tls,
        "{}",
        check.error_message
    );
    assert_eq!(check.status_code, None);

    let mut unverified = SiteConfig::get(&url);
    unverified.verify_tls = false;
    let check = probe(unverified).await;
    assert!(check.ok, "{check:?}");
    assert_eq!(
        check.tls_cert_not_after.map(|t| t.seconds),
        Some(not_after.unix_timestamp())
    );
}

#[tokio::test]
async fn redirects_are_followed_or_not_as_configured() {
    let addr = http_server().await;
    let check = probe(site(addr, "/redirect")).await;
    assert!(check.ok, "{check:?}");
    assert_eq!(check.status_code, Some(200));
    assert_eq!(check.final_url, format!("http://{addr}/ok"));

    let mut stay = site(addr, "/redirect");
    stay.follow_redirects = false;
    let check = probe(stay).await;
    assert_eq!(failure(&check), CheckFailure::StatusMismatch);
    assert_eq!(check.status_code, Some(302));
    assert_eq!(check.final_url, format!("http://{addr}/redirect"));

    let check = probe(site(addr, "/loop")).await;
    assert_eq!(failure(&check), CheckFailure::Other);
    assert!(
        check.error_message.contains("too many redirects"),
        "{}",
        check.error_message
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_its_status() {
    let addr = http_server().await;
    let mut config = site(addr, "/big");
    config.max_body_bytes = Some(1024);
    let check = probe(config).await;
    assert_eq!(failure(&check), CheckFailure::BodyTooLarge);
    assert_eq!(check.status_code, Some(200));
    assert_eq!(check.error_message, "body is larger than 1024 bytes");
}

#[tokio::test]
async fn post_with_body_and_headers_reaches_the_server() {
    let addr = http_server().await;
    let mut config = site(addr, "/echo");
    config.method = "post".into();
    config.headers.insert("x-probe".into(), "yes".into());
    config.body = Some("hello fleet".into());
    config.regex = Some("method=POST x-probe=yes body=hello fleet".into());
    let check = probe(config).await;
    assert!(check.ok, "{check:?}");
    assert_eq!(check.method, "POST");
}

#[tokio::test]
async fn json_assertions_on_a_central_check_pass_or_name_the_value_found() {
    use fleetmon::pb::{Assertions, CheckDefinition, HttpCheck, JsonAssertion, check_definition};
    let addr = http_server().await;
    let run = |rules: Vec<(&str, &str, &str)>, path: &str| {
        let definition = CheckDefinition {
            id: "api".into(),
            version: 1,
            kind: Some(check_definition::Kind::Http(HttpCheck {
                url: format!("http://{addr}{path}"),
                ..Default::default()
            })),
            assertions: Some(Assertions {
                json: rules
                    .into_iter()
                    .map(|(path, op, value)| JsonAssertion {
                        path: path.into(),
                        op: op.into(),
                        value: value.into(),
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        fleetmon::checks::site_from_definition(
            &definition,
            &ProbeDefaults::default(),
            &mut fleetmon::checks::pattern::Patterns::default(),
        )
        .unwrap()
    };
    let prober = SiteProber::new(&[]).unwrap();
    let good = prober
        .check(&run(
            vec![("status", "==", "ok"), ("queue.depth", "<", "100")],
            "/health.json",
        ))
        .await;
    assert!(good.ok, "{}", good.error_message);
    let bad = prober
        .check(&run(vec![("checks[1].state", "==", "up")], "/health.json"))
        .await;
    assert_eq!(
        (
            bad.ok,
            bad.failure,
            bad.error_message.as_str(),
            bad.status_code
        ),
        (
            false,
            CheckFailure::JsonMismatch as i32,
            r#"checks[1].state == "up": found "down""#,
            Some(200)
        )
    );
    let html = prober.check(&run(vec![("status", "", "ok")], "/ok")).await;
    assert_eq!(html.failure, CheckFailure::JsonMismatch as i32);
    assert!(
        html.error_message.starts_with("body is not JSON: "),
        "{}",
        html.error_message
    );
}

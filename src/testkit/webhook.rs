//! A webhook endpoint that records what it is sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Its `Idempotency-Key` header.
    pub idempotency_key: String,
    /// Its path and query, e.g. `/hook` or `/v2/alerts/x/close?identifierType=alias`.
    pub path: String,
    /// Every header, names in lower case.
    pub headers: std::collections::BTreeMap<String, String>,
    /// Its JSON body.
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub answered: u16,
    /// When it arrived.
    pub received_at: std::time::SystemTime,
}

/// A real HTTP server on 127.0.0.1 that records every POST and answers with the
/// status it is told (200 at first), standing in for a team's webhook endpoint.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<WebhookRequest>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl WebhookReceiver {
    /// Starts it on a free port.
    pub async fn start() -> Self {
        use axum::http::{HeaderMap, StatusCode, Uri};
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (answer, log) = (status.clone(), requests.clone());
        let app = axum::Router::new().route(
            "/{*path}",
            axum::routing::post(move |uri: Uri, headers: HeaderMap, body: String| {
                let (answer, log) = (answer.clone(), log.clone());
                async move {
                    let code = answer.load(std::sync::atomic::Ordering::SeqCst);
                    log.lock().unwrap().push(WebhookRequest {
                        idempotency_key: headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        path: uri
                            .path_and_query()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_owned(),
                                    v.to_str().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect(),
                        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                        answered: code,
                        received_at: std::time::SystemTime::now(),
                    });
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let addr = listener.local_addr().expect("local address");
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await;
        });
        WebhookReceiver {
            addr,
            status,
            requests,
            stop,
        }
    }

    /// The URL to configure as a webhook.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers every later request with `status`.
    pub fn answer_with(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<WebhookRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The notifications of every request answered 2xx, in order:
    /// `(idempotency key, event, alert kind, alert subject)`.
    pub fn delivered(&self) -> Vec<(String, String, String, String)> {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        self.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .flat_map(|r| {
                let key = r.idempotency_key.clone();
                r.body["notifications"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |n| {
                        (
                            key.clone(),
                            text(&n["event"]),
                            text(&n["alert"]["kind"]),
                            text(&n["alert"]["subject"]),
                        )
                    })
            })
            .collect()
    }

    /// Waits up to 60 s until `done` holds for the requests so far.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[WebhookRequest]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let requests = self.requests();
            if done(&requests) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "webhook: {what} within 60 s; got {requests:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

//! What the collector and the writer share in running a server: the gRPC builder
//! every listener starts from, the health-only server that holds the port while they
//! wait for Kafka or PostgreSQL ([`not_serving_until`]), and [`Tasks`], the background
//! tasks of a server (metrics, health, maintenance, notifier…) named, watched and
//! stopped together.
//!
//! A task that panics or fails is reported with its name and is fatal: the server's
//! shutdown token is cancelled, everything stops, and the server's result is the
//! failure. At shutdown the tasks get [`SHUTDOWN_GRACE`] to finish; those still
//! running are then aborted and named in the log.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::metrics_endpoint::MetricsServer;

/// How long a server's tasks (and in-flight deliveries) may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The gRPC server builder every fleetmon listener starts from: HTTP/2 keepalives, so
/// a peer that vanished without closing its connection is noticed within a minute.
pub fn grpc_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

/// While `ready` is pending (the server waits for `waiting_for`, Kafka or PostgreSQL),
/// answers gRPC health checks on `listener` (TLS by `tls`) with NOT_SERVING, for the
/// server as a whole and every service in `services`, and every other call with
/// UNAVAILABLE ("starting: waiting for …", which clients retry); once it resolves,
/// stops that (its connections are closed; clients reconnect to the real server) and
/// gives back the listener and what `ready` gave. A probe thus tells "starting,
/// waiting" from "down", and the port is bound from the start.
pub async fn not_serving_until<T>(
    listener: TcpListener,
    tls: crate::tls::Reloading<Arc<rustls::ServerConfig>>,
    services: &[&str],
    waiting_for: &'static str,
    ready: impl Future<Output = T>,
) -> Result<(TcpListener, T), BindError> {
    let addr = listener.local_addr().map_err(|source| BindError {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let error = |source| BindError { addr, source };
    let listener = listener.into_std().map_err(error)?;
    let waiting = TcpListener::from_std(listener.try_clone().map_err(error)?).map_err(error)?;
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in std::iter::once(&"").chain(services) {
        reporter
            .set_service_status(*service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let stop = CancellationToken::new();
    let server = tokio::spawn(
        grpc_builder()
            .layer(tower::layer::layer_fn(move |inner| OnlyHealth {
                inner,
                waiting_for,
            }))
            .add_service(health)
            .serve_with_incoming_shutdown(
                crate::tls::tls_incoming(waiting, tls),
                stop.clone().cancelled_owned(),
            ),
    );
    let out = ready.await;
    stop.cancel();
    // Open health watches would hold a graceful stop: a second is enough for the rest.
    let abort = server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .is_err()
    {
        abort.abort();
    }
    Ok((TcpListener::from_std(listener).map_err(error)?, out))
}

/// What a starting server serves: health checks; any other call is UNAVAILABLE.
#[derive(Clone)]
struct OnlyHealth<S> {
    inner: S,
    waiting_for: &'static str,
}

impl<S, B> tower::Service<http::Request<B>> for OnlyHealth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with("/grpc.health.v1.Health/") {
            return Box::pin(self.inner.call(request));
        }
        let status = tonic::Status::unavailable(format!(
            "starting: waiting for {}; try again shortly",
            self.waiting_for
        ));
        Box::pin(std::future::ready(Ok(status.into_http())))
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The I/O error.
    pub source: std::io::Error,
}

/// A TCP listener on `addr`, and the address it got (the port, when `addr` asked for 0).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let error = |source| BindError { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// The metrics endpoint on `addr` serving `registry`, and the address it got.
pub async fn bind_metrics(
    addr: SocketAddr,
    registry: Registry,
) -> Result<(MetricsServer, SocketAddr), BindError> {
    let error = |source| BindError { addr, source };
    let server = MetricsServer::bind(addr, Arc::new(registry))
        .await
        .map_err(error)?;
    let bound = server.local_addr().map_err(error)?;
    Ok((server, bound))
}

/// A task of a server that panicked or returned an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{task} failed: {reason}")]
pub struct TaskFailed {
    /// The task's name.
    pub task: &'static str,
    /// The panic message or the error.
    pub reason: String,
}

/// The error a fallible task ended with.
type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// The background tasks of one server. Spawn them, then [`Tasks::supervise`].
#[derive(Debug)]
pub struct Tasks {
    set: JoinSet<Result<(), TaskError>>,
    names: HashMap<tokio::task::Id, &'static str>,
    shutdown: CancellationToken,
}

impl Tasks {
    /// No tasks yet; a failing task will cancel `shutdown`.
    pub fn new(shutdown: CancellationToken) -> Self {
        Tasks {
            set: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
        }
    }

    /// Runs `task` until it ends by itself (it should end soon after shutdown).
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.set.spawn(async move {
            task.await;
            Ok(())
        });
        self.names.insert(handle.id(), name);
    }

    /// As [`Tasks::spawn`], for a task whose error is fatal to the server.
    pub fn spawn_fallible<E: Into<TaskError>>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let handle = self
            .set
            .spawn(async move { task.await.map_err(Into::into) });
        self.names.insert(handle.id(), name);
    }

    /// Watches the tasks in a task of its own until they have all ended: the first
    /// one to panic or fail cancels the shutdown token and is the result. Once the
    /// token is cancelled, tasks still running after `grace` are aborted.
    pub fn supervise(self, grace: Duration) -> JoinHandle<Result<(), TaskFailed>> {
        tokio::spawn(self.watch(grace))
    }

    async fn watch(mut self, grace: Duration) -> Result<(), TaskFailed> {
        let mut failure = None;
        let shutdown = self.shutdown.clone();
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(deadline);
        loop {
            let ended = tokio::select! {
                ended = self.set.join_next_with_id() => ended,
                () = &mut deadline => {
                    let running: Vec<&str> = self.names.values().copied().collect();
                    tracing::warn!(?running, seconds = grace.as_secs(), "tasks still running after the shutdown grace: aborted");
                    self.set.abort_all();
                    while self.set.join_next().await.is_some() {}
                    break;
                }
            };
            let Some(ended) = ended else { break };
            let (id, reason) = match ended {
                Ok((id, Ok(()))) => {
                    self.names.remove(&id);
                    continue;
                }
                Ok((id, Err(error))) => (id, error.to_string()),
                Err(error) if error.is_cancelled() => {
                    self.names.remove(&error.id());
                    continue;
                }
                Err(error) => (error.id(), panic_message(error)),
            };
            let task = self.names.remove(&id).unwrap_or("a task");
            tracing::error!(task, %reason, "task failed: stopping");
            self.shutdown.cancel();
            failure.get_or_insert(TaskFailed { task, reason });
        }
        failure.map_or(Ok(()), Err)
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .map_or_else(|| "panicked".to_owned(), |m| format!("panicked: {m}")),
        Err(error) => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_named_and_stops_the_others() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let waiting = shutdown.clone();
        tasks.spawn("steady", async move { waiting.cancelled().await });
        tasks.spawn("broken", async { panic!("disk on fire") });
        let result = tasks.supervise(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            result,
            Err(TaskFailed {
                task: "broken",
                reason: "panicked: disk on fire".to_owned()
            })
        );
        assert!(shutdown.is_cancelled(), "the others were told to stop");
    }

    #[tokio::test]
    async fn a_failing_task_is_fatal_and_a_clean_shutdown_is_ok() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn_fallible("grpc", async { Err::<(), _>("address in use") });
        let result = tasks.supervise(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            result.unwrap_err().to_string(),
            "grpc failed: address in use"
        );

        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let waiting = shutdown.clone();
        tasks.spawn("metrics", async move { waiting.cancelled().await });
        let supervisor = tasks.supervise(Duration::from_secs(5));
        shutdown.cancel();
        assert_eq!(supervisor.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_task_that_ignores_shutdown_is_aborted_after_the_grace() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn("stubborn", std::future::pending());
        let supervisor = tasks.supervise(Duration::from_millis(50));
        shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(30), supervisor).await;
        assert_eq!(ended.expect("aborted after the grace").unwrap(), Ok(()));
    }
}

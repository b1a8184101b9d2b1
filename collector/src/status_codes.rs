//! Maps tonic's statuses for requests that fail before any handler runs to the codes
//! gRPC specifies for them, for unary calls: an oversized message (tonic: OUT_OF_RANGE)
//! is RESOURCE_EXHAUSTED; bytes that are not the expected protobuf message (tonic:
//! INTERNAL) are the client's fault, INVALID_ARGUMENT. (Streams map both in the
//! session, see `ingest_service`.)

use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The layer; add it with `Server::builder().layer(..)`.
#[derive(Debug, Clone, Copy)]
pub struct OversizeIsResourceExhausted;

impl<S> Layer<S> for OversizeIsResourceExhausted {
    type Service = MapOversize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MapOversize { inner }
    }
}

/// The service the layer produces.
#[derive(Debug, Clone)]
pub struct MapOversize<S> {
    inner: S,
}

const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";
const INTERNAL: &str = "13";
const INVALID_ARGUMENT: &str = "3";

/// What tonic's decoder says about bytes that are not the message (percent-encoded).
const UNDECODABLE: &str = "failed%20to%20decode%20Protobuf%20message";

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MapOversize<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(Response<ResBody>) -> Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        use futures::TryFutureExt;
        self.inner.call(request).map_ok(rewrite as fn(_) -> _)
    }
}

fn rewrite<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let status = headers.get("grpc-status").cloned();
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if status.as_ref().is_some_and(|v| v == OUT_OF_RANGE)
        && message.contains("message%20length%20too%20large")
    {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    } else if status.as_ref().is_some_and(|v| v == INTERNAL) && message.starts_with(UNDECODABLE) {
        headers.insert("grpc-status", HeaderValue::from_static(INVALID_ARGUMENT));
    }
    response
}

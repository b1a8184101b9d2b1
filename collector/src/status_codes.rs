//! Maps tonic's status for a unary request that fails before any handler runs to
//! the code gRPC specifies: an oversized message (tonic: OUT_OF_RANGE, which no
//! fleetmon handler returns) is RESOURCE_EXHAUSTED. Streams map it in the session
//! (`ingest_service`); undecodable bytes are INVALID_ARGUMENT at the codec
//! (`fleetmon::grpc_codec`).

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
    if headers
        .get("grpc-status")
        .is_some_and(|v| v == OUT_OF_RANGE)
    {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
    response
}

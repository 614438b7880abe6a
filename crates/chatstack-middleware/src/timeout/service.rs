//! [`Timeout`], the service.

use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use tokio::time::Instant;
use tower::Service;

use super::future::{Limit, ResponseFuture, Which};
use super::layer::TimeoutConfig;

/// Limits the time of each call of the inner service; for streams also the wait for the
/// first chunk, the silence between chunks and the time to the stream's end. Made by
/// [`TimeoutLayer`](super::TimeoutLayer); see the [module docs](super).
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    config: TimeoutConfig,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with these limits.
    pub fn new(inner: S, config: TimeoutConfig) -> Self {
        Self { inner, config }
    }

    /// The limits.
    pub fn config(&self) -> &TimeoutConfig {
        &self.config
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for Timeout<S>
where
    S: Service<R, Error = Error>,
    S::Response: LlmResponse,
    R: LlmRequest,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Waiting to be ready is not part of an attempt: a rate limiter beneath may hold the
        // call back for as long as it needs.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let started = Instant::now();
        // Until the response arrives, the total limit runs; for a request known to ask for a
        // stream, so do the first-chunk and stream-total limits (no chunk, and no end, can
        // come before the headers), and whichever ends first decides the kind of the error
        // (on a tie, the first in this order). A request that does not say it streams is
        // held to the stream limits once its response turns out to be a stream.
        let streaming = request.is_streaming();
        let config = &self.config;
        let limit = [
            config.total.map(|limit| Limit::new(Which::Total, limit)),
            config
                .first_chunk
                .filter(|_| streaming)
                .map(|limit| Limit::new(Which::FirstChunk, limit)),
            config
                .stream_total
                .filter(|_| streaming)
                .map(|limit| Limit::new(Which::StreamTotal, limit)),
        ]
        .into_iter()
        .flatten()
        .reduce(|earliest, limit| {
            if limit.limit < earliest.limit {
                limit
            } else {
                earliest
            }
        });
        ResponseFuture::new(self.inner.call(request), started, limit, self.config)
    }
}

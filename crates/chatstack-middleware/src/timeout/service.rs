//! [`Timeout`], the service.

use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse, TimeoutKind};
use tokio::time::Instant;
use tower::Service;

use super::future::{Limit, ResponseFuture};
use super::layer::TimeoutConfig;

/// Limits the time of each call of the inner service; for streams also the wait for the
/// first chunk and the silence between chunks. Made by [`TimeoutLayer`](super::TimeoutLayer);
/// see the [module docs](super).
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
        // stream, so does the first-chunk limit (no chunk can come before the headers), and
        // whichever ends first decides the kind of the error. A request that does not say it
        // streams is held to the first-chunk limit once its response turns out to be a
        // stream.
        let total = self.config.total.map(|limit| Limit {
            kind: TimeoutKind::Total,
            limit,
        });
        let first_chunk = self
            .config
            .first_chunk
            .filter(|_| request.is_streaming())
            .map(|limit| Limit {
                kind: TimeoutKind::FirstChunk,
                limit,
            });
        let limit = match (total, first_chunk) {
            (Some(total), Some(first)) if first.limit < total.limit => Some(first),
            (None, first) => first,
            (total, _) => total,
        };
        ResponseFuture::new(self.inner.call(request), started, limit, self.config)
    }
}

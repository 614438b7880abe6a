//! [`Cost`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse, StreamOptions};
use tower::Service;

use super::future::{Pending, ResponseFuture};
use super::layer::Settings;
use super::ledger::CostLedger;
use super::price::CacheTtl;

/// Prices every response of the inner service, attaches the cost to it and adds it to a
/// shared [`CostLedger`]. See the [module docs](super).
///
/// Made by [`CostLayer`](super::CostLayer). Clones share the layer's ledger and prices.
/// `poll_ready` is the inner service's.
#[derive(Clone)]
pub struct Cost<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Cost<S> {
    pub(crate) fn from_parts(inner: S, settings: Arc<Settings>) -> Self {
        Self { inner, settings }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, to change.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The ledger the service records into.
    pub fn ledger(&self) -> &CostLedger {
        &self.settings.ledger
    }
}

impl<S: fmt::Debug> fmt::Debug for Cost<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cost")
            .field("inner", &self.inner)
            .field("pricing", &self.settings.pricing)
            .finish_non_exhaustive()
    }
}

impl<S, R> Service<R> for Cost<S>
where
    S: Service<R, Error = Error>,
    S::Response: LlmResponse,
    R: LlmRequest,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: R) -> Self::Future {
        let settings = &self.settings;
        let requested = match settings.pricing.resolve_request(request.model()) {
            Ok(requested) => requested,
            Err(error) => {
                settings.ledger.record_refused_unknown(request.model());
                return ResponseFuture::refused(error);
            }
        };
        if settings.stream_usage && request.is_streaming() {
            request_usage(&mut request);
        }
        let pending = Pending {
            settings: Arc::clone(settings),
            requested,
            ttl: cache_ttl(&request, settings.pricing.default_cache_ttl()),
            tag: request.meta().tag.clone(),
        };
        ResponseFuture::new(self.inner.call(request), pending)
    }
}

/// Asks a streaming request for a final usage chunk (`stream_options.include_usage`).
pub(crate) fn request_usage<R: LlmRequest>(request: &mut R) {
    if let Some(chat) = request.as_chat_request_mut() {
        chat.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
    }
}

/// The cache TTL of a request: its own, else the pricing's.
pub(crate) fn cache_ttl<R: LlmRequest>(request: &R, default: CacheTtl) -> CacheTtl {
    request
        .meta()
        .extensions
        .get::<CacheTtl>()
        .copied()
        .unwrap_or(default)
}

//! [`Budget`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use tower::Service;

use super::future::{Pending, ResponseFuture};
use super::layer::Settings;
use super::state::{BudgetSnapshot, BudgetState};
use crate::cost::{Usd, cache_ttl, request_usage};

/// Refuses requests whose worst-case cost would pass a spending cap. See the
/// [module docs](super).
///
/// Made by [`BudgetLayer`](super::BudgetLayer). Clones share the layer's budget.
/// `poll_ready` is the inner service's; a refused call fails in its response future with
/// [`ErrorKind::BudgetExceeded`](chatstack_proto::ErrorKind::BudgetExceeded) without
/// reaching the inner service.
#[derive(Clone)]
pub struct Budget<S> {
    inner: S,
    state: Arc<BudgetState>,
    settings: Arc<Settings>,
}

impl<S> Budget<S> {
    pub(crate) fn from_parts(inner: S, state: Arc<BudgetState>, settings: Arc<Settings>) -> Self {
        Self {
            inner,
            state,
            settings,
        }
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

    /// The budget's figures now.
    pub fn snapshot(&self) -> BudgetSnapshot {
        self.state.snapshot()
    }
}

impl<S: fmt::Debug> fmt::Debug for Budget<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("inner", &self.inner)
            .field("budget", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl<S, R> Service<R> for Budget<S>
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
        let pricing = &settings.pricing;
        let requested = match pricing.resolve_request(request.model()) {
            Ok(requested) => requested,
            Err(error) => return ResponseFuture::refused(error),
        };
        let ttl = cache_ttl(&request, pricing.default_cache_ttl());
        let worst_case = match pricing.price_of(&requested) {
            Some(price) => {
                let output = request
                    .max_output_tokens()
                    .or(price.max_output_tokens)
                    .unwrap_or(settings.default_max_output_tokens);
                let picos = price.worst_case_picos(request.estimated_prompt_tokens(), output, ttl);
                Usd::from_picos_scaled_up(picos, pricing.multiplier_ppm())
            }
            None => Usd::ZERO,
        };
        let reservation = match self.state.reserve(worst_case, request.model()) {
            Ok(reservation) => reservation,
            Err(error) => {
                tracing::debug!(model = request.model(), %error, "request refused by the budget");
                return ResponseFuture::refused(error);
            }
        };
        if settings.stream_usage && request.is_streaming() {
            request_usage(&mut request);
        }
        let pending = Pending {
            settings: Arc::clone(settings),
            requested,
            ttl,
            reservation,
        };
        ResponseFuture::new(self.inner.call(request), pending)
    }
}

//! [`Budget`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use tower::Service;

use super::future::{Pending, ResponseFuture};
use super::layer::Settings;
use super::state::{Backend, BudgetSnapshot, InProcess};
use crate::cost::{CacheTtl, Requested, Usd, cache_ttl, request_usage};

/// Refuses requests whose worst-case cost would pass a spending cap. See the
/// [module docs](super).
///
/// Made by [`BudgetLayer`](super::BudgetLayer). Clones share the layer's budget.
/// `poll_ready` is the inner service's; a refused call fails in its response future with
/// [`ErrorKind::BudgetExceeded`](chatstack_proto::ErrorKind::BudgetExceeded) without
/// reaching the inner service.
///
/// `B` is where the budget lives: in this process ([`InProcess`], the default), or in Redis
/// (`RedisBudget`, with the `redis` feature), where a call also needs `S: Clone` (the request
/// waits for its reservation in the response future, as the rate limiter's waits).
pub struct Budget<S, B = InProcess> {
    inner: S,
    state: Arc<B>,
    settings: Arc<Settings>,
}

impl<S: Clone, B> Clone for Budget<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: Arc::clone(&self.state),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S, B> Budget<S, B> {
    pub(crate) fn from_parts(inner: S, state: Arc<B>, settings: Arc<Settings>) -> Self {
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

    #[cfg(feature = "redis")]
    pub(crate) fn parts(&mut self) -> (&mut S, &Arc<B>, &Arc<Settings>) {
        (&mut self.inner, &self.state, &self.settings)
    }
}

impl<S, B: Backend> Budget<S, B> {
    /// The budget's figures now (for a budget in Redis, as of the last reply from Redis).
    pub fn snapshot(&self) -> BudgetSnapshot {
        self.state.figures()
    }
}

impl<S: fmt::Debug, B: Backend> fmt::Debug for Budget<S, B> {
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
        let (requested, ttl, worst_case) = match worst_case(settings, &request) {
            Ok(priced) => priced,
            Err(error) => return ResponseFuture::refused(error),
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

/// What a request to the budget's pricing may cost at worst: its model as priced, its cache
/// TTL, and its worst case (zero for an unknown model under a lenient pricing).
pub(crate) fn worst_case<R: LlmRequest>(
    settings: &Settings,
    request: &R,
) -> Result<(Requested, CacheTtl, Usd), Error> {
    let pricing = &settings.pricing;
    let requested = pricing.resolve_request(request.model())?;
    let ttl = cache_ttl(request, pricing.default_cache_ttl());
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
    Ok((requested, ttl, worst_case))
}

//! [`RateLimit`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use tokio::time::Instant;
use tower::Service;

use super::future::ResponseFuture;
use super::state::{KeyLimiter, KeyStatus, Limiters, Start};

/// Holds requests back to a per-minute quota of requests and tokens, per model (or per key);
/// see the [module docs](super).
///
/// Made by [`RateLimitLayer`](super::RateLimitLayer). Clones share their limiters.
///
/// `poll_ready` is the inner service's; the wait for the quota happens in the response
/// future. A request that must wait takes the service that was polled ready into its
/// response future and calls it when its turn comes, leaving a clone in its place (hence
/// `S: Clone`); whatever readiness that service reserved is held while the request waits.
/// A request that the limiter refuses fails in its response future with
/// [`ErrorKind::RateLimitWait`](chatstack_proto::ErrorKind::RateLimitWait) without
/// reaching the inner service.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiters: Arc<Limiters>,
    /// The limiter of this clone's last call, so that a run of calls for one key (the common
    /// case) skips the shared map.
    last: Option<Arc<KeyLimiter>>,
}

impl<S> RateLimit<S> {
    pub(crate) fn from_parts(inner: S, limiters: Arc<Limiters>) -> Self {
        Self {
            inner,
            limiters,
            last: None,
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

    /// What the limiter of `key` looks like now; see
    /// [`RateLimitLayer::status`](super::RateLimitLayer::status).
    pub fn status(&self, key: &str) -> Option<KeyStatus> {
        self.limiters.status(key)
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("settings", self.limiters.settings())
            .finish_non_exhaustive()
    }
}

impl<S, R> Service<R> for RateLimit<S>
where
    S: Service<R, Error = Error> + Clone,
    S::Response: LlmResponse,
    R: LlmRequest,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: R) -> Self::Future {
        let limiter = {
            let key = self.limiters.settings().key_by.key_of(&request);
            match &self.last {
                Some(last) if last.key() == key => Arc::clone(last),
                _ => {
                    let limiter = self.limiters.limiter(&key);
                    self.last = Some(Arc::clone(&limiter));
                    limiter
                }
            }
        };
        let counter = self.limiters.settings().counter.as_deref();
        let tokens = limiter.tokens_of(&mut request, counter);
        let deadline = request.meta().deadline.map(Instant::from_std);
        match limiter.start(tokens, deadline) {
            Start::Admitted(charge) => ResponseFuture::called(self.inner.call(request), charge),
            Start::Queued(ticket) => {
                // The service that was polled ready makes the call once the turn comes; this
                // one is replaced by a clone, to be polled ready for the next call.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::queued(ticket, service, request, deadline)
            }
            Start::Refused(error) => ResponseFuture::refused(error),
        }
    }
}

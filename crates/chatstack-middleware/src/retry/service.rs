//! [`Retry`]: the service the [`RetryLayer`] wraps around another.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use tokio::time::Instant;
use tower::retry::budget::Budget;
use tower::{Layer, Service};

use super::classify::{IsRetryable, RetryClassifier};
use super::future::ResponseFuture;
use super::layer::{RetryConfig, RetryLayer};

/// Retries the calls of an inner service that fail with a retryable error; see the
/// [module docs](super) for the rules.
///
/// Built by [`RetryLayer`]. Clones share the configuration and the retry budget. The inner
/// service is cloned per call; the request is cloned per attempt, hence `R: Clone`.
pub struct Retry<S, C = IsRetryable> {
    inner: S,
    config: Arc<RetryConfig<C>>,
}

impl<S> Retry<S> {
    /// Wraps `inner` with the default [`RetryLayer`] (and a budget of its own).
    pub fn new(inner: S) -> Self {
        RetryLayer::new().layer(inner)
    }

    /// The default [`RetryLayer`], to configure.
    pub fn layer() -> RetryLayer {
        RetryLayer::new()
    }
}

impl<S, C> Retry<S, C> {
    pub(crate) fn from_config(inner: S, config: Arc<RetryConfig<C>>) -> Self {
        Self { inner, config }
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
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C, R> Service<R> for Retry<S, C>
where
    S: Service<R, Error = Error> + Clone,
    S::Response: LlmResponse,
    R: LlmRequest + Clone,
    C: RetryClassifier,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S, R, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        if let Some(budget) = &self.config.budget {
            budget.deposit();
        }
        let deadline = self
            .config
            .total_deadline
            .map(|total| Instant::now() + total);
        // The service that was polled ready makes the first attempt; it then goes into the
        // future, which polls it ready again before each retry.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let first_attempt = service.call(request.clone());
        ResponseFuture::new(
            first_attempt,
            service,
            request,
            Arc::clone(&self.config),
            deadline,
        )
    }
}

//! [`Fallback`], the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use tower::Service;

use super::alternative::Alternative;
use super::future::ResponseFuture;
use super::layer::ModelSetter;

/// Sends a request to the inner service and, on a retryable failure or an open circuit, to
/// the next of its alternatives. Made by [`FallbackLayer`](super::FallbackLayer); see the
/// [module docs](super).
pub struct Fallback<S, R, T> {
    inner: S,
    alternatives: Arc<Vec<Alternative<R, T>>>,
    set_model: ModelSetter<R>,
}

impl<S, R, T> Fallback<S, R, T> {
    pub(crate) fn new(
        inner: S,
        alternatives: Arc<Vec<Alternative<R, T>>>,
        set_model: ModelSetter<R>,
    ) -> Self {
        Self {
            inner,
            alternatives,
            set_model,
        }
    }

    /// The alternatives, in the order they are tried.
    pub fn alternatives(&self) -> &[Alternative<R, T>] {
        &self.alternatives
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

impl<S: Clone, R, T> Clone for Fallback<S, R, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            alternatives: self.alternatives.clone(),
            set_model: self.set_model,
        }
    }
}

impl<S: fmt::Debug, R, T> fmt::Debug for Fallback<S, R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("alternatives", &self.alternatives)
            .finish_non_exhaustive()
    }
}

impl<S, R, T> Service<R> for Fallback<S, R, T>
where
    S: Service<R, Response = T, Error = Error> + Clone,
    R: LlmRequest + Clone,
    T: LlmResponse,
{
    type Response = T;
    type Error = Error;
    type Future = ResponseFuture<S, R, T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // Only the primary has to be ready; an alternative is made ready when it is needed.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let name = Arc::from(request.model());
        // Kept for the alternatives: the request as it came, and a clone of the inner
        // service for the model alternatives (the ready one answers the primary call).
        let spare = (!self.alternatives.is_empty()).then(|| (request.clone(), self.inner.clone()));
        let future = self.inner.call(request);
        ResponseFuture::new(
            future,
            spare,
            self.alternatives.clone(),
            self.set_model,
            name,
        )
    }
}

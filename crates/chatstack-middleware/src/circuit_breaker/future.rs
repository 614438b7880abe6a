//! [`ResponseFuture`]: the future of a [`CircuitBreaker`](super::CircuitBreaker) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmResponse};
use pin_project_lite::pin_project;

use super::state::Permit;
use crate::guarded::{Guard, Guarded};

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker): the inner call's
    /// future with the call's admission attached, or the rejection of an open circuit.
    ///
    /// The outcome is recorded when the future fails, or, when it succeeds, when the response
    /// completes (at once for a unary response; at its end for a stream). Dropping the future
    /// (or the stream) before then records nothing and gives a half-open probe's slot back.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Guarded<F, Permit>,
    }
}

impl<T: LlmResponse> Guard<T> for Permit {
    fn succeeded(self, response: T) -> T {
        response.on_complete(move |completion| self.record_completion(completion))
    }

    fn failed(self, error: &Error) {
        self.record_error(error);
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(future: F, permit: Permit) -> Self {
        Self {
            inner: Guarded::admitted(future, permit),
        }
    }

    pub(crate) fn rejected(error: Error) -> Self {
        Self {
            inner: Guarded::refused(error),
        }
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, Error>>,
    T: LlmResponse,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.inner.is_admitted() {
            "admitted"
        } else {
            "rejected"
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

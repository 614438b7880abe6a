//! [`ResponseFuture`]: the future of a [`CircuitBreaker`](super::CircuitBreaker) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use chatstack_proto::{Error, LlmResponse};
use pin_project_lite::pin_project;

use super::state::Permit;

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker): the inner call's
    /// future with the call's admission attached, or the rejection of an open circuit.
    ///
    /// The outcome is recorded when the future fails, or, when it succeeds, when the response
    /// completes (at once for a unary response; at its end for a stream). Dropping the future
    /// (or the stream) before then records nothing and gives a half-open probe's slot back.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Admitted {
            #[pin]
            future: F,
            permit: Option<Permit>,
        },
        Rejected {
            error: Option<Error>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn admitted(future: F, permit: Permit) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn rejected(error: Error) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
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
        match self.project().kind.project() {
            KindProj::Admitted { future, permit } => {
                let result = ready!(future.poll(cx));
                let Some(permit) = permit.take() else {
                    return Poll::Ready(result);
                };
                Poll::Ready(match result {
                    Ok(response) => Ok(response
                        .on_complete(move |completion| permit.record_completion(completion))),
                    Err(error) => {
                        permit.record_error(&error);
                        Err(error)
                    }
                })
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Admitted { .. } => "admitted",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

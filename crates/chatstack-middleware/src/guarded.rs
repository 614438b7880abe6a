//! [`Guarded`]: the response future shared by the layers that admit a call with a guard.
//!
//! The budget, cost, circuit breaker and auth layers each either refuse a call (their future
//! then returns the stored error) or admit it holding a guard: a reservation, what pricing
//! needs, a permit, a key. When the inner future completes, the guard is handed the outcome:
//! the response, to attach itself to (usually with
//! [`LlmResponse::on_complete`](chatstack_proto::LlmResponse::on_complete)), or the error.
//! Dropping the future before then drops the guard.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use chatstack_proto::Error;
use pin_project_lite::pin_project;

/// What an admitted call holds until its inner future completes.
pub(crate) trait Guard<T>: Sized {
    /// The inner future succeeded: attach the guard to `response` (or let it go) and return
    /// the response.
    fn succeeded(self, response: T) -> T;

    /// The inner future failed with `error`, which is returned as it is after this.
    fn failed(self, error: &Error);
}

pin_project! {
    /// The inner call's future with its guard, or the refusal of the call.
    pub(crate) struct Guarded<F, G> {
        #[pin]
        kind: Kind<F, G>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, G> {
        Admitted {
            #[pin]
            future: F,
            guard: Option<G>,
        },
        Refused {
            error: Option<Error>,
        },
    }
}

impl<F, G> Guarded<F, G> {
    /// An admitted call: `future` runs, then `guard` is handed its outcome.
    pub(crate) fn admitted(future: F, guard: G) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                guard: Some(guard),
            },
        }
    }

    /// A refused call: the future returns `error`.
    pub(crate) fn refused(error: Error) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
        }
    }

    /// Whether the call was admitted (for the layers' `Debug`).
    pub(crate) fn is_admitted(&self) -> bool {
        matches!(self.kind, Kind::Admitted { .. })
    }
}

impl<F, T, G> Future for Guarded<F, G>
where
    F: Future<Output = Result<T, Error>>,
    G: Guard<T>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { future, guard } => {
                let result = ready!(future.poll(cx));
                let Some(guard) = guard.take() else {
                    return Poll::Ready(result);
                };
                Poll::Ready(match result {
                    Ok(response) => Ok(guard.succeeded(response)),
                    Err(error) => {
                        guard.failed(&error);
                        Err(error)
                    }
                })
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

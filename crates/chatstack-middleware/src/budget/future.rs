//! [`ResponseFuture`]: the future of a [`Budget`](super::Budget) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Completion, Error, LlmResponse};
use pin_project_lite::pin_project;

use super::layer::Settings;
use super::state::{Reservation, Settle};
use crate::cost::{CacheTtl, Requested, Usd};
use crate::guarded::{Guard, Guarded};

pin_project! {
    /// The response future of [`Budget`](super::Budget): the inner call's future holding the
    /// request's reservation, or the refusal.
    ///
    /// Dropping the future before it completes gives the reservation back; so does a failed
    /// call. A response takes the reservation along and settles it when it completes (for a
    /// stream: when it ends, fails or is dropped).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Guarded<F, Pending>,
    }
}

/// An admitted request's reservation, and what settling it needs.
pub(crate) struct Pending<T = Reservation> {
    pub(crate) settings: Arc<Settings>,
    pub(crate) requested: Requested,
    pub(crate) ttl: CacheTtl,
    pub(crate) reservation: T,
}

impl<T: Settle> Pending<T> {
    /// Settles the reservation when the response completes.
    fn settle(self, completion: &Completion<'_>) {
        let Self {
            settings,
            requested,
            ttl,
            reservation,
        } = self;
        if !reservation.counts_spending() {
            // The spent figure is a ledger's, which the cost layer charges.
            reservation.settle(Usd::ZERO);
            return;
        }
        match completion.usage {
            Some(usage) => {
                let cost = settings
                    .pricing
                    .settle(&requested, completion.model, Some(usage), ttl);
                reservation.settle(cost.cost);
            }
            None if completion.is_success() => {
                let worst_case = reservation.amount();
                tracing::warn!(
                    model = &**requested.name(),
                    worst_case = %worst_case,
                    "a response reported no usage; the budget counts its worst case as spent"
                );
                reservation.settle(worst_case);
            }
            // Failed or dropped before its usage: given back (dropping it releases it).
            None => drop(reservation),
        }
    }
}

impl<T: Settle, U: LlmResponse> Guard<U> for Pending<T> {
    fn succeeded(self, response: U) -> U {
        response.on_complete(move |completion| self.settle(completion))
    }

    fn failed(self, _error: &Error) {
        // Dropping the pending settlement gives the reservation back.
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, pending: Pending) -> Self {
        Self {
            inner: Guarded::admitted(future, pending),
        }
    }

    pub(crate) fn refused(error: Error) -> Self {
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
            "refused"
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

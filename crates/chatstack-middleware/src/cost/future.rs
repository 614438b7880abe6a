//! [`ResponseFuture`]: the future of a [`Cost`](super::Cost) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmResponse};
use pin_project_lite::pin_project;

use super::layer::Settings;
use super::price::CacheTtl;
use super::pricing::{Requested, StreamCost};
use crate::guarded::{Guard, Guarded};

pin_project! {
    /// The response future of [`Cost`](super::Cost): the inner call's future, and what is
    /// needed to price its response; or the refusal of a model without a price under
    /// [`UnknownModel::Error`](super::UnknownModel::Error).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Guarded<F, Pending>,
    }
}

/// What pricing a response needs from its request.
pub(crate) struct Pending {
    pub(crate) settings: Arc<Settings>,
    pub(crate) requested: Requested,
    pub(crate) ttl: CacheTtl,
    pub(crate) tag: Option<String>,
}

impl<T: LlmResponse> Guard<T> for Pending {
    fn succeeded(self, response: T) -> T {
        attach(response, self)
    }

    fn failed(self, _error: &Error) {
        // A failed call costs nothing: there is no response to price.
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

/// Prices `response` when it completes, and puts its cost (or the handle that will hold it)
/// in its metadata.
fn attach<T: LlmResponse>(response: T, pending: Pending) -> T {
    let handle = StreamCost::new();
    let filled = handle.clone();
    let mut response = response.on_complete(move |completion| {
        let Pending {
            settings,
            requested,
            ttl,
            tag,
        } = pending;
        let cost = settings
            .pricing
            .settle(&requested, completion.model, completion.usage, ttl);
        settings.ledger.record(&cost, tag.as_deref());
        filled.set(cost);
    });
    let extensions = &mut response.meta_mut().extensions;
    match handle.get() {
        // Complete already (a unary response): the cost itself.
        Some(cost) => {
            extensions.insert(cost.clone());
        }
        // A stream: the handle, filled when it ends.
        None => {
            extensions.insert(handle);
        }
    }
    response
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.inner.is_admitted() {
            "called"
        } else {
            "refused"
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

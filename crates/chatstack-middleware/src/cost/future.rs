//! [`ResponseFuture`]: the future of a [`Cost`](super::Cost) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use chatstack_proto::{Error, LlmResponse};
use pin_project_lite::pin_project;

use super::layer::Settings;
use super::price::CacheTtl;
use super::pricing::{Requested, StreamCost};

pin_project! {
    /// The response future of [`Cost`](super::Cost): the inner call's future, and what is
    /// needed to price its response; or the refusal of a model without a price under
    /// [`UnknownModel::Error`](super::UnknownModel::Error).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            pending: Option<Pending>,
        },
        Refused {
            error: Option<Error>,
        },
    }
}

/// What pricing a response needs from its request.
pub(crate) struct Pending {
    pub(crate) settings: Arc<Settings>,
    pub(crate) requested: Requested,
    pub(crate) ttl: CacheTtl,
    pub(crate) tag: Option<String>,
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(future: F, pending: Pending) -> Self {
        Self {
            kind: Kind::Called {
                future,
                pending: Some(pending),
            },
        }
    }

    pub(crate) fn refused(error: Error) -> Self {
        Self {
            kind: Kind::Refused { error: Some(error) },
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
            KindProj::Called { future, pending } => {
                let response = ready!(future.poll(cx))?;
                let Some(pending) = pending.take() else {
                    return Poll::Ready(Ok(response));
                };
                Poll::Ready(Ok(attach(response, pending)))
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
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
        let state = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

//! [`ResponseFuture`]: the future of an [`Auth`](super::Auth) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::Error;
use pin_project_lite::pin_project;

use super::pool::{KeyPool, KeyTicket};
use crate::guarded::{Guard, Guarded};

pin_project! {
    /// The response future of [`Auth`](super::Auth): the inner call's future, with the key
    /// it was sent with, or the error that kept the request from being sent.
    ///
    /// When the inner future fails with an error that revokes keys, the key is taken out of
    /// rotation as the future completes.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Guarded<F, SentKey>,
    }
}

/// The pool key a request was sent with, if any: reported to its pool if the call fails.
pub(crate) struct SentKey(Option<(Arc<KeyPool>, KeyTicket)>);

impl<T> Guard<T> for SentKey {
    fn succeeded(self, response: T) -> T {
        response
    }

    fn failed(self, error: &Error) {
        if let Some((pool, ticket)) = self.0 {
            pool.report(ticket, error);
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn sent(future: F, key: Option<(Arc<KeyPool>, KeyTicket)>) -> Self {
        Self {
            inner: Guarded::admitted(future, SentKey(key)),
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
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.inner.is_admitted() {
            "sent"
        } else {
            "refused"
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

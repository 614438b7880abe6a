//! [`ResponseFuture`]: the future of an [`Auth`](super::Auth) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use chatstack_proto::Error;
use pin_project_lite::pin_project;

use super::pool::{KeyPool, KeyTicket};

pin_project! {
    /// The response future of [`Auth`](super::Auth): the inner call's future, with the key
    /// it was sent with, or the error that kept the request from being sent.
    ///
    /// When the inner future fails with an error that revokes keys, the key is taken out of
    /// rotation as the future completes.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Sent {
            #[pin]
            future: F,
            key: Option<(Arc<KeyPool>, KeyTicket)>,
        },
        Refused {
            error: Option<Error>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn sent(future: F, key: Option<(Arc<KeyPool>, KeyTicket)>) -> Self {
        Self {
            kind: Kind::Sent { future, key },
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
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Sent { future, key } => {
                let result = ready!(future.poll(cx));
                if let (Err(error), Some((pool, ticket))) = (&result, key.take()) {
                    pool.report(ticket, error);
                }
                Poll::Ready(result)
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Sent { .. } => "sent",
            Kind::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

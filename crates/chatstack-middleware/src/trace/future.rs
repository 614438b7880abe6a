//! [`ResponseFuture`]: the future of a [`Trace`](super::Trace) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use chatstack_proto::{Error, LlmResponse};
use pin_project_lite::pin_project;

use super::record::Call;

pin_project! {
    /// The response future of [`Trace`](super::Trace): the inner future, polled inside the
    /// request's span.
    ///
    /// When it fails, the span gets `error.type`. When it succeeds, the response attributes
    /// are recorded when the response completes: at once for a unary response, at its end
    /// for a stream, which keeps the span open until then. Dropped before it completes, it
    /// records `error.type = "cancelled"`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.cancelled();
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, call: Call) -> Self {
        Self {
            inner,
            call: Some(call),
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
        let this = self.project();
        let result = {
            let _entered = this.call.as_ref().map(|call| call.span().enter());
            ready!(this.inner.poll(cx))
        };
        let Some(call) = this.call.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(match result {
            Ok(response) => Ok(call.attach(response)),
            Err(error) => {
                call.failed(&error);
                Err(error)
            }
        })
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", &self.call.as_ref().map(Call::span))
            .finish_non_exhaustive()
    }
}

//! [`Trace`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use tower::Service;

use super::future::ResponseFuture;
use super::layer::Settings;
use super::record::Call;

/// Traces every request in a `gen_ai.chat` span with the OpenTelemetry GenAI attributes;
/// see the [module docs](super).
///
/// Made by [`TraceLayer`](super::TraceLayer). `poll_ready` is the inner service's. The
/// inner service's `call` and its response future run inside the span, and so does a
/// stream's reading of chunks, so the events of inner layers (retries, rate-limit waits,
/// breaker changes) belong to the span.
#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> Trace<S> {
    pub(crate) fn from_parts(inner: S, settings: Arc<Settings>) -> Self {
        Self { inner, settings }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, to change.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Trace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("inner", &self.inner)
            .field("provider", &self.settings.provider)
            .field("server_address", &self.settings.server_address)
            .field("server_port", &self.settings.server_port)
            .finish()
    }
}

impl<S, R> Service<R> for Trace<S>
where
    S: Service<R, Error = Error>,
    S::Response: LlmResponse,
    R: LlmRequest,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let call = Call::start(&self.settings, &request);
        let future = {
            let _entered = call.span().enter();
            self.inner.call(request)
        };
        ResponseFuture::new(future, call)
    }
}

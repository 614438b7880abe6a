//! [`CircuitBreaker`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use tower::Service;

use super::future::ResponseFuture;
use super::state::{Circuit, CircuitState, Circuits};

/// Stops calling a failing model (or endpoint) for a while: a circuit breaker with
/// Resilience4j's semantics, one circuit per key. See the [module docs](super).
///
/// Made by [`CircuitBreakerLayer`](super::CircuitBreakerLayer). Clones share their circuits.
/// `poll_ready` is the inner service's; a call that the circuit rejects fails in its response
/// future with [`ErrorKind::CircuitOpen`](chatstack_proto::ErrorKind::CircuitOpen) without
/// reaching the inner service.
#[derive(Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    circuits: Arc<Circuits>,
    /// The circuit of this clone's last call, so that a run of calls for one key (the common
    /// case: one model, or one endpoint) skips the lock and the hashing of the shared map.
    last: Option<Arc<Circuit>>,
}

impl<S> CircuitBreaker<S> {
    pub(crate) fn from_parts(inner: S, circuits: Arc<Circuits>) -> Self {
        Self {
            inner,
            circuits,
            last: None,
        }
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

    /// The state of the circuit of `key` (by default, a model name); see
    /// [`CircuitBreakerLayer::state`](super::CircuitBreakerLayer::state).
    pub fn state(&self, key: &str) -> CircuitState {
        self.circuits.state(key)
    }
}

impl<S: fmt::Debug> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("settings", self.circuits.settings())
            .finish_non_exhaustive()
    }
}

impl<S, R> Service<R> for CircuitBreaker<S>
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
        let circuit = {
            let key = self.circuits.settings().key_by.key_of(&request);
            match &self.last {
                Some(last) if last.key() == key => Arc::clone(last),
                _ => {
                    let circuit = self.circuits.circuit(&key);
                    self.last = Some(Arc::clone(&circuit));
                    circuit
                }
            }
        };
        match circuit.admit() {
            Ok(permit) => ResponseFuture::admitted(self.inner.call(request), permit),
            Err(rejection) => ResponseFuture::rejected(rejection),
        }
    }
}

//! [`ResponseFuture`], the future of a [`Fallback`](super::Fallback) call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use chatstack_proto::{Error, LlmResponse};
use pin_project_lite::pin_project;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{Service, ServiceExt};

use super::alternative::{Alternative, AnsweredBy};
use super::layer::ModelSetter;

pin_project! {
    #[project = StateProj]
    enum State<P, M, B> {
        /// The primary call, on the ready inner service.
        Primary {
            #[pin]
            future: P,
        },
        /// A model alternative, on a clone of the inner service.
        Model {
            #[pin]
            future: M,
        },
        /// A service alternative.
        Service {
            #[pin]
            future: B,
        },
    }
}

type StateOf<S, R, T> =
    State<<S as Service<R>>::Future, Oneshot<S, R>, Oneshot<BoxCloneSyncService<R, T, Error>, R>>;

pin_project! {
    /// The response future of [`Fallback`](super::Fallback).
    ///
    /// It resolves with the first success, tagged with [`AnsweredBy`], or with the last
    /// error, its attempts counting every attempt made.
    pub struct ResponseFuture<S, R, T>
    where
        S: Service<R, Response = T, Error = Error>,
    {
        #[pin]
        state: StateOf<S, R, T>,
        // The request as it came and a spare inner service, while an alternative is left.
        spare: Option<(R, S)>,
        alternatives: Arc<Vec<Alternative<R, T>>>,
        set_model: ModelSetter<R>,
        // Who answers now: 0 for the primary, `i` for the `i`-th alternative.
        index: usize,
        name: Arc<str>,
        // The attempts of the ones that failed.
        attempts: u32,
    }
}

impl<S, R, T> ResponseFuture<S, R, T>
where
    S: Service<R, Response = T, Error = Error>,
{
    pub(crate) fn new(
        future: S::Future,
        spare: Option<(R, S)>,
        alternatives: Arc<Vec<Alternative<R, T>>>,
        set_model: ModelSetter<R>,
        name: Arc<str>,
    ) -> Self {
        Self {
            state: State::Primary { future },
            spare,
            alternatives,
            set_model,
            index: 0,
            name,
            attempts: 0,
        }
    }
}

/// Whether a failure sends the request on: a retryable one (the same request may succeed
/// elsewhere) or an open circuit (this one is known to be failing).
fn falls_back(error: &Error) -> bool {
    error.is_retryable() || error.is_circuit_open()
}

impl<S, R, T> Future for ResponseFuture<S, R, T>
where
    S: Service<R, Response = T, Error = Error> + Clone,
    R: Clone,
    T: LlmResponse,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result = match this.state.as_mut().project() {
                StateProj::Primary { future } => ready!(future.poll(cx)),
                StateProj::Model { future } => ready!(future.poll(cx)),
                StateProj::Service { future } => ready!(future.poll(cx)),
            };
            let mut error = match result {
                Ok(mut response) => {
                    let meta = response.meta_mut();
                    if *this.index > 0 {
                        meta.attempts = meta.attempts.max(1).saturating_add(*this.attempts);
                    }
                    meta.extensions
                        .insert(AnsweredBy::new(*this.index, this.name.clone()));
                    return Poll::Ready(Ok(response));
                }
                Err(error) => error,
            };
            let spent = this.attempts.saturating_add(error.attempts().max(1));
            let next = this
                .alternatives
                .get(*this.index)
                .filter(|_| falls_back(&error));
            let last = *this.index + 1 == this.alternatives.len();
            let spare = match next {
                // The last alternative takes what was kept; the others take copies.
                Some(_) if last => this.spare.take(),
                Some(_) => this.spare.clone(),
                None => None,
            };
            let (Some(alternative), Some((mut request, inner))) = (next, spare) else {
                if *this.index > 0 {
                    error.set_attempts(spent);
                }
                return Poll::Ready(Err(error));
            };
            tracing::warn!(
                from.index = *this.index,
                from.name = %this.name,
                to.index = *this.index + 1,
                to.name = %alternative.name(),
                error.kind = %error.kind(),
                error = %error,
                "falling back to the next alternative",
            );
            *this.attempts = spent;
            *this.index += 1;
            this.name.clone_from(alternative.shared_name());
            if let Some(model) = alternative.target_model() {
                (this.set_model)(&mut request, model);
            }
            let state = match alternative.boxed_service() {
                Some(service) => State::Service {
                    future: service.clone().oneshot(request),
                },
                None => State::Model {
                    future: inner.oneshot(request),
                },
            };
            this.state.set(state);
        }
    }
}

impl<S, R, T> fmt::Debug for ResponseFuture<S, R, T>
where
    S: Service<R, Response = T, Error = Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("index", &self.index)
            .field("name", &self.name)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

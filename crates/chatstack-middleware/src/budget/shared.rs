//! [`SharedResponseFuture`]: a call through a [`Budget`] whose budget is in Redis, which
//! waits for its reservation before it is sent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use pin_project_lite::pin_project;
use tower::Service;

use super::future::Pending;
use super::layer::Settings;
use super::service::{Budget, worst_case};
use crate::cost::{CacheTtl, Requested, request_usage};
use crate::guarded::Guarded;
use crate::redis::RedisBudget;
use crate::redis::budget::{ReserveFuture, SharedReservation};

/// A budget in Redis: the reservation is a round trip, made in the response future, so the
/// service that was polled ready goes into the future and a clone takes its place (hence
/// `S: Clone`, as for the rate limiter's waits).
impl<S, R> Service<R> for Budget<S, RedisBudget>
where
    S: Service<R, Error = Error> + Clone,
    S::Response: LlmResponse,
    R: LlmRequest,
{
    type Response = S::Response;
    type Error = Error;
    type Future = SharedResponseFuture<S, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_ready(cx)
    }

    fn call(&mut self, mut request: R) -> Self::Future {
        let (inner, budget, settings) = self.parts();
        let (requested, ttl, worst_case) = match worst_case(settings, &request) {
            Ok(priced) => priced,
            Err(error) => return SharedResponseFuture::refused(error),
        };
        if settings.stream_usage && request.is_streaming() {
            request_usage(&mut request);
        }
        let reserve = budget.reserve(worst_case, request.model());
        let settings = Arc::clone(settings);
        let clone = inner.clone();
        let service = std::mem::replace(inner, clone);
        SharedResponseFuture {
            state: State::Reserving {
                reserve,
                call: Some(Call {
                    service,
                    request,
                    settings,
                    requested,
                    ttl,
                }),
            },
        }
    }
}

/// What sending the request needs once it is reserved.
struct Call<S, R> {
    service: S,
    request: R,
    settings: Arc<Settings>,
    requested: Requested,
    ttl: CacheTtl,
}

pin_project! {
    /// The response future of a [`Budget`] in Redis: the reservation (one round trip), then
    /// the inner call holding it, or the refusal.
    ///
    /// As with the in-process budget, dropping the future before the response completes,
    /// or a failed call, gives the reservation back, and a response settles it when it
    /// completes; here, through the process's queue of writes to Redis.
    pub struct SharedResponseFuture<S, R>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S, R, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, R, F> {
        Reserving {
            reserve: ReserveFuture,
            call: Option<Call<S, R>>,
        },
        Calling {
            #[pin]
            inner: Guarded<F, Pending<SharedReservation>>,
        },
    }
}

impl<S, R> SharedResponseFuture<S, R>
where
    S: Service<R>,
{
    fn refused(error: Error) -> Self {
        Self {
            state: State::Calling {
                inner: Guarded::refused(error),
            },
        }
    }
}

impl<S, R> Future for SharedResponseFuture<S, R>
where
    S: Service<R, Error = Error>,
    S::Response: LlmResponse,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reserving { reserve, call } => {
                    let reserved = ready!(reserve.as_mut().poll(cx));
                    let Some(Call {
                        mut service,
                        request,
                        settings,
                        requested,
                        ttl,
                    }) = call.take()
                    else {
                        unreachable!("a reservation is answered once");
                    };
                    let inner = match reserved {
                        Ok(reservation) => Guarded::admitted(
                            service.call(request),
                            Pending {
                                settings,
                                requested,
                                ttl,
                                reservation,
                            },
                        ),
                        Err(error) => Guarded::refused(error),
                    };
                    this.state.set(State::Calling { inner });
                }
                StateProj::Calling { inner } => return inner.poll(cx),
            }
        }
    }
}

impl<S, R> fmt::Debug for SharedResponseFuture<S, R>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Reserving { .. } => "reserving",
            State::Calling { inner } if inner.is_admitted() => "admitted",
            State::Calling { .. } => "refused",
        };
        f.debug_struct("SharedResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

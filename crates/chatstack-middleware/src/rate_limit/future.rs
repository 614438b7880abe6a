//! [`ResponseFuture`]: one call through a [`RateLimit`](super::RateLimit), its wait included.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use chatstack_proto::{Error, LlmResponse};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::state::{Charge, Ticket, Turn};

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit).
    ///
    /// A request admitted at once is already sent when the future is made. One that must
    /// wait keeps its place in its key's queue and waits here, on tokio's clock, until its
    /// turn: nothing is spawned, and dropping the future leaves the queue (handing the turn
    /// to the next request if it was first).
    pub struct ResponseFuture<S, R>
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
        // In the queue (boxed: the path that waits anyway pays the allocation, the one that
        // does not keeps a small future).
        Waiting {
            waiting: Box<Waiting<S, R>>,
        },
        // Sent.
        Calling {
            #[pin]
            future: F,
            charge: Option<Charge>,
        },
        // Refused, or done.
        Refused {
            error: Option<Error>,
        },
    }
}

/// A request waiting for its turn, with the service that will send it.
struct Waiting<S, R> {
    ticket: Ticket,
    service: Option<S>,
    request: Option<R>,
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Puts a [`SharedAdmission`](crate::redis::SharedAdmission) in the request's
    /// extensions (a function of the request type, made where it is known to be an
    /// `LlmRequest`).
    #[cfg(feature = "redis")]
    mark: fn(&mut R, std::time::SystemTime),
}

impl<S, R> ResponseFuture<S, R>
where
    S: Service<R>,
{
    pub(crate) fn called(future: S::Future, charge: Charge) -> Self {
        Self {
            state: State::Calling {
                future,
                charge: Some(charge),
            },
        }
    }

    pub(crate) fn queued(ticket: Ticket, service: S, request: R, deadline: Option<Instant>) -> Self
    where
        R: chatstack_proto::LlmRequest,
    {
        Self {
            state: State::Waiting {
                waiting: Box::new(Waiting {
                    ticket,
                    service: Some(service),
                    request: Some(request),
                    deadline,
                    sleep: None,
                    #[cfg(feature = "redis")]
                    mark: |request, at| {
                        request
                            .meta_mut()
                            .extensions
                            .insert(crate::redis::SharedAdmission { server_time: at });
                    },
                }),
            },
        }
    }

    pub(crate) fn refused(error: Error) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R, Error = Error>,
    S::Response: LlmResponse,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { waiting } => {
                    match waiting.ticket.poll_turn(waiting.deadline, cx) {
                        Turn::Admitted(charge) => {
                            #[allow(unused_mut)]
                            let (Some(mut service), Some(mut request)) =
                                (waiting.service.take(), waiting.request.take())
                            else {
                                unreachable!("a waiting request is admitted once");
                            };
                            #[cfg(feature = "redis")]
                            if let Some(at) = charge.shared_at {
                                (waiting.mark)(&mut request, at);
                            }
                            let future = service.call(request);
                            this.state.set(State::Calling {
                                future,
                                charge: Some(charge),
                            });
                        }
                        Turn::Wait(Some(at)) => {
                            let sleep = match &mut waiting.sleep {
                                Some(sleep) => {
                                    if sleep.deadline() != at {
                                        sleep.as_mut().reset(at);
                                    }
                                    sleep
                                }
                                slot => slot.insert(Box::pin(tokio::time::sleep_until(at))),
                            };
                            ready!(sleep.as_mut().poll(cx));
                            // The time has come: look again.
                        }
                        Turn::Wait(None) => return Poll::Pending,
                        Turn::Refused(error) => {
                            this.state.set(State::Refused { error: None });
                            return Poll::Ready(Err(error));
                        }
                    }
                }
                StateProj::Calling { future, charge } => {
                    let result = ready!(future.poll(cx));
                    let Some(charge) = charge.take() else {
                        return Poll::Ready(result);
                    };
                    return Poll::Ready(match result {
                        Ok(response) => Ok(charge.settle(response)),
                        Err(error) => {
                            charge.failed(&error);
                            Err(error)
                        }
                    });
                }
                StateProj::Refused { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
            }
        }
    }
}

impl<S, R> fmt::Debug for ResponseFuture<S, R>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Calling { .. } => "calling",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

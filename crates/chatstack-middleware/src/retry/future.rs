//! [`ResponseFuture`]: one call through [`Retry`](super::Retry), all its attempts and waits.

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use chatstack_proto::{Error, LlmRequest, LlmResponse};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;
use tower::retry::budget::Budget;

use super::classify::RetryClassifier;
use super::layer::RetryConfig;
use super::stopped::{RetryStopped, StopReason};

pin_project! {
    /// The future of a [`Retry`](super::Retry) call.
    ///
    /// It makes the attempts and sleeps the waits between them itself, on tokio's clock: it
    /// spawns nothing, so dropping it cancels the call at once, in an attempt or in a wait.
    pub struct ResponseFuture<S, R, C>
    where
        S: Service<R>,
    {
        #[pin]
        state: State<S::Future, S::Response>,
        service: S,
        request: R,
        config: Arc<RetryConfig<C>>,
        deadline: Option<Instant>,
        attempts: u32,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateProjReplace]
    enum State<F, T> {
        // An attempt is in flight.
        Attempt {
            #[pin]
            future: F,
        },
        // A stream answered; waiting for its first chunk, or its failure before it.
        FirstChunk {
            response: T,
        },
        // Waiting before the next attempt.
        Backoff {
            #[pin]
            sleep: Sleep,
        },
        // Waiting for the service to be ready for the next attempt.
        PollReady,
    }
}

impl<S, R, C> ResponseFuture<S, R, C>
where
    S: Service<R>,
{
    pub(crate) fn new(
        first_attempt: S::Future,
        service: S,
        request: R,
        config: Arc<RetryConfig<C>>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            state: State::Attempt {
                future: first_attempt,
            },
            service,
            request,
            config,
            deadline,
            attempts: 1,
        }
    }
}

impl<S, R, C> Future for ResponseFuture<S, R, C>
where
    S: Service<R, Error = Error>,
    S::Response: LlmResponse,
    R: LlmRequest + Clone,
    C: RetryClassifier,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let failure = match this.state.as_mut().project() {
                StateProj::Attempt { future } => match ready!(future.poll(cx)) {
                    Ok(mut response) => {
                        if response.as_chat_stream_mut().is_some() {
                            this.state.set(State::FirstChunk { response });
                            continue;
                        }
                        response.meta_mut().attempts = *this.attempts;
                        return Poll::Ready(Ok(response));
                    }
                    Err(error) => error,
                },
                StateProj::FirstChunk { response } => {
                    let first_chunk = match response.as_chat_stream_mut() {
                        // `first_chunk_ready` keeps what it has read inside the stream, so a
                        // fresh call on each poll resumes where the previous one stopped.
                        Some(stream) => ready!(pin!(stream.first_chunk_ready()).poll(cx)),
                        None => Ok(()),
                    };
                    let StateProjReplace::FirstChunk { mut response } =
                        this.state.as_mut().project_replace(State::PollReady)
                    else {
                        unreachable!("the state was FirstChunk a moment ago");
                    };
                    match first_chunk {
                        Ok(()) => {
                            response.meta_mut().attempts = *this.attempts;
                            return Poll::Ready(Ok(response));
                        }
                        // The stream failed before the caller saw anything: drop it (and its
                        // connection) and treat the failure as the attempt's.
                        Err(error) => error,
                    }
                }
                StateProj::Backoff { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::PollReady);
                    continue;
                }
                StateProj::PollReady => {
                    if let Err(mut error) = ready!(this.service.poll_ready(cx)) {
                        error.set_attempts(*this.attempts);
                        return Poll::Ready(Err(error));
                    }
                    *this.attempts += 1;
                    let future = this.service.call(this.request.clone());
                    this.state.set(State::Attempt { future });
                    continue;
                }
            };
            let after_failure = after_failure(
                this.config,
                failure,
                *this.attempts,
                *this.deadline,
                this.request,
            );
            match after_failure {
                AfterFailure::Retry(wait) => this.state.set(State::Backoff {
                    sleep: tokio::time::sleep(wait),
                }),
                AfterFailure::GiveUp(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl<S, R, C> fmt::Debug for ResponseFuture<S, R, C>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What follows a failed attempt.
enum AfterFailure {
    /// Another attempt, after this wait.
    Retry(Duration),
    /// No more attempts: the call ends with this error.
    GiveUp(Error),
}

/// Decides what follows the failure of attempt number `attempts`: the classifier, the
/// attempt limit, `retry-after` and its cap, the deadlines, then the budget, in that order.
fn after_failure<C: RetryClassifier>(
    config: &RetryConfig<C>,
    mut error: Error,
    attempts: u32,
    total_deadline: Option<Instant>,
    request: &impl LlmRequest,
) -> AfterFailure {
    error.set_attempts(attempts);
    if !config.classifier.is_retryable(&error) {
        return AfterFailure::GiveUp(error);
    }
    if attempts >= config.max_attempts {
        tracing::debug!(
            attempts,
            model = request.model(),
            error = %error,
            "not retrying: no attempts left"
        );
        return AfterFailure::GiveUp(error);
    }
    // As in the OpenAI SDKs, a `retry-after` of zero (or a date in the past) means "use
    // the backoff", so a server cannot make the client retry in a tight loop.
    let (wait, delay_from) = match error.retry_after().filter(|wait| !wait.is_zero()) {
        Some(wait) if wait > config.retry_after_cap => {
            let reason = StopReason::RetryAfterAboveCap {
                cap: config.retry_after_cap,
            };
            return give_up_at_once(error, reason, wait, request);
        }
        Some(wait) => (wait, "retry-after"),
        None => (config.backoff.delay(attempts - 1), "backoff"),
    };
    let request_deadline = request.meta().deadline.map(Instant::from_std);
    let deadline = match (total_deadline, request_deadline) {
        (Some(total), Some(request)) => Some(total.min(request)),
        (total, request) => total.or(request),
    };
    if let Some(deadline) = deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if wait >= left {
            return give_up_at_once(error, StopReason::PastDeadline { left }, wait, request);
        }
    }
    if let Some(budget) = &config.budget {
        if !budget.withdraw() {
            tracing::debug!(
                attempts,
                model = request.model(),
                error = %error,
                "not retrying: the retry budget is spent"
            );
            return AfterFailure::GiveUp(error);
        }
    }
    tracing::warn!(
        attempt = attempts,
        model = request.model(),
        error.kind = %error.kind(),
        status = error.status().map(|status| status.as_u16()),
        delay_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        delay_from,
        error = %error,
        "retrying"
    );
    AfterFailure::Retry(wait)
}

fn give_up_at_once(
    error: Error,
    reason: StopReason,
    wait: Duration,
    request: &impl LlmRequest,
) -> AfterFailure {
    let error = RetryStopped::mark(error, reason, wait);
    tracing::debug!(
        attempts = error.attempts(),
        model = request.model(),
        error = %error,
        "not retrying: the wait is refused"
    );
    AfterFailure::GiveUp(error)
}

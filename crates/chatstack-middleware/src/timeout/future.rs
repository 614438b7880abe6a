//! [`ResponseFuture`], the future of a [`Timeout`](super::Timeout) call.

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use chatstack_proto::{Error, ErrorKind, LlmResponse, TimeoutKind};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::layer::TimeoutConfig;
use super::stream::TimeoutStream;

/// Which of the limits of a [`TimeoutConfig`] a [`Limit`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// [`TimeoutConfig::total`].
    Total,
    /// [`TimeoutConfig::first_chunk`].
    FirstChunk,
    /// [`TimeoutConfig::idle`].
    Idle,
    /// [`TimeoutConfig::stream_total`].
    StreamTotal,
}

/// One limit: which one it is, and its value (for the error message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub(crate) which: Which,
    pub(crate) limit: Duration,
}

impl Limit {
    /// The limit `which`, of `limit`.
    pub(crate) fn new(which: Which, limit: Duration) -> Self {
        Self { which, limit }
    }

    /// The kind of timeout error it ends with: the stream-total limit is a `Total` one, since
    /// it bounds the whole attempt of a stream.
    pub(crate) fn kind(&self) -> TimeoutKind {
        match self.which {
            Which::Total | Which::StreamTotal => TimeoutKind::Total,
            Which::FirstChunk => TimeoutKind::FirstChunk,
            Which::Idle => TimeoutKind::Idle,
        }
    }

    /// The error of this limit passing; `chunks` is how many chunks arrived before.
    pub(crate) fn error(&self, chunks: u64) -> Error {
        let limit = self.limit;
        let message = match self.which {
            Which::Total => format!("no response within the total limit of {limit:?}"),
            Which::FirstChunk => {
                format!("no first chunk within the first-chunk limit of {limit:?} from the call")
            }
            Which::Idle => {
                format!("no chunk within the idle limit of {limit:?} after chunk {chunks}")
            }
            Which::StreamTotal => format!(
                "the stream did not end within the stream-total limit of {limit:?} from the \
                 call ({chunks} chunks arrived)"
            ),
        };
        Error::new(ErrorKind::Timeout(self.kind()), message)
    }
}

pin_project! {
    /// A limit being timed: its sleep and what it means when it ends.
    struct Deadline {
        #[pin]
        sleep: Sleep,
        limit: Limit,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        /// Waiting for the inner service's response.
        Waiting {
            #[pin]
            future: F,
        },
        /// The response is a stream: waiting for its first chunk (under the first-chunk limit,
        /// which the stream wrapper times).
        FirstChunk {
            response: Option<T>,
        },
    }
}

pin_project! {
    /// The response future of [`Timeout`](super::Timeout).
    ///
    /// It resolves with the inner service's response, or with a timeout error. For a stream
    /// with a first-chunk limit it resolves once the first chunk has arrived (the stream
    /// keeps it and yields it first).
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
        #[pin]
        deadline: Option<Deadline>,
        started: Instant,
        config: TimeoutConfig,
    }
}

impl<F, T> ResponseFuture<F, T> {
    /// Times `future`, called at `started`, against `limit` until the response arrives.
    pub(crate) fn new(
        future: F,
        started: Instant,
        limit: Option<Limit>,
        config: TimeoutConfig,
    ) -> Self {
        // A limit too large to be an `Instant` is no limit.
        let deadline = limit.and_then(|limit| {
            let at = started.checked_add(limit.limit)?;
            Some(Deadline {
                sleep: tokio::time::sleep_until(at),
                limit,
            })
        });
        Self {
            state: State::Waiting { future },
            deadline,
            started,
            config,
        }
    }
}

impl<F, T> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, Error>>,
    T: LlmResponse,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { future } => {
                    // The inner future first: a response that is ready when the limit ends
                    // still counts.
                    let mut response = match future.poll(cx) {
                        Poll::Ready(result) => result?,
                        Poll::Pending => {
                            if let Some(deadline) = this.deadline.as_mut().as_pin_mut() {
                                let deadline = deadline.project();
                                ready!(deadline.sleep.poll(cx));
                                return Poll::Ready(Err(deadline.limit.error(0)));
                            }
                            return Poll::Pending;
                        }
                    };
                    this.deadline.set(None);
                    let config = *this.config;
                    let Some(stream) = response
                        .as_chat_stream_mut()
                        .filter(|_| config.limits_streams())
                    else {
                        return Poll::Ready(Ok(response));
                    };
                    let started = *this.started;
                    stream.wrap_inner(move |inner| TimeoutStream::new(inner, started, config));
                    if config.first_chunk.is_none() {
                        return Poll::Ready(Ok(response));
                    }
                    this.state.set(State::FirstChunk {
                        response: Some(response),
                    });
                }
                StateProj::FirstChunk { response } => {
                    let ready = match response.as_mut().and_then(LlmResponse::as_chat_stream_mut) {
                        Some(stream) => {
                            // `first_chunk_ready` keeps nothing across a `Pending` (it polls
                            // the inner stream and stores the chunk only once one arrived),
                            // so a fresh one per poll, pinned on the stack, loses nothing and
                            // saves boxing a future that borrows the response.
                            let first = pin!(stream.first_chunk_ready());
                            ready!(first.poll(cx))
                        }
                        None => Ok(()),
                    };
                    let response = response
                        .take()
                        .expect("timeout ResponseFuture polled after completion");
                    return Poll::Ready(ready.map(|()| response));
                }
            }
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting for the response",
            State::FirstChunk { .. } => "waiting for the first chunk",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("started", &self.started)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

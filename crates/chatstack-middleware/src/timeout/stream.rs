//! The stream wrapper that times a stream's first chunk and the gaps between chunks.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use chatstack_proto::{ChatChunk, Error, TimeoutKind};
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::future::Limit;
use super::layer::TimeoutConfig;

pin_project! {
    /// Wraps the chunk stream inside a `ChatStream`: until the first chunk, the first-chunk
    /// limit (from the call) runs; after each chunk, the idle limit starts again.
    ///
    /// One `Sleep`, reset after each chunk: no allocation per chunk. Each poll asks the inner
    /// stream first, so a chunk that is ready when a limit ends still counts, and a caller
    /// that reads slowly is not blamed on the provider: the limit only fails a poll that
    /// finds nothing to read.
    pub(crate) struct TimeoutStream<St> {
        #[pin]
        inner: St,
        #[pin]
        sleep: Sleep,
        // The limit `sleep` times now; `None` when none is in force.
        armed: Option<Limit>,
        idle: Option<Limit>,
        chunks: u64,
        done: bool,
    }
}

impl<St> TimeoutStream<St> {
    /// Times `inner`, a stream whose request was made at `started`.
    pub(crate) fn new(inner: St, started: Instant, config: TimeoutConfig) -> Self {
        let first_chunk = config.first_chunk.and_then(|limit| {
            let at = started.checked_add(limit)?;
            Some((
                at,
                Limit {
                    kind: TimeoutKind::FirstChunk,
                    limit,
                },
            ))
        });
        // Without a first-chunk limit the sleep waits, unpolled (a tokio timer registers
        // itself on its first poll), for the first chunk to arm it with the idle limit.
        let (at, armed) = match first_chunk {
            Some((at, limit)) => (at, Some(limit)),
            None => (started, None),
        };
        Self {
            inner,
            sleep: tokio::time::sleep_until(at),
            armed,
            idle: config.idle.map(|limit| Limit {
                kind: TimeoutKind::Idle,
                limit,
            }),
            chunks: 0,
            done: false,
        }
    }
}

impl<St> Stream for TimeoutStream<St>
where
    St: Stream<Item = Result<ChatChunk, Error>>,
{
    type Item = Result<ChatChunk, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                *this.chunks += 1;
                // A limit too large to be an `Instant` is no limit.
                *this.armed = this.idle.and_then(|idle| {
                    let at = Instant::now().checked_add(idle.limit)?;
                    this.sleep.as_mut().reset(at);
                    Some(idle)
                });
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(limit) = *this.armed else {
                    return Poll::Pending;
                };
                ready!(this.sleep.poll(cx));
                *this.done = true;
                Poll::Ready(Some(Err(limit.error(*this.chunks))))
            }
        }
    }
}

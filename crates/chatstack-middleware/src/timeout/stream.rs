//! The stream wrapper that times a stream's first chunk, the gaps between chunks, and the
//! time to its end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use chatstack_proto::{ChatChunk, Error};
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::future::{Limit, Which};
use super::layer::TimeoutConfig;

/// A limit in force: when it ends, and which it is.
type Deadline = (Instant, Limit);

/// The deadline that ends first of two; on a tie, `a`.
fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
    match (a, b) {
        (Some(a), Some(b)) if b.0 < a.0 => Some(b),
        (Some(a), _) => Some(a),
        (None, b) => b,
    }
}

/// The deadline of `limit` (when set) counted from `from`; a limit too large to be an
/// `Instant` is no limit.
fn deadline(from: Instant, which: Which, limit: Option<Duration>) -> Option<Deadline> {
    let limit = limit?;
    Some((from.checked_add(limit)?, Limit::new(which, limit)))
}

pin_project! {
    /// Wraps the chunk stream inside a `ChatStream`: until the first chunk, the first-chunk
    /// limit (from the call) runs; after each chunk, the idle limit starts again; and from
    /// the call to the stream's end, the stream-total limit runs.
    ///
    /// One `Sleep`, set to whichever limit in force ends first: no allocation per chunk.
    /// The first chunk sets it (the idle limit may end before the first-chunk limit would
    /// have); later chunks only stamp their time, since each moves the idle deadline later:
    /// when the sleep ends, it is set again for the idle limit of the last chunk if that
    /// ends later, so the timer is touched once per idle period instead of once per chunk.
    ///
    /// Each poll asks the inner stream first, so a chunk that is ready when a limit ends
    /// still counts, and a caller that reads slowly is not blamed on the provider: the
    /// first-chunk and idle limits only fail a poll that finds nothing to read. The
    /// stream-total limit also fails a chunk that arrives once it has passed, so that a
    /// stream whose chunks are always ready (a fast drip of empty chunks) is stopped too.
    pub(crate) struct TimeoutStream<St> {
        #[pin]
        inner: St,
        #[pin]
        sleep: Sleep,
        // The limit `sleep` times now; `None` when none is in force.
        armed: Option<Limit>,
        idle: Option<Limit>,
        // The end of the stream-total limit; `None` when it is off.
        end: Option<Deadline>,
        // When the last chunk came; `None` before the first.
        last_chunk: Option<Instant>,
        chunks: u64,
        done: bool,
    }
}

impl<St> TimeoutStream<St> {
    /// Times `inner`, a stream whose request was made at `started`.
    pub(crate) fn new(inner: St, started: Instant, config: TimeoutConfig) -> Self {
        let end = deadline(started, Which::StreamTotal, config.stream_total);
        let first = deadline(started, Which::FirstChunk, config.first_chunk);
        // Without a limit until the first chunk, the sleep waits, unpolled (a tokio timer
        // registers itself on its first poll), for the first chunk to arm it with the idle
        // limit.
        let (at, armed) = match earliest(first, end) {
            Some((at, limit)) => (at, Some(limit)),
            None => (started, None),
        };
        Self {
            inner,
            sleep: tokio::time::sleep_until(at),
            armed,
            idle: config.idle.map(|limit| Limit::new(Which::Idle, limit)),
            end,
            last_chunk: None,
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
                if this.idle.is_none() && this.end.is_none() {
                    *this.armed = None;
                    *this.chunks += 1;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                let now = Instant::now();
                if let Some((end, limit)) = *this.end {
                    // A chunk at the very end still counts, as everywhere else.
                    if now > end {
                        *this.done = true;
                        return Poll::Ready(Some(Err(limit.error(*this.chunks))));
                    }
                }
                *this.chunks += 1;
                let first = this.last_chunk.replace(now).is_none();
                if first {
                    *this.armed =
                        earliest(idle_deadline(now, *this.idle), *this.end).map(|(at, limit)| {
                            if this.sleep.deadline() != at {
                                this.sleep.as_mut().reset(at);
                            }
                            limit
                        });
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => loop {
                let Some(armed) = *this.armed else {
                    return Poll::Pending;
                };
                ready!(this.sleep.as_mut().poll(cx));
                // Set for an earlier chunk, the sleep may end before the idle limit of the
                // last one does: then it waits again, for that.
                let due = this
                    .last_chunk
                    .and_then(|last| earliest(idle_deadline(last, *this.idle), *this.end));
                let limit = match due {
                    Some((at, limit)) if at > this.sleep.deadline() => {
                        this.sleep.as_mut().reset(at);
                        *this.armed = Some(limit);
                        continue;
                    }
                    Some((_, limit)) => limit,
                    None => armed,
                };
                *this.done = true;
                return Poll::Ready(Some(Err(limit.error(*this.chunks))));
            },
        }
    }
}

/// The end of the idle limit (when set) after a chunk at `last`.
fn idle_deadline(last: Instant, idle: Option<Limit>) -> Option<Deadline> {
    let idle = idle?;
    Some((last.checked_add(idle.limit)?, idle))
}

#[cfg(test)]
mod tests {
    //! The stream-total limit, on tokio's paused clock. (The other limits are tested in
    //! `tests/timeout.rs`.)

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use chatstack_proto::{
        ChatRequest, ChatStream, ErrorKind, Message, ResponseMeta, StreamRequest, TimeoutKind,
    };
    use futures_util::StreamExt;
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::timeout::{DEFAULT_STREAM_TOTAL, DEFAULT_TIMEOUT, TimeoutLayer};

    const MS: Duration = Duration::from_millis(1);

    fn chunk(index: u64) -> ChatChunk {
        ChatChunk {
            id: format!("chunk-{index}"),
            ..ChatChunk::default()
        }
    }

    /// An endless stream: a chunk every `gap` (the first one too), as a provider that drips
    /// keep-alive chunks and never ends.
    fn drip(gap: Duration) -> ChatStream {
        let chunks = futures_util::stream::unfold(0, move |index| async move {
            tokio::time::sleep(gap).await;
            Some((Ok(chunk(index)), index + 1))
        });
        ChatStream::new(chunks, ResponseMeta::default())
    }

    /// A streaming service: the response after `headers`, then `stream()`.
    fn streaming(
        headers: Duration,
        stream: fn() -> ChatStream,
    ) -> impl Service<StreamRequest, Response = ChatStream, Error = Error, Future: Send> + Clone
    {
        tower::service_fn(move |_: StreamRequest| async move {
            tokio::time::sleep(headers).await;
            Ok(stream())
        })
    }

    fn request() -> StreamRequest {
        StreamRequest::from(ChatRequest::new("m", [Message::user("Hi")]))
    }

    /// Calls `service` and reads its stream to the end: how many chunks, the error it ended
    /// with, and the time from the call to the end.
    async fn call_and_drain<S>(service: S) -> (u64, Option<Error>, Duration)
    where
        S: Service<StreamRequest, Response = ChatStream, Error = Error>,
    {
        let started = Instant::now();
        let mut stream = service.oneshot(request()).await.unwrap();
        let (chunks, error) = drain(&mut stream).await;
        (chunks, error, started.elapsed())
    }

    /// Reads a stream to its end: how many chunks, and the error it ended with.
    async fn drain(stream: &mut ChatStream) -> (u64, Option<Error>) {
        let mut chunks = 0;
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => chunks += 1,
                Err(error) => return (chunks, Some(error)),
            }
        }
        (chunks, None)
    }

    #[test]
    fn the_default_bounds_every_stream_at_an_hour() {
        let config = *TimeoutLayer::new().config();
        assert_eq!(config.stream_total, Some(DEFAULT_STREAM_TOTAL));
        assert_eq!(DEFAULT_STREAM_TOTAL, Duration::from_secs(3600));
        assert!(DEFAULT_STREAM_TOTAL > DEFAULT_TIMEOUT);
        let off = TimeoutLayer::new().stream_total(None);
        assert_eq!(off.config().stream_total, None);
        assert!(!off.config().first_chunk(None).idle(None).limits_streams());
        assert!(
            TimeoutConfig::default()
                .first_chunk(None)
                .idle(None)
                .limits_streams()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_keeps_sending_ends_at_the_stream_total_limit() {
        // A chunk every 10 ms: the idle limit (100 ms) never passes, the stream never ends.
        let service = TimeoutLayer::new()
            .total(MS * 50)
            .first_chunk(MS * 50)
            .idle(MS * 100)
            .stream_total(MS * 1000)
            .layer(streaming(MS * 5, || drip(MS * 10)));
        let started = Instant::now();
        let mut stream = service.oneshot(request()).await.unwrap();
        let (chunks, error) = drain(&mut stream).await;
        let error = error.expect("the stream is cut");
        assert_eq!(error.kind(), ErrorKind::Timeout(TimeoutKind::Total));
        assert_eq!(started.elapsed(), MS * 1000, "at the limit, from the call");
        // Headers at 5 ms, then a chunk every 10 ms: 99 of them by 995 ms.
        assert_eq!(chunks, 99);
        assert_eq!(
            error.message(),
            "the stream did not end within the stream-total limit of 1s from the call \
             (99 chunks arrived)"
        );
        assert!(error.is_retryable());
        assert!(
            stream.next().await.is_none(),
            "the stream ends after the error"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_limits_end_an_endless_stream_after_an_hour() {
        // A chunk every 30 s, under every default limit but the stream-total one.
        let service = TimeoutLayer::new().layer(streaming(MS, || drip(Duration::from_secs(30))));
        let (chunks, error, elapsed) = call_and_drain(service).await;
        assert_eq!(
            error.map(|error| error.kind()),
            Some(ErrorKind::Timeout(TimeoutKind::Total))
        );
        assert_eq!(elapsed, DEFAULT_STREAM_TOTAL);
        assert_eq!(chunks, 119);
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_that_are_always_ready_are_stopped_too() {
        // A stream that never makes its reader wait: the sleep is never polled, so the limit
        // has to be checked as the chunks come.
        let served = Arc::new(AtomicU64::new(0));
        let counter = served.clone();
        let ready = futures_util::stream::repeat_with(move || {
            Ok(chunk(counter.fetch_add(1, Ordering::Relaxed)))
        });
        let config = TimeoutConfig::default()
            .idle(MS * 100)
            .stream_total(MS * 1000);
        let mut stream = std::pin::pin!(TimeoutStream::new(ready, Instant::now(), config));
        let mut chunks = 0;
        let mut error = None;
        // Ten reads at most: a stream that is not stopped fails the test instead of hanging.
        for _ in 0..10 {
            match stream.next().await {
                Some(Ok(_)) => chunks += 1,
                Some(Err(failure)) => {
                    error = Some(failure);
                    break;
                }
                None => panic!("the stream is endless"),
            }
            // The reader takes 300 ms per chunk (the provider is not to blame for that, but
            // the stream is over its limit all the same).
            tokio::time::advance(MS * 300).await;
        }
        let error = error.expect("the stream-total limit stops an always-ready stream");
        assert_eq!(error.kind(), ErrorKind::Timeout(TimeoutKind::Total));
        // Chunks at 0, 300, 600 and 900 ms; the one read at 1200 ms is past the limit.
        assert_eq!(chunks, 4);
        assert_eq!(served.load(Ordering::Relaxed), 5);
        assert!(stream.next().await.is_none());
    }

    /// `count` chunks `gap` apart (the first after `gap`), then silence.
    fn chunks_then_silence(count: u64, gap: Duration) -> ChatStream {
        let chunks = futures_util::stream::unfold(0, move |index| async move {
            if index == count {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(gap).await;
            Some((Ok(chunk(index)), index + 1))
        });
        ChatStream::new(chunks, ResponseMeta::default())
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_limit_counts_from_the_last_chunk_although_chunks_do_not_reset_the_timer() {
        // Chunks every 40 ms move the idle deadline (100 ms after each) without touching the
        // timer, which the first chunk set: it ends after 100 ms and is set again, for the
        // last chunk, as often as it takes.
        let service = TimeoutLayer::new()
            .first_chunk(MS * 50)
            .idle(MS * 100)
            .stream_total(None)
            .layer(streaming(MS * 5, || chunks_then_silence(20, MS * 40)));
        let (chunks, error, elapsed) = call_and_drain(service).await;
        let error = error.expect("the silence is cut");
        assert_eq!(error.kind(), ErrorKind::Timeout(TimeoutKind::Idle));
        assert_eq!(chunks, 20);
        // The last chunk at 5 + 20 × 40 = 805 ms; the idle limit ends 100 ms later, exactly.
        assert_eq!(elapsed, MS * 905);

        // When the stream-total limit ends before the last chunk's idle limit, it decides.
        let service = TimeoutLayer::new()
            .first_chunk(MS * 50)
            .idle(MS * 100)
            .stream_total(MS * 850)
            .layer(streaming(MS * 5, || chunks_then_silence(20, MS * 40)));
        let (chunks, error, elapsed) = call_and_drain(service).await;
        assert_eq!(
            error.map(|error| error.kind()),
            Some(ErrorKind::Timeout(TimeoutKind::Total))
        );
        assert_eq!(chunks, 20);
        assert_eq!(elapsed, MS * 850);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_within_the_limit_passes_in_full() {
        fn ten_chunks() -> ChatStream {
            let chunks = futures_util::stream::iter(0..10).then(|index| async move {
                tokio::time::sleep(MS * 99).await;
                Ok(chunk(index))
            });
            ChatStream::new(chunks, ResponseMeta::default())
        }
        // Headers at 10 ms, ten chunks 99 ms apart: the last at exactly 1 s, which counts.
        let service = TimeoutLayer::new()
            .stream_total(MS * 1000)
            .layer(streaming(MS * 10, ten_chunks));
        let (chunks, error, elapsed) = call_and_drain(service).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(chunks, 10);
        assert_eq!(elapsed, MS * 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_headers_the_earliest_limit_decides() {
        // Headers after 2 s: the stream-total limit (1 s) ends first, and says so.
        let service = TimeoutLayer::new()
            .total(MS * 5000)
            .first_chunk(MS * 3000)
            .stream_total(MS * 1000)
            .layer(streaming(MS * 2000, || drip(MS * 10)));
        let started = Instant::now();
        let error = service.clone().oneshot(request()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Timeout(TimeoutKind::Total));
        assert!(
            error.message().contains("stream-total limit of 1s"),
            "{error}"
        );
        assert_eq!(started.elapsed(), MS * 1000);

        // A unary request is held to the total limit only.
        let unary = TimeoutLayer::new()
            .total(MS * 3000)
            .stream_total(MS * 1000)
            .layer(tower::service_fn(|_: ChatRequest| async {
                tokio::time::sleep(MS * 2000).await;
                Ok::<_, Error>(chatstack_proto::ChatResponse::default())
            }));
        assert!(
            unary
                .oneshot(ChatRequest::new("m", [Message::user("Hi")]))
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_first_chunk_the_stream_total_limit_fails_the_call() {
        // Headers at once, the first chunk after 2 s: the call fails at 1 s, so a retry
        // layer above sees a failed attempt.
        let service = TimeoutLayer::new()
            .first_chunk(MS * 3000)
            .stream_total(MS * 1000)
            .layer(streaming(Duration::ZERO, || drip(MS * 2000)));
        let started = Instant::now();
        let error = service.oneshot(request()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Timeout(TimeoutKind::Total));
        assert!(error.message().contains("(0 chunks arrived)"), "{error}");
        assert_eq!(started.elapsed(), MS * 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_stream_total_limit_an_endless_stream_runs_on() {
        let service = TimeoutLayer::new()
            .stream_total(None)
            .layer(streaming(MS, || drip(Duration::from_secs(30))));
        let started = Instant::now();
        let mut stream = service.oneshot(request()).await.unwrap();
        // Two hours of chunks, and no end in sight.
        for _ in 0..240 {
            assert!(matches!(stream.next().await, Some(Ok(_))));
        }
        assert!(started.elapsed() > 2 * DEFAULT_STREAM_TOTAL);
    }
}

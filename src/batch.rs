//! Batches: many requests through one service, a bounded number at a time, as a stream of
//! results.
//!
//! [`batch`] takes any tower service of chat requests (the HTTP transport, a stack of
//! chatstack layers over it, a `Client`'s service, a user's own) and an iterator of requests;
//! [`batch_stream`] takes a [`Stream`] of requests instead. Both return a [`Batch`], a
//! [`Stream`] of [`BatchItem`]s in completion order, each tagged with its input position and
//! the request's [`RequestMeta::id`](chatstack_proto::RequestMeta::id).
//! [`Batch::in_order`] turns it into a stream in input order.
//!
//! ```
//! use chatstack::batch::batch;
//! use chatstack::middleware::cost::{CostLayer, CostLedger, Usd};
//! use chatstack::{ChatRequest, ChatResponse, Error, ErrorKind, Message, Usage};
//! use futures_util::StreamExt;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A provider that refuses empty prompts and answers everything else with 10 + 5 tokens.
//! let provider = tower::service_fn(|request: ChatRequest| async move {
//!     if request.messages[0].text().unwrap_or_default().is_empty() {
//!         return Err(Error::new(ErrorKind::InvalidRequest, "empty prompt"));
//!     }
//!     Ok(ChatResponse { model: request.model, usage: Some(Usage::new(10, 5)), ..Default::default() })
//! });
//! let ledger = CostLedger::new();
//! let service = ServiceBuilder::new().layer(CostLayer::new(ledger.clone())).service(provider);
//!
//! // Pulled lazily, 8 at a time: the input is never collected.
//! let prompts = ["Hello", "", "What is tower?", "Bye"];
//! let requests = prompts.into_iter().enumerate().map(|(i, prompt)| {
//!     let mut request = ChatRequest::new("gpt-4.1", [Message::user(prompt)]);
//!     request.meta.id = Some(format!("row-{i}"));
//!     request
//! });
//!
//! let mut results = batch(service, requests, 8)
//!     .on_progress(|p| println!("{}/{:?} done, {} failed, {}", p.done, p.total, p.failed, p.cost))
//!     .in_order();
//! let mut ids = Vec::new();
//! while let Some(item) = results.next().await {
//!     assert_eq!(item.result.is_err(), item.index == 1, "one error, and only for its item");
//!     ids.push(item.id.unwrap());
//! }
//! assert_eq!(ids, ["row-0", "row-1", "row-2", "row-3"]);
//!
//! let progress = results.progress();
//! assert_eq!((progress.done, progress.ok, progress.failed), (4, 3, 1));
//! assert_eq!(progress.prompt_tokens, 30);
//! // 3 × (10 × $2/M + 5 × $8/M) = $0.00018, the ledger's total too.
//! assert_eq!(progress.cost, Usd::from_nanos(180_000));
//! assert_eq!(progress.cost, ledger.total_cost());
//! # }
//! ```
//!
//! # Semantics
//!
//! - **Every item comes out.** N requests in, N [`BatchItem`]s out: an error (from the
//!   service's `poll_ready` or its response future) is that item's
//!   [`result`](BatchItem::result), and the batch goes on.
//! - **Bounded concurrency.** At most `concurrency` requests are in flight (0 counts as 1).
//!   Each runs on its own clone of the service through [`ServiceExt::oneshot`](tower::ServiceExt::oneshot): readiness
//!   is awaited per request, inside its future, so a service that is not ready (a
//!   concurrency limit, a buffer) delays only the requests it holds, and a `poll_ready` error
//!   belongs to the one request it was polled for.
//! - **Lazy input.** A request is pulled from the input only when a slot is free, so an
//!   iterator over a file or a database cursor is read as the batch goes.
//! - **Flat memory.** The batch holds the in-flight futures (at most `concurrency`), the
//!   service, the input, and the progress counters: nothing grows with the number of
//!   requests. The consumer decides what to keep of the results. [`Batch::in_order`] adds a
//!   reorder buffer, itself bounded (see [`InOrder`]).
//! - **Cancellation.** Nothing is spawned: every request lives in the batch's futures, which
//!   run when the stream is polled. Dropping the batch drops them, which cancels the requests
//!   in flight and the retry waits, and no further request is sent.
//!
//! # Progress
//!
//! A [`BatchProgress`] (done, ok, failed, attempts, tokens, cost, elapsed time, requests per
//! second) is updated as each item completes, and published to a callback
//! ([`Batch::on_progress`]) and to a [`tokio::sync::watch`] channel
//! ([`Batch::subscribe_progress`]), for a progress bar that runs on another task. The cost is
//! the sum of [`ResponseCost::of`] over the responses, so it is known when the service
//! includes a [`CostLayer`](chatstack_middleware::cost::CostLayer), and zero otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use chatstack_middleware::cost::{ResponseCost, Usd};
use chatstack_proto::{ChatRequest, ChatResponse, Error};
use futures_core::{FusedStream, Stream};
use futures_util::stream::{self, FuturesUnordered, StreamExt as _};
use pin_project_lite::pin_project;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Service, ServiceExt as _, util::Oneshot};

/// How many results [`Batch::in_order`] may hold per unit of concurrency: a request may start
/// while up to `4 × concurrency − 1` results after the oldest unfinished one wait for it.
const DEFAULT_WINDOW_PER_SLOT: usize = 4;

/// Runs `requests` through `service`, at most `concurrency` at a time (0 counts as 1), and
/// returns the results as a [`Stream`] in completion order. See the [module docs](self).
///
/// The iterator is pulled lazily, one request per free slot.
pub fn batch<S, I>(
    service: S,
    requests: I,
    concurrency: usize,
) -> Batch<S, stream::Iter<I::IntoIter>>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = Error> + Clone,
    I: IntoIterator<Item = ChatRequest>,
{
    batch_stream(service, stream::iter(requests), concurrency)
}

/// Like [`batch`], for requests that arrive as a [`Stream`] (from a channel, a file read
/// asynchronously, another batch). The stream is polled only when a slot is free.
pub fn batch_stream<S, St>(service: S, requests: St, concurrency: usize) -> Batch<S, St>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = Error> + Clone,
    St: Stream<Item = ChatRequest>,
{
    let (lower, upper) = requests.size_hint();
    let progress = BatchProgress {
        total: (upper == Some(lower)).then_some(lower as u64),
        ..BatchProgress::default()
    };
    Batch {
        service,
        input: requests,
        input_done: false,
        in_flight: FuturesUnordered::new(),
        concurrency: concurrency.max(1),
        next_index: 0,
        released: 0,
        window: u64::MAX,
        started_at: None,
        progress,
        on_progress: None,
        watch: watch::Sender::new(progress),
    }
}

/// The result of one request of a batch.
#[derive(Debug)]
#[non_exhaustive]
pub struct BatchItem {
    /// The request's position in the input, from 0.
    pub index: u64,
    /// The request's [`RequestMeta::id`](chatstack_proto::RequestMeta::id), such as a
    /// `custom_id`.
    pub id: Option<String>,
    /// The response, or why there is none.
    pub result: Result<ChatResponse, Error>,
}

/// How far a batch has got. Updated as each item completes; see [`Batch::on_progress`],
/// [`Batch::subscribe_progress`] and [`Batch::progress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchProgress {
    /// How many requests the batch has: known from the start for an input that tells its
    /// exact length (a `Vec`, a range, an exact-size iterator), and once the input has ended
    /// otherwise.
    pub total: Option<u64>,
    /// Requests taken from the input so far.
    pub started: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests finished, `ok + failed`.
    pub done: u64,
    /// Requests that got a response.
    pub ok: u64,
    /// Requests that got an error.
    pub failed: u64,
    /// Attempts made, as reported by the responses'
    /// [`ResponseMeta::attempts`](chatstack_proto::ResponseMeta::attempts) and the errors'
    /// [`Error::attempts`] (counted by the transport and the retry layer; 0 for a service
    /// that does not count).
    pub attempts: u64,
    /// Prompt tokens of the responses' usage.
    pub prompt_tokens: u64,
    /// Completion tokens of the responses' usage.
    pub completion_tokens: u64,
    /// The cost of the responses, from [`ResponseCost::of`]: zero unless the service
    /// includes a [`CostLayer`](chatstack_middleware::cost::CostLayer).
    pub cost: Usd,
    /// Time since the batch was first polled, as of the last completed item.
    pub elapsed: Duration,
}

impl BatchProgress {
    /// Finished requests per second of [`elapsed`](Self::elapsed) time (0 before any).
    pub fn requests_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.done as f64 / seconds
        } else {
            0.0
        }
    }

    /// Counts a finished request.
    fn record(&mut self, result: &Result<ChatResponse, Error>) {
        self.done += 1;
        match result {
            Ok(response) => {
                self.ok += 1;
                self.attempts += u64::from(response.meta.attempts);
                if let Some(usage) = &response.usage {
                    self.prompt_tokens += usage.prompt_tokens;
                    self.completion_tokens += usage.completion_tokens;
                }
                if let Some(cost) = ResponseCost::of(&response.meta) {
                    self.cost = self.cost.saturating_add(cost.cost);
                }
            }
            Err(error) => {
                self.failed += 1;
                self.attempts += u64::from(error.attempts());
            }
        }
    }
}

type ProgressCallback = Box<dyn FnMut(&BatchProgress) + Send>;

pin_project! {
    /// A batch of requests in flight: a [`Stream`] of [`BatchItem`]s in completion order.
    ///
    /// Made by [`batch`] and [`batch_stream`]; see the [module docs](self). It is a plain
    /// stream: nothing runs unless it is polled, and dropping it cancels what is in flight.
    #[must_use = "a batch does nothing unless its stream is polled"]
    pub struct Batch<S, St>
    where
        S: Service<ChatRequest>,
    {
        service: S,
        #[pin]
        input: St,
        input_done: bool,
        in_flight: FuturesUnordered<Call<S>>,
        concurrency: usize,
        // The index the next request taken from the input gets.
        next_index: u64,
        // In order: the index the consumer waits for. A request starts only while
        // `next_index - released < window`, which bounds the reorder buffer. Unordered:
        // 0 and u64::MAX, no bound.
        released: u64,
        window: u64,
        started_at: Option<Instant>,
        progress: BatchProgress,
        on_progress: Option<ProgressCallback>,
        watch: watch::Sender<BatchProgress>,
    }
}

impl<S, St> Batch<S, St>
where
    S: Service<ChatRequest>,
{
    /// Calls `callback` with the progress each time an item completes, before the item is
    /// yielded. It runs inside `poll_next`, so it should be quick (print, update a bar, send
    /// on a channel). Replaces an earlier callback.
    pub fn on_progress<F>(mut self, callback: F) -> Self
    where
        F: FnMut(&BatchProgress) + Send + 'static,
    {
        self.on_progress = Some(Box::new(callback));
        self
    }

    /// A receiver of the progress, updated each time an item completes: for a progress bar
    /// or a status endpoint on another task. It may skip intermediate values (a watch channel
    /// keeps only the latest); `changed()` fails once the batch is dropped.
    pub fn subscribe_progress(&self) -> watch::Receiver<BatchProgress> {
        self.watch.subscribe()
    }

    /// The progress as of the last completed item.
    pub fn progress(&self) -> BatchProgress {
        self.progress
    }

    /// The results in input order, with a reorder window of `4 × concurrency` (see
    /// [`in_order_window`](Self::in_order_window)).
    pub fn in_order(self) -> InOrder<S, St> {
        let window = self.concurrency.saturating_mul(DEFAULT_WINDOW_PER_SLOT);
        self.in_order_window(window)
    }

    /// The results in input order, holding at most `window` results (0 counts as 1) in the
    /// reorder buffer and in flight together. See [`InOrder`].
    pub fn in_order_window(mut self, window: usize) -> InOrder<S, St> {
        self.window = window.max(1) as u64;
        InOrder {
            batch: self,
            buffer: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<S, St> Stream for Batch<S, St>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = Error> + Clone,
    St: Stream<Item = ChatRequest>,
{
    type Item = BatchItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BatchItem>> {
        let mut this = self.project();
        let started_at = *this.started_at.get_or_insert_with(Instant::now);

        // Fill the free slots, pulling the input only as far as there is room.
        while !*this.input_done
            && this.in_flight.len() < *this.concurrency
            && *this.next_index - *this.released < *this.window
        {
            match this.input.as_mut().poll_next(cx) {
                Poll::Ready(Some(request)) => {
                    this.in_flight.push(Call {
                        index: *this.next_index,
                        id: request.meta.id.clone(),
                        call: this.service.clone().oneshot(request),
                    });
                    *this.next_index += 1;
                }
                Poll::Ready(None) => {
                    *this.input_done = true;
                    this.progress.total = Some(*this.next_index);
                }
                Poll::Pending => break,
            }
        }
        this.progress.started = *this.next_index;
        this.progress.in_flight = this.in_flight.len() as u64;

        match ready!(this.in_flight.poll_next_unpin(cx)) {
            Some(item) => {
                let progress = &mut *this.progress;
                progress.record(&item.result);
                progress.in_flight = this.in_flight.len() as u64;
                progress.elapsed = started_at.elapsed();
                if let Some(callback) = this.on_progress {
                    callback(progress);
                }
                this.watch.send_replace(*progress);
                Poll::Ready(Some(item))
            }
            None if *this.input_done => Poll::Ready(None),
            // Nothing in flight and the input is not ready: its waker is registered. (The
            // window cannot be what stops it: the request the consumer waits for is then in
            // flight.)
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let in_flight = self.in_flight.len();
        if self.input_done {
            return (in_flight, Some(in_flight));
        }
        let (lower, upper) = self.input.size_hint();
        (
            lower.saturating_add(in_flight),
            upper.and_then(|upper| upper.checked_add(in_flight)),
        )
    }
}

impl<S, St> FusedStream for Batch<S, St>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = Error> + Clone,
    St: Stream<Item = ChatRequest>,
{
    fn is_terminated(&self) -> bool {
        self.input_done && self.in_flight.is_empty()
    }
}

impl<S, St> fmt::Debug for Batch<S, St>
where
    S: Service<ChatRequest>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("concurrency", &self.concurrency)
            .field("input_done", &self.input_done)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// A [`Batch`] whose results come out in input order: made by [`Batch::in_order`] and
    /// [`Batch::in_order_window`].
    ///
    /// A result that completes before those ahead of it waits in a reorder buffer. Memory
    /// therefore grows with how far results run ahead of the slowest unfinished one, and the
    /// window bounds it: a request starts only while fewer than `window` requests from the
    /// oldest unfinished one on are in flight or buffered. When one request is slow (a long
    /// answer, retries with backoff), up to `window − 1` later results wait for it and then
    /// the batch stops starting requests until it completes; a wider window keeps more of
    /// the concurrency busy meanwhile, at the cost of holding more responses.
    #[must_use = "a batch does nothing unless its stream is polled"]
    pub struct InOrder<S, St>
    where
        S: Service<ChatRequest>,
    {
        #[pin]
        batch: Batch<S, St>,
        buffer: BTreeMap<u64, BatchItem>,
        next: u64,
    }
}

impl<S, St> InOrder<S, St>
where
    S: Service<ChatRequest>,
{
    /// The progress as of the last completed item (see [`Batch::progress`]).
    pub fn progress(&self) -> BatchProgress {
        self.batch.progress()
    }

    /// A receiver of the progress (see [`Batch::subscribe_progress`]).
    pub fn subscribe_progress(&self) -> watch::Receiver<BatchProgress> {
        self.batch.subscribe_progress()
    }
}

impl<S, St> Stream for InOrder<S, St>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = Error> + Clone,
    St: Stream<Item = ChatRequest>,
{
    type Item = BatchItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BatchItem>> {
        let mut this = self.project();
        loop {
            let item = match this.buffer.first_entry() {
                Some(entry) if *entry.key() == *this.next => entry.remove(),
                _ => match ready!(this.batch.as_mut().poll_next(cx)) {
                    Some(item) if item.index == *this.next => item,
                    Some(item) => {
                        this.buffer.insert(item.index, item);
                        continue;
                    }
                    None => {
                        debug_assert!(this.buffer.is_empty(), "every index came out");
                        return Poll::Ready(None);
                    }
                },
            };
            *this.next += 1;
            *this.batch.as_mut().project().released = *this.next;
            return Poll::Ready(Some(item));
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (lower, upper) = self.batch.size_hint();
        let buffered = self.buffer.len();
        (
            lower.saturating_add(buffered),
            upper.and_then(|upper| upper.checked_add(buffered)),
        )
    }
}

impl<S, St> FusedStream for InOrder<S, St>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = Error> + Clone,
    St: Stream<Item = ChatRequest>,
{
    fn is_terminated(&self) -> bool {
        self.buffer.is_empty() && self.batch.is_terminated()
    }
}

impl<S, St> fmt::Debug for InOrder<S, St>
where
    S: Service<ChatRequest>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InOrder")
            .field("batch", &self.batch)
            .field("next", &self.next)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

pin_project! {
    /// One request of a batch: readiness, the call, and the response, tagged with its index
    /// and id.
    struct Call<S>
    where
        S: Service<ChatRequest>,
    {
        index: u64,
        id: Option<String>,
        #[pin]
        call: Oneshot<S, ChatRequest>,
    }
}

impl<S> Future for Call<S>
where
    S: Service<ChatRequest, Response = ChatResponse, Error = Error>,
{
    type Output = BatchItem;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BatchItem> {
        let this = self.project();
        let result = ready!(this.call.poll(cx));
        Poll::Ready(BatchItem {
            index: *this.index,
            id: this.id.take(),
            result,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use chatstack_proto::{ChatRequest, ChatResponse, Error, ErrorKind, Message};
    use futures_util::StreamExt;

    use super::*;

    fn request(i: u64) -> ChatRequest {
        let mut request = ChatRequest::new("gpt-4.1", [Message::user(format!("{i}"))]);
        request.meta.id = Some(format!("id-{i}"));
        request
    }

    /// Answers after `delay(i)` milliseconds (paused clock), counting requests in flight.
    fn provider(
        live: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
        delay: fn(u64) -> u64,
    ) -> impl Service<ChatRequest, Response = ChatResponse, Error = Error> + Clone {
        tower::service_fn(move |request: ChatRequest| {
            let (live, peak) = (live.clone(), peak.clone());
            async move {
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let i: u64 = request.messages[0].text().unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_millis(delay(i))).await;
                live.fetch_sub(1, Ordering::SeqCst);
                Ok(ChatResponse::default())
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_and_zero_counts_as_one() {
        for (concurrency, expected) in [(0, 1), (1, 1), (7, 7)] {
            let live = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let service = provider(live, peak.clone(), |i| 1 + i % 5);
            let items: Vec<_> = batch(service, (0..50).map(request), concurrency)
                .collect()
                .await;
            assert_eq!(items.len(), 50);
            assert_eq!(peak.load(Ordering::SeqCst), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_input_is_pulled_as_slots_free() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let counted = pulled.clone();
        let requests = (0..1_000).map(move |i| {
            counted.fetch_add(1, Ordering::SeqCst);
            request(i)
        });
        let service = provider(Arc::default(), Arc::default(), |_| 10);
        let mut results = batch(service, requests, 4);
        assert_eq!(
            pulled.load(Ordering::SeqCst),
            0,
            "nothing before the first poll"
        );
        results.next().await.unwrap();
        assert_eq!(pulled.load(Ordering::SeqCst), 4);
        results.next().await.unwrap();
        assert!(pulled.load(Ordering::SeqCst) <= 5);
    }

    #[tokio::test(start_paused = true)]
    async fn in_order_window_bounds_what_runs_ahead() {
        // Request 0 takes 1 s, the others 1 ms: with a window of 8, only 7 results may wait
        // for it, so the batch starts nothing else until it completes.
        let live = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let service = provider(live, peak.clone(), |i| if i == 0 { 1_000 } else { 1 });
        let mut results = batch(service, (0..100).map(request), 16).in_order_window(8);
        let first = results.next().await.unwrap();
        assert_eq!(first.index, 0);
        assert_eq!(
            results.progress().started,
            8,
            "the window held the batch back"
        );
        assert_eq!(peak.load(Ordering::SeqCst), 8);
        let rest: Vec<u64> = results.map(|item| item.index).collect().await;
        assert_eq!(rest, (1..100).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_published_to_the_callback_and_the_watch() {
        let service = tower::service_fn(|request: ChatRequest| async move {
            let i: u64 = request.messages[0].text().unwrap().parse().unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            if i % 4 == 0 {
                Err(Error::new(ErrorKind::Server, "down").with_attempts(3))
            } else {
                let mut response = ChatResponse {
                    usage: Some(chatstack_proto::Usage::new(7, 3)),
                    ..ChatResponse::default()
                };
                response.meta.attempts = 1;
                Ok(response)
            }
        });
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let results = batch(service, (0..20).map(request), 5)
            .on_progress(move |p| log.lock().unwrap().push(p.done));
        let watch = results.subscribe_progress();
        assert_eq!(
            watch.borrow().total,
            Some(20),
            "an exact-size input tells its length"
        );
        let items: Vec<_> = results.collect().await;
        assert_eq!(items.len(), 20);
        assert_eq!(*seen.lock().unwrap(), (1..=20).collect::<Vec<_>>());
        let last = *watch.borrow();
        assert_eq!((last.done, last.ok, last.failed), (20, 15, 5));
        assert_eq!(last.attempts, 15 + 5 * 3);
        assert_eq!((last.prompt_tokens, last.completion_tokens), (105, 45));
        assert_eq!((last.started, last.in_flight), (20, 0));
        assert_eq!(last.elapsed, Duration::from_millis(40), "4 rounds of 10 ms");
        assert!((last.requests_per_second() - 500.0).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_input_and_its_length() {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let requests = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|request| (request, receiver))
        });
        let service = provider(Arc::default(), Arc::default(), |_| 1);
        let mut results = std::pin::pin!(batch_stream(service, requests, 2));
        let producer = async move {
            for i in 0..10 {
                sender.send(request(i)).await.unwrap();
            }
        };
        let (_, indices) = tokio::join!(producer, async {
            let mut indices = Vec::new();
            while let Some(item) = results.next().await {
                indices.push(item.index);
            }
            assert!(results.is_terminated());
            assert_eq!(results.progress().total, Some(10));
            indices
        });
        let mut indices = indices;
        indices.sort_unstable();
        assert_eq!(indices, (0..10).collect::<Vec<_>>());
    }
}

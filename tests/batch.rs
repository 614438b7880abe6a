//! The batch runner end to end: over real loopback HTTP to `chatstack-mock`, through the
//! transport, the retry layer and the cost layer composed with a `ServiceBuilder`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use chatstack::middleware::cost::{CostLayer, CostLedger, Pricing, Usd};
use chatstack::middleware::retry::{Backoff, Jitter, RetryLayer};
use chatstack::{
    ChatRequest, ChatResponse, Error, ErrorKind, HttpTransport, Message, batch, batch_stream,
};
use chatstack_mock::{Fault, MockConfig, MockServer, headers};
use futures_util::StreamExt;
use http::HeaderValue;
use tower::{Service, ServiceBuilder};

const MODEL: &str = "gpt-4.1";

/// cost → retry → transport, with a tiny backoff, as a `Client` composes them.
fn stack(
    mock: &MockServer,
    ledger: &CostLedger,
    retry: RetryLayer,
) -> impl Service<ChatRequest, Response = ChatResponse, Error = Error, Future: Send>
+ Clone
+ Send
+ 'static {
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .build()
        .expect("transport");
    ServiceBuilder::new()
        .layer(CostLayer::new(ledger.clone()))
        .layer(retry)
        .service(transport)
}

/// A batch over the HTTP stack can move to another task (`tokio::spawn`).
fn assert_send<T: Send>(_: &T) {}

fn request(i: u64) -> ChatRequest {
    let mut request = ChatRequest::new(MODEL, [Message::user(format!("question {i}"))]);
    request.meta.id = Some(format!("q-{i}"));
    request
}

fn with_header(mut request: ChatRequest, name: &'static str, value: String) -> ChatRequest {
    let value = HeaderValue::try_from(value).expect("header value");
    request.meta.headers.insert(name, value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_requests_through_503s_and_429s_all_succeed_and_add_up() {
    const N: u64 = 1_000;
    let mock = MockServer::start(
        // Of the faults drawn for one request the first rule's wins, so the rarest goes
        // first and its count at the mock is the number of such answers.
        MockConfig::default()
            // A few whole-second `Retry-After: 1`...
            .fault(
                Fault::RateLimit {
                    retry_after: Duration::from_secs(1),
                },
                0.005,
            )
            // ... periodic `retry-after-ms: 10` ...
            .fault(
                Fault::RateLimitMs {
                    retry_after: Duration::from_millis(10),
                },
                0.05,
            )
            // ... and 20 % of 503s.
            .fault(Fault::ServiceUnavailable, 0.2)
            .seed(20_251_001),
    )
    .await
    .expect("mock");
    let ledger = CostLedger::new();
    // 24 % of attempts fail: budget-free retries, enough attempts that none runs out
    // (0.25^20 per request).
    let retry = RetryLayer::new().max_attempts(20).budget(None).backoff(
        Backoff::new()
            .base(Duration::from_millis(2))
            .cap(Duration::from_millis(20)),
    );
    let requests =
        (0..N).map(|i| with_header(request(i), headers::REPLY_TOKENS, (1 + i % 40).to_string()));

    let mut results = batch(stack(&mock, &ledger, retry), requests, 32);
    assert_send(&results);
    let progress = results.subscribe_progress();
    let pricing = Pricing::default();
    let (mut ok, mut attempts, mut expected_cost, mut prompt_tokens) = (0, 0, Usd::ZERO, 0);
    let mut seen = vec![false; N as usize];
    while let Some(item) = results.next().await {
        assert!(!seen[item.index as usize], "index {} twice", item.index);
        seen[item.index as usize] = true;
        assert_eq!(item.id.as_deref(), Some(&*format!("q-{}", item.index)));
        let response = item
            .result
            .unwrap_or_else(|e| panic!("item {}: {e}", item.index));
        ok += 1;
        attempts += u64::from(response.meta.attempts);
        let usage = response.usage.as_ref().expect("usage");
        assert_eq!(usage.completion_tokens, 1 + item.index % 40);
        prompt_tokens += usage.prompt_tokens;
        expected_cost += pricing
            .price(&response.model, Some(usage))
            .expect("priced")
            .cost;
    }
    let progress = *progress.borrow();
    let counters = mock.counters();

    assert_eq!(ok, N);
    assert!(seen.iter().all(|&s| s), "every index came out");
    assert_eq!(
        counters.total(),
        attempts,
        "attempts at the mock = sum of meta.attempts"
    );
    assert!(counters.status(503) > 0 && counters.status(429) > 0);
    assert_eq!(counters.status(200), N);
    assert_eq!(
        ledger.total_cost(),
        expected_cost,
        "ledger = Σ usage × price"
    );
    assert_eq!(ledger.snapshot().total.requests, N);
    assert_eq!((progress.done, progress.ok, progress.failed), (N, N, 0));
    assert_eq!(progress.attempts, attempts);
    assert_eq!(progress.prompt_tokens, prompt_tokens);
    assert_eq!(progress.cost, expected_cost);

    println!(
        "1,000-request batch: {} attempts at the mock ({} × 503, {} × 429 of which {} with \
         `Retry-After: 1`, {} × 200), ledger {} ({} nano-dollars), progress cost {}, \
         {:.2?} elapsed, {:.0} requests/s",
        counters.total(),
        counters.status(503),
        counters.status(429),
        counters.fault(Fault::RateLimit {
            retry_after: Duration::ZERO
        }),
        counters.status(200),
        ledger.total_cost(),
        ledger.total_cost().as_nanos(),
        progress.cost,
        progress.elapsed,
        progress.requests_per_second(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_order_restores_input_order_with_per_item_errors() {
    const N: u64 = 150;
    let mock = MockServer::start(MockConfig::default())
        .await
        .expect("mock");
    let ledger = CostLedger::new();
    let retry = RetryLayer::new().backoff(Backoff::new().base(Duration::from_millis(2)));
    let fails = |i: u64| i % 7 == 3;
    let requests = move || {
        (0..N).map(move |i| {
            // Request 0 is the slowest by far, so completion order cannot be input order.
            let latency = if i == 0 { 300 } else { (i * 13) % 20 };
            let request = with_header(request(i), headers::LATENCY_MS, latency.to_string());
            if fails(i) {
                with_header(request, headers::FAULT, "context_length_exceeded".into())
            } else {
                request
            }
        })
    };
    let check = |index: u64, id: Option<String>, result: Result<ChatResponse, Error>| {
        assert_eq!(id, Some(format!("q-{index}")));
        match result {
            Err(error) => {
                assert!(fails(index), "item {index}: {error}");
                assert!(error.is_context_length_exceeded(), "{error}");
                assert_eq!(error.attempts(), 1, "a 400 is not retried");
            }
            Ok(response) => {
                assert!(!fails(index), "item {index} should have failed");
                assert!(response.text().is_some_and(|text| !text.is_empty()));
            }
        }
    };

    // Completion order: every item, each once, the errors where they belong.
    let service = stack(&mock, &ledger, retry.clone());
    let unordered: Vec<_> = batch(service.clone(), requests(), 16).collect().await;
    assert_eq!(unordered.len(), N as usize);
    assert_ne!(
        unordered[0].index, 0,
        "the slow first request completes later"
    );
    let mut indices: Vec<u64> = unordered.iter().map(|item| item.index).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..N).collect::<Vec<_>>());
    for item in unordered {
        check(item.index, item.id, item.result);
    }

    // Input order, exactly.
    let mut ordered = batch(service, requests(), 16).in_order();
    let mut next = 0;
    while let Some(item) = ordered.next().await {
        assert_eq!(item.index, next);
        next += 1;
        check(item.index, item.id, item.result);
    }
    assert_eq!(next, N);
    let failed = (0..N).filter(|&i| fails(i)).count() as u64;
    let progress = ordered.progress();
    assert_eq!(
        (progress.done, progress.ok, progress.failed),
        (N, N - failed, failed)
    );
    assert_eq!(mock.counters().total(), 2 * N, "no retries");
    assert_eq!(ledger.snapshot().total.requests, 2 * (N - failed));
}

/// A service whose `poll_ready` fails on every fifth call.
#[derive(Clone, Default)]
struct Flaky {
    polls: Arc<AtomicU64>,
}

impl Service<ChatRequest> for Flaky {
    type Response = ChatResponse;
    type Error = Error;
    type Future = std::future::Ready<Result<ChatResponse, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.polls.fetch_add(1, Ordering::SeqCst) % 5 == 4 {
            Poll::Ready(Err(Error::new(ErrorKind::Connection, "not ready")))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        std::future::ready(Ok(ChatResponse {
            model: request.model,
            ..ChatResponse::default()
        }))
    }
}

#[tokio::test]
async fn a_poll_ready_error_is_its_items_error() {
    const N: u64 = 500;
    // Through a stream input this time.
    let requests = futures_util::stream::iter((0..N).map(request));
    let items: Vec<_> = batch_stream(Flaky::default(), requests, 8)
        .in_order()
        .collect()
        .await;
    assert_eq!(items.len(), N as usize, "N in, N out");
    let failed: Vec<&Error> = items
        .iter()
        .filter_map(|item| item.result.as_ref().err())
        .collect();
    assert_eq!(failed.len() as u64, N / 5);
    assert!(failed.iter().all(|error| error.message() == "not ready"));
    for (expected, item) in (0..N).zip(&items) {
        assert_eq!(item.index, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_batch_stops_requests_within_one_backoff_period() {
    const CONCURRENCY: usize = 16;
    const BACKOFF: Duration = Duration::from_millis(100);
    let mock = MockServer::start(
        MockConfig::default()
            .latency(Duration::from_millis(20))
            .fault(Fault::ServiceUnavailable, 0.5)
            .seed(3),
    )
    .await
    .expect("mock");
    let tasks = tokio::runtime::Handle::current().metrics();
    let baseline_tasks = tasks.num_alive_tasks();
    let ledger = CostLedger::new();
    // Half the attempts fail, so at any moment some requests are in flight at the mock and
    // others wait out a backoff.
    let retry = RetryLayer::new().max_attempts(10).budget(None).backoff(
        Backoff::new()
            .base(BACKOFF)
            .cap(BACKOFF)
            .jitter(Jitter::None),
    );
    let mut results = batch(
        stack(&mock, &ledger, retry),
        (0..100_000).map(request),
        CONCURRENCY,
    );
    for _ in 0..50 {
        results.next().await.expect("an item");
    }
    let counters = mock.counters();
    assert!(
        counters.in_flight_requests() > 0,
        "requests are in flight when the batch is dropped"
    );
    let at_drop = counters.total();
    drop(results);

    tokio::time::sleep(BACKOFF).await;
    let after_one_backoff = counters.total();
    tokio::time::sleep(5 * BACKOFF).await;
    let later = counters.total();

    assert!(
        after_one_backoff - at_drop <= CONCURRENCY as u64,
        "only requests already on the wire arrive after the drop: {at_drop} → {after_one_backoff}"
    );
    assert_eq!(
        later, after_one_backoff,
        "nothing new after one backoff period"
    );
    assert_eq!(counters.in_flight_requests(), 0);
    // The batch owned the only stack, so its connections are gone too: nothing left running
    // but the mock's accept loop.
    assert_eq!(tasks.num_alive_tasks(), baseline_tasks, "no task leaked");
    println!(
        "drop: {at_drop} requests at the mock when dropped, {after_one_backoff} one backoff \
         ({BACKOFF:?}) later, {later} after five more"
    );
}

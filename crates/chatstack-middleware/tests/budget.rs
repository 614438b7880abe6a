//! The budget layer: the cap under 500 concurrent requests, exact refusals at the boundary,
//! reservations given back on failure and on dropped futures and streams, settlement of
//! streams, unknown models, a shared cost ledger, and streams over real loopback HTTP.
#![cfg(feature = "budget")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chatstack_middleware::budget::{BudgetLayer, BudgetRefusal, BudgetSnapshot};
use chatstack_middleware::cost::{
    CacheTtl, CostLayer, CostLedger, ModelPrice, Pricing, UnknownModel, Usd,
};
use chatstack_middleware::{ChatRequest, ChatStream, Error, ErrorKind, Message, StreamRequest};
use chatstack_proto::{ChatChunk, ResponseMeta, StreamOptions, Usage};
use futures_util::StreamExt;
use support::{Answer, Ask};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

// A request of 100 estimated prompt tokens capped at 1,000 output tokens, on gpt-4.1
// ($2/M in, $8/M out): worst case 100 × 2e6 + 1,000 × 8e6 pico = $0.0082. Its answer uses
// 100 + 500 tokens: 100 × 2e6 + 500 × 8e6 pico = $0.0042.
const WORST: u64 = 8_200_000;
const ACTUAL: u64 = 4_200_000;

fn ask() -> Ask {
    Ask {
        prompt: "x".repeat(400),
        max_tokens: Some(1_000),
        ..Ask::new("gpt-4.1")
    }
}

fn answer() -> Answer {
    Answer {
        usage: Some(Usage::new(100, 500)),
        ..Answer::default()
    }
}

/// The same request as a [`ChatRequest`]: 3 + 4 + 372 / 4 = 100 estimated tokens.
fn chat_request() -> ChatRequest {
    ChatRequest::new("gpt-4.1", [Message::user("x".repeat(372))]).max_tokens(1_000)
}

fn nanos(usd: Usd) -> u64 {
    usd.as_nanos()
}

fn check(snapshot: &BudgetSnapshot) {
    assert!(snapshot.spent <= snapshot.cap, "{snapshot:?}");
    assert!(
        snapshot.spent + snapshot.reserved <= snapshot.cap,
        "{snapshot:?}"
    );
}

async fn call<S>(service: &mut S, request: Ask) -> Result<Answer, Error>
where
    S: Service<Ask, Response = Answer, Error = Error>,
{
    service.ready().await?.call(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn five_hundred_concurrent_requests_never_pass_the_cap() {
    let cap = Usd::from_dollars(1);
    let layer = BudgetLayer::new(cap);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let service = layer.layer(tower::service_fn(move |_: Ask| {
        let call = counted.fetch_add(1, Ordering::Relaxed) as u64;
        async move {
            tokio::time::sleep(Duration::from_micros(500 + call % 7 * 300)).await;
            Ok::<_, Error>(answer())
        }
    }));
    // Watches the figures while the requests run.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = tokio::spawn({
        let (layer, done) = (layer.clone(), Arc::clone(&done));
        async move {
            let mut looks = 0_u64;
            while !done.load(Ordering::Acquire) {
                check(&layer.snapshot());
                looks += 1;
                tokio::task::yield_now().await;
            }
            looks
        }
    });
    let tasks: Vec<_> = (0..500_u64)
        .map(|i| {
            let (service, layer) = (service.clone(), layer.clone());
            tokio::spawn(async move {
                // Arrivals spread over 25 ms, so spending accumulates while requests come.
                tokio::time::sleep(Duration::from_micros(i * 50)).await;
                let result = service.oneshot(ask()).await;
                // A unary response is settled when the call returns.
                check(&layer.snapshot());
                result
            })
        })
        .collect();
    let (mut ran, mut refused) = (0_u64, 0_u64);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ran += 1,
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::BudgetExceeded, "{error}");
                refused += 1;
            }
        }
    }
    done.store(true, Ordering::Release);
    assert!(monitor.await.unwrap() > 0);

    assert_eq!(ran + refused, 500);
    assert!(ran > 0 && refused > 0, "ran {ran}, refused {refused}");
    assert_eq!(
        calls.load(Ordering::Relaxed) as u64,
        ran,
        "refusals never reach the provider"
    );
    let end = layer.snapshot();
    check(&end);
    assert_eq!(nanos(end.spent), ran * ACTUAL, "settled exactly");
    assert_eq!((nanos(end.reserved), end.in_flight), (0, 0));
    assert_eq!((end.admitted, end.refused), (ran, refused));

    // Whatever is left, sequential requests use up until the next one no longer fits.
    let mut service = service;
    let mut more = 0;
    while call(&mut service, ask()).await.is_ok() {
        more += 1;
    }
    let end = layer.snapshot();
    check(&end);
    assert_eq!(nanos(end.spent), (ran + more) * ACTUAL);
    assert!(nanos(end.remaining()) < WORST, "{end:?}");
}

#[tokio::test]
async fn refuses_exactly_at_the_cap_with_the_figures() {
    // After k requests $0.0042·k is spent; the next needs $0.0082 more.
    // Cap $0.05: k = 9 → 0.0378 + 0.0082 = 0.046 fits; k = 10 → 0.0502 does not.
    let layer = BudgetLayer::new(Usd::from_cents(5));
    let mut service = layer.layer(tower::service_fn(|_: Ask| async {
        Ok::<_, Error>(answer())
    }));
    for _ in 0..10 {
        call(&mut service, ask()).await.unwrap();
    }
    let error = call(&mut service, ask()).await.unwrap_err();
    assert!(error.is_budget_exceeded());
    assert_eq!(
        error.to_string(),
        "budget exceeded: cap $0.050000, spent $0.042000, reserved $0.000000, \
         this request's worst case $0.008200 (model `gpt-4.1`)"
    );
    let refusal = BudgetRefusal::find(&error).unwrap();
    assert_eq!(
        (
            nanos(refusal.cap),
            nanos(refusal.spent),
            nanos(refusal.reserved),
            nanos(refusal.worst_case)
        ),
        (50_000_000, 42_000_000, 0, WORST)
    );
    assert!(!error.is_retryable());

    // A cap exactly equal to spent + worst case admits the request.
    let layer = BudgetLayer::new(Usd::from_nanos(10 * ACTUAL + WORST));
    let mut service = layer.layer(tower::service_fn(|_: Ask| async {
        Ok::<_, Error>(answer())
    }));
    for _ in 0..11 {
        call(&mut service, ask()).await.unwrap();
    }
    assert!(
        call(&mut service, ask())
            .await
            .unwrap_err()
            .is_budget_exceeded()
    );
    assert_eq!(nanos(layer.snapshot().spent), 11 * ACTUAL);
}

#[tokio::test]
async fn clones_of_the_layer_and_services_share_one_budget() {
    let layer = BudgetLayer::new(Usd::from_nanos(2 * WORST));
    let relay = layer.clone().pricing(Pricing::default().multiplier(0.5));
    let provider = tower::service_fn(|_: Ask| async { Ok::<_, Error>(answer()) });
    let mut direct = layer.layer(provider);
    let mut halved = relay.layer(provider);
    call(&mut direct, ask()).await.unwrap();
    call(&mut halved, ask()).await.unwrap();
    // $0.0042 + $0.0021 spent of $0.0164: one more direct request fits ($0.0082), then not.
    assert_eq!(nanos(layer.snapshot().spent), ACTUAL + ACTUAL / 2);
    call(&mut direct.clone(), ask()).await.unwrap();
    assert!(
        call(&mut direct, ask())
            .await
            .unwrap_err()
            .is_budget_exceeded()
    );
    assert_eq!(relay.snapshot(), layer.snapshot());
}

// ---- reservations given back ----

#[tokio::test]
async fn a_failed_call_gives_its_reservation_back() {
    let layer = BudgetLayer::new(Usd::from_nanos(WORST));
    let mut service = layer.layer(tower::service_fn(|_: Ask| async {
        Err::<Answer, _>(Error::new(ErrorKind::Server, "down"))
    }));
    for _ in 0..3 {
        let error = call(&mut service, ask()).await.unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::Server,
            "the budget admitted it each time"
        );
    }
    let snapshot = layer.snapshot();
    assert_eq!((nanos(snapshot.spent), nanos(snapshot.reserved)), (0, 0));
    assert_eq!(
        (snapshot.admitted, snapshot.refused, snapshot.in_flight),
        (3, 0, 0)
    );
}

#[tokio::test]
async fn a_dropped_future_gives_its_reservation_back() {
    // Room for one request in flight.
    let layer = BudgetLayer::new(Usd::from_nanos(WORST + WORST / 2));
    let mut service = layer.layer(tower::service_fn(|_: Ask| {
        std::future::pending::<Result<Answer, Error>>()
    }));
    let first = service.ready().await.unwrap().call(ask());
    assert_eq!(nanos(layer.snapshot().reserved), WORST);
    assert_eq!(layer.snapshot().in_flight, 1);
    let second = call(&mut service, ask()).await.unwrap_err();
    assert!(second.is_budget_exceeded());
    let refusal = BudgetRefusal::find(&second).unwrap();
    assert_eq!(nanos(refusal.reserved), WORST);

    drop(first);
    let snapshot = layer.snapshot();
    assert_eq!(
        (
            nanos(snapshot.reserved),
            snapshot.in_flight,
            nanos(snapshot.spent)
        ),
        (0, 0, 0)
    );
    // Room again.
    let third = service.ready().await.unwrap().call(ask());
    assert_eq!(nanos(layer.snapshot().reserved), WORST);
    drop(third);
}

/// A streaming provider whose streams yield `chunks` and then stay open forever when `hang`.
fn streaming(
    chunks: Vec<ChatChunk>,
    hang: bool,
    sent: Arc<std::sync::Mutex<Vec<Option<StreamOptions>>>>,
) -> impl Service<StreamRequest, Response = ChatStream, Error = Error, Future: Send> + Clone {
    tower::service_fn(move |request: StreamRequest| {
        sent.lock().unwrap().push(request.stream_options.clone());
        let items = futures_util::stream::iter(chunks.clone().into_iter().map(Ok));
        let stream = if hang {
            ChatStream::new(
                items.chain(futures_util::stream::pending()),
                ResponseMeta::default(),
            )
        } else {
            ChatStream::new(items, ResponseMeta::default())
        };
        async move { Ok::<_, Error>(stream) }
    })
}

fn content_chunk() -> ChatChunk {
    serde_json::from_str(
        r#"{"id":"c1","model":"gpt-4.1","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
    )
    .unwrap()
}

fn usage_chunk() -> ChatChunk {
    ChatChunk {
        model: "gpt-4.1".to_owned(),
        usage: Some(Usage::new(100, 500)),
        ..ChatChunk::default()
    }
}

#[tokio::test]
async fn a_dropped_stream_gives_its_reservation_back() {
    let layer = BudgetLayer::new(Usd::from_dollars(1));
    let sent = Arc::default();
    let service = layer.layer(streaming(vec![content_chunk()], true, Arc::clone(&sent)));

    // Dropped before reading anything.
    let stream = service
        .clone()
        .oneshot(StreamRequest::from(chat_request()))
        .await
        .unwrap();
    assert_eq!(nanos(layer.snapshot().reserved), WORST);
    drop(stream);
    assert_eq!(nanos(layer.snapshot().reserved), 0);

    // Dropped after its first chunk, before its usage.
    let mut stream = service
        .oneshot(StreamRequest::from(chat_request()))
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    assert_eq!(nanos(layer.snapshot().reserved), WORST);
    drop(stream);
    let snapshot = layer.snapshot();
    assert_eq!(
        (
            nanos(snapshot.reserved),
            nanos(snapshot.spent),
            snapshot.in_flight
        ),
        (0, 0, 0)
    );
    assert_eq!(snapshot.admitted, 2);
    for options in sent.lock().unwrap().iter() {
        assert_eq!(options.as_ref().and_then(|o| o.include_usage), Some(true));
    }
}

#[tokio::test]
async fn a_stream_settles_to_its_usage_when_it_ends() {
    let layer = BudgetLayer::new(Usd::from_dollars(1));
    let sent = Arc::default();
    let service = layer.layer(streaming(
        vec![content_chunk(), usage_chunk()],
        false,
        Arc::clone(&sent),
    ));
    let mut stream = service
        .oneshot(StreamRequest::from(chat_request()))
        .await
        .unwrap();
    assert_eq!(
        nanos(layer.snapshot().reserved),
        WORST,
        "reserved while it streams"
    );
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    let snapshot = layer.snapshot();
    assert_eq!(
        (nanos(snapshot.reserved), nanos(snapshot.spent)),
        (0, ACTUAL)
    );
    assert_eq!(
        sent.lock().unwrap()[0]
            .as_ref()
            .and_then(|o| o.include_usage),
        Some(true),
        "include_usage is asked for"
    );
}

#[tokio::test]
async fn a_success_without_usage_counts_its_worst_case() {
    let layer = BudgetLayer::new(Usd::from_dollars(1));
    let mut service = layer.layer(tower::service_fn(|_: Ask| async {
        Ok::<_, Error>(Answer::default())
    }));
    call(&mut service, ask()).await.unwrap();
    let snapshot = layer.snapshot();
    assert_eq!(
        (nanos(snapshot.spent), nanos(snapshot.reserved)),
        (WORST, 0)
    );
}

// ---- worst cases ----

/// The worst case `layer` computes for `request`, read from the refusal of a zero cap.
async fn worst_case(layer: BudgetLayer, request: Ask) -> u64 {
    assert_eq!(layer.snapshot().cap, Usd::ZERO);
    let mut service = layer.layer(tower::service_fn(|_: Ask| async {
        Ok::<_, Error>(answer())
    }));
    let error = call(&mut service, request).await.unwrap_err();
    nanos(BudgetRefusal::find(&error).expect("refused").worst_case)
}

/// Unknown models at $10/M in and $30/M out.
fn default_price() -> Pricing {
    Pricing::default().unknown_model(UnknownModel::Price(ModelPrice::per_million(10.0, 30.0)))
}

#[tokio::test]
async fn worst_cases_take_the_dearest_rates_and_the_model_limits() {
    let zero = || BudgetLayer::new(Usd::ZERO).pricing(default_price());
    let with = |model: &str, prompt_chars: usize, max_tokens: Option<u64>| Ask {
        prompt: "x".repeat(prompt_chars),
        max_tokens,
        ..Ask::new(model)
    };
    assert_eq!(worst_case(zero(), ask()).await, WORST);
    // No cap on the request: gpt-4.1's 32,768 output tokens. 100 × 2e6 + 32,768 × 8e6.
    assert_eq!(
        worst_case(zero(), with("gpt-4.1", 400, None)).await,
        262_344_000
    );
    // Claude: the prompt at the cache-write rate, dearer than input.
    // 1,000 × 3.75e6 + 100 × 15e6.
    assert_eq!(
        worst_case(zero(), with("claude-sonnet-4.5", 4_000, Some(100))).await,
        5_250_000
    );
    // Over 200k estimated prompt tokens: the long-context rates.
    // 250,000 × 7.5e6 + 1,000 × 22.5e6.
    assert_eq!(
        worst_case(zero(), with("claude-sonnet-4-5", 1_000_000, Some(1_000))).await,
        1_897_500_000
    );
    // An unknown model at the default price, without a max: the default 16,384 tokens.
    // 100 × 10e6 + 16,384 × 30e6.
    assert_eq!(
        worst_case(zero(), with("mystery", 400, None)).await,
        492_520_000
    );
    // ... or the configured default: 100 × 10e6 + 1,000 × 30e6.
    assert_eq!(
        worst_case(
            zero().default_max_output_tokens(1_000),
            with("mystery", 400, None)
        )
        .await,
        31_000_000
    );
    // A relay's multiplier and the 1-hour cache: (1,000 × 6e6 + 100 × 15e6) × 0.85.
    let relay = BudgetLayer::new(Usd::ZERO).pricing(
        Pricing::default()
            .multiplier(0.85)
            .cache_write_ttl(CacheTtl::OneHour),
    );
    assert_eq!(
        worst_case(relay, with("claude-sonnet-4-5", 4_000, Some(100))).await,
        6_375_000
    );
}

// ---- unknown models ----

#[tokio::test]
async fn unknown_models_follow_the_policy() {
    let provider = tower::service_fn(|_: Ask| async { Ok::<_, Error>(answer()) });

    // The default: refused, nothing reserved.
    let layer = BudgetLayer::new(Usd::from_dollars(1));
    let error = layer
        .layer(provider)
        .oneshot(Ask::new("mystery"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("`mystery`"));
    assert_eq!(layer.snapshot().admitted, 0);

    // Zero: passes unreserved and counts nothing.
    let layer =
        BudgetLayer::new(Usd::ZERO).pricing(Pricing::default().unknown_model(UnknownModel::Zero));
    layer
        .layer(provider)
        .oneshot(Ask::new("mystery"))
        .await
        .unwrap();
    let snapshot = layer.snapshot();
    assert_eq!((snapshot.admitted, nanos(snapshot.spent)), (1, 0));

    // A default price: reserved and settled at it. 100 + 500 tokens at $10/M and $30/M.
    let layer = BudgetLayer::new(Usd::from_dollars(1)).pricing(default_price());
    let request = Ask {
        model: "mystery".to_owned(),
        ..ask()
    };
    layer.layer(provider).oneshot(request).await.unwrap();
    assert_eq!(nanos(layer.snapshot().spent), 16_000_000);
}

// ---- a shared cost ledger ----

#[tokio::test]
async fn a_budget_on_a_ledger_counts_what_the_cost_layer_records() {
    let ledger = CostLedger::new();
    // Spend recorded before the budget existed counts: 5,625 output tokens × 8e6 pico =
    // $0.045 of a $0.05 cap.
    let earlier = Pricing::default()
        .price("gpt-4.1", Some(&Usage::new(0, 5_625)))
        .unwrap();
    ledger.record(&earlier, Some("yesterday"));
    assert_eq!(nanos(ledger.total_cost()), 45_000_000);
    let budget = BudgetLayer::with_ledger(Usd::from_cents(5), ledger.clone());
    let mut service = ServiceBuilder::new()
        .layer(budget.clone())
        .layer(CostLayer::new(ledger.clone()))
        .service(tower::service_fn(|_: Ask| async {
            Ok::<_, Error>(answer())
        }));
    let error = call(&mut service, ask()).await.unwrap_err();
    assert_eq!(
        nanos(BudgetRefusal::find(&error).unwrap().spent),
        45_000_000
    );

    // A fresh ledger: the same boundary as a budget of its own (10 requests of $0.0042).
    let ledger = CostLedger::new();
    let budget = BudgetLayer::with_ledger(Usd::from_cents(5), ledger.clone());
    let mut service = ServiceBuilder::new()
        .layer(budget.clone())
        .layer(CostLayer::new(ledger.clone()))
        .service(tower::service_fn(|_: Ask| async {
            Ok::<_, Error>(answer())
        }));
    for _ in 0..10 {
        call(&mut service, ask()).await.unwrap();
    }
    assert!(
        call(&mut service, ask())
            .await
            .unwrap_err()
            .is_budget_exceeded()
    );
    assert_eq!(nanos(ledger.total_cost()), 10 * ACTUAL);
    let snapshot = budget.snapshot();
    assert_eq!(
        (nanos(snapshot.spent), nanos(snapshot.reserved)),
        (10 * ACTUAL, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_ledger_budget_holds_under_concurrency() {
    let ledger = CostLedger::new();
    let cap = Usd::from_cents(50);
    let budget = BudgetLayer::with_ledger(cap, ledger.clone());
    let service = ServiceBuilder::new()
        .layer(budget.clone())
        .layer(CostLayer::new(ledger.clone()))
        .service(tower::service_fn(|_: Ask| async {
            tokio::time::sleep(Duration::from_micros(300)).await;
            Ok::<_, Error>(answer())
        }));
    let tasks: Vec<_> = (0..500_u64)
        .map(|i| {
            let (service, budget) = (service.clone(), budget.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(i * 20)).await;
                let result = service.oneshot(ask()).await;
                // Between the ledger's charge and the release of the reservation, the snapshot
                // counts a completing request twice, so only spent ≤ cap holds at every look.
                let snapshot = budget.snapshot();
                assert!(snapshot.spent <= snapshot.cap, "{snapshot:?}");
                result.is_ok()
            })
        })
        .collect();
    let mut ran = 0;
    for task in tasks {
        ran += u64::from(task.await.unwrap());
    }
    let snapshot = budget.snapshot();
    check(&snapshot);
    assert_eq!(snapshot.admitted + snapshot.refused, 500);
    assert_eq!(snapshot.admitted, ran);
    assert_eq!(nanos(ledger.total_cost()), ran * ACTUAL);
    assert_eq!(ledger.snapshot().total.requests, ran);
}

// ---- over real loopback HTTP ----

mod http_tests {
    use super::*;
    use chatstack_mock::{MockConfig, MockServer};
    use chatstack_transport::HttpTransport;

    #[tokio::test]
    async fn streams_and_unary_calls_over_the_wire_settle_to_their_usage() {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let transport = HttpTransport::builder()
            .base_url(mock.url())
            .build()
            .unwrap();
        // "Hello": 3 + 4 + 2 = 9 estimated (and reported) prompt tokens; the mock answers 16
        // tokens. Worst case 9 × 2e6 + 100 × 8e6 = $0.000818; actual 9 × 2e6 + 16 × 8e6 =
        // $0.000146. Of $0.002: after 9 requests ($0.001314) the next does not fit.
        let layer = BudgetLayer::new(Usd::from_micros(2_000));
        let service = layer.layer(transport);
        let request = ChatRequest::new("gpt-4.1", [Message::user("Hello")]).max_tokens(100);
        for i in 0..9 {
            if i % 2 == 0 {
                service.clone().oneshot(request.clone()).await.unwrap();
            } else {
                let mut stream = service
                    .clone()
                    .oneshot(StreamRequest::from(request.clone()))
                    .await
                    .unwrap();
                while let Some(chunk) = stream.next().await {
                    chunk.unwrap();
                }
            }
            assert_eq!(nanos(layer.snapshot().spent), (i + 1) * 146_000);
        }
        let error = service.oneshot(request).await.unwrap_err();
        assert!(error.is_budget_exceeded());
        let snapshot = layer.snapshot();
        assert_eq!(
            (nanos(snapshot.spent), nanos(snapshot.reserved)),
            (1_314_000, 0)
        );
        assert_eq!(mock.counters().snapshot().status(200), 9);
    }
}

//! What each layer adds to a call, and what the whole default stack costs, in one run.
//!
//! Every case calls the same no-op inner service ([`support::NoOp`]: it answers at once,
//! over chatstack's own `ChatRequest`/`ChatResponse`, and `StreamRequest`/`ChatStream`
//! for streams) with clones of the same request, through the same loop (poll ready, call,
//! consume the answer), on the same runtime. The `inner_alone` group times that service with
//! no layer, once per kind of answer the cases use; a case's time minus its baseline's is
//! what its layer adds per call:
//!
//! | cases | baseline |
//! |---|---|
//! | unary cases, `full_default_stack` | `inner_alone/unary` |
//! | `cost/priced_answered_by_snapshot`, `trace/*` | `inner_alone/unary_answered_by_snapshot` |
//! | `retry/stream_4_chunks` | `inner_alone/stream_4_chunks` |
//! | `timeout/stream_100_chunks` | `inner_alone/stream_100_chunks` |
//!
//! One group per layer follows, then `full_default_stack`: the default order of the crate
//! docs (trace → budget → cost → retry → circuit breaker → rate limit → timeout → auth)
//! over the same service, so the per-layer figures and the whole stack come from one run.
//!
//! Features: the bench needs the default ones (every layer). With `metrics`, every traced
//! call also records its histograms into the `metrics` facade's no-op recorder, which the
//! `trace` cases and `full_default_stack` then include; with `tiktoken`, the rate limiter
//! gets a case with exact token counts.
//!
//! ```text
//! cargo bench -p chatstack-middleware --bench layers [--all-features] [-- <filter>]
//! ```

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chatstack_middleware::auth::{ApiKey, AuthLayer, KeySource};
use chatstack_middleware::budget::BudgetLayer;
use chatstack_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use chatstack_middleware::cost::{CostLayer, CostLedger, Usd};
use chatstack_middleware::fallback::FallbackLayer;
use chatstack_middleware::rate_limit::{Quota, RateLimitConfig, RateLimitLayer, Reconcile};
use chatstack_middleware::retry::RetryLayer;
use chatstack_middleware::timeout::TimeoutLayer;
use chatstack_middleware::trace::TraceLayer;
use chatstack_middleware::{ChatRequest, ChatResponse};
use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::SecretString;
use tower::{Layer, ServiceBuilder};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use support::{Expect, Failure, Harness, MODEL, NoOp, SNAPSHOT, request, stream_request};

fn layers(c: &mut Criterion) {
    let harness = Harness::new();
    inner_alone(c, &harness);
    trace(c, &harness);
    budget(c, &harness);
    cost(c, &harness);
    retry(c, &harness);
    circuit_breaker(c, &harness);
    rate_limit(c, &harness);
    timeout(c, &harness);
    auth(c, &harness);
    fallback(c, &harness);
    full_default_stack(c, &harness);
}

/// The baselines: the no-op service with no layer, answering a unary request without and
/// with the model that answered, and streams of 4 and of 100 chunks.
fn inner_alone(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("inner_alone");
    let (request, stream_request) = (request(), stream_request());

    let mut inner = NoOp::default();
    group.bench_function("unary", harness.calls(&mut inner, &request, Expect::Answer));

    let mut snapshot = NoOp::default().answered_by(SNAPSHOT);
    group.bench_function(
        "unary_answered_by_snapshot",
        harness.calls(&mut snapshot, &request, Expect::Answer),
    );

    let mut four = NoOp::default().chunks(4);
    group.bench_function(
        "stream_4_chunks",
        harness.calls(&mut four, &stream_request, Expect::Answer),
    );

    let mut hundred = NoOp::default().chunks(100);
    group.bench_function(
        "stream_100_chunks",
        harness.calls(&mut hundred, &stream_request, Expect::Answer),
    );
    group.finish();
}

/// What the trace layer adds to a call: with no subscriber installed (spans are disabled),
/// with a no-op subscriber (spans are enabled, so every field is formatted and recorded, but
/// the subscriber does nothing with them), and with `tracing_subscriber`'s registry and no
/// layers (spans are stored and closed). The inner service names the model that answered, as
/// providers do, so the response attributes are recorded too. With the `metrics` feature
/// every wrapped call also records the histograms into the facade's no-op recorder.
fn trace(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("trace");
    let request = request();

    let mut traced = TraceLayer::new()
        .provider("openai")
        .server_address("api.openai.com")
        .layer(NoOp::default().answered_by(SNAPSHOT));
    group.bench_function(
        "no_subscriber",
        harness.calls(&mut traced, &request, Expect::Answer),
    );

    let noop = NoOpSubscriber {
        next_id: AtomicU64::new(1),
    };
    tracing::subscriber::with_default(noop, || {
        tracing::callsite::rebuild_interest_cache();
        group.bench_function(
            "noop_subscriber",
            harness.calls(&mut traced, &request, Expect::Answer),
        );
    });

    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        tracing::callsite::rebuild_interest_cache();
        group.bench_function(
            "registry_without_layers",
            harness.calls(&mut traced, &request, Expect::Answer),
        );
    });
    // The groups after this one run without a subscriber again.
    tracing::callsite::rebuild_interest_cache();
    group.finish();
}

/// Interested in everything, keeps nothing.
struct NoOpSubscriber {
    next_id: AtomicU64,
}

impl Subscriber for NoOpSubscriber {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// What the budget layer adds to a call: the request admitted (reserve, then settle the
/// actual cost) and refused (no reservation can fit a zero cap); and the budget over the
/// cost layer on a shared ledger. `admitted` minus `inner_alone/unary` is the cost per call.
fn budget(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("budget");
    let request = request();

    // Spending never reaches a cap this large during the bench.
    let mut admitted = BudgetLayer::new(Usd::MAX).layer(NoOp::default());
    group.bench_function(
        "admitted",
        harness.calls(&mut admitted, &request, Expect::Answer),
    );

    let mut refused = BudgetLayer::new(Usd::ZERO).layer(NoOp::default());
    group.bench_function(
        "refused",
        harness.calls(&mut refused, &request, Expect::Refusal),
    );

    let ledger = CostLedger::new();
    let mut stacked = ServiceBuilder::new()
        .layer(BudgetLayer::with_ledger(Usd::MAX, ledger.clone()))
        .layer(CostLayer::new(ledger))
        .service(NoOp::default());
    group.bench_function(
        "on_ledger_with_cost",
        harness.calls(&mut stacked, &request, Expect::Answer),
    );
    group.finish();
}

/// What the cost layer adds to a call: pricing the usage, attaching the cost, and one
/// ledger update (`priced` minus `inner_alone/unary`); with the request tagged (the tag is
/// cloned with the request, as a tagged caller's would be, and the ledger also counts per
/// tag); and with the provider answering with a dated snapshot, resolved to the price
/// table's id (against `inner_alone/unary_answered_by_snapshot`).
fn cost(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("cost");
    let request = request();

    let mut priced = CostLayer::new(CostLedger::new()).layer(NoOp::default());
    group.bench_function(
        "priced",
        harness.calls(&mut priced, &request, Expect::Answer),
    );

    let tagged_request = request.clone().tag("team-a");
    let mut tagged = CostLayer::new(CostLedger::new()).layer(NoOp::default());
    group.bench_function(
        "priced_tagged",
        harness.calls(&mut tagged, &tagged_request, Expect::Answer),
    );

    let mut snapshot =
        CostLayer::new(CostLedger::new()).layer(NoOp::default().answered_by(SNAPSHOT));
    group.bench_function(
        "priced_answered_by_snapshot",
        harness.calls(&mut snapshot, &request, Expect::Answer),
    );
    group.finish();
}

/// What the retry layer adds per call on the success path: a clone of the service and of
/// the request, a budget deposit, the attempt count; with and without a retry budget, and
/// for a stream of 4 chunks, where it also reads the first chunk ahead (against
/// `inner_alone/stream_4_chunks`).
fn retry(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("retry");
    let (request, stream_request) = (request(), stream_request());

    let mut retried = RetryLayer::new().layer(NoOp::default());
    group.bench_function(
        "unary",
        harness.calls(&mut retried, &request, Expect::Answer),
    );

    let mut unbudgeted = RetryLayer::new().budget(None).layer(NoOp::default());
    group.bench_function(
        "unary_without_budget",
        harness.calls(&mut unbudgeted, &request, Expect::Answer),
    );

    let mut streamed = RetryLayer::new().layer(NoOp::default().chunks(4));
    group.bench_function(
        "stream_4_chunks",
        harness.calls(&mut streamed, &stream_request, Expect::Answer),
    );
    group.finish();
}

/// What the circuit breaker adds to a call: with the circuit closed (with and without
/// slow-call timing) and open. `closed` minus `inner_alone/unary` is the cost per call on
/// the hot path; `open_rejects` never reaches the inner service.
fn circuit_breaker(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("circuit_breaker");
    let request = request();

    let mut closed = CircuitBreakerLayer::default().layer(NoOp::default());
    for model in [MODEL, "gpt-4o", "gpt-4o-mini", "o3-mini"] {
        // The circuits exist: lookups do not allocate.
        let mut other = request.clone();
        other.model = model.to_owned();
        harness.call(&mut closed, other).expect("answered");
    }
    group.bench_function(
        "closed",
        harness.calls(&mut closed, &request, Expect::Answer),
    );

    let timed = CircuitBreakerConfig::default().slow_call_duration(Duration::from_secs(60));
    let mut closed_timed = CircuitBreakerLayer::new(timed).layer(NoOp::default());
    group.bench_function(
        "closed_with_slow_call_timing",
        harness.calls(&mut closed_timed, &request, Expect::Answer),
    );

    let open_config = CircuitBreakerConfig::default()
        .minimum_calls(1)
        .open_duration(Duration::from_secs(3600));
    let mut open =
        CircuitBreakerLayer::new(open_config).layer(NoOp::default().failing(Failure::Server));
    let _ = harness.call(&mut open, request.clone()); // the failure that opens the circuit
    group.bench_function(
        "open_rejects",
        harness.calls(&mut open, &request, Expect::Refusal),
    );
    group.finish();
}

/// What the rate limiter adds to a call when the quota is never reached: with no quotas,
/// with a request quota, and with request and token quotas, the charge final or reconciled
/// with every response (which used a token fewer than it was charged: one is given back).
/// Each minus `inner_alone/unary` is the cost per call on the path that does not wait. With
/// the `tiktoken` feature, the same with the prompt counted exactly.
fn rate_limit(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("rate_limit");
    let request = request();
    let huge = Quota::per_minute(u64::from(u32::MAX));
    let both = RateLimitConfig::default().requests(huge).tokens(huge);

    let cases = [
        ("no_quota", RateLimitLayer::default()),
        (
            "requests",
            RateLimitLayer::new(RateLimitConfig::default().requests(huge)),
        ),
        (
            "requests_and_tokens",
            RateLimitLayer::new(both.reconcile(Reconcile::Off)),
        ),
        (
            "requests_and_tokens_reconciled",
            RateLimitLayer::new(both.reconcile(Reconcile::Full)),
        ),
    ];
    #[cfg(feature = "tiktoken")]
    let cases = cases.into_iter().chain([(
        "requests_and_tokens_tiktoken",
        RateLimitLayer::new(both).token_counter(chatstack_middleware::rate_limit::Tiktoken),
    )]);
    for (name, layer) in cases {
        let mut limited = layer.layer(NoOp::default());
        group.bench_function(name, harness.calls(&mut limited, &request, Expect::Answer));
        assert_never_limited(&layer, name);
    }
    group.finish();
}

/// The rate-limit cases measure the path that does not wait: check that nothing had to.
fn assert_never_limited(layer: &RateLimitLayer, case: &str) {
    if let Some(status) = layer.status(MODEL) {
        let exhausted = status.requests_available == Some(0) || status.tokens_available == Some(0);
        assert!(
            status.waiting == 0 && !exhausted,
            "{case}: the quota was reached, so calls waited: {status:?}"
        );
    }
}

/// What the timeout layer adds per call, and per chunk of a stream of 100 (against
/// `inner_alone/stream_100_chunks`), with the default limits.
fn timeout(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("timeout");
    let (request, stream_request) = (request(), stream_request());

    let mut timed = TimeoutLayer::new().layer(NoOp::default());
    group.bench_function("unary", harness.calls(&mut timed, &request, Expect::Answer));

    let mut streamed = TimeoutLayer::new().layer(NoOp::default().chunks(100));
    group.bench_function(
        "stream_100_chunks",
        harness.calls(&mut streamed, &stream_request, Expect::Answer),
    );
    group.finish();
}

const KEYS: [&str; 3] = [
    "sk-bench-alpha-0123456789abcdefAAAA",
    "sk-bench-bravo-0123456789abcdefBBBB",
    "sk-bench-charlie-0123456789abcdCCCC",
];

fn key(text: &str) -> ApiKey {
    ApiKey::new(text).expect("a valid key")
}

/// What the auth layer adds to a call: with one key, a pool of three, a callback source, and
/// a pool whose keys are all out of rotation (the refusal path). `one_key` minus
/// `inner_alone/unary` is the cost per call on the hot path: choosing the key, cloning its
/// ready-made header value, and inserting it into the request's (empty) header map, which
/// allocates the map's storage.
fn auth(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("auth");
    let request = request();

    let mut one_key = AuthLayer::new(key(KEYS[0])).layer(NoOp::default());
    group.bench_function(
        "one_key",
        harness.calls(&mut one_key, &request, Expect::Answer),
    );

    let mut pool = AuthLayer::pool(KEYS.map(key)).layer(NoOp::default());
    group.bench_function(
        "pool_of_three",
        harness.calls(&mut pool, &request, Expect::Answer),
    );

    let source = KeySource::callback(|| Ok(SecretString::from(KEYS[1])));
    let mut callback = AuthLayer::new(source).layer(NoOp::default());
    group.bench_function(
        "callback",
        harness.calls(&mut callback, &request, Expect::Answer),
    );

    let mut refused =
        AuthLayer::pool(KEYS.map(key)).layer(NoOp::default().failing(Failure::Unauthorized));
    for _ in KEYS {
        // Every key meets a 401 and leaves the rotation.
        let _ = harness.call(&mut refused, request.clone());
    }
    group.bench_function(
        "all_out_refused",
        harness.calls(&mut refused, &request, Expect::Refusal),
    );
    group.finish();
}

/// What the fallback layer adds per call: with no alternatives; on the common path, where
/// the primary answers, with a model or a service as the alternative (the request and the
/// service are kept for it); and when the primary fails and the call falls back once to
/// another model (two calls of the inner service, one of them failing).
fn fallback(c: &mut Criterion, harness: &Harness) {
    let mut group = c.benchmark_group("fallback");
    let request = request();
    let layer = FallbackLayer::<ChatRequest, ChatResponse>::new;

    let mut no_alternatives = layer().layer(NoOp::default());
    group.bench_function(
        "no_alternatives",
        harness.calls(&mut no_alternatives, &request, Expect::Answer),
    );

    let mut one_model = layer().model("gpt-4.1-mini").layer(NoOp::default());
    group.bench_function(
        "primary_answers/model_alternative",
        harness.calls(&mut one_model, &request, Expect::Answer),
    );

    let mut one_service = layer()
        .service("backup", NoOp::default())
        .layer(NoOp::default());
    group.bench_function(
        "primary_answers/service_alternative",
        harness.calls(&mut one_service, &request, Expect::Answer),
    );

    let mut falls_back = layer()
        .model("gpt-4.1-mini")
        .layer(NoOp::default().failing(Failure::ServerFor(MODEL)));
    group.bench_function(
        "falls_back_once",
        harness.calls(&mut falls_back, &request, Expect::Answer),
    );
    group.finish();
}

/// The whole default stack, in the crate docs' order (trace → budget → cost → retry →
/// circuit breaker → rate limit → timeout → auth), every layer on its hot path: no
/// subscriber, a cap never reached, a closed circuit, quotas never reached, one key. Minus
/// `inner_alone/unary`, what the stack adds per call; compare it with the sum of the layers'
/// figures above.
fn full_default_stack(c: &mut Criterion, harness: &Harness) {
    let request = request();
    let huge = Quota::per_minute(u64::from(u32::MAX));
    let rate_limit = RateLimitLayer::new(RateLimitConfig::default().requests(huge).tokens(huge));
    let mut stack = ServiceBuilder::new()
        .layer(
            TraceLayer::new()
                .provider("openai")
                .server_address("api.openai.com"),
        )
        .layer(BudgetLayer::new(Usd::MAX))
        .layer(CostLayer::new(CostLedger::new()))
        .layer(RetryLayer::new())
        .layer(CircuitBreakerLayer::default())
        .layer(rate_limit.clone())
        .layer(TimeoutLayer::new())
        .layer(AuthLayer::new(key(KEYS[0])))
        .service(NoOp::default());
    c.bench_function(
        "full_default_stack",
        harness.calls(&mut stack, &request, Expect::Answer),
    );
    assert_never_limited(&rate_limit, "full_default_stack");
}

criterion_group!(benches, layers);
criterion_main!(benches);

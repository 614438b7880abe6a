//! A bounded soak: many requests at high concurrency through the full default `Client`
//! stack, against the mock injecting about 10 % mixed faults, and then the books must
//! balance: every request accounted for, no task, permit or reservation left behind, heap
//! flat after warm-up, and the cost ledger exact to the nano-dollar.
//!
//! `CHATSTACK_SOAK_REQUESTS` (default 20,000) and `CHATSTACK_SOAK_CONCURRENCY` (default 256)
//! scale it for a longer run; `cargo test --all-features --test soak -- --nocapture` prints
//! the figures.
//!
//! # The run
//!
//! One client with every layer on: trace, a budget far above what the run spends, cost,
//! retry (3 attempts, 5 ms backoff), a circuit breaker per model (opens at 50 % failures of
//! the last 20 calls, 100 ms open), a rate limit whose quotas are never reached (it still
//! pauses a model briefly after each 429), timeouts (2.5 s per attempt, 1.5 s to a stream's
//! first chunk, 1 s between chunks) and auth. One request in four is streamed; one streamed
//! request in forty is dropped after its first chunk (the caller walking away). One
//! request in thirteen goes to a second model, a third of whose requests the mock always
//! fails with 503, so that model's circuit keeps opening, half-opening and closing during
//! the run, with probes in flight while others are cancelled.
//!
//! The mock draws its faults from a seeded RNG: 503, 500, 429 (`retry-after-ms: 10`), TCP
//! reset, truncated bodies, mid-stream errors, malformed JSON, stalls, a slow first chunk
//! (2 s: longer than the first-chunk limit) and extra latency, about 10 % of requests in all.
//! A reqwest middleware under the transport counts the attempts that leave the client and
//! how each ended at the HTTP level. Σ attempts reported by the responses and errors must
//! equal them, and the mock must have received exactly as many requests. The one exception:
//! an attempt cut short by a timeout before the mock read it. The fault delays are long next
//! to the limits, and the limits long next to a healthy request's latency at this
//! concurrency (tens to hundreds of milliseconds in a debug build), so that does not happen
//! on a machine that is not overloaded; when some attempt was cut short (or its connection
//! failed other than by the mock's reset), the mock's count must lie between the attempts
//! certainly received and all of them, and the figures say so.
//!
//! The run has five equal phases; between them the driver lets every request finish and the
//! client's pool close its idle connections (after 100 ms), waits until only the mock's
//! accept loop is left running, and samples the live heap. The first phase is the warm-up
//! (lazy statics, the layers' maps and logs sized, the retry budget filled).
//!
//! # The books
//!
//! - N requests in, N results out (each request runs in a task of its own, so a task that
//!   panicked or never ended would show): successes, dropped streams and each error kind add
//!   up to N.
//! - Attempts: see above.
//! - The cost ledger equals the sum of the successes' `ResponseCost`s exactly (integer
//!   nano-dollars); failed and dropped streams are in it once each, without usage, at $0.
//! - The budget has nothing reserved and nothing in flight; it admitted every request.
//! - The rate limiter has no waiter; each circuit closes again after the run, probed one call
//!   at a time, so a half-open circuit holding a probe permit nobody gives back would fail.
//! - Tasks: between phases only the mock's accept loop is alive; once the client and the
//!   mock are dropped, `num_alive_tasks` is back to its value before the run.
//!
//! # The heap
//!
//! The global allocator is `peak_alloc`'s (the system allocator, counting live bytes and
//! their peak), so this binary has no `unsafe` of its own.
//!
//! Between phases nothing is in flight and no connection is open, so what is live is what the
//! stack keeps from one request to the next: a few hundred KiB (the mock, the client and its
//! layers' state, the runtime). It must stay within max(25 %, 256 KiB) of its value after the
//! warm-up. Whatever a request leaves behind adds up over the last four phases: a single
//! leaked allocation of 17 bytes per request breaks the bound in the default run (16,000
//! requests), and anything a request holds (a response, a stream, a span, a connection)
//! breaks it by far. The layers' own state is bounded (per-model maps, a slack log of at most 1,024
//! entries per model), well under the floor. The growth per request is printed.
//!
//! In flight, the heap is bounded by the concurrency (the connections of both sides with their
//! buffers, the requests in flight): the peak of each later phase must stay under twice
//! the warm-up phase's peak (a loose bound: the peak swings by a third from phase to phase
//! with the timing of connection churn, rate-limit pauses and circuit openings).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatstack::middleware::auth::ApiKey;
use chatstack::middleware::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, CircuitState,
};
use chatstack::middleware::cost::{StreamCost, Usd};
use chatstack::middleware::rate_limit::RateLimitConfig;
use chatstack::middleware::retry::{Backoff, RetryLayer};
use chatstack::middleware::timeout::TimeoutLayer;
use chatstack::{ChatEvent, ChatRequest, Client, Error, HttpTransport, Message, ResponseExt};
use chatstack_mock::{Fault, MockConfig, MockServer};
use futures_util::StreamExt;
use http::{Extensions, HeaderValue};
use peak_alloc::PeakAlloc;
use reqwest_middleware::reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tokio::task::JoinSet;

/// The system allocator, counting the bytes live now and their peak.
#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const KEY: &str = "sk-soak-0123456789abcdefSOAK";
/// The model most requests go to.
const MODEL: &str = "gpt-4.1";
/// The model whose circuit the run keeps tripping.
const FLAKY_MODEL: &str = "gpt-4.1-mini";
const PHASES: u64 = 5;

/// The live heap between later phases may exceed its value after the warm-up by this
/// share...
const HEAP_GROWTH_PERCENT: usize = 25;
/// ...or by this many bytes, whichever is larger (see the module docs).
const HEAP_GROWTH_FLOOR: usize = 256 << 10;
/// The peak heap of a later phase may reach this share of the warm-up phase's peak.
const PEAK_GROWTH_PERCENT: usize = 200;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a positive integer, not {value:?}")),
        Err(_) => default,
    }
}

/// The mock's configured faults: about 10 % of requests get one (each rule is drawn on its
/// own, in this order; the first fault that is not a delay decides the answer).
fn faults() -> Vec<(Fault, f64)> {
    let ms = Duration::from_millis;
    vec![
        (Fault::ServiceUnavailable, 0.02),
        (Fault::ServerError, 0.015),
        (
            Fault::RateLimitMs {
                retry_after: ms(10),
            },
            0.01,
        ),
        (Fault::Reset, 0.01),
        (Fault::Truncated, 0.01),
        (Fault::mid_stream_error(2), 0.01),
        (Fault::MalformedJson, 0.005),
        (Fault::stall(2), 0.005),
        (Fault::SlowFirstChunk(ms(2_000)), 0.005),
        (Fault::Latency(ms(100)), 0.01),
    ]
}

/// What the caller did with request `index`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    streamed: bool,
    /// A streamed request dropped after its first chunk.
    dropped: bool,
    flaky: bool,
    /// A request to the flaky model that the mock fails with 503 on every attempt.
    broken: bool,
}

impl Plan {
    fn of(index: u64) -> Self {
        let streamed = index % 4 == 1;
        let flaky = index % 13 == 5;
        Self {
            streamed,
            dropped: streamed && (index / 4) % 40 == 17,
            flaky,
            broken: flaky && (index / 13) % 3 == 0,
        }
    }

    fn request(&self, index: u64) -> ChatRequest {
        let model = if self.flaky { FLAKY_MODEL } else { MODEL };
        let mut request = ChatRequest::new(
            model,
            [Message::user(format!(
                "Soak request number {index}, say hi."
            ))],
        )
        .max_completion_tokens(32);
        if self.broken {
            request
                .meta
                .headers
                .insert("x-mock-fault", HeaderValue::from_static("unavailable"));
        }
        request
    }
}

/// How one request ended.
#[derive(Debug)]
struct Outcome {
    plan: Plan,
    /// `Ok(cost in nano-dollars)` or `Err(the error's kind)`; a dropped stream is `Ok` if it
    /// started, with the cost its handle was settled at.
    result: Result<u64, String>,
    /// The attempts the response, stream or error reported.
    attempts: u64,
    /// Of those, the attempts that reached the wire: all but the last of a call the circuit
    /// breaker refused (it refuses in `call`, so that attempt never leaves the process).
    wire_attempts: u64,
    /// For a stream that started: the ledger recorded it once (with or without usage).
    stream_recorded: bool,
    /// For a stream that started and did not end with its `Done`: the cost it was settled at.
    unfinished_stream_cost: Option<u64>,
}

fn error_outcome(plan: Plan, error: &Error) -> Outcome {
    let attempts = u64::from(error.attempts());
    let refused = u64::from(error.is_circuit_open());
    Outcome {
        plan,
        result: Err(format!("{:?}", error.kind())),
        attempts,
        wire_attempts: attempts.saturating_sub(refused),
        stream_recorded: false,
        unfinished_stream_cost: None,
    }
}

/// Sends request `index` as planned and says how it ended.
async fn one(client: Client, index: u64) -> Outcome {
    let plan = Plan::of(index);
    let request = plan.request(index);
    if !plan.streamed {
        return match client.send(request).await {
            Ok(response) => {
                let attempts = u64::from(response.meta.attempts);
                let cost = response.cost().expect("the cost layer priced it").cost;
                Outcome {
                    plan,
                    result: Ok(cost.as_nanos()),
                    attempts,
                    wire_attempts: attempts,
                    stream_recorded: false,
                    unfinished_stream_cost: None,
                }
            }
            Err(error) => error_outcome(plan, &error),
        };
    }
    let mut stream = match client.stream(request).await {
        Ok(stream) => stream,
        Err(error) => return error_outcome(plan, &error),
    };
    let attempts = u64::from(stream.meta().attempts);
    let handle = stream
        .meta()
        .extensions
        .get::<StreamCost>()
        .cloned()
        .expect("the cost layer put a handle on the stream");
    let started = |result| Outcome {
        plan,
        result,
        attempts,
        wire_attempts: attempts,
        stream_recorded: true,
        unfinished_stream_cost: None,
    };
    let settled = |handle: &StreamCost| {
        handle
            .get()
            .expect("settled when the stream ended, failed or was dropped")
            .cost
            .as_nanos()
    };
    let mut chunks = 0_u64;
    while let Some(event) = stream.next().await {
        match event {
            Ok(ChatEvent::Chunk(_)) => {
                chunks += 1;
                if plan.dropped {
                    drop(stream);
                    let cost = settled(&handle);
                    return Outcome {
                        unfinished_stream_cost: Some(cost),
                        ..started(Ok(cost))
                    };
                }
            }
            Ok(ChatEvent::Done(response)) => {
                assert!(chunks > 0, "a Done without chunks");
                let cost = response.cost().expect("the cost layer priced it").cost;
                assert_eq!(cost.as_nanos(), settled(&handle), "one cost per stream");
                return started(Ok(cost.as_nanos()));
            }
            Err(error) => {
                let mut outcome = started(Err(format!("{:?} (mid-stream)", error.kind())));
                outcome.unfinished_stream_cost = Some(settled(&handle));
                return outcome;
            }
        }
    }
    panic!("a stream ended without its Done or an error")
}

/// The running totals.
#[derive(Debug, Default)]
struct Tally {
    outcomes: u64,
    ok_unary: u64,
    ok_streamed: u64,
    dropped: u64,
    errors: BTreeMap<String, u64>,
    attempts: u64,
    wire_attempts: u64,
    cost_nanos: u64,
    streams_recorded: u64,
    unfinished_streams: u64,
    unfinished_stream_cost: u64,
    flaky: u64,
    broken: u64,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.outcomes += 1;
        self.attempts += outcome.attempts;
        self.wire_attempts += outcome.wire_attempts;
        self.streams_recorded += u64::from(outcome.stream_recorded);
        self.flaky += u64::from(outcome.plan.flaky);
        self.broken += u64::from(outcome.plan.broken);
        if let Some(cost) = outcome.unfinished_stream_cost {
            self.unfinished_streams += 1;
            self.unfinished_stream_cost += cost;
        }
        match outcome.result {
            Ok(_) if outcome.plan.dropped => self.dropped += 1,
            Ok(cost) => {
                self.cost_nanos += cost;
                if outcome.plan.streamed {
                    self.ok_streamed += 1;
                } else {
                    self.ok_unary += 1;
                }
            }
            Err(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// What went through the transport, counted by a reqwest middleware under it: one send per
/// attempt that left the stack, and how each ended at the HTTP level.
#[derive(Debug, Default)]
struct Wire {
    sends: AtomicU64,
    /// The response head arrived: the mock had the request.
    answered: AtomicU64,
    /// No response head: a TCP reset (the mock had the request), or a connection that failed
    /// before the mock read it.
    errored: AtomicU64,
    /// Dropped before its response head (a timeout fired first): the mock may or may not have
    /// read it.
    cancelled: AtomicU64,
}

/// Counts a send as cancelled unless it is disarmed when the send ends.
struct Unfinished(Option<Arc<Wire>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(wire) = self.0.take() {
            wire.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type BoxFuture<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'a>>;

/// Pins a closure to the higher-ranked signature reqwest-middleware implements `Middleware`
/// for.
fn middleware<F>(f: F) -> impl Middleware
where
    F: for<'a> Fn(Request, &'a mut Extensions, Next<'a>) -> BoxFuture<'a> + Send + Sync + 'static,
{
    f
}

fn count_sends(wire: Arc<Wire>) -> impl Middleware {
    middleware(move |request, extensions, next| {
        let wire = Arc::clone(&wire);
        Box::pin(async move {
            wire.sends.fetch_add(1, Ordering::Relaxed);
            let mut unfinished = Unfinished(Some(Arc::clone(&wire)));
            let result = next.run(request, extensions).await;
            unfinished.0 = None;
            let ended = if result.is_ok() {
                &wire.answered
            } else {
                &wire.errored
            };
            ended.fetch_add(1, Ordering::Relaxed);
            result
        })
    })
}

/// The client: every layer of the default stack on, configured for the soak.
fn client(mock: &MockServer, transitions: Arc<AtomicU64>, wire: Arc<Wire>) -> Client {
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::default().open_duration(Duration::from_millis(100)),
    )
    .on_state_change(move |_| {
        transitions.fetch_add(1, Ordering::Relaxed);
    });
    Client::builder()
        .transport(
            HttpTransport::builder()
                .timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_millis(100))
                .middleware(count_sends(wire)),
        )
        .base_url(mock.url())
        .api_key(ApiKey::new(KEY).expect("a valid key"))
        .budget(Usd::from_dollars(1_000))
        .retry(RetryLayer::new().backoff(Backoff::default().base(Duration::from_millis(5))))
        .circuit_breaker_layer(breaker)
        .rate_limit(
            RateLimitConfig::default()
                .requests_per_minute(1_000_000)
                .tokens_per_minute(1_000_000_000),
        )
        .timeout(
            TimeoutLayer::new()
                .total(Duration::from_millis(2_500))
                .first_chunk(Duration::from_millis(1_500))
                .idle(Duration::from_secs(1)),
        )
        .build()
        .expect("the client builds")
}

async fn mock() -> MockServer {
    let mut config = MockConfig::default()
        .api_key(KEY)
        .seed(0x50a6)
        .stall_cap(Duration::from_secs(3))
        // Report-only limits far above the run, so the limiter never slows down for running
        // low (only for the injected 429s).
        .rate_limits(
            chatstack_mock::RateLimitConfig::default()
                .requests_per_minute(1_000_000_000)
                .tokens_per_minute(1_000_000_000_000),
        );
    for (fault, probability) in faults() {
        config = config.fault(fault, probability);
    }
    MockServer::start(config).await.expect("the mock starts")
}

/// Polls `done` every 10 ms until it holds or `limit` passes; whether it held.
async fn settles(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn soak(requests: u64, concurrency: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let started = Instant::now();

    let mock = mock().await;
    let counters = mock.counters();
    let transitions = Arc::new(AtomicU64::new(0));
    let wire = Arc::new(Wire::default());
    let client = client(&mock, transitions.clone(), wire.clone());
    // With the mock alone: what the runtime runs between phases once every connection is
    // closed.
    let tasks_with_mock = metrics.num_alive_tasks();

    let mut tally = Tally::default();
    let mut heap = Vec::with_capacity(PHASES as usize);
    let mut peaks = Vec::with_capacity(PHASES as usize);
    let mut warm = 0;
    let mut next = 0_u64;
    HEAP.reset_peak_usage();
    for phase in 1..=PHASES {
        let end = requests * phase / PHASES;
        let mut running = JoinSet::new();
        while next < end || !running.is_empty() {
            while next < end && running.len() < concurrency {
                running.spawn(one(client.clone(), next));
                next += 1;
            }
            if let Some(joined) = running.join_next().await {
                tally.add(joined.expect("a request task panicked"));
            }
        }
        drop(running);
        peaks.push(HEAP.peak_usage());
        // Every request of the phase is done. Once the pool has closed its idle connections
        // (100 ms), both sides' connection tasks end: then only the mock's accept loop runs,
        // and what is live is what the stack keeps between requests.
        let quiet = || metrics.num_alive_tasks() == tasks_with_mock;
        assert!(
            settles(Duration::from_secs(10), quiet).await,
            "phase {phase}: {} tasks still alive with no request in flight, {tasks_with_mock} \
             expected",
            metrics.num_alive_tasks()
        );
        heap.push(HEAP.current_usage());
        if phase == 1 {
            warm = next;
        }
        HEAP.reset_peak_usage();
    }
    let elapsed = started.elapsed();

    // The books, read once nothing is in flight.
    let idle = || counters.in_flight_requests() == 0;
    assert!(
        settles(Duration::from_secs(5), idle).await,
        "the mock still answers {} requests",
        counters.in_flight_requests()
    );
    let served = counters.snapshot();
    let faults_injected: u64 = served.by_fault.values().sum();
    let sends = wire.sends.load(Ordering::Relaxed);
    let answered = wire.answered.load(Ordering::Relaxed);
    let errored = wire.errored.load(Ordering::Relaxed);
    let cancelled = wire.cancelled.load(Ordering::Relaxed);
    // The attempts the mock may not have read: those whose connection failed other than by
    // the mock's reset, and (only when a timeout fired before the mock had read the request,
    // on an overloaded machine) those cut short.
    let unsure = if cancelled == 0 {
        errored.saturating_sub(served.resets)
    } else {
        errored + cancelled
    };
    let ledger = client.ledger().snapshot();
    let budget = client.budget().expect("a budget is set");
    let limiters = [MODEL, FLAKY_MODEL]
        .map(|model| client.rate_limit_status(model).expect("the model was used"));
    let transitions = transitions.load(Ordering::Relaxed);
    let probes = breaker_recovers(&client).await;
    let tasks_at_end = metrics.num_alive_tasks();

    let baseline = heap[0];
    let bound = baseline + (baseline * HEAP_GROWTH_PERCENT / 100).max(HEAP_GROWTH_FLOOR);
    let after_warmup = requests - warm;
    let growth = heap[PHASES as usize - 1] as i64 - baseline as i64;
    let peak_bound = peaks[0] * PEAK_GROWTH_PERCENT / 100;

    println!(
        "soak: {requests} requests at concurrency {concurrency} in {:.1} s ({:.0} requests/s)",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  outcomes: {} unary ok, {} streams ok, {} streams dropped by the caller, {} failed: {:?}",
        tally.ok_unary,
        tally.ok_streamed,
        tally.dropped,
        tally.failed(),
        tally.errors
    );
    println!(
        "  attempts: {} reported, of which {} left the client ({} refused by an open circuit) \
         = {sends} through the transport ({answered} answered, {errored} failed, {cancelled} cut \
         short); {} received by the mock{}",
        tally.attempts,
        tally.wire_attempts,
        tally.attempts - tally.wire_attempts,
        served.total,
        if served.total == sends {
            " (all of them)".to_owned()
        } else {
            format!(
                " ({:+}: of the {unsure} attempts that failed or were cut short, the mock may \
                 not have read some)",
                served.total as i64 - sends as i64
            )
        }
    );
    println!(
        "  mock: {faults_injected} faults injected {:?}; statuses {:?}, {} resets",
        served.by_fault, served.by_status, served.resets
    );
    println!(
        "  flaky model: {} requests ({} always failing), {transitions} circuit transitions; \
         {probes} probe call(s) after the run to close its circuit",
        tally.flaky, tally.broken
    );
    println!(
        "  ledger: {} ({} nano-dollars) for {} entries ({} without usage); Σ of the {} \
         successes' costs: {} ({} nano-dollars); unfinished streams settled at {} nano-dollars",
        ledger.total.cost,
        ledger.total.cost.as_nanos(),
        ledger.total.requests,
        ledger.total.without_usage,
        tally.ok_unary + tally.ok_streamed,
        Usd::from_nanos(tally.cost_nanos),
        tally.cost_nanos,
        tally.unfinished_stream_cost
    );
    println!(
        "  budget: reserved {}, in flight {}, admitted {}, refused {}, spent {}; rate-limit \
         waiters {:?}",
        budget.reserved,
        budget.in_flight,
        budget.admitted,
        budget.refused,
        budget.spent,
        limiters.map(|status| status.waiting)
    );
    println!(
        "  heap: {baseline} B live after the warm-up ({warm} requests), after each phase \
         {heap:?} B (bound {bound} B): {growth:+} B over the last {after_warmup} requests \
         ({:.3} B/request); peak of each phase {peaks:?} B (bound {peak_bound} B)",
        growth as f64 / after_warmup as f64
    );

    // Every request in has one result out, and the results add up.
    assert_eq!(next, requests);
    assert_eq!(tally.outcomes, requests, "N in, N results");
    assert_eq!(
        tally.ok_unary + tally.ok_streamed + tally.dropped + tally.failed(),
        requests,
        "successes + dropped + each error kind = N"
    );
    let streamed = (0..requests).filter(|&i| Plan::of(i).streamed).count() as u64;
    assert!(tally.ok_unary > requests / 2, "{tally:?}");
    assert!(tally.ok_streamed > streamed / 2, "{tally:?}");
    assert!(tally.attempts > requests, "faults were retried");
    // (Shares of a seeded draw: checked once the run is long enough for them to be steady.)
    if requests >= 2_000 {
        assert!(faults_injected * 100 > served.total * 7, "{served:?}");
        assert!(
            transitions >= 3,
            "the flaky model's circuit opened and recovered during the run"
        );
    }
    assert!(served.status(401) + served.status(400) == 0, "{served:?}");

    // Every attempt the client reports went through the transport once, and the mock
    // received each of them: none lost, none made twice, none the client did not count.
    assert_eq!(
        tally.wire_attempts, sends,
        "Σ attempts = attempts through the transport"
    );
    assert_eq!(sends, answered + errored + cancelled, "{wire:?}");
    assert!(
        cancelled > 0 || errored >= served.resets,
        "every reset is a transport error: {wire:?}, {} resets",
        served.resets
    );
    assert!(
        served.total <= sends && served.total + unsure >= sends,
        "the mock received {}; {wire:?}, {} resets",
        served.total,
        served.resets
    );
    if unsure == 0 {
        assert_eq!(
            served.total, sends,
            "Σ attempts = requests the mock received"
        );
    }

    // The ledger is exact, in integer nano-dollars: the successes' costs, nothing for
    // streams that failed or were dropped (they are recorded without usage), and one entry
    // per unary success and per stream that started.
    assert_eq!(
        ledger.total.cost.as_nanos(),
        tally.cost_nanos,
        "ledger = Σ costs"
    );
    assert_eq!(tally.unfinished_stream_cost, 0, "{tally:?}");
    assert_eq!(
        ledger.total.requests,
        tally.ok_unary + tally.streams_recorded
    );
    assert_eq!(ledger.total.without_usage, tally.unfinished_streams);

    // No reservation, waiter or probe left behind.
    assert_eq!(budget.reserved, Usd::ZERO, "{budget:?}");
    assert_eq!(budget.in_flight, 0, "{budget:?}");
    assert_eq!(
        (budget.admitted, budget.refused),
        (requests, 0),
        "{budget:?}"
    );
    assert_eq!(budget.spent, ledger.total.cost);
    for status in limiters {
        assert_eq!(status.waiting, 0, "{status:?}");
    }
    assert_eq!(client.circuit_state(MODEL), Some(CircuitState::Closed));
    assert_eq!(
        client.circuit_state(FLAKY_MODEL),
        Some(CircuitState::Closed)
    );

    // The heap is flat after the warm-up, and in flight bounded by the concurrency.
    for (phase, &live) in heap.iter().enumerate().skip(1) {
        assert!(
            live <= bound,
            "the heap grew by phase {}: {live} B > {bound} B",
            phase + 1
        );
    }
    for (phase, &peak) in peaks.iter().enumerate().skip(1) {
        assert!(
            peak <= peak_bound,
            "the peak heap of phase {} ({peak} B) passed {PEAK_GROWTH_PERCENT} % of the \
             warm-up's ({} B)",
            phase + 1,
            peaks[0]
        );
    }

    // No task left behind: with the client and the mock gone, the runtime is back to what
    // it ran before the soak.
    drop(client);
    mock.shutdown().await;
    let gone = || metrics.num_alive_tasks() == tasks_before;
    let settled = settles(Duration::from_secs(10), gone).await;
    let tasks_after = metrics.num_alive_tasks();
    println!(
        "  tasks: {tasks_before} before, {tasks_with_mock} with the mock alone and between \
         phases, {tasks_at_end} at the end of the run, {tasks_after} after dropping the client \
         and the mock"
    );
    assert!(
        settled,
        "tasks leaked: {tasks_after} alive, {tasks_before} before"
    );
}

/// After the run, each circuit recovers: a circuit left half-open with a probe permit that
/// was never given back would refuse these calls forever ("probe call(s) are in flight").
/// Calls go one at a time, so no call is ever refused for a busy probe; a probe that meets an
/// injected fault opens the circuit again, and the next call waits out the open duration.
/// Returns how many calls it took.
async fn breaker_recovers(client: &Client) -> u32 {
    let mut calls = 0;
    for model in [FLAKY_MODEL, MODEL] {
        for _ in 0..50 {
            if client.circuit_state(model) == Some(CircuitState::Closed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(110)).await;
            calls += 1;
            let request = ChatRequest::new(model, [Message::user("Probe")]);
            if let Err(error) = client.send(request).await {
                assert!(
                    !error.message().contains("in flight"),
                    "a probe permit leaked: {error}"
                );
            }
        }
        assert_eq!(
            client.circuit_state(model),
            Some(CircuitState::Closed),
            "{model}'s circuit recovers"
        );
    }
    calls
}

#[test]
fn soak_through_the_full_stack_balances_its_books() {
    let requests = env_u64("CHATSTACK_SOAK_REQUESTS", 20_000).max(PHASES);
    let concurrency = env_u64("CHATSTACK_SOAK_CONCURRENCY", 256).max(1) as usize;
    // A guard against hangs, not a performance bound: the default run takes well under a
    // minute in a debug build.
    let deadline = Duration::from_secs(180).max(Duration::from_millis(requests * 10));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        tokio::time::timeout(deadline, soak(requests, concurrency))
            .await
            .unwrap_or_else(|_| panic!("the soak did not finish within {deadline:?}"));
    });
}

//! End-to-end tests of the `Client`, over real loopback HTTP against chatstack's mock
//! provider.
//!
//! The clock is real here (a paused clock would auto-advance past the timeouts while a
//! socket is read), so retries use a 1 ms backoff and waits are kept short.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chatstack::middleware::auth::{ApiKey, AuthLayer};
use chatstack::middleware::budget::BudgetLayer;
use chatstack::middleware::circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, CircuitState,
};
use chatstack::middleware::cost::{CostLayer, CostLedger, Pricing, ResponseCost, Usd};
use chatstack::middleware::fallback::FallbackLayer;
use chatstack::middleware::rate_limit::{RateLimitConfig, RateLimitLayer, RateLimitRefused};
use chatstack::middleware::retry::{Backoff, RetryLayer};
use chatstack::middleware::timeout::TimeoutLayer;
use chatstack::middleware::trace::TraceLayer;
use chatstack::proto::TimeoutKind;
use chatstack::{
    ChatEvent, ChatRequest, ChatResponse, Client, ClientBuilder, ErrorKind, HttpTransport, Message,
    NoText, ResponseExt, ServiceBuilderExt, StreamRequest, Tool, ToolChoice,
};
use chatstack_mock::{MockConfig, MockServer};
use futures_util::StreamExt;
use http::{Extensions, HeaderValue};
use reqwest_middleware::reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tower::{ServiceBuilder, ServiceExt};

const KEY: &str = "sk-test-0123456789abcdefKEY1";
const MODEL: &str = "gpt-4.1";

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default().api_key(KEY))
        .await
        .expect("the mock starts")
}

/// The defaults, pointed at the mock, with the mock's key.
fn builder(mock: &MockServer) -> ClientBuilder {
    Client::builder()
        .base_url(mock.url())
        .api_key(ApiKey::new(KEY).unwrap())
}

/// The default retry layer, but with a 1 ms backoff so the suite stays fast.
fn quick_retry() -> RetryLayer {
    RetryLayer::new().backoff(Backoff::default().base(Duration::from_millis(1)))
}

/// A breaker that opens after two failures out of two calls, for a minute.
fn hair_trigger() -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .sliding_window_size(2)
        .minimum_calls(2)
        .open_duration(Duration::from_secs(60))
}

fn hello() -> ChatRequest {
    ChatRequest::new(MODEL, [Message::user("Hello")]).max_completion_tokens(100)
}

/// A request the mock fails with `fault` (an `x-mock-fault` value), every attempt.
fn faulty(model: &str, fault: &'static str) -> ChatRequest {
    let mut request = ChatRequest::new(model, [Message::user("Hello")]);
    request
        .meta
        .headers
        .insert("x-mock-fault", HeaderValue::from_static(fault));
    request
}

type BoxFuture<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'a>>;

/// Pins a closure to the higher-ranked signature reqwest-middleware implements
/// `Middleware` for.
fn middleware<F>(f: F) -> impl Middleware
where
    F: for<'a> Fn(Request, &'a mut Extensions, Next<'a>) -> BoxFuture<'a> + Send + Sync + 'static,
{
    f
}

/// reqwest-level middleware under the transport that asks the mock for `fault` on the
/// first `n` HTTP requests only: how a test gets "503, then success" from one request.
fn fault_first(n: u32, fault: &'static str) -> impl Middleware {
    let seen = Arc::new(AtomicU32::new(0));
    middleware(move |mut request, extensions, next| {
        if seen.fetch_add(1, Ordering::SeqCst) < n {
            request
                .headers_mut()
                .insert("x-mock-fault", HeaderValue::from_static(fault));
        }
        Box::pin(next.run(request, extensions))
    })
}

/// reqwest-level middleware that asks the mock for a 503 for every request to `model`.
fn break_model(model: &'static str) -> impl Middleware {
    middleware(move |mut request, extensions, next| {
        let needle = format!(r#""model":"{model}""#);
        let body = request
            .body()
            .and_then(|body| body.as_bytes())
            .unwrap_or(b"");
        if String::from_utf8_lossy(body).contains(&needle) {
            request
                .headers_mut()
                .insert("x-mock-fault", HeaderValue::from_static("unavailable"));
        }
        Box::pin(next.run(request, extensions))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_work_against_the_mock() {
    let mock = mock().await;
    let client = builder(&mock).build().unwrap();

    let response = client.send(hello()).await.unwrap();
    assert!(!response.text().unwrap().is_empty());
    let usage = response.usage.expect("the mock reports usage");
    let cost = response.cost().expect("priced by the default cost layer");
    assert_eq!(
        cost,
        Pricing::default().price(MODEL, Some(&usage)).unwrap(),
        "the built-in price table"
    );
    assert!(cost.cost > Usd::ZERO);
    assert_eq!(response.meta.status, 200);
    assert_eq!(response.meta.attempts, 1);
    assert!(response.meta.request_id.is_some());
    assert!(response.meta.latency > Duration::ZERO);

    let ledger = client.ledger().snapshot();
    assert_eq!(ledger.total.requests, 1);
    assert_eq!(ledger.total.cost, cost.cost);
    assert_eq!(client.circuit_state(MODEL), Some(CircuitState::Closed));
    assert!(client.budget().is_none(), "no budget unless asked");
    assert!(
        client.rate_limit_status(MODEL).is_none(),
        "no rate limit unless asked"
    );
    assert_eq!(mock.counters().status(200), 1);
    assert!(!format!("{client:?}").contains(KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_returns_the_text_of_the_answer() {
    let mock = mock().await;
    let client = builder(&mock).build().unwrap();
    let text = client.chat(MODEL, "Say hello").await.unwrap();
    // The mock's reply is a function of the messages: the same prompt, the same text.
    let request = ChatRequest::new(MODEL, [Message::user("Say hello")]);
    let response = client.send(request).await.unwrap();
    assert_eq!(Some(text.as_str()), response.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_without_text_is_a_typed_error_that_keeps_the_response() {
    let mock = mock().await;
    let client = builder(&mock).build().unwrap();
    let weather = Tool::function(
        "get_weather",
        "The weather in a city",
        serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    );
    let request = ChatRequest::new(MODEL, [Message::user("Weather in Paris?")])
        .tool(weather)
        .tool_choice(ToolChoice::Required);
    let response = client.send(request).await.unwrap();
    let cost = response.cost();

    let error = response.into_text().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Provider);
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("tool calls"), "{error}");
    assert!(error.request_id().is_some());
    let kept = NoText::find(&error).unwrap().response();
    assert_eq!(kept.tool_calls()[0].function.name, "get_weather");
    assert_eq!(kept.cost(), cost, "nothing the layers attached is lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_yields_the_same_text_usage_and_cost_as_the_unary_call() {
    let mock = mock().await;
    let client = builder(&mock).build().unwrap();
    let unary = client.send(hello()).await.unwrap();

    let mut stream = client.stream(hello()).await.unwrap();
    assert!(stream.meta().request_id.is_some(), "known before any chunk");
    let mut text = String::new();
    let mut chunks = 0;
    let mut done = None;
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        assert!(done.is_none(), "Done is the last item");
        text.extend(event.text());
        match event {
            ChatEvent::Chunk(_) => chunks += 1,
            ChatEvent::Done(response) => done = Some(response),
        }
    }
    assert!(stream.next().await.is_none(), "fused after its end");
    let done = done.expect("a stream that did not fail ends with Done");

    assert!(chunks > 2);
    assert_eq!(Some(text.as_str()), unary.text());
    assert_eq!(done.text(), unary.text());
    assert_eq!(done.usage, unary.usage);
    assert!(done.usage.is_some(), "include_usage was asked for");
    assert_eq!(done.cost(), unary.cost());
    assert_eq!(done.meta.attempts, 1);

    let ledger = client.ledger().snapshot();
    assert_eq!(ledger.total.requests, 2);
    assert_eq!(ledger.total.without_usage, 0);
    assert_eq!(
        ledger.total.cost,
        unary
            .cost()
            .unwrap()
            .cost
            .saturating_add(unary.cost().unwrap().cost)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_then_success_counts_two_attempts_and_one_cost() {
    let mock = mock().await;
    let client = builder(&mock)
        .transport(HttpTransport::builder().middleware(fault_first(1, "unavailable")))
        .retry(quick_retry())
        .build()
        .unwrap();

    let response = client.send(hello()).await.unwrap();
    assert_eq!(response.meta.attempts, 2);
    assert_eq!(mock.counters().status(503), 1);
    assert_eq!(mock.counters().status(200), 1);
    let ledger = client.ledger().snapshot();
    assert_eq!(ledger.total.requests, 1, "the failed attempt is not billed");
    assert_eq!(ledger.total.cost, response.cost().unwrap().cost);

    // A stream that fails before its first chunk is retried the same way.
    let mock = self::mock().await;
    let client = builder(&mock)
        .transport(HttpTransport::builder().middleware(fault_first(1, "unavailable")))
        .retry(quick_retry())
        .build()
        .unwrap();
    let mut stream = client.stream(hello()).await.unwrap();
    assert_eq!(stream.meta().attempts, 2);
    let mut last = None;
    while let Some(event) = stream.next().await {
        last = Some(event.unwrap());
    }
    let Some(ChatEvent::Done(done)) = last else {
        panic!("no Done")
    };
    assert_eq!(done.meta.attempts, 2);
    assert_eq!(client.ledger().snapshot().total.requests, 1);
    assert_eq!(client.ledger().total_cost(), done.cost().unwrap().cost);
}

#[tokio::test(flavor = "multi_thread")]
async fn clones_share_the_ledger_the_breaker_and_the_limiter() {
    let mock = mock().await;
    let a = builder(&mock)
        .no_retry()
        .circuit_breaker(hair_trigger())
        .rate_limit_layer(
            RateLimitLayer::new(RateLimitConfig::default())
                .key_config("limited", RateLimitConfig::default().requests_per_minute(1)),
        )
        .build()
        .unwrap();
    let b = a.clone();

    // Ledger: what either clone spends, both see.
    let first = a.send(hello()).await.unwrap().cost().unwrap().cost;
    let second = b.send(hello()).await.unwrap().cost().unwrap().cost;
    for client in [&a, &b] {
        let ledger = client.ledger().snapshot();
        assert_eq!(ledger.by_model[MODEL].requests, 2);
        assert_eq!(ledger.by_model[MODEL].cost, first.saturating_add(second));
    }

    // Breaker: opened through one clone, it rejects on the other.
    for _ in 0..2 {
        let error = a.send(faulty("gpt-4o", "unavailable")).await.unwrap_err();
        assert!(error.is_server(), "{error}");
    }
    assert_eq!(b.circuit_state("gpt-4o"), Some(CircuitState::Open));
    let rejected = b
        .send(ChatRequest::new("gpt-4o", [Message::user("Hello")]))
        .await
        .unwrap_err();
    assert!(rejected.is_circuit_open(), "{rejected}");
    assert_eq!(
        mock.counters().model("gpt-4o"),
        2,
        "the rejection never left"
    );

    // Limiter: the one request a minute taken through one clone is taken for the other.
    a.send(ChatRequest::new("limited", [Message::user("Hello")]))
        .await
        .unwrap();
    let mut hurried = ChatRequest::new("limited", [Message::user("Hello")]);
    hurried.meta.deadline = Some(Instant::now() + Duration::from_millis(200));
    let started = Instant::now();
    let refused = b.send(hurried).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::RateLimitWait);
    assert!(RateLimitRefused::find(&refused).is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused, not waited"
    );
    assert_eq!(
        b.rate_limit_status("limited").unwrap().requests_available,
        Some(0)
    );
    assert_eq!(mock.counters().model("limited"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_and_unary_stacks_share_the_breaker() {
    let mock = mock().await;
    let client = builder(&mock)
        .no_retry()
        .circuit_breaker(hair_trigger())
        .build()
        .unwrap();

    // Opened by streams, it rejects unary calls (and streams).
    for _ in 0..2 {
        let error = client
            .stream(faulty("gpt-4o", "unavailable"))
            .await
            .unwrap_err();
        assert!(error.is_server(), "{error}");
    }
    let unary = client
        .send(ChatRequest::new("gpt-4o", [Message::user("Hello")]))
        .await
        .unwrap_err();
    assert!(unary.is_circuit_open(), "{unary}");
    let stream = client
        .stream(ChatRequest::new("gpt-4o", [Message::user("Hello")]))
        .await
        .unwrap_err();
    assert!(stream.is_circuit_open(), "{stream}");

    // Opened by unary calls, it rejects streams.
    for _ in 0..2 {
        let error = client
            .send(faulty("gpt-4o-mini", "unavailable"))
            .await
            .unwrap_err();
        assert!(error.is_server(), "{error}");
    }
    let stream = client
        .stream(ChatRequest::new("gpt-4o-mini", [Message::user("Hello")]))
        .await
        .unwrap_err();
    assert!(stream.is_circuit_open(), "{stream}");
    assert_eq!(mock.counters().total(), 4, "the rejections never left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_caps_unary_calls_and_streams_together() {
    let mock = mock().await;
    // "Hello" with a 100-token cap on gpt-4.1: worst case 9 × $2/M + 100 × $8/M = $0.000818.
    // The mock answers 16 tokens: 9 × $2/M + 16 × $8/M = $0.000146. So with $0.001, two
    // calls fit (0.000146 + 0.000818 ≤ 0.001) and a third does not.
    let client = builder(&mock)
        .budget(Usd::from_micros(1_000))
        .build()
        .unwrap();
    let unary = client.send(hello()).await.unwrap();
    let mut stream = client.clone().stream(hello()).await.unwrap();
    while let Some(event) = stream.next().await {
        event.unwrap();
    }
    let refused = client.send(hello()).await.unwrap_err();
    assert!(refused.is_budget_exceeded(), "{refused}");

    let budget = client.budget().unwrap();
    assert_eq!(budget.cap, Usd::from_micros(1_000));
    assert_eq!(budget.spent, client.ledger().total_cost());
    assert_eq!(
        budget.spent,
        unary
            .cost()
            .unwrap()
            .cost
            .saturating_add(unary.cost().unwrap().cost)
    );
    assert_eq!(budget.reserved, Usd::ZERO);
    assert_eq!(mock.counters().total(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_stream_ends_with_an_idle_timeout_and_no_done() {
    let mock = mock().await;
    let client = builder(&mock)
        .timeout(TimeoutLayer::new().idle(Duration::from_millis(200)))
        .build()
        .unwrap();
    let mut stream = client.stream(faulty(MODEL, "stall:2")).await.unwrap();
    let mut chunks = 0;
    let error = loop {
        match stream.next().await.expect("the stream ends with its error") {
            Ok(ChatEvent::Chunk(_)) => chunks += 1,
            Ok(ChatEvent::Done(_)) => panic!("a failed stream has no Done"),
            Err(error) => break error,
        }
    };
    assert_eq!(chunks, 3, "the role chunk and two content chunks");
    assert_eq!(error.timeout_kind(), Some(TimeoutKind::Idle));
    assert!(stream.next().await.is_none());
    let ledger = client.ledger().snapshot();
    assert_eq!(ledger.total.requests, 1);
    assert_eq!(ledger.total.without_usage, 1, "no usage came, so no cost");
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_models_answer_when_the_primary_fails() {
    let mock = mock().await;
    let client = builder(&mock)
        .transport(HttpTransport::builder().middleware(break_model("broken-model")))
        .no_retry()
        .fallback_models([MODEL])
        .build()
        .unwrap();
    let response = client
        .send(ChatRequest::new("broken-model", [Message::user("Hello")]))
        .await
        .unwrap();
    let answered = response.answered_by().unwrap();
    assert_eq!((answered.index(), answered.name()), (1, MODEL));
    assert_eq!(response.meta.attempts, 2);
    assert_eq!(client.ledger().snapshot().by_model[MODEL].requests, 1);

    let mut stream = client
        .stream(ChatRequest::new("broken-model", [Message::user("Hello")]))
        .await
        .unwrap();
    while let Some(event) = stream.next().await {
        if let ChatEvent::Done(done) = event.unwrap() {
            assert_eq!(done.answered_by().unwrap().index(), 1);
        }
    }
    assert_eq!(mock.counters().model("broken-model"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_and_stream_service_work_with_oneshot() {
    let mock = mock().await;
    let client = builder(&mock).build().unwrap();

    let response: ChatResponse = client.service().oneshot(hello()).await.unwrap();
    assert!(response.cost().is_some());

    let stream = client
        .stream_service()
        .oneshot(StreamRequest::from(hello()))
        .await
        .unwrap();
    let streamed = stream.collect_response().await.unwrap();
    assert_eq!(streamed.text(), response.text());
    assert_eq!(ResponseCost::of(&streamed.meta), response.cost());
    assert_eq!(client.ledger().snapshot().total.requests, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn service_builder_ext_composes_a_working_stack_on_a_bare_transport() {
    let mock = mock().await;
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .build()
        .unwrap();
    let ledger = CostLedger::new();
    let budget = BudgetLayer::with_ledger(Usd::from_dollars(1), ledger.clone());
    let breaker = CircuitBreakerLayer::new(hair_trigger());
    let auth = AuthLayer::new(ApiKey::new(KEY).unwrap());
    let timeout = TimeoutLayer::new().total(Duration::from_secs(30));
    let limiter = RateLimitLayer::new(RateLimitConfig::default().requests_per_minute(600));

    let unary = ServiceBuilder::new()
        .chat_trace(TraceLayer::new())
        .chat_budget(budget.clone())
        .chat_cost(CostLayer::new(ledger.clone()))
        .chat_fallback(FallbackLayer::<ChatRequest, ChatResponse>::new().model("gpt-4o"))
        .chat_retry(quick_retry())
        .chat_circuit_breaker(breaker.clone())
        .chat_rate_limit(limiter.clone())
        .chat_timeout(timeout)
        .chat_auth(auth.clone())
        .service(transport.clone());
    let response = unary.oneshot(hello()).await.unwrap();
    assert_eq!(response.answered_by().unwrap().index(), 0);
    assert_eq!(response.cost().unwrap().cost, ledger.total_cost());

    // The same layer values over the streaming side share the state.
    let streaming = ServiceBuilder::new()
        .chat_budget(budget.clone())
        .chat_cost(CostLayer::new(ledger.clone()))
        .chat_circuit_breaker(breaker.clone())
        .chat_rate_limit(limiter.clone())
        .chat_timeout(timeout)
        .chat_auth(auth)
        .service(transport);
    let stream = streaming
        .oneshot(StreamRequest::from(hello()))
        .await
        .unwrap();
    stream.collect_response().await.unwrap();
    assert_eq!(ledger.snapshot().total.requests, 2);
    assert_eq!(budget.snapshot().spent, ledger.total_cost());
    assert_eq!(limiter.status(MODEL).unwrap().waiting, 0);
    assert_eq!(breaker.state(MODEL), CircuitState::Closed);
}

/// Runs one of the `from_env_child_*` tests below in a child process with `OPENAI_API_KEY`
/// and `OPENAI_BASE_URL` as given (`None`: removed), so the environment is changed in a
/// process of its own rather than under the other tests' feet (`set_var` while other
/// threads read the environment is a data race). The child re-runs this test binary,
/// filtered to that one test.
async fn run_child(test: &str, key: Option<&str>, base_url: Option<&str>) {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CHATSTACK_FROM_ENV_CHILD", "1");
    for (var, value) in [("OPENAI_API_KEY", key), ("OPENAI_BASE_URL", base_url)] {
        match value {
            Some(value) => command.env(var, value),
            None => command.env_remove(var),
        };
    }
    // The mock serves on this runtime while the child runs, so wait off the runtime.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "the child test ran: {stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn from_env_reads_the_key_trimmed_and_the_base_url() {
    let mock = mock().await;
    // A key saved with a trailing newline: the mock accepts only the trimmed key.
    run_child(
        "from_env_child_calls_the_mock",
        Some(&format!("{KEY}\n")),
        Some(mock.url()),
    )
    .await;
    assert_eq!(mock.counters().status(200), 1);
}

#[tokio::test]
async fn from_env_without_a_key_is_a_config_error_that_says_so() {
    run_child("from_env_child_without_key", None, None).await;
}

/// Run by `from_env_reads_the_key_trimmed_and_the_base_url` in a child process.
#[tokio::test]
#[ignore = "run in a child process by from_env_reads_the_key_trimmed_and_the_base_url"]
async fn from_env_child_calls_the_mock() {
    if std::env::var_os("CHATSTACK_FROM_ENV_CHILD").is_none() {
        return; // run by hand with --ignored: the parent test sets the environment up
    }
    let client = Client::from_env().unwrap();
    assert!(
        client.url().starts_with("http://127.0.0.1:"),
        "{}",
        client.url()
    );
    assert!(!client.chat(MODEL, "Hello").await.unwrap().is_empty());
}

/// Run by `from_env_without_a_key_is_a_config_error_that_says_so` in a child process.
#[test]
#[ignore = "run in a child process by from_env_without_a_key_is_a_config_error_that_says_so"]
fn from_env_child_without_key() {
    if std::env::var_os("CHATSTACK_FROM_ENV_CHILD").is_none() {
        return; // run by hand with --ignored: the parent test sets the environment up
    }
    let error = Client::from_env().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("OPENAI_API_KEY"), "{error}");
    assert!(error.to_string().contains("not set"), "{error}");
}

#[tokio::test]
async fn the_client_runs_batches_through_its_stack() {
    use futures_util::StreamExt;
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let client = Client::builder().base_url(mock.url()).build().unwrap();
    let requests = (0..20).map(|i| ChatRequest::new("gpt-4.1", [Message::user(format!("q{i}"))]));
    let items: Vec<_> = client.batch(requests, 4).in_order().collect().await;
    assert_eq!(items.len(), 20);
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item.index, index as u64);
        assert!(item.result.is_ok());
    }
    assert_eq!(client.ledger().snapshot().total.requests, 20);
    assert_eq!(mock.counters().total(), 20);
}

//! An OpenAI-compatible gateway: chatstack's layers inside an axum server.
//!
//! `POST /v1/chat/completions` (unary, and streaming as server-sent events) is answered by a
//! chatstack stack built with `tower::ServiceBuilder`: a spending budget, cost accounting, a
//! circuit breaker and a rate limiter per model in front of the `HttpTransport` to the
//! upstream (the built-in mock, or the real endpoint when `OPENAI_API_KEY` is set). The
//! router itself carries tower-http's layers: the `Authorization` header marked sensitive,
//! request tracing, a request body limit and a timeout.
//!
//! Errors come back in the OpenAI error envelope with the status a client expects:
//!
//! | chatstack error | status |
//! |---|---|
//! | budget exceeded | 402 `insufficient_quota` / `budget_exceeded` (OpenAI SDKs do not retry it) |
//! | circuit open | 503 `circuit_open`, with `Retry-After` |
//! | rate-limit wait refused (the queue wait would pass 500 ms) | 429 `rate_limit_exceeded`, with `Retry-After` |
//! | an upstream HTTP error | the upstream's status, envelope and `Retry-After`, passed through |
//! | timeout / connection / decode | 504 / 502 |
//!
//! The gateway does not retry: its callers do (a gateway that retries multiplies the load on
//! an upstream that is already failing).
//!
//! ```text
//! cargo run --example axum_gateway            # starts it, sends a few requests, exits
//! cargo run --example axum_gateway -- --serve # keeps it running; prints a curl command
//! ```
//!
//! Against the mock, the gateway forwards `x-mock-*` request headers (the mock's per-request
//! fault injection) so that the demo can make the upstream fail.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chatstack::middleware::auth::AuthLayer;
use chatstack::middleware::budget::BudgetLayer;
use chatstack::middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use chatstack::middleware::cost::{CostLayer, CostLedger, Usd};
use chatstack::middleware::rate_limit::{Quota, RateLimitConfig, RateLimitLayer};
use chatstack::middleware::timeout::TimeoutLayer as ChatTimeoutLayer;
use chatstack::{
    ChatRequest, ChatService, Error, ErrorKind, HttpTransport, ResponseExt, ServiceBuilderExt,
    StreamRequest, StreamService,
};
use chatstack_mock::MockConfig;
use common::Target;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The gateway's spending cap.
const BUDGET: Usd = Usd::from_cents(50);
/// The longest a request may wait in the rate limiter's queue before it is refused.
const MAX_QUEUE_WAIT: Duration = Duration::from_millis(500);
/// The largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// What the handler needs: the two chatstack stacks (cheap clones sharing their state).
#[derive(Clone)]
struct Gateway {
    unary: ChatService,
    stream: StreamService,
    /// Whether to forward `x-mock-*` headers (only to the mock).
    forward_mock_headers: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve = std::env::args().skip(1).any(|arg| arg == "--serve");
    run(Target::from_env(), serve).await
}

async fn run(target: Target, serve: bool) -> Result<(), Box<dyn std::error::Error>> {
    let upstream = target
        .connect(MockConfig::default().reply_tokens(12))
        .await?;

    // The chatstack stack, outermost first. The layers are handles on shared state: keep
    // clones to read the budget and the ledger, and build both stacks from the same ones.
    let ledger = CostLedger::new();
    let budget = BudgetLayer::with_ledger(BUDGET, ledger.clone());
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::default()
            .minimum_calls(3)
            .sliding_window_size(10)
            .failure_rate_threshold(50.0)
            .open_duration(Duration::from_secs(30)),
    );
    let rate_limit =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(30).burst(3)));
    let layers = ServiceBuilder::new()
        .chat_budget(budget.clone())
        .chat_cost(CostLayer::new(ledger.clone()))
        .chat_circuit_breaker(breaker.clone())
        .chat_rate_limit(rate_limit)
        .chat_timeout(
            ChatTimeoutLayer::new()
                .total(Duration::from_secs(60))
                .first_chunk(Duration::from_secs(30))
                .idle(Duration::from_secs(30)),
        )
        .chat_auth(AuthLayer::new(upstream.key()?));
    let transport = HttpTransport::builder()
        .base_url(upstream.base_url.as_str())
        .build()?;
    let gateway = Gateway {
        unary: BoxCloneSyncService::new(layers.service(transport.clone())),
        stream: BoxCloneSyncService::new(layers.service(transport)),
        forward_mock_headers: upstream.is_mock(),
    };

    // The axum router, with tower-http's layers (outermost first).
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(gateway)
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                ]))
                .layer(TraceLayer::new_for_http())
                .layer(RequestBodyLimitLayer::new(MAX_BODY))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::GATEWAY_TIMEOUT,
                    Duration::from_secs(120),
                )),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "gateway listening on {base} (upstream {})",
        upstream.base_url
    );

    if serve {
        println!(
            "try: curl -s {base}/chat/completions -H 'content-type: application/json' \
             -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'",
            upstream.model
        );
        println!("(Ctrl-C to stop)");
        server.await??;
        return Ok(());
    }

    demo(&base, &upstream.model).await?;
    let snapshot = budget.snapshot();
    println!(
        "budget: spent {} of {}, {} admitted, {} refused; circuit of gemini-2.5-flash: {:?}",
        snapshot.spent,
        snapshot.cap,
        snapshot.admitted,
        snapshot.refused,
        breaker.state("gemini-2.5-flash"),
    );
    server.abort();
    Ok(())
}

/// `POST /v1/chat/completions`.
async fn chat_completions(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return envelope(
                StatusCode::BAD_REQUEST,
                json!({
                    "message": format!("the body is not a chat completion request: {error}"),
                    "type": "invalid_request_error",
                    "param": null,
                    "code": null,
                }),
                None,
            );
        }
    };
    // Spend is accounted per end user; waiting for the rate limiter is bounded.
    request.meta.tag = request.user.clone();
    request.meta.deadline = Some(Instant::now() + MAX_QUEUE_WAIT);
    if gateway.forward_mock_headers {
        for (name, value) in &headers {
            if name.as_str().starts_with("x-mock-") {
                request.meta.headers.insert(name.clone(), value.clone());
            }
        }
    }

    if request.stream == Some(true) {
        return stream(gateway.stream, request).await;
    }
    request.stream = None;
    match gateway.unary.oneshot(request).await {
        Ok(response) => {
            let mut extra = HeaderMap::new();
            if let Some(id) = response.meta.request_id.as_deref() {
                insert(&mut extra, "x-request-id", id);
            }
            if let Some(cost) = response.cost() {
                insert(&mut extra, "x-chatstack-cost", &cost.cost.to_string());
            }
            (extra, axum::Json(response)).into_response()
        }
        Err(error) => error_response(&error),
    }
}

/// A streamed answer, relayed as server-sent events; an error after the start is the last
/// event, in the error envelope.
async fn stream(service: StreamService, request: ChatRequest) -> Response {
    let chunks = match service.oneshot(StreamRequest(request)).await {
        Ok(chunks) => chunks,
        Err(error) => return error_response(&error),
    };
    let request_id = chunks.meta().request_id.clone();
    let events = futures_util::stream::unfold(Some(chunks), |state| async move {
        let mut chunks = state?;
        let (data, next) = match chunks.next().await {
            Some(Ok(chunk)) => (
                serde_json::to_string(&chunk).unwrap_or_default(),
                Some(chunks),
            ),
            Some(Err(error)) => (error_body(&error).1.to_string(), None),
            None => ("[DONE]".to_owned(), None),
        };
        Some((Ok::<_, Infallible>(format!("data: {data}\n\n")), next))
    });
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    insert(headers, "content-type", "text/event-stream");
    insert(headers, "cache-control", "no-cache");
    if let Some(id) = request_id.as_deref() {
        insert(headers, "x-request-id", id);
    }
    response
}

/// The status and the envelope's `error` object for a chatstack error.
fn error_body(error: &Error) -> (StatusCode, Value) {
    let gateway_error = |status: StatusCode, kind: &str, code: &str| {
        let body =
            json!({ "message": error.to_string(), "type": kind, "param": null, "code": code });
        (status, body)
    };
    match error.kind() {
        ErrorKind::BudgetExceeded => gateway_error(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            "budget_exceeded",
        ),
        ErrorKind::CircuitOpen => gateway_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "circuit_open",
        ),
        ErrorKind::RateLimitWait => gateway_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "rate_limit_exceeded",
        ),
        // An answer from the upstream: its status and its envelope, passed through.
        _ if error.status().is_some() => {
            let status = error.status().unwrap_or(StatusCode::BAD_GATEWAY);
            let body = match error.provider() {
                Some(provider) => json!({
                    "message": provider.message,
                    "type": provider.kind,
                    "param": provider.param,
                    "code": provider.code,
                }),
                None => {
                    json!({ "message": error.to_string(), "type": "upstream_error", "param": null, "code": null })
                }
            };
            (status, body)
        }
        ErrorKind::Timeout(_) => gateway_error(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "upstream_timeout",
        ),
        // The Redis holding the fleet's shared limits is down and they fail closed.
        ErrorKind::BackendUnavailable => gateway_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "limits_backend_unavailable",
        ),
        ErrorKind::Config => gateway_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "gateway_misconfigured",
        ),
        _ => gateway_error(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_unavailable",
        ),
    }
}

/// An error response in the OpenAI envelope, with `Retry-After` when the error has one.
fn error_response(error: &Error) -> Response {
    let (status, body) = error_body(error);
    envelope(status, body, error.retry_after())
}

fn envelope(status: StatusCode, error: Value, retry_after: Option<Duration>) -> Response {
    let mut response = (status, axum::Json(json!({ "error": error }))).into_response();
    if let Some(wait) = retry_after {
        // Whole seconds, rounded up, at least 1.
        let seconds = wait.as_millis().div_ceil(1000).max(1);
        insert(response.headers_mut(), "retry-after", &seconds.to_string());
    }
    response
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Sends a few requests to the gateway and prints what came back.
async fn demo(base: &str, model: &str) -> Result<(), Box<dyn std::error::Error>> {
    let http = reqwest::Client::new();
    let url = format!("{base}/chat/completions");
    let chat = |model: &str, max_tokens: u32| {
        json!({
            "model": model,
            "messages": [{ "role": "user", "content": "Hello through the gateway" }],
            "max_completion_tokens": max_tokens,
            "user": "demo-user",
        })
    };

    println!("\n1. a unary call");
    call(&http, &url, chat(model, 50), &[]).await?;

    println!("\n2. a streamed call (server-sent events out)");
    let mut body = chat(model, 50);
    body["stream"] = json!(true);
    call(&http, &url, body, &[]).await?;

    println!("\n3. a call whose worst case passes the {BUDGET:.2} budget");
    call(&http, &url, chat(model, 100_000), &[]).await?;

    println!(
        "\n4. four quick calls to gpt-4.1-mini: a burst of 3, then the queue wait would pass {MAX_QUEUE_WAIT:?}"
    );
    for _ in 0..4 {
        call(&http, &url, chat("gpt-4.1-mini", 20), &[]).await?;
    }

    println!("\n5. an upstream that answers 503: passed through, until the circuit opens");
    for _ in 0..4 {
        let fault = [("x-mock-fault", "unavailable")];
        call(&http, &url, chat("gemini-2.5-flash", 20), &fault).await?;
    }
    println!();
    Ok(())
}

/// One request to the gateway; prints a line about the outcome.
async fn call(
    http: &reqwest::Client,
    url: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-gateway-user-0000")
        .body(serde_json::to_vec(&body)?);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let cost = header("x-chatstack-cost");
    let retry_after = header("retry-after");
    let event_stream =
        header("content-type").is_some_and(|kind| kind.starts_with("text/event-stream"));
    let text = response.text().await?;

    if event_stream {
        let mut events = 0;
        let mut answer = String::new();
        for data in text.lines().filter_map(|line| line.strip_prefix("data: ")) {
            events += 1;
            if let Ok(chunk) = serde_json::from_str::<Value>(data) {
                if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
                    answer.push_str(delta);
                }
            }
        }
        println!(
            "   HTTP {status} | {events} SSE events | {}",
            shorten(&answer)
        );
        return Ok(());
    }
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        println!(
            "   HTTP {status} | {} + {} tokens | cost {} | {}",
            json["usage"]["prompt_tokens"],
            json["usage"]["completion_tokens"],
            cost.as_deref().unwrap_or("-"),
            shorten(
                json["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
            ),
        );
    } else {
        let error = &json["error"];
        println!(
            "   HTTP {status} | {} | retry-after {} | {}",
            error["code"]
                .as_str()
                .or(error["type"].as_str())
                .unwrap_or("-"),
            retry_after.as_deref().unwrap_or("-"),
            error["message"].as_str().unwrap_or(&text),
        );
    }
    Ok(())
}

fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(48).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn runs_against_the_mock() {
        run(Target::Mock, false).await.unwrap();
    }
}

//! The tower layers of chatstack.
//!
//! Each layer is generic over the [`LlmRequest`] and [`LlmResponse`] traits of
//! `chatstack-proto`, so it wraps the HTTP transport, a streaming service, or a user's own
//! service alike. One cargo feature per layer, after tower-http:
//!
//! | feature | layer | role |
//! |---|---|---|
//! | `retry` | `RetryLayer` | retries retryable errors with backoff, `retry-after` and a retry budget |
//! | `circuit-breaker` | `CircuitBreakerLayer` | stops calling a failing model or endpoint for a while |
//! | `timeout` | `TimeoutLayer` | per-attempt, first-chunk and idle timeouts |
//! | `fallback` | `FallbackLayer` | sends a failed request to the next alternative |
//! | `rate-limit` | `RateLimitLayer` | requests and tokens per minute, waiting rather than failing |
//! | `cost` | `CostLayer` | prices every response and adds it to a shared ledger |
//! | `budget` | `BudgetLayer` | refuses requests that would pass a spending cap |
//! | `auth` | `AuthLayer` | injects the API key from a secret |
//! | `trace` | `TraceLayer` | OpenTelemetry GenAI spans and events |
//! | `redis` (in `full`, not `default`) | `RateLimitLayer::redis`, `BudgetLayer::redis`, `CostLedger::redis` | the rate limiter, budget and ledger shared across replicas through Redis |
//!
//! The default order, outermost first, is
//! `trace → cost/budget → retry → circuit breaker → rate limit → timeout → auth → transport`:
//! tracing sees the whole call, money is counted once per call however many attempts it
//! took, retries see the breaker's and the limiter's refusals (and do not retry them), each
//! attempt gets its own timeout, and the key is added last, closest to the wire.
//!
//! Each layer lives in its own module (`chatstack_middleware::retry::RetryLayer`, ...), as in
//! tower-http, and may be used alone, on any service whose request and response implement
//! the [`LlmRequest`] and [`LlmResponse`] seams. The whole stack, by hand, over the
//! transport, against chatstack's mock provider:
//!
//! ```
//! use std::time::Duration;
//!
//! use chatstack_middleware::{ChatRequest, Message};
//! use chatstack_middleware::auth::{ApiKey, AuthLayer};
//! use chatstack_middleware::budget::BudgetLayer;
//! use chatstack_middleware::circuit_breaker::CircuitBreakerLayer;
//! use chatstack_middleware::cost::{CostLayer, CostLedger, ResponseCost, Usd};
//! use chatstack_middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
//! use chatstack_middleware::retry::RetryLayer;
//! use chatstack_middleware::timeout::TimeoutLayer;
//! use chatstack_middleware::trace::TraceLayer;
//! use chatstack_mock::{MockConfig, MockServer};
//! use chatstack_transport::HttpTransport;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockServer::start(MockConfig::default().api_key("sk-example")).await?;
//! let transport = HttpTransport::builder().base_url(mock.url()).build()?;
//! let ledger = CostLedger::new();
//!
//! let stack = ServiceBuilder::new()
//!     .layer(TraceLayer::new())
//!     .layer(BudgetLayer::new(Usd::from_dollars(5)))
//!     .layer(CostLayer::new(ledger.clone()))
//!     .layer(RetryLayer::new())
//!     .layer(CircuitBreakerLayer::default())
//!     .layer(RateLimitLayer::new(
//!         RateLimitConfig::default().requests_per_minute(500).tokens_per_minute(200_000),
//!     ))
//!     .layer(TimeoutLayer::new().total(Duration::from_secs(60)))
//!     .layer(AuthLayer::new(ApiKey::new("sk-example")?))
//!     .service(transport);
//!
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Hello")]).max_completion_tokens(64);
//! let response = stack.oneshot(request).await?;
//! let cost = ResponseCost::of(&response.meta).expect("priced");
//! assert!(cost.cost > Usd::from_nanos(0));
//! assert_eq!(ledger.snapshot().total.requests, 1);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "auth")]
pub mod auth;
#[cfg(feature = "budget")]
pub mod budget;
#[cfg(feature = "circuit-breaker")]
pub mod circuit_breaker;
#[cfg(feature = "cost")]
pub mod cost;
#[cfg(feature = "fallback")]
pub mod fallback;
#[cfg(any(
    feature = "auth",
    feature = "budget",
    feature = "circuit-breaker",
    feature = "cost"
))]
mod guarded;
#[cfg(any(feature = "circuit-breaker", feature = "rate-limit"))]
mod keyed;
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "retry")]
pub mod retry;
#[cfg(feature = "timeout")]
pub mod timeout;
#[cfg(feature = "trace")]
pub mod trace;

pub use chatstack_proto::{
    ChatRequest, ChatResponse, ChatStream, Completion, Error, ErrorKind, LlmRequest, LlmResponse,
    Message, StreamRequest,
};

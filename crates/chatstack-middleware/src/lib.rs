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
//!
//! The default order, outermost first, is
//! `trace → cost/budget → retry → circuit breaker → rate limit → timeout → auth → transport`.
//!
//! Each layer lives in its own module (`chatstack_middleware::retry::RetryLayer`, ...), as in
//! tower-http. The crate root re-exports the seams the layers are written against:
//!
//! ```
//! use chatstack_middleware::{LlmRequest, ChatRequest, Message};
//!
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Hello")]).max_tokens(100);
//! assert_eq!(request.model(), "gpt-4.1");
//! assert_eq!(LlmRequest::max_output_tokens(&request), Some(100));
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
#[cfg(feature = "rate-limit")]
pub mod rate_limit;
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

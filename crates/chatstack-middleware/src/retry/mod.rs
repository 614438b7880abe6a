//! Retries with the OpenAI SDKs' semantics, exponential backoff, `retry-after`, deadlines
//! and a retry budget.
//!
//! [`RetryLayer`] wraps any service whose request is an [`LlmRequest`] + `Clone` and whose
//! response is an [`LlmResponse`] (the transport, a streaming service, a user's own), with
//! [`Error`](crate::Error) as its error.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! use chatstack_middleware::retry::{Backoff, RetryLayer};
//! use chatstack_middleware::{ChatRequest, ChatResponse, Error, Message};
//! use http::{HeaderMap, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A provider that answers 503 twice, then succeeds.
//! let calls = Arc::new(AtomicU32::new(0));
//! let provider = tower::service_fn({
//!     let calls = calls.clone();
//!     move |_: ChatRequest| {
//!         let call = calls.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             if call < 2 {
//!                 Err(Error::from_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b""))
//!             } else {
//!                 Ok(ChatResponse::default())
//!             }
//!         }
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::new()
//!             .max_attempts(3)
//!             .backoff(Backoff::default().base(Duration::from_millis(1)))
//!             .retry_after_cap(Duration::from_secs(30)),
//!     )
//!     .service(provider);
//!
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Hello")]);
//! let response = client.oneshot(request).await.unwrap();
//! assert_eq!(response.meta.attempts, 3);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # }
//! ```
//!
//! # What is retried
//!
//! The floor is the official OpenAI SDKs: a [`RetryClassifier`], by default [`IsRetryable`]
//! ([`Error::is_retryable`](crate::Error::is_retryable)), lets `x-should-retry` decide
//! first, then retries 408, 409, 429 (never `insufficient_quota`), 5xx and 529, connection
//! errors, timeouts and responses cut short; never 400, 401, 403, 404, 422, nor chatstack's
//! own refusals (circuit open, budget exceeded, rate-limit wait refused). Replace it with
//! [`RetryLayer::classifier`].
//!
//! After a failed attempt, in this order:
//!
//! 1. not retryable: the error is returned;
//! 2. no attempts left ([`RetryLayer::max_attempts`], default 3): the error is returned;
//! 3. the wait is the server's `retry-after-ms` / `retry-after` (seconds, fractional
//!    seconds or an HTTP date) when it sent one above zero, exactly, as the SDKs do. Above
//!    [`RetryLayer::retry_after_cap`] (default 60 s) the call fails at once (where the SDKs
//!    would fall back to their backoff: a server that asks for minutes will not serve this
//!    call in time, and retrying sooner only adds load). Otherwise the wait is the
//!    [`Backoff`]: `min(0.5 s × 2ⁿ, 8 s)` before retry `n`, with [`Jitter`];
//! 4. a wait that would reach the request's
//!    [`deadline`](chatstack_proto::RequestMeta::deadline) or the layer's
//!    [`total_deadline`](RetryLayer::total_deadline) is not slept: the call fails at once;
//! 5. the [`RetryBudget`] must pay for the retry, or the error is returned;
//! 6. a `tracing` warning (`attempt`, `model`, `error.kind`, `status`, `delay_ms`,
//!    `delay_from`), the wait on tokio's clock, then the next attempt on a clone of the
//!    request.
//!
//! When the call fails at once (3 and 4), the error keeps the original's kind, status,
//! envelope and headers, says in its message why it was not retried, and carries a
//! [`RetryStopped`] as its `source()` (with the original error behind it): see
//! [`RetryStopped::find`]. The other errors are returned as the inner service gave them.
//! Every error carries the attempts made ([`Error::attempts`](crate::Error::attempts)), and
//! every response too ([`ResponseMeta::attempts`](chatstack_proto::ResponseMeta::attempts)).
//!
//! # Streams
//!
//! A stream is retried only if it failed before its first chunk reached the caller: for a
//! response that is a [`ChatStream`](crate::ChatStream), the layer awaits
//! [`first_chunk_ready`](crate::ChatStream::first_chunk_ready) inside the retry loop; an
//! error there is handled like the error of a call; once the first chunk is buffered, the
//! stream is returned and later errors are the caller's. Unary responses are returned as
//! they come.
//!
//! # The retry budget
//!
//! Every first attempt deposits into a [`RetryBudget`] (tower's
//! [`TpsBudget`](tower::retry::budget::TpsBudget), on tokio's clock), every retry withdraws
//! from it, so a total outage multiplies the load by at most `1 + retry_ratio` (default
//! 20 %), plus a reserve of `min_retries_per_second × ttl` retries. It is shared by the
//! clones of the layer and of the services it wraps, behind an `Arc`.
//!
//! # Cancellation
//!
//! The waits run inside the [`ResponseFuture`]; nothing is spawned. Dropping the future,
//! during an attempt or a wait, cancels the call and leaves nothing behind.
//!
//! # Why retry-policies' backoff
//!
//! The delays come from `retry_policies::policies::ExponentialBackoff` (the crate behind
//! reqwest-retry), not from tower's `ExponentialBackoffMaker`, for three reasons:
//!
//! - it is a policy, not a timer: it answers *when*, and the layer decides whether to sleep
//!   at all. Tower's backoff hands back an armed `tokio::time::Sleep`; the layer would have
//!   to read the wait back from its deadline, and throw it away whenever `retry-after`, the
//!   cap or a deadline overrule it;
//! - its jitter spreads waits below the exponential value (full jitter, or bounded between
//!   half the base and the exponential): the shape AWS's analysis of backoff recommends to
//!   decorrelate clients, and never a longer wait than the SDKs'; tower's jitter only adds
//!   on top of the exponential;
//! - it is the policy reqwest-retry users already know, with the bounds of each mode
//!   documented and testable through [`Backoff::delay`].
//!
//! Its one drawback is an API in `SystemTime`: the layer turns its answer into a
//! [`Duration`](std::time::Duration) at once and sleeps on tokio's clock (so the waits
//! follow a paused test clock); the time between the two clock reads is lost, far below
//! the timer's 1 ms resolution. The SDKs' own jitter (between 75 % and 100 % of the
//! exponential) is not one of its modes; [`Jitter::Bounded`], the default, is the nearest.
//!
//! [`LlmRequest`]: crate::LlmRequest
//! [`LlmResponse`]: crate::LlmResponse

mod classify;
mod future;
mod layer;
mod service;
mod stopped;

pub use classify::{IsRetryable, RetryClassifier};
pub use future::ResponseFuture;
pub use layer::{Backoff, Jitter, RetryBudget, RetryLayer};
pub use service::Retry;
pub use stopped::{RetryStopped, StopReason};

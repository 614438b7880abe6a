//! A client-side rate limit: requests and tokens per minute, per model, waiting rather than
//! failing.
//!
//! [`RateLimitLayer`] wraps a service in a [`RateLimit`] that holds each request back until
//! its key's quotas allow it: one [`Quota`] of requests and one of tokens a minute, each a
//! GCRA (governor's), one limiter per key — by default the model, or any
//! [function of the request](RateLimitLayer::key_fn). A request is charged one request cell
//! and, as token cells, its prompt tokens (the request's own
//! [estimate](crate::LlmRequest::estimated_prompt_tokens), or a [`TokenCounter`]'s count —
//! [`Tiktoken`](self#tiktoken) with the `tiktoken` feature) plus its output cap
//! (`max_completion_tokens` / `max_tokens`, or
//! [`default_max_output_tokens`](RateLimitConfig::default_max_output_tokens)).
//!
//! # What it guarantees
//!
//! **No 60-second window, sliding or fixed, admits more than a quota's cells**, whatever
//! came before and whatever the requests' sizes, and under steady demand the admissions
//! approach [`steady_per_minute`](Quota::steady_per_minute) (by default 95 % of the quota).
//! A quota's [`burst`](Quota::burst) is carved out of the minute rather than added on top,
//! which is what keeps the first guarantee after an idle spell; see [`Quota`] for the trade.
//! Any request up to the whole quota is admitted in its turn: one larger than the burst
//! waits for the bucket to be full and to stay full for its excess over the burst, then
//! goes and leaves that excess as debt.
//!
//! The argument. Each quota of `q` cells a minute with a burst of `b` is a GCRA with the
//! emission interval `T = ⌈60 s / (q − b + 1)⌉` (a refill rate of `q − b + 1` cells a
//! minute) and one number of state, the theoretical arrival time `θ`. Admitting `n` cells at
//! time `a` needs `θ + n·T ≤ a + b·T` and sets `θ` to `max(θ, a) + n·T`. For `n ≤ b` that is
//! governor's test. For `b < n ≤ q` it reads: the bucket is full (`θ ≤ a`) and has been so
//! for `(n − b)·T`; the update takes the whole burst and leaves `(n − b)·T` of debt, the very
//! update that charges a response's excess usage (see below). Now take any window
//! `[s, s + 60 s)` and its admissions `n₁, …, nₖ` at `a₁ ≤ … ≤ aₖ`. Each admission moves `θ`
//! on by at least its cells from `max(θ, aᵢ) ≥ s`, so before the last one
//! `θ ≥ s + (n₁ + … + nₖ₋₁)·T`, and the last one's test gives
//! `s + (n₁ + … + nₖ)·T ≤ aₖ + b·T < s + 60 s + b·T ≤ s + (q + 1)·T`: at most `q` cells.
//! Wherever a large request falls in the window, one of its halves is what holds it:
//!
//! - **first** (admitted at `t = a₁`): its debt. The requests after it wait until
//!   `θ = t + n·T` is back within the burst, so the rest of the minute gets fewer than
//!   `60 s / T + b − n ≤ q + 1 − n` cells: with its `n`, at most `q`. Taking only the burst
//!   (`θ = t + b·T`), the minute after it could hold `n + q − b`.
//! - **last** (admitted at `t = aₖ`): its wait. A bucket that is merely full at `t` is not
//!   enough: traffic at the refill rate keeps the bucket full, so after a minute of it
//!   (about `q − b` cells) the minute ending at `t` would hold about `q − b + n`. Waiting
//!   `(n − b)·T` more leaves fewer than `q + 1 − n` cells in the minute before `t`.
//!
//! (A bucket that was never charged has no past, and admits up to `q` at once. With
//! [reconciliation](self#reconciliation), the argument holds for the corrected charges: a
//! refund moves `θ` back only as far as a smaller charge at admission would have, a debt
//! moves it on.) The price: at saturation, `θ` moves on by `(2n − b)·T` for a request of
//! `n > b` cells, its wait and its debt, so each one costs its excess `n − b` in
//! throughput; requests within the burst cost nothing. In the tests, with the default
//! burst, a run where one request in ten needs 30 % to 80 % of the quota (86 % of the
//! tokens) reaches 56 % of the quota, and the tokens admitted plus that price 100 %; with
//! requests within the burst, 96 % to 97 %. A burst that covers the common large requests
//! avoids the price.
//!
//! # Waiting
//!
//! A request that cannot go at once waits **in its response future** (`poll_ready` stays the
//! inner service's), on **tokio's clock** (governor is asked *when*; its `futures-timer`
//! based waits are never used), so tests run on a paused clock. It fails at once, with an
//! [`Error`](crate::Error) of kind [`ErrorKind::RateLimitWait`](crate::ErrorKind) marked
//! with a [`RateLimitRefused`], only when waiting cannot help:
//!
//! - [`RefusalReason::TooLarge`]: it needs more tokens than the whole token quota (its
//!   [`limit`](Quota::limit)), so it could never pass. No `retry_after`. (A request larger
//!   than the burst but within the quota waits; see above.)
//! - [`RefusalReason::PastDeadline`]: its wait would pass its
//!   [`deadline`](chatstack_proto::RequestMeta::deadline); `retry_after` is the wait. The
//!   wait is known exactly for the first request in line — for one larger than the burst,
//!   its whole wait for the bucket to fill and for its excess; for one after such a
//!   request, the debt it left — and as a lower bound (the quota the requests ahead need,
//!   any pause) for the others, so a request is refused when it arrives if even that bound
//!   passes its deadline, when a pause begins that passes it, or else, at the latest, when
//!   its deadline comes while it still waits.
//!
//! # Fairness: first come, first served, per key
//!
//! Each key has one FIFO queue. A request goes at once only if nobody of its key waits and
//! both its quotas allow it; otherwise it joins the back of the queue. Only the first request
//! in line may take cells: it reserves its request and token cells together (all or nothing)
//! as soon as both GCRAs allow, then hands the turn to the next. Newcomers never jump the
//! queue, so a large request behind small ones waits at most for the cells of those ahead of
//! it plus its own: it is never starved. The price is head-of-line blocking: small requests
//! behind a large one wait for it, by at most the time the bucket takes to refill its cells
//! (for one larger than the burst, that and its debt after it).
//! Dropping a waiting future (a caller that gave up, a timeout above this layer) removes it
//! from the queue and hands the turn on if it was first; nothing is lost or left stuck. (A
//! future that is kept but never polled again does hold its place, as a queued lock waiter
//! would: the first in line takes its cells when it is polled.) Keys are independent: a
//! saturated model never delays another.
//!
//! # Reconciliation
//!
//! The charge is an estimate; the usage the response reports is the truth. When a response
//! completes (at once for a unary response, at the end of a stream — through
//! [`LlmResponse::on_complete`](crate::LlmResponse::on_complete)), with
//! [`Reconcile::Full`] (the default):
//!
//! - used **fewer** tokens than charged: the difference is given back to the key's token
//!   GCRA at once (and the first request in line looks again). governor cannot refund, but
//!   this limiter keeps the GCRA's state where it can reach it: it moves the theoretical
//!   arrival time back by as much as charging the request less *at its admission* would
//!   have, and no more — every charge since then that found the bucket partly full absorbed
//!   part of the difference, and a log of those charges' slack says how much. So the quota
//!   guarantee holds for the tokens actually used, not only for the estimates.
//! - used **more**: the excess is charged at once as debt (the bucket may go below empty),
//!   so the next requests wait for it. The guarantee then holds over time, not in the window
//!   of the under-estimated request: its excess was only learned afterwards. A response's
//!   debt is capped at one minute's quota, so a bogus usage cannot stop a key for long.
//!
//! Until a response completes, what it was over-charged occupies the burst. When the
//! over-charge of the requests in flight nears the burst, the GCRA would have been full in
//! the meantime, so part of the credit cannot be given back without breaking the guarantee:
//! the tokens used then fall below the steady rate. (In the tests, with a burst of a
//! thirtieth of the quota and responses using 40 % of their charge: 97 % of the quota used
//! with 0.5 s calls, 93 % with 1 s calls.) A burst that covers the over-charge in flight, or
//! output caps closer to the real answers, avoids it.
//!
//! Responses without usage (a stream without `include_usage`, an error, a response dropped
//! early) keep their charge. OpenAI documents that it counts a request's `max_tokens` up
//! front, used or not: against such a provider, choose [`Reconcile::DebtOnly`].
//! [`RateLimitLayer::status`] shows the tokens credited and debited.
//!
//! # Slowing down on the provider's signals
//!
//! Per [`SlowDown`]: a 429 (not `insufficient_quota`) pauses its key for its `retry-after`
//! (else until its exhausted quota resets, else 1 s); a response whose
//! `x-ratelimit-remaining-requests` or `-tokens` is under 5 % of its limit pauses the key
//! until that quota's reset. Pauses are capped (60 s), only ever lengthened, and hold back
//! admissions only: waiting requests keep their places.
//!
//! # Events
//!
//! `tracing` events carry the key: `debug` for each request that waited (`cells`, the
//! tokens charged, and `wait_ms`), `info` for each refusal (`wait_ms` and `left_ms`, or
//! `tokens` and `limit`), `warn` for each slow-down (`pause_ms`, `reason`), `trace` for each
//! reconciliation.
//!
//! # Sharing and cost
//!
//! Clones of a service, and every service one layer wraps, share the layer's limiters
//! (behind an `Arc`); limiters are made on a key's first call and kept. A request that goes
//! at once costs a key lookup (each service clone remembers its last key), the token count,
//! one short-held lock with a GCRA update per quota, and, when it completes, one more lock
//! to reconcile. The `rate_limit` group of `cargo bench -p chatstack-middleware --bench layers`
//! measures it.
//!
//! Across processes (replicas of a service sharing one provider quota), with the `redis`
//! feature: `RateLimitLayer::redis` keeps each key's limiter in Redis, one round trip per
//! admission, with the same guarantee for the whole fleet; see the `redis` module. The
//! in-process path does not change (one branch on whether the layer is shared).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use chatstack_middleware::rate_limit::{
//!     Quota, RateLimitConfig, RateLimitLayer, RateLimitRefused, RefusalReason,
//! };
//! use chatstack_middleware::{ChatRequest, ChatResponse, Error, Message};
//! use tokio::time::Instant;
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = RateLimitLayer::new(
//!     RateLimitConfig::default()
//!         // Two at once, then one every 60/59 s: never more than 60 in any minute.
//!         .requests(Quota::per_minute(60).burst(2))
//!         .tokens(Quota::per_minute(100_000).burst(5_000)),
//! );
//! let provider = tower::service_fn(|_: ChatRequest| async {
//!     Ok::<_, Error>(ChatResponse::default())
//! });
//! let mut service = layer.layer(provider);
//! let hello = ChatRequest::new("gpt-4.1", [Message::user("Hello!")]).max_tokens(100);
//!
//! let start = Instant::now();
//! for _ in 0..3 {
//!     service.ready().await.unwrap().call(hello.clone()).await.unwrap();
//! }
//! // The burst of two went at once; the third waited for the quota.
//! assert!(start.elapsed() >= Duration::from_secs(1));
//!
//! // A request that could never fit (more than the whole quota) is refused at once...
//! let huge = ChatRequest::new("gpt-4.1", [Message::user("Hello!")]).max_tokens(150_000);
//! let error = service.ready().await.unwrap().call(huge).await.unwrap_err();
//! let refused = RateLimitRefused::find(&error).unwrap();
//! assert!(matches!(refused.reason(), RefusalReason::TooLarge { limit: 100_000, .. }));
//!
//! // ... and so is one whose wait would pass its deadline.
//! let mut hurried = hello.clone();
//! hurried.meta.deadline = Some((Instant::now() + Duration::from_millis(100)).into_std());
//! let error = service.ready().await.unwrap().call(hurried).await.unwrap_err();
//! assert!(error.retry_after().unwrap() > Duration::from_millis(100));
//! assert!(start.elapsed() < Duration::from_secs(2), "it did not wait");
//!
//! // One larger than the burst, but within the quota, waits for its turn: until the bucket
//! // is full and its 15,000 tokens beyond the burst have refilled (about 9.5 s more).
//! let large = ChatRequest::new("gpt-4.1", [Message::user("Hello!")]).max_tokens(20_000);
//! service.ready().await.unwrap().call(large).await.unwrap();
//! assert!(start.elapsed() > Duration::from_secs(10));
//! # }
//! ```
//!
//! # Tiktoken
//!
//! With the `tiktoken` feature, `Tiktoken` is a [`TokenCounter`] that counts a chat request's
//! prompt exactly with OpenAI's BPE tables (`o200k_base` or `cl100k_base`, by model), for
//! quotas that must not rely on the four-characters-a-token estimate.

mod counter;
mod future;
mod layer;
mod refused;
mod service;
mod state;

#[cfg(feature = "tiktoken")]
pub use counter::Tiktoken;
pub use counter::TokenCounter;
pub use future::ResponseFuture;
pub use layer::{
    DEFAULT_BURST_DIVISOR, DEFAULT_MAX_OUTPUT_TOKENS, Quota, RateLimitConfig, RateLimitLayer,
    Reconcile, SlowDown,
};
pub use refused::{RateLimitRefused, RefusalReason};
pub use service::RateLimit;
pub use state::KeyStatus;

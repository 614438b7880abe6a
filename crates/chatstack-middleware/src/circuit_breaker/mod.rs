//! A circuit breaker: stop calling a failing model or endpoint for a while.
//!
//! [`CircuitBreakerLayer`] wraps a service in a [`CircuitBreaker`] with the semantics of
//! Resilience4j's count-based breaker, one circuit per key (by default, per model):
//!
//! - **Closed**: calls pass; the outcomes of the last [`sliding_window_size`] calls are kept.
//!   Once the window holds [`minimum_calls`] outcomes, the circuit opens when the failure rate
//!   reaches [`failure_rate_threshold`], or, with slow-call detection on, when the rate of
//!   calls slower than [`slow_call_duration`] reaches [`slow_call_rate_threshold`].
//! - **Open**: calls are rejected in `call`, without reaching the inner service, with an
//!   [`Error`](crate::Error) of kind [`ErrorKind::CircuitOpen`](crate::ErrorKind::CircuitOpen)
//!   whose message names the key and whose [`retry_after`](crate::Error::retry_after) is the
//!   time left until the circuit half-opens. `poll_ready` never fails for an open circuit.
//! - **Half-open**, after [`open_duration`]: exactly [`half_open_probes`] calls are admitted;
//!   others are rejected while they are in flight. When every probe has counted, the circuit
//!   closes if their rates are under the thresholds (so all probes succeeding closes it) and
//!   opens again otherwise.
//!
//! Which errors are failures is a predicate, by default
//! [`Error::is_provider_fault`](crate::Error::is_provider_fault): a 5xx, a timeout or a broken
//! connection is the provider's fault; a 400 or a 401 is the caller's, and a 429 is the
//! provider working as designed. State changes are `tracing` events (`warn` when a circuit
//! opens, `info` otherwise, with the key, both states and the rates) and reach the
//! [`on_state_change`](CircuitBreakerLayer::on_state_change) callback as a [`StateChange`].
//! [`CircuitBreakerLayer::state`] and [`CircuitBreaker::state`] read a key's state.
//!
//! # Choices where Resilience4j leaves room
//!
//! - **When an outcome counts.** A failed call counts when its future fails. A successful
//!   one counts when its response completes, through
//!   [`LlmResponse::on_complete`](crate::LlmResponse::on_complete): at once for a unary
//!   response, at its end for a stream, so a stream that fails after its first chunk counts
//!   as a failure (if the predicate says so) and a call's duration runs from `call` to the
//!   stream's end. A future or a stream dropped before it completes counts as **neither**:
//!   the caller gave up, which says nothing about the provider.
//! - **Errors the predicate rejects count as neither** success nor failure (Resilience4j's
//!   "ignored" exceptions, not its default of counting them as successes): a burst of bad
//!   requests neither trips the breaker nor hides an outage by diluting the failure rate.
//! - **Rates compare inclusively** (5 failures of 10 reach 50 %), as in Resilience4j, and a
//!   [`minimum_calls`] above the window size counts as the window size.
//! - **Slow calls** are those taking longer than the threshold, measured with tokio's clock.
//!   Slow-call detection is off until [`slow_call_duration`] is set: an LLM call's duration
//!   grows with its answer, so no default fits. A slow failure counts as both.
//! - **Half-open verdicts.** A probe that counts as neither (dropped, or an ignored error)
//!   gives its slot back, so a dropped probe cannot wedge a circuit half-open and exactly
//!   [`half_open_probes`] outcomes decide. The circuit re-opens as soon as the probes'
//!   failures (or slow calls) reach the threshold of all [`half_open_probes`], since the
//!   remaining probes can no longer change the verdict; it closes only once every probe has
//!   counted. A rejected half-open call has no `retry_after`: when the probes end is unknown.
//! - **Open to half-open is lazy**, as with Resilience4j's default: it happens on the first
//!   call (or [`state`](CircuitBreakerLayer::state) read) after the wait, on tokio's clock.
//! - **Epochs.** An outcome counts only in the state its call was admitted in: a call that
//!   started before the circuit opened and ends after it closed again is not counted, and a
//!   probe of an earlier half-open spell cannot decide a later one.
//! - **Sharing.** Clones of a service, and every service one layer wraps, share the layer's
//!   circuits (behind an `Arc`). Circuits are made on a key's first call and kept.
//! - **Callbacks** run without any lock held, in transition order per circuit, so they may
//!   read the breaker's state.
//!
//! # Cost
//!
//! Per call: finding the key's circuit (each service clone remembers the circuit of its last
//! call; otherwise a read-locked map lookup by `&str`, allocating only for a key never seen),
//! an atomic load to admit a call to a closed circuit, and one short-held lock of the key's
//! circuit to record the outcome. No allocation beyond what the response's own
//! [`on_complete`](crate::LlmResponse::on_complete) takes (a boxed hook for a stream). The
//! `circuit_breaker` group of `cargo bench -p chatstack-middleware --bench layers` measures it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use chatstack_middleware::circuit_breaker::{
//!     CircuitBreakerConfig, CircuitBreakerLayer, CircuitState,
//! };
//! use chatstack_middleware::{ChatRequest, ChatResponse, Error, ErrorKind, Message};
//! use http::StatusCode;
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::new(
//!     CircuitBreakerConfig::default()
//!         .sliding_window_size(4)
//!         .minimum_calls(4)
//!         .failure_rate_threshold(50.0)
//!         .open_duration(Duration::from_secs(30)),
//! )
//! .on_state_change(|change| eprintln!("{change}"));
//!
//! // A provider that is down: every call fails with a 503.
//! let provider = tower::service_fn(|_request: ChatRequest| async {
//!     Err::<ChatResponse, _>(
//!         Error::new(ErrorKind::Server, "upstream unavailable")
//!             .with_status(StatusCode::SERVICE_UNAVAILABLE),
//!     )
//! });
//! let mut service = layer.layer(provider);
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Hello!")]);
//!
//! for _ in 0..4 {
//!     let error = service.ready().await.unwrap().call(request.clone()).await.unwrap_err();
//!     assert!(error.is_server());
//! }
//! assert_eq!(layer.state("gpt-4.1"), CircuitState::Open);
//!
//! // The provider is not called again until the circuit half-opens.
//! let rejected = service.ready().await.unwrap().call(request).await.unwrap_err();
//! assert!(rejected.is_circuit_open());
//! assert!(rejected.to_string().contains("gpt-4.1"));
//! assert!(rejected.retry_after().unwrap() <= Duration::from_secs(30));
//! assert_eq!(layer.state("gpt-4o"), CircuitState::Closed, "each model has its own circuit");
//! # }
//! ```
//!
//! [`sliding_window_size`]: CircuitBreakerConfig::sliding_window_size
//! [`minimum_calls`]: CircuitBreakerConfig::minimum_calls
//! [`failure_rate_threshold`]: CircuitBreakerConfig::failure_rate_threshold
//! [`slow_call_duration`]: CircuitBreakerConfig::slow_call_duration
//! [`slow_call_rate_threshold`]: CircuitBreakerConfig::slow_call_rate_threshold
//! [`open_duration`]: CircuitBreakerConfig::open_duration
//! [`half_open_probes`]: CircuitBreakerConfig::half_open_probes

mod future;
mod layer;
mod service;
mod state;

pub use future::ResponseFuture;
pub use layer::{CircuitBreakerConfig, CircuitBreakerLayer};
pub use service::CircuitBreaker;
pub use state::{CircuitState, StateChange};

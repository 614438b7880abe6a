//! A hard spending cap: refuse a request before it is sent when its worst-case cost could
//! pass the budget.
//!
//! [`BudgetLayer`] wraps any service whose request is an [`LlmRequest`](crate::LlmRequest)
//! and whose response is an [`LlmResponse`](crate::LlmResponse) in a [`Budget`]. Before a
//! request is sent, the budget reserves its **worst-case cost**; it refuses the request in
//! `call`, without reaching the inner service, with an [`Error`](crate::Error) of kind
//! [`ErrorKind::BudgetExceeded`](crate::ErrorKind::BudgetExceeded) when
//!
//! > spent + reserved (by requests in flight) + this request's worst case > cap.
//!
//! The error's message gives the four figures, and its source is a [`BudgetRefusal`] that
//! holds them. When the response completes, the reservation is **settled**: replaced by the
//! actual cost of the usage reported. A call that fails, a response future dropped before
//! it completes, and a stream dropped or failed before its usage give their reservation
//! back whole. The check and the reservation happen under one short-held lock, in integer
//! nano-dollars, so however many requests race, the reservations never pass the cap.
//!
//! # Example
//!
//! ```
//! use chatstack_middleware::budget::{BudgetLayer, BudgetRefusal};
//! use chatstack_middleware::cost::Usd;
//! use chatstack_middleware::{ChatRequest, ChatResponse, Error, Message};
//! use chatstack_proto::Usage;
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let provider = tower::service_fn(|request: ChatRequest| async move {
//!     Ok::<_, Error>(ChatResponse { model: request.model, usage: Some(Usage::new(9, 500)), ..Default::default() })
//! });
//! let layer = BudgetLayer::new(Usd::from_cents(1));
//! let mut client = layer.layer(provider);
//!
//! // "Hello" is estimated at 9 prompt tokens; the answer may take 1,000 tokens. Worst case on
//! // gpt-4.1: 9 × $2/M + 1,000 × $8/M = $0.008018. Actual: 9 × $2/M + 500 × $8/M.
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Hello")]).max_tokens(1_000);
//! client.ready().await.unwrap().call(request.clone()).await.unwrap();
//! assert_eq!(layer.snapshot().spent, Usd::from_nanos(4_018_000));
//!
//! // $0.004018 spent + $0.008018 would pass the $0.01 cap.
//! let error = client.ready().await.unwrap().call(request).await.unwrap_err();
//! assert!(error.is_budget_exceeded());
//! assert_eq!(
//!     error.to_string(),
//!     "budget exceeded: cap $0.010000, spent $0.004018, reserved $0.000000, \
//!      this request's worst case $0.008018 (model `gpt-4.1`)"
//! );
//! assert_eq!(BudgetRefusal::find(&error).unwrap().worst_case, Usd::from_nanos(8_018_000));
//! # }
//! ```
//!
//! # The worst case
//!
//! A request's worst case is its prompt estimate
//! ([`LlmRequest::estimated_prompt_tokens`](crate::LlmRequest::estimated_prompt_tokens)) at
//! the dearest rate a prompt token can be billed at (the input price, or the cache-write
//! price where that is higher, as on Claude), plus its output cap
//! ([`LlmRequest::max_output_tokens`](crate::LlmRequest::max_output_tokens); without one,
//! the model's [`max_output_tokens`](crate::cost::ModelPrice::max_output_tokens) from the
//! table, else [`BudgetLayer::default_max_output_tokens`]) at the dearest completion rate
//! (output, or reasoning), at the long-context prices when the estimate is over their
//! threshold, times the endpoint's multiplier, rounded up to the nano-dollar.
//!
//! The cap holds as long as responses cost no more than their worst case. A prompt
//! estimate is an estimate: if a provider reports more prompt tokens than estimated, the
//! actual cost is settled anyway (the money is spent), and the budget may end a little over
//! its cap; every request after that is refused.
//!
//! # Settlement
//!
//! When the response completes, through [`LlmResponse::on_complete`](crate::LlmResponse::on_complete):
//!
//! - with a usage: spent += its cost ([`Pricing`](crate::cost::Pricing), as the cost layer
//!   prices it), and the reservation is released, both under the lock;
//! - a success without a usage (a server that sends none): the worst case counts as spent,
//!   with a `tracing` warning — an unknown cost is not assumed to be zero;
//! - a failure or a drop before the usage: the reservation is released and nothing is
//!   spent. The stream's reservation lives in its completion hook, so dropping the stream
//!   (or a response type that drops the hook without running it) releases it.
//!
//! Streaming requests get `stream_options.include_usage`, so their usage arrives.
//!
//! # Sharing
//!
//! Clones of the layer and of the services it wraps share one budget (behind an `Arc`).
//! [`BudgetLayer::new`] counts its own spending; [`BudgetLayer::with_ledger`] caps what a
//! [`CostLedger`](crate::cost::CostLedger) shows instead, so spend that a
//! [`CostLayer`](crate::cost::CostLayer) records from any stack counts, and the budget only
//! holds reservations. Put it outside the cost layer (see its docs).
//!
//! Across processes, with the `redis` feature: `BudgetLayer::redis` keeps the cap, the
//! spent figure and the reservations in Redis, reserved and settled atomically for the whole
//! fleet; see the `redis` module. The layer's type then says so (`BudgetLayer<RedisBudget>`,
//! `Budget<S, RedisBudget>`): the in-process types and their code are unchanged.
//!
//! Models the price table does not know are refused by default
//! ([`UnknownModel::Error`](crate::cost::UnknownModel::Error), an error of kind
//! [`ErrorKind::Config`](crate::ErrorKind::Config)): their worst case has no bound. Set
//! another policy with [`BudgetLayer::pricing`].
//!
//! # Cost of the layer
//!
//! Per call: a hash lookup of the model, the worst-case arithmetic, one short-held lock to
//! reserve and one to settle; a completion hook is allocated per response. The `budget`
//! group of `cargo bench -p chatstack-middleware --bench layers` measures it.

mod future;
mod layer;
mod service;
#[cfg(feature = "redis")]
mod shared;
mod state;

pub use future::ResponseFuture;
pub use layer::{BudgetLayer, DEFAULT_MAX_OUTPUT_TOKENS};
pub use service::Budget;
#[cfg(feature = "redis")]
pub use shared::SharedResponseFuture;
pub use state::{Backend, BudgetRefusal, BudgetSnapshot, InProcess};
#[cfg(feature = "redis")]
pub(crate) use state::{Reservation, Settle, sealed};

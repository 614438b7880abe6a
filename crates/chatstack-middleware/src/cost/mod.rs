//! Cost accounting: price every response, attach the cost to it, and add it to a shared
//! ledger.
//!
//! [`CostLayer`] wraps any service whose response is an [`LlmResponse`](crate::LlmResponse)
//! (the transport, a streaming service, a user's own) in a [`Cost`] service. When a response
//! completes (at once for a unary one, at its end for a stream), its usage is priced with a
//! [`Pricing`] (a [`PriceTable`], a multiplier, an unknown-model policy), the
//! [`ResponseCost`] is put in the response's metadata and recorded in a [`CostLedger`] under
//! the model and the request's tag.
//!
//! # Example
//!
//! ```
//! use chatstack_middleware::cost::{CostLayer, CostLedger, ResponseCost, StreamCost, Usd};
//! use chatstack_middleware::{ChatRequest, ChatResponse, ChatStream, Error, Message, StreamRequest};
//! use chatstack_proto::{ChatChunk, ResponseMeta, Usage};
//! use futures_util::StreamExt;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let layer = CostLayer::new(CostLedger::new());
//!
//! // Unary: the cost is in the response's metadata when the call returns.
//! let provider = tower::service_fn(|request: ChatRequest| async move {
//!     let mut usage = Usage::new(10_000, 500);
//!     usage.prompt_tokens_details.cached_tokens = 8_000;
//!     Ok::<_, Error>(ChatResponse { model: request.model, usage: Some(usage), ..Default::default() })
//! });
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Hello")]).tag("team-a");
//! let response = layer.layer(provider).oneshot(request).await?;
//! let cost = ResponseCost::of(&response.meta).unwrap();
//! // 2,000 input × $2/M + 8,000 cached × $0.50/M + 500 output × $8/M = $0.012
//! assert_eq!(cost.cost, Usd::from_micros(12_000));
//!
//! // A stream: `include_usage` is asked for, and the cost is known when the stream ends.
//! let provider = tower::service_fn(|request: StreamRequest| async move {
//!     let asked = request.stream_options.as_ref().and_then(|o| o.include_usage);
//!     assert_eq!(asked, Some(true), "set by the cost layer");
//!     let last = ChatChunk { model: request.model.clone(), usage: Some(Usage::new(1_000, 100)), ..Default::default() };
//!     Ok::<_, Error>(ChatStream::new(futures_util::stream::iter([Ok(last)]), ResponseMeta::default()))
//! });
//! let request = StreamRequest::from(ChatRequest::new("gemini-2.5-flash", [Message::user("Hi")]));
//! let mut stream = layer.layer(provider).oneshot(request).await?;
//! let handle = stream.meta().extensions.get::<StreamCost>().unwrap().clone();
//! assert!(handle.get().is_none(), "not before the end");
//! while let Some(chunk) = stream.next().await {
//!     chunk?;
//! }
//! // 1,000 × $0.30/M + 100 × $2.50/M = $0.00055
//! assert_eq!(handle.get().unwrap().cost, Usd::from_nanos(550_000));
//! assert_eq!(ResponseCost::of(stream.meta()).unwrap().cost, Usd::from_nanos(550_000));
//!
//! let ledger = layer.ledger().snapshot();
//! assert_eq!(ledger.total.requests, 2);
//! assert_eq!(ledger.total.cost, Usd::from_nanos(12_550_000));
//! assert_eq!(ledger.by_tag["team-a"].cost, Usd::from_micros(12_000));
//! # Ok(())
//! # }
//! ```
//!
//! # What is billed
//!
//! A response's usage is split into five categories ([`TokenCounts`]), each at its own
//! price ([`ModelPrice`]):
//!
//! | category | from the (OpenAI-style) usage | price |
//! |---|---|---|
//! | input | `prompt_tokens` − cached − cache-write | input |
//! | cached input | `prompt_tokens_details.cached_tokens` | cached input (cache read) |
//! | cache write | `prompt_tokens_details.cache_write_tokens` | cache write, 5 min or 1 h ([`CacheTtl`]) |
//! | output | `completion_tokens` − reasoning | output |
//! | reasoning | `completion_tokens_details.reasoning_tokens` | reasoning, else output |
//!
//! When a request's prompt (all three prompt categories) is over 200k tokens and the model
//! has a [`LongContextPrice`] (Claude Sonnet 4/4.5, Gemini 2.5 Pro), **all** of that
//! request's tokens are billed at the long-context prices. Anthropic's native usage counts
//! cached tokens apart from `input_tokens`; chatstack sees the OpenAI-style usage of
//! compatible endpoints, in which they are included (see [`TokenCounts`]).
//!
//! Money is integers: prices are pico-dollars per token, a response's cost is computed in
//! 128-bit pico-dollars, scaled by the endpoint's multiplier and rounded once to the nearest
//! nano-dollar ([`Usd`]). Sums in the ledger are exact integer additions, however many
//! threads add to it.
//!
//! # Which model a response is priced as
//!
//! The model that answered ([`Completion::model`](crate::Completion)), when the table knows
//! it (OpenAI answers `gpt-4.1` with `gpt-4.1-2025-04-14`; a router answers with the model
//! it chose); otherwise the model asked for. Names are resolved through provider prefixes,
//! snapshot dates and aliases: see [`PriceTable`]. The ledger's rows are by the id priced
//! as, so `gpt-4.1` and its snapshots share one row.
//!
//! A model the table does not know follows the [`UnknownModel`] policy: refused before it is
//! sent ([`UnknownModel::Error`], an error of kind
//! [`ErrorKind::Config`](crate::ErrorKind::Config)), counted as free ([`UnknownModel::Zero`],
//! the default), or billed at a default price ([`UnknownModel::Price`]). Either way the
//! ledger counts it by name in [`LedgerSnapshot::unknown_models`].
//!
//! # How a stream's cost reaches the caller
//!
//! For a request that streams ([`LlmRequest::is_streaming`](crate::LlmRequest)), the layer
//! sets `stream_options.include_usage` (through
//! [`LlmRequest::as_chat_request_mut`](crate::LlmRequest::as_chat_request_mut)), so the
//! server sends a final usage chunk. The call returns before the cost is known, so the
//! layer puts a [`StreamCost`] in the stream's
//! [`ResponseMeta::extensions`](chatstack_proto::ResponseMeta::extensions): a shared handle
//! (an `Arc<OnceLock<ResponseCost>>`) that is filled, and the ledger updated, when the
//! stream ends, fails, or is dropped. Clone the handle out of the metadata to read it after
//! the stream is gone; [`ResponseCost::of`] reads the metadata of a unary response and of
//! an ended stream alike (and of the response `ChatStream::collect_response` makes, which
//! inherits the stream's metadata). A stream that fails or is dropped before its usage
//! chunk is recorded as a request without usage, at zero cost.
//!
//! A unary response gets the [`ResponseCost`] itself. Which one a response gets is decided
//! by whether it had completed by the time the call returned, so a user's own response
//! type works either way.
//!
//! Failed calls are not recorded: an error response is not billed.
//!
//! # Price comparisons
//!
//! [`Pricing::compare`] prices a workload (a month's tokens) on several models, at list
//! price and at the endpoint's multiplier: 10M output tokens a month cost $80.00 on
//! gpt-4.1, $150.00 on claude-sonnet-4.5, $25.00 on gemini-2.5-flash and $4.20 on
//! deepseek-v3.2; through a relay that bills 85 % of list, $68.00, $127.50, $21.25 and
//! $3.57.
//!
//! # Cost of the layer
//!
//! Per call: one hash lookup of the model (no allocation for a known model asked by its
//! id), a clone of the tag, and when the response completes one more lookup, the
//! integer arithmetic, and one short-held lock of the ledger. A completion hook and a
//! handle are allocated per response. The `cost` group of
//! `cargo bench -p chatstack-middleware --bench layers` measures it.

mod future;
mod layer;
mod ledger;
mod litellm;
mod money;
mod price;
mod pricing;
mod service;
mod table;

pub use future::ResponseFuture;
pub use layer::CostLayer;
pub use ledger::{CostLedger, LedgerEntry, LedgerSnapshot};
pub use litellm::{LoadPricesError, LoadSummary};
pub use money::{ParseUsdError, TokenPrice, Usd};
pub use price::{CacheTtl, LONG_CONTEXT_THRESHOLD, LongContextPrice, ModelPrice, TokenCounts};
pub use pricing::{PriceComparison, PriceSource, Pricing, ResponseCost, StreamCost, UnknownModel};
pub use service::Cost;
pub use table::PriceTable;

// What the budget layer shares with the cost layer.
#[cfg(feature = "budget")]
pub(crate) use pricing::Requested;
#[cfg(feature = "budget")]
pub(crate) use service::{cache_ttl, request_usage};

//! Fallbacks: when a call fails in a way another model or endpoint may not, send it there.
//!
//! [`FallbackLayer`] wraps a service in [`Fallback`], with an ordered list of
//! [`Alternative`]s, like LiteLLM's `fallbacks`. The request first goes to the inner service
//! as it came (the *primary*, index 0). When that fails with an error that
//! [`is_retryable`](chatstack_proto::Error::is_retryable) (rate limited, 5xx, overloaded,
//! timeout, connection, cut short) or
//! [`is_circuit_open`](chatstack_proto::Error::is_circuit_open), the request goes to the
//! first alternative, and so on down the list:
//!
//! - [`Alternative::model`]: the same inner service, with the request's model changed
//!   through [`SetModel`] (implemented for `ChatRequest` and `StreamRequest`; for another
//!   request type implement it, or use [`FallbackLayer::with_model_setter`]).
//! - [`Alternative::service`]: another service (another endpoint or provider, boxed as a
//!   `tower::util::BoxCloneSyncService`), sent the request unchanged, or with its model
//!   changed too ([`Alternative::with_model`]).
//!
//! Any other error ends the search at once, wherever it comes from: an invalid request
//! (400, context length, content filter), auth, insufficient quota or a spent budget would
//! fail the same way anywhere, or should not be paid twice. The classification is the one
//! every layer shares, so a server's `x-should-retry: false` also keeps the request where it
//! failed.
//!
//! What comes back:
//!
//! - **Success**: the response, with an [`AnsweredBy`] in its `ResponseMeta::extensions`
//!   giving the index (0 = primary) and name (the primary's model, or the alternative's
//!   name) of the one that answered. After a fallback, `ResponseMeta::attempts` also counts
//!   the attempts of the ones that failed.
//! - **Every one failed**: the *last* error, the one that ended the search (of the last
//!   alternative tried, or the non-retryable one), unchanged but for its
//!   [`attempts`](chatstack_proto::Error::attempts), which count every attempt made across
//!   the alternatives (an error that records retries beneath counts them all). The last
//!   error, not the first, because it says why the request ended where it did; the earlier
//!   ones are in the tracing events.
//!
//! Each fallback is a `tracing` event at `WARN` level, "falling back to the next
//! alternative", with the fields `from.index`, `from.name`, `to.index`, `to.name`,
//! `error.kind` and `error`.
//!
//! Requests must be `Clone`: with alternatives configured, the layer keeps the request as it
//! came (and a clone of the inner service, tower services being cheap to clone) until the
//! call succeeds, and each alternative gets its own copy.
//!
//! # Placement and streams
//!
//! Put the layer above retry and the circuit breaker
//! (`fallback → retry → circuit breaker → … → transport`): each alternative then gets its
//! retries, and once the breaker of the primary model opens, requests fall back at once
//! instead of waiting for timeouts. Only [`Fallback`]'s inner service needs to be ready;
//! an alternative is made ready when a request falls back to it.
//!
//! For a stream, only a failure of the call falls back: once the call has returned a stream,
//! its chunks may have reached the caller. Put a [`TimeoutLayer`](crate::timeout::TimeoutLayer)
//! with a first-chunk limit beneath: the call of a stream then resolves at its first chunk,
//! and a stream that fails or stays silent before it falls back like any failed call.
//!
//! # Example
//!
//! The primary endpoint answers 503 to everything; a cheaper model on it fails too, and the
//! backup endpoint answers:
//!
//! ```
//! use chatstack_middleware::fallback::{AnsweredBy, FallbackLayer};
//! use chatstack_middleware::{ChatRequest, LlmResponse, Message};
//! use chatstack_mock::{Fault, MockConfig, MockServer};
//! use chatstack_transport::HttpTransport;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broken = MockServer::start(MockConfig::default().fault(Fault::ServiceUnavailable, 1.0)).await?;
//! let healthy = MockServer::start(MockConfig::default()).await?;
//! let primary = HttpTransport::builder().base_url(broken.url()).build()?;
//! let backup = HttpTransport::builder().base_url(healthy.url()).build()?;
//!
//! let service = ServiceBuilder::new()
//!     .layer(FallbackLayer::new().model("gpt-4o-mini").service("backup", backup))
//!     .service(primary);
//!
//! let response = service
//!     .oneshot(ChatRequest::new("gpt-4o", [Message::user("Hello")]))
//!     .await?;
//! let answered = response.meta().extensions.get::<AnsweredBy>().unwrap();
//! assert_eq!((answered.index(), answered.name()), (2, "backup"));
//! assert_eq!(response.meta.attempts, 3);
//! assert_eq!(broken.counters().model("gpt-4o"), 1);
//! assert_eq!(broken.counters().model("gpt-4o-mini"), 1);
//! # Ok(())
//! # }
//! ```

mod alternative;
mod future;
mod layer;
mod service;

pub use alternative::{Alternative, AnsweredBy, SetModel};
pub use future::ResponseFuture;
pub use layer::FallbackLayer;
pub use service::Fallback;

//! Time limits per attempt: a total limit, and for streams a first-chunk, an idle and a
//! stream-total limit.
//!
//! [`TimeoutLayer`] wraps a service in [`Timeout`]. Four limits, each an
//! [`ErrorKind::Timeout`](chatstack_proto::ErrorKind::Timeout) whose message names the limit
//! and its value, and each retryable ([`Error::is_retryable`](chatstack_proto::Error::is_retryable)):
//!
//! | limit | runs | error | default |
//! |---|---|---|---|
//! | [`total`](TimeoutConfig::total) | from the call until the response: a unary response whole, a stream's headers | `TimeoutKind::Total` | 600 s |
//! | [`first_chunk`](TimeoutConfig::first_chunk) | from the call until a stream's first chunk has arrived | `TimeoutKind::FirstChunk` | 600 s |
//! | [`idle`](TimeoutConfig::idle) | from one chunk of a stream until the next | `TimeoutKind::Idle` | 600 s |
//! | [`stream_total`](TimeoutConfig::stream_total) | from the call until a stream has ended | `TimeoutKind::Total` | an hour |
//!
//! A response is a stream when [`LlmResponse::as_chat_stream_mut`] gives one; unary
//! responses get only the total limit. For a stream the total limit ends when the
//! response (its headers) arrives, so a long answer that keeps streaming is not cut by it:
//! a stream is held by its first-chunk and idle limits instead, and by the stream-total
//! limit, the bound on its whole length. The first three default to 600 s
//! ([`DEFAULT_TIMEOUT`], the OpenAI SDKs' timeout); the stream-total limit to an hour
//! ([`DEFAULT_STREAM_TOTAL`]), far longer than any real answer takes. `None` turns a limit
//! off.
//!
//! Details that matter:
//!
//! - **First chunk, from the call.** The first-chunk limit counts from the call, headers
//!   included. For a request that says it streams ([`LlmRequest::is_streaming`]) it already
//!   runs while the headers are awaited; for one that does not, it applies once the response
//!   turns out to be a stream. With a first-chunk limit set, the call of a stream resolves
//!   only once its first chunk has arrived (the [`ChatStream`](chatstack_proto::ChatStream)
//!   keeps it and yields it first, see `ChatStream::first_chunk_ready`), so a first-chunk
//!   timeout, and any other failure before the first chunk, is an `Err` of the call: a retry,
//!   circuit breaker or fallback layer above sees it like any failed call.
//! - **Idle, between chunks.** After each chunk the idle limit starts again; when it passes,
//!   the stream yields the `Idle` error and ends (after the chunks that came before). The
//!   limit only fails a poll that finds nothing to read, so a caller that reads slowly is not
//!   mistaken for a silent provider. One timer per stream, reset per chunk: nothing is
//!   allocated per chunk.
//! - **A stream that never ends.** A provider or a proxy that keeps sending (keep-alive
//!   comments and empty chunks, never `[DONE]`) restarts the idle limit with every chunk;
//!   the stream-total limit is what ends it: the stream yields the chunks that came, then
//!   the `Total` error, and ends. It counts from the call, and also fails a chunk that
//!   arrives once it has passed (a stream whose chunks are always ready would otherwise
//!   never be stopped). Before a stream's headers (for a request that says it streams) and
//!   before its first chunk, it runs with the other limits, the earliest deciding; a
//!   failure there is a failed call, retried like one. It needs no timer of its own and
//!   allocates nothing: the one timer of the stream is set to whichever limit ends first,
//!   and a chunk costs a clock read and a comparison.
//! - **Per attempt.** Place the layer beneath retry (`retry → … → timeout → transport`) and
//!   each attempt gets the full limits. Waiting for the inner service to be ready
//!   (`poll_ready`, e.g. a rate limiter beneath) is not timed.
//! - **tokio's clock.** Every limit is a `tokio::time` timer, so tests run on paused time.
//!   The transport has its own total timeout (600 s by default); keep it at least as long as
//!   this layer's limits, or it ends the attempt first.
//!
//! # Example
//!
//! A stream that stalls after two content chunks (the mock's `stall:2` fault) yields its
//! chunks, then the idle error:
//!
//! ```
//! use std::time::Duration;
//! use chatstack_middleware::timeout::TimeoutLayer;
//! use chatstack_middleware::{ChatRequest, Message, StreamRequest};
//! use chatstack_mock::{MockConfig, MockServer};
//! use chatstack_proto::TimeoutKind;
//! use chatstack_transport::HttpTransport;
//! use futures_util::StreamExt;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockServer::start(MockConfig::default()).await?;
//! let transport = HttpTransport::builder().base_url(mock.url()).build()?;
//! let service = ServiceBuilder::new()
//!     .layer(
//!         TimeoutLayer::new()
//!             .total(Duration::from_secs(10))
//!             .first_chunk(Duration::from_secs(5))
//!             .idle(Duration::from_millis(100)),
//!     )
//!     .service(transport);
//!
//! let mut request = StreamRequest::from(ChatRequest::new("gpt-4o", [Message::user("Hi")]));
//! request.meta.headers.insert("x-mock-fault", "stall:2".parse()?);
//! let mut stream = service.oneshot(request).await?;
//!
//! let mut chunks = 0;
//! let error = loop {
//!     match stream.next().await {
//!         Some(Ok(_chunk)) => chunks += 1,
//!         Some(Err(error)) => break error,
//!         None => unreachable!("the stream stalls"),
//!     }
//! };
//! assert_eq!(chunks, 3, "the role chunk and two content chunks");
//! assert_eq!(error.timeout_kind(), Some(TimeoutKind::Idle));
//! assert!(error.to_string().contains("idle limit of 100ms"), "{error}");
//! # Ok(())
//! # }
//! ```
//!
//! [`LlmResponse::as_chat_stream_mut`]: chatstack_proto::LlmResponse::as_chat_stream_mut
//! [`LlmRequest::is_streaming`]: chatstack_proto::LlmRequest::is_streaming

mod future;
mod layer;
mod service;
mod stream;

pub use future::ResponseFuture;
pub use layer::{DEFAULT_STREAM_TOTAL, DEFAULT_TIMEOUT, TimeoutConfig, TimeoutLayer};
pub use service::Timeout;

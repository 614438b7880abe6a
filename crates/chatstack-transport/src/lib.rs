//! The HTTP transport of chatstack: the innermost [`tower::Service`] of every stack.
//!
//! [`HttpTransport`] sends a [`ChatRequest`] as `POST {base_url}/chat/completions` and
//! answers it with a [`ChatResponse`]; it answers a [`StreamRequest`] with a [`ChatStream`]
//! of chunks decoded from server-sent events. It runs over a
//! [`reqwest_middleware::ClientWithMiddleware`] with rustls (no OpenSSL), so reqwest-level
//! middleware (tracing, caching) can sit under chatstack. It never retries on its own:
//! retries live in one place, chatstack's retry layer.
//!
//! The transport checks the status before it decodes, maps every failure to a typed
//! [`Error`] (status, provider error envelope, `x-request-id`, `retry-after`,
//! `retry-after-ms`, `x-should-retry` and `x-ratelimit-*` kept), caps the body it reads,
//! and fills [`ResponseMeta`](chatstack_proto::ResponseMeta) with the status, request id,
//! rate-limit snapshot and latency. Whatever the server sends, it does not panic.
//!
//! A success is not taken on trust: an error envelope in a 200 is the provider's error; a
//! body that is not what was asked for (an HTML page from a proxy, bytes that are not UTF-8,
//! a compressed body the transport never asked for) is an [`ErrorKind::Decode`] that says
//! what it got; a body past the cap is refused as it passes it, without being read whole.
//! Keys stay with their host: redirects are followed only within the origin of the request,
//! `https_only` refuses plain `http`, and a key bound for another machine over plain `http`
//! is warned about (see [`HttpTransportBuilder`]).
//!
//! [`ErrorKind::Decode`]: chatstack_proto::ErrorKind::Decode
//!
//! ```
//! use chatstack_mock::{MockConfig, MockServer};
//! use chatstack_proto::{ChatRequest, Message};
//! use chatstack_transport::HttpTransport;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockServer::start(MockConfig::default()).await?;
//! let transport = HttpTransport::builder().base_url(mock.url()).build()?;
//!
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Say hello")]);
//! let response = transport.oneshot(request).await?;
//! assert!(response.text().is_some());
//! assert_eq!(response.meta.status, 200);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod config;
mod transport;

pub use chatstack_proto::{ChatRequest, ChatResponse, ChatStream, Error, StreamRequest};
pub use config::HttpTransportBuilder;
pub use transport::{HttpTransport, ResponseFuture};

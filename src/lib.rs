//! chatstack: an async client stack for LLM chat APIs (OpenAI Chat Completions and the many
//! servers that speak it), on tokio, reqwest and tower.
//!
//! The workspace is layered, and this facade re-exports each layer:
//!
//! - [`proto`]: protocol types, the [`Error`] type and pure codecs (SSE, stream accumulation).
//! - [`transport`]: [`HttpTransport`], the innermost `tower::Service`, unary and streaming.
//! - [`middleware`]: tower layers (retry, rate limit, circuit breaker, cost, budget, auth,
//!   tracing) generic over the [`LlmRequest`]/[`LlmResponse`] seams.
//!
//! ```
//! use chatstack::{ChatRequest, HttpTransport, Message};
//! use chatstack_mock::{MockConfig, MockServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockServer::start(MockConfig::default()).await?;
//! let transport = HttpTransport::builder().base_url(mock.url()).build()?;
//! let response = transport
//!     .send(ChatRequest::new("gpt-4.1", [Message::user("Hello!")]))
//!     .await?;
//! println!("{}", response.text().unwrap_or_default());
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use chatstack_middleware as middleware;
pub use chatstack_proto as proto;
pub use chatstack_transport as transport;

pub use chatstack_proto::{
    ChatChunk, ChatRequest, ChatResponse, ChatStream, Content, ContentPart, Error, ErrorKind,
    LlmRequest, LlmResponse, Message, ResponseFormat, Role, StreamRequest, Tool, ToolChoice, Usage,
};
pub use chatstack_transport::{HttpTransport, HttpTransportBuilder};

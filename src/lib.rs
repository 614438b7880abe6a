//! chatstack: an async client stack for LLM chat APIs (OpenAI Chat Completions and the many
//! servers that speak it), on tokio, reqwest and tower.
//!
//! Most programs start with a [`Client`]: the default stack (trace → budget → cost → retry →
//! circuit breaker → rate limit → timeout → auth → transport) behind three calls,
//! [`Client::chat`], [`Client::send`] and [`Client::stream`]. Against chatstack's mock
//! provider, no key needed:
//!
//! ```
//! use chatstack::middleware::auth::ApiKey;
//! use chatstack::middleware::cost::Usd;
//! use chatstack::{ChatEvent, ChatRequest, Client, Message, ResponseExt};
//! use chatstack_mock::{MockConfig, MockServer};
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mock = MockServer::start(MockConfig::default().api_key("sk-mock-0123456789")).await?;
//! // Or `Client::from_env()?`, which reads OPENAI_API_KEY and OPENAI_BASE_URL.
//! let client = Client::builder()
//!     .base_url(mock.url())
//!     .api_key(ApiKey::new("sk-mock-0123456789")?)
//!     .budget(Usd::from_dollars(5))
//!     .build()?;
//!
//! println!("{}", client.chat("gpt-4.1", "Hello!").await?);
//!
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Tell me a story.")])
//!     .max_completion_tokens(200);
//! let response = client.send(request.clone()).await?;
//! println!(
//!     "{} tokens, {}, {} attempt(s), {:?}, request id {:?}",
//!     response.usage.unwrap_or_default().total_tokens,
//!     response.cost().unwrap().cost,
//!     response.meta.attempts,
//!     response.meta.latency,
//!     response.meta.request_id,
//! );
//!
//! let mut stream = client.stream(request).await?;
//! while let Some(event) = stream.next().await {
//!     match event? {
//!         ChatEvent::Chunk(chunk) => print!("{}", chunk.text().collect::<String>()),
//!         ChatEvent::Done(response) => println!("\n[{}]", response.cost().unwrap().cost),
//!     }
//! }
//! println!("spent {} of {}", client.ledger().total_cost(), client.budget().unwrap().cap);
//! # Ok(())
//! # }
//! ```
//!
//! The workspace is layered, and this facade re-exports each layer:
//!
//! - [`proto`]: protocol types, the [`Error`] type and pure codecs (SSE, stream accumulation).
//! - [`transport`]: [`HttpTransport`], the innermost `tower::Service`, unary and streaming.
//! - [`middleware`]: tower layers (retry, rate limit, circuit breaker, cost, budget, auth,
//!   tracing) generic over the [`LlmRequest`]/[`LlmResponse`] seams. [`ServiceBuilderExt`]
//!   adds them to a `tower::ServiceBuilder` by name, and [`Client::service`] hands out the
//!   client's own stack as a tower service.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batch;

mod client;
mod ext;

pub use chatstack_middleware as middleware;
pub use chatstack_proto as proto;
pub use chatstack_transport as transport;

pub use chatstack_proto::{
    ChatChunk, ChatRequest, ChatResponse, ChatStream, Content, ContentPart, Error, ErrorKind,
    LlmRequest, LlmResponse, Message, ResponseFormat, Role, StreamRequest, Tool, ToolChoice, Usage,
};
pub use chatstack_transport::{HttpTransport, HttpTransportBuilder};

pub use client::{
    API_KEY_VAR, BASE_URL_VAR, ChatCompletionStream, ChatEvent, ChatService, Client, ClientBuilder,
    DEFAULT_FIRST_CHUNK_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_TOTAL_TIMEOUT, NoText,
    StreamService,
};
pub use ext::{ResponseExt, ServiceBuilderExt};

pub use batch::{Batch, BatchItem, BatchProgress, InOrder, batch, batch_stream};

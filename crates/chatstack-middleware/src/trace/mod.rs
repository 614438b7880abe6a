//! OpenTelemetry GenAI spans (and, with the `metrics` feature, metrics) for every request.
//!
//! [`TraceLayer`] wraps a service in [`Trace`], which opens one `info` span named
//! `gen_ai.chat` per request, as a child of the span current at `call`, with the attributes
//! of OpenTelemetry's GenAI semantic conventions:
//!
//! | field | value | recorded |
//! |---|---|---|
//! | `gen_ai.operation.name` | `chat` | at once |
//! | `gen_ai.provider.name` | [`TraceLayer::provider`] (default `openai`) | at once |
//! | `gen_ai.request.model` | the request's model | at once |
//! | `gen_ai.request.max_tokens` | the request's output cap, when set | at once |
//! | `server.address`, `server.port` | [`TraceLayer::server_address`], [`TraceLayer::server_port`], when set | at once |
//! | `gen_ai.response.model` | the model that answered | at the end of the response |
//! | `gen_ai.response.id` | the completion id | at the end of the response |
//! | `gen_ai.response.finish_reasons` | a JSON array, such as `["stop"]` | at the end of the response |
//! | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | the usage, when reported | at the end of the response |
//! | `error.type` | [`error_type`] of the error; `cancelled` when dropped early | when it fails |
//! | `otel.name`, `otel.kind`, `otel.status_code` | `chat {model}`, `client`, `ERROR` on failure | for [tracing-opentelemetry] |
//!
//! The end of the response is when it is complete, through
//! [`LlmResponse::on_complete`](crate::LlmResponse::on_complete): at once for a unary
//! response; at the end of a stream (or when it fails or is dropped) for a streaming one, and
//! the span stays open until then, so its duration is the whole call's. A stream reports
//! usage only when asked (`stream_options.include_usage`, which the cost layer turns on).
//!
//! The inner service's `call`, its response future and a stream's chunk reads run inside
//! the span, so what inner layers log (retries, rate-limit waits, breaker changes) is part
//! of the request's trace. For timings in plain logs, have the subscriber log span closes
//! (`tracing_subscriber::fmt::format::FmtSpan::CLOSE`).
//!
//! # Metrics
//!
//! With the `metrics` feature, every call also records two histograms through the
//! [`metrics`](https://docs.rs/metrics) facade, with OpenTelemetry's names (buckets are
//! the exporter's business):
//!
//! - `gen_ai.client.operation.duration`, in seconds, to the end of the response, labelled
//!   `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
//!   `gen_ai.response.model` (when known), `server.address` and `server.port` (when set),
//!   and `error.type` when the call failed;
//! - `gen_ai.client.token.usage`, in tokens, once with `gen_ai.token.type = input` and once
//!   with `output`, when the usage is known, with the same labels but `error.type`.
//!
//! They are described (unit and help text) to the recorder installed when the layer is made.
//!
//! # Cost
//!
//! With no subscriber interested in the span, a call costs a disabled span and, without
//! the `metrics` feature, nothing else: the completion hook is not even attached. The
//! `trace` group of `cargo bench -p chatstack-middleware --bench layers` measures it.
//!
//! # Example
//!
//! ```
//! use chatstack_middleware::trace::TraceLayer;
//! use chatstack_middleware::{ChatRequest, ChatResponse, Error, Message};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tracing_subscriber::fmt::format::FmtSpan;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let subscriber = tracing_subscriber::fmt()
//!     .with_span_events(FmtSpan::CLOSE)
//!     .with_writer(std::io::sink) // a real program writes to stderr or a file
//!     .finish();
//! let _guard = tracing::subscriber::set_default(subscriber);
//!
//! let provider = tower::service_fn(|_: ChatRequest| async { Ok::<_, Error>(ChatResponse::default()) });
//! let client = ServiceBuilder::new()
//!     .layer(TraceLayer::new().provider("openai").server_address("api.openai.com"))
//!     .service(provider);
//! client
//!     .oneshot(ChatRequest::new("gpt-4.1", [Message::user("Hello")]).max_tokens(100))
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! [tracing-opentelemetry]: https://docs.rs/tracing-opentelemetry

mod future;
mod layer;
#[cfg(feature = "metrics")]
mod metrics;
mod record;
mod service;

pub use future::ResponseFuture;
pub use layer::TraceLayer;
pub use record::error_type;
pub use service::Trace;

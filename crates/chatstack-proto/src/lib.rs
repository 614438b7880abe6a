//! Protocol types and pure codecs for the OpenAI Chat Completions API.
//!
//! This crate is the bottom of the chatstack workspace. It holds:
//!
//! - [`ChatRequest`] and its parts: the body of `POST /chat/completions`, plus
//!   [`RequestMeta`], per-request data that is not body (headers, a cost tag, a deadline, an id).
//! - [`ChatResponse`], [`ChatChunk`] and [`ChatStream`]: what comes back, unary and streamed,
//!   plus [`ResponseMeta`] (status, request id, rate-limit snapshot, attempts, latency).
//! - [`Error`]: the one error type of chatstack, with predicates such as
//!   [`Error::is_retryable`] so every layer classifies failures alike.
//! - [`sse::SseDecoder`] and [`StreamDecoder`]: sans-I/O decoders (bytes in, events out), and
//!   [`ChatAccumulator`], which folds chunks into a [`ChatResponse`].
//! - [`LlmRequest`] and [`LlmResponse`]: the small traits every chatstack layer is generic over,
//!   so a layer serves unary calls, streams and a user's own services alike.
//!
//! Decoding is tolerant: unknown fields are ignored, every enum has an `Other` arm, and the
//! quirks of real OpenAI-compatible servers (empty `choices`, `finish_reason: ""`, `usage: {}`,
//! chunks without `delta`, errors in other shapes) decode without error.
//!
//! ```
//! use chatstack_proto::{ChatRequest, Message};
//!
//! let request = ChatRequest::new("gpt-4.1", [Message::system("Be brief."), Message::user("Hi!")])
//!     .max_completion_tokens(64)
//!     .temperature(0.2);
//! let body = serde_json::to_value(&request).unwrap();
//! assert_eq!(body["model"], "gpt-4.1");
//! assert_eq!(body["messages"][1]["content"], "Hi!");
//! assert!(body.get("top_p").is_none(), "unset fields are omitted");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod accumulate;
mod error;
mod lenient;
mod meta;
mod request;
mod response;
mod seam;
pub mod sse;
mod stream;

pub use accumulate::ChatAccumulator;
pub use error::{Error, ErrorKind, MAX_ERROR_BODY, ProviderError, TimeoutKind};
pub use meta::{
    RateLimitSnapshot, RequestMeta, ResponseMeta, parse_reset_duration, request_id, retry_after,
    should_retry,
};
pub use request::*;
pub use response::*;
pub use seam::{Completion, LlmRequest, LlmResponse};
pub use stream::{
    ChatChunk, ChatStream, ChunkChoice, Delta, FunctionCallDelta, StreamDecoder, StreamEvent,
    StreamRequest, ToolCallDelta,
};

/// Tag used for JSON maps of unknown or provider-specific fields.
pub type JsonMap = serde_json::Map<String, serde_json::Value>;

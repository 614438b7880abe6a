//! An OpenAI-compatible mock Chat Completions provider, for tests, examples, benchmarks and
//! the CLI: deterministic replies, every OpenAI response shape, and fault injection.
//!
//! [`MockServer::start`] binds 127.0.0.1 on a free port (or [`MockConfig::port`]) and serves on
//! a task of the current Tokio runtime; [`MockServer::url`] is the base URL an OpenAI client
//! takes (`http://127.0.0.1:PORT/v1`). Dropping the server, or
//! [`shutdown`](MockServer::shutdown), stops it and closes every connection.
//!
//! ```
//! use chatstack_mock::{MockConfig, MockServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = MockServer::start(MockConfig::default().api_key("sk-test")).await?;
//! let reply: serde_json::Value = reqwest::Client::new()
//!     .post(format!("{}/chat/completions", server.url()))
//!     .bearer_auth("sk-test")
//!     .header("x-mock-reply-tokens", "5")
//!     .json(&serde_json::json!({
//!         "model": "gpt-4o-mini",
//!         "messages": [{"role": "user", "content": "Hello!"}],
//!     }))
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! let text = reply["choices"][0]["message"]["content"].as_str().unwrap();
//! assert_eq!(text.split(' ').count(), 5);
//! assert_eq!(reply["usage"]["completion_tokens"], 5);
//! assert_eq!(server.counters().status(200), 1);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`: unary, or SSE with `"stream": true`.
//! - `GET /v1/models` (OpenAI's list shape) and `GET /v1/models/{id}`.
//! - Anything else: 404 with the OpenAI error envelope; a wrong method: 405.
//!
//! With [`MockConfig::api_key`] set, requests must carry `Authorization: Bearer KEY`; a
//! missing or wrong key gets a 401 with
//! `{"error":{"message":...,"type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`
//! (the message shows the key masked, never whole). A body that is not a valid chat request
//! gets a 400 with the envelope, one over [`MockConfig::max_request_body`] a 413.
//!
//! # Replies
//!
//! A reply is a function of the request (within one server, byte for byte):
//!
//! - Its words are picked by an RNG seeded with an FNV-1a hash of the JSON of `messages`
//!   (and of `seed`, when set); each word is one token. Choice `i` of `n` uses its own seed.
//! - Its length is [`MockConfig::reply_tokens`] (16 by default) or the `x-mock-reply-tokens`
//!   header; a `max_completion_tokens` (else `max_tokens`) below it cuts the reply, with
//!   `finish_reason: "length"`; otherwise `"stop"`.
//! - `n` choices, capped at [`MockConfig::max_choices`] (16).
//! - With `tools` and a `tool_choice` other than `"none"`, each choice calls the named tool or
//!   the first one, with arguments generated from its parameter schema;
//!   `finish_reason: "tool_calls"`. With a `json_object` or `json_schema` `response_format`,
//!   the content is JSON (following the schema). Tool arguments and JSON content count one
//!   token per piece of about four bytes, and a cap cuts them mid-JSON like a real model.
//! - `id` is `chatcmpl-mock` plus the hash; `created` is the server's start time;
//!   `system_fingerprint` is `fp_chatstack_mock`; `stop`, `logprobs` and sampling options are
//!   accepted and ignored.
//! - `usage.prompt_tokens` is [`ChatRequest::estimate_prompt_tokens`]: 3, plus 4 per message,
//!   plus the characters of names, texts, refusals and tool-call names and arguments, and the
//!   serialized `tools`, divided by 4 rounded up, plus 85 (low detail) or 765 per image and 256
//!   per file. `completion_tokens` is the tokens of all choices.
//!
//! A stream sends, per choice, a role chunk (`{"role":"assistant","content":""}`, or the tool
//! call's id and name), then one chunk per token (choices interleaved by index; a tool call's
//! arguments as `tool_calls[{index:0, function:{arguments}}]` deltas), then a chunk with the
//! `finish_reason`, then with `stream_options.include_usage` a chunk with `choices: []` and the
//! usage, then `data: [DONE]`. So `x-mock-reply-tokens: 64` gives 64 content chunks.
//!
//! # Request headers
//!
//! See [`headers`]: `x-mock-fault` (faults, [`Fault`] lists the names),
//! `x-mock-reply-tokens`, `x-mock-latency-ms`, and `x-mock-usage`, a JSON object whose fields
//! (`prompt_tokens`, `completion_tokens`, `cached_tokens`, `cache_write_tokens`,
//! `reasoning_tokens`, `prompt_audio_tokens`, `completion_audio_tokens`, `image_tokens`,
//! `accepted_prediction_tokens`, `rejected_prediction_tokens`) are reported in the usage, so
//! cost tests can exercise every token category. `completion_tokens` then includes the
//! reasoning tokens, and `prompt_tokens` is at least cached plus cache-write tokens. A header
//! that cannot be read is a 400 that names it.
//!
//! # Response headers
//!
//! `x-request-id` (unique), `openai-processing-ms`, and on chat completions
//! `x-ratelimit-limit-requests`, `-limit-tokens`, `-remaining-requests`, `-remaining-tokens`,
//! `-reset-requests` and `-reset-tokens` (OpenAI's duration format, `6m0s`, `20ms`), from a
//! one-minute window ([`RateLimitConfig`]).
//!
//! # Faults
//!
//! By configuration ([`MockConfig::fault`]: a fault and a probability, drawn from an RNG
//! seeded with [`MockConfig::seed`], so "20% of requests get 503" is reproducible) and per
//! request (`x-mock-fault: stall:3, latency:200`). [`Fault`] lists them all. Faults apply to
//! chat completions only, after the key check and body parsing, so a request must be valid
//! to get one; configured rules draw one number each per such request, in rule order, so the
//! same seed and the same order of requests give the same faults.
//!
//! The connection reset is a real TCP RST: the handler never answers, the connection task
//! drops the connection, and its socket gets `SO_LINGER` 0 just before it is closed, so the
//! kernel sends RST and the client reads `ECONNRESET` without a single response byte. Over
//! HTTP/2 that resets the whole connection, other streams on it included. `no_answer` works
//! the same way after the stall cap, with a plain close (FIN) instead of RST.
//!
//! # HTTP/2
//!
//! Connections speak HTTP/1.1 or, with prior knowledge (cleartext `h2c`, as
//! `reqwest::ClientBuilder::http2_prior_knowledge` sends), HTTP/2; the server tells them
//! apart by their first bytes. Endpoints and faults work over both; a body cut short ends
//! its HTTP/2 stream with `RST_STREAM`, and `reset` and `no_answer` end the whole connection.
//!
//! # Counters
//!
//! [`MockServer::counters`] counts requests in total, by model, by status, by fault, resets,
//! streams, requests and streams in flight, requests that carried a credential header,
//! requests over HTTP/2, and bytes written; [`Counters::snapshot`] copies them,
//! [`Counters::reset`] zeroes them.
//!
//! # Time
//!
//! Every wait (latency, token interval, slow first chunk, stall, no answer, drip) uses
//! `tokio::time`, so a test
//! that runs the server in-process on a paused clock (`#[tokio::test(start_paused = true)]`)
//! skips the waits.
//!
//! [`ChatRequest::estimate_prompt_tokens`]: chatstack_proto::ChatRequest::estimate_prompt_tokens
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
mod body;
mod config;
mod counters;
mod fault;
mod reply;
mod server;
mod service;

pub use config::{
    DEFAULT_MAX_CHOICES, DEFAULT_MAX_REQUEST_BODY, DEFAULT_REPLY_TOKENS, DEFAULT_SEED,
    DEFAULT_STALL_CAP, LatencyConfig, MAX_REPLY_TOKENS, MockConfig, RateLimitConfig,
};
pub use counters::{CounterSnapshot, Counters, OTHER_MODELS};
pub use fault::{
    DEFAULT_AFTER_CHUNKS, DEFAULT_DRIP_INTERVAL, DEFAULT_FAULT_DELAY, DEFAULT_INVALID_UTF8_CHUNK,
    DEFAULT_OVERSIZED_BYTES, DEFAULT_RETRY_AFTER, DEFAULT_RETRY_AFTER_MS, Fault, FaultRule,
    ParseFaultError,
};
pub use server::MockServer;

/// The request headers that steer the mock, per request.
pub mod headers {
    /// Faults to inject: a comma-separated list of fault names with optional arguments,
    /// such as `rate_limit:2` or `latency:200, stall:3`. May be repeated. See
    /// [`Fault`](crate::Fault) for the names; an unknown name is a 400.
    pub const FAULT: &str = "x-mock-fault";
    /// The reply length in tokens, instead of the configured one.
    pub const REPLY_TOKENS: &str = "x-mock-reply-tokens";
    /// A delay in milliseconds before answering, instead of the configured latency and jitter.
    pub const LATENCY_MS: &str = "x-mock-latency-ms";
    /// Usage to report, as a flat JSON object such as
    /// `{"cached_tokens":100,"reasoning_tokens":20}` (see the crate docs for the fields).
    pub const USAGE: &str = "x-mock-usage";
}

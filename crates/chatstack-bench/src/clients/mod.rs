//! The four clients under test, behind one small trait ([`BenchClient`]) so that one driver
//! measures them all, and the request they all send.
//!
//! Every client sends the same request: model [`MODEL`], one user message of about forty
//! words ([`PROMPT`]), `max_tokens` [`REPLY_TOKENS`], and when streaming
//! `stream_options.include_usage`. The mock answers with [`REPLY_TOKENS`] tokens, so a stream
//! carries [`STREAM_CHUNKS`] chunks. Every client checks what it got the same way
//! ([`check_reply`], [`check_stream`]).

mod async_openai;
mod floor;
pub mod stack;
mod transport;

use std::future::Future;
use std::sync::Arc;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::ClientArgs;
use crate::driver::{self, Figures, Mode};

/// The model every request names.
pub const MODEL: &str = "gpt-4.1-mini";

/// The API key every client sends and the mock requires.
pub const API_KEY: &str = "sk-bench-0123456789abcdef";

/// The one user message of every request: about forty words.
pub const PROMPT: &str = "Summarise in two short sentences why connection pooling, request \
    pipelining and careful buffer reuse matter for an HTTP client that sends thousands of small \
    JSON requests per second to a language model API, and name one metric that shows each \
    effect.";

/// The reply length: the `max_tokens` of every request and the mock's reply length, so a
/// reply is never cut.
pub const REPLY_TOKENS: u32 = 64;

/// The chunks of one stream: the role chunk, one per token, the finish chunk and the usage
/// chunk (the mock's documented shape).
pub const STREAM_CHUNKS: usize = REPLY_TOKENS as usize + 3;

/// A client under test.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A minimal hand-written client on bare reqwest: the floor the others are measured
    /// against.
    Floor,
    /// chatstack's `HttpTransport` alone, as a tower service.
    Transport,
    /// chatstack's `Client`: the full default stack.
    Stack,
    /// The async-openai crate.
    AsyncOpenai,
}

impl Kind {
    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::Transport => "transport",
            Kind::Stack => "stack",
            Kind::AsyncOpenai => "async-openai",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// What the driver needs of a client. Each call sends [`PROMPT`] to the mock and checks the
/// answer; an error is a message naming what went wrong.
pub trait BenchClient: Send + Sync + 'static {
    /// An open stream that has delivered its first content chunk, held until dropped.
    type Held: Send + 'static;

    /// Sends a unary request and reads the whole response.
    fn unary(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// Sends a streaming request and reads the stream to its end.
    fn stream(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// Sends a streaming request and reads until the first content chunk has arrived; the
    /// stream stays open for as long as the returned value lives.
    fn hold(&self) -> impl Future<Output = Result<Self::Held, String>> + Send;
}

/// Checks a unary answer: some text, and [`REPLY_TOKENS`] completion tokens in the usage.
pub fn check_reply(text: Option<&str>, completion_tokens: Option<u64>) -> Result<(), String> {
    if text.is_none_or(str::is_empty) {
        return Err("the response has no text".to_owned());
    }
    check_usage(completion_tokens)
}

/// Checks a whole stream: some text, [`STREAM_CHUNKS`] chunks, and [`REPLY_TOKENS`]
/// completion tokens in the usage chunk.
pub fn check_stream(
    text: &str,
    chunks: usize,
    completion_tokens: Option<u64>,
) -> Result<(), String> {
    if text.is_empty() {
        return Err("the stream has no text".to_owned());
    }
    if chunks != STREAM_CHUNKS {
        return Err(format!(
            "the stream has {chunks} chunks, not {STREAM_CHUNKS}"
        ));
    }
    check_usage(completion_tokens)
}

/// What the bench reads from a chunk of a client whose stream yields chunks (the transport,
/// async-openai), so that one reader serves both.
pub trait StreamedChunk {
    /// Appends the chunk's content text to `text`.
    fn append_text(self, text: &mut String);
    /// Whether the chunk carries some content text.
    fn has_text(&self) -> bool;
    /// The completion tokens of the chunk's usage, if it has one.
    fn completion_tokens(&self) -> Option<u64>;
}

/// Reads a stream of chunks to its end and checks it ([`check_stream`]).
pub async fn read_chunks<S, C, E>(mut stream: S) -> Result<(), String>
where
    S: futures_util::Stream<Item = Result<C, E>> + Unpin,
    C: StreamedChunk,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;

    let mut text = String::new();
    let mut chunks = 0;
    let mut completion_tokens = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| error.to_string())?;
        chunks += 1;
        completion_tokens = chunk.completion_tokens().or(completion_tokens);
        chunk.append_text(&mut text);
    }
    check_stream(&text, chunks, completion_tokens)
}

/// Reads a stream of chunks up to its first content text and hands the stream back, held.
pub async fn hold_after_text<S, C, E>(mut stream: S) -> Result<S, String>
where
    S: futures_util::Stream<Item = Result<C, E>> + Unpin,
    C: StreamedChunk,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;

    while let Some(chunk) = stream.next().await {
        if chunk.map_err(|error| error.to_string())?.has_text() {
            return Ok(stream);
        }
    }
    Err("the stream ended before its first content chunk".to_owned())
}

/// Checks that the usage reports [`REPLY_TOKENS`] completion tokens.
fn check_usage(completion_tokens: Option<u64>) -> Result<(), String> {
    match completion_tokens {
        Some(tokens) if tokens == u64::from(REPLY_TOKENS) => Ok(()),
        Some(tokens) => Err(format!(
            "the usage says {tokens} completion tokens, not {REPLY_TOKENS}"
        )),
        None => Err("the response has no usage".to_owned()),
    }
}

/// The hidden `client` subcommand: builds the client on a multi-thread runtime with the
/// default worker count, measures it, and prints the figures as one JSON line.
pub fn measure(args: &ClientArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let figures = runtime
        .block_on(async {
            match args.kind {
                Kind::Floor => drive(floor::Floor::new(&args.url)?, args).await,
                Kind::Transport => drive(transport::Transport::new(&args.url)?, args).await,
                Kind::Stack => {
                    drive(stack::Stack::new(&args.url, &args.stack_without)?, args).await
                }
                Kind::AsyncOpenai => drive(async_openai::AsyncOpenai::new(&args.url)?, args).await,
            }
        })
        .map_err(|error| format!("{} {}: {error}", args.kind, args.mode))?;
    let line = serde_json::to_string(&figures)
        .map_err(|error| format!("cannot encode the figures: {error}"))?;
    println!("{line}");
    Ok(())
}

/// Runs the driver of `args.mode` over `client`.
async fn drive<C: BenchClient>(client: C, args: &ClientArgs) -> Result<Figures, String> {
    let client = Arc::new(client);
    match args.mode {
        Mode::Unary => driver::load(client, false, args.requests, args.concurrency).await,
        Mode::Stream => driver::load(client, true, args.requests, args.concurrency).await,
        Mode::Hold => driver::hold(client, args.inflight).await,
    }
}

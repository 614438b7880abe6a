//! chatstack's full default stack: a `chatstack::Client` with its defaults (trace, cost,
//! retry, circuit breaker, timeouts), auth, and a rate limit whose quota the run never
//! reaches, so that the limiter does its bookkeeping on every request but never waits.
//! `--stack-without` leaves layers out, to measure what each costs over the wire.

use chatstack::middleware::auth::ApiKey;
use chatstack::middleware::rate_limit::RateLimitConfig;
use chatstack::{ChatCompletionStream, ChatEvent, ChatRequest, Client, ResponseExt, StreamRequest};
use clap::ValueEnum;
use futures_util::StreamExt;

use super::transport::requests;
use super::{API_KEY, BenchClient, check_reply, check_stream};

/// Requests per minute the rate limiter allows: never reached.
const REQUESTS_PER_MINUTE: u64 = 100_000_000;

/// Tokens per minute the rate limiter allows: never reached.
const TOKENS_PER_MINUTE: u64 = 100_000_000_000;

/// A layer of the default stack that `--stack-without` can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layer {
    /// The trace layer.
    Trace,
    /// The cost layer (responses then carry no cost).
    Cost,
    /// The retry layer.
    Retry,
    /// The circuit breaker.
    Breaker,
    /// The rate limiter.
    RateLimit,
    /// The timeout layer.
    Timeout,
}

impl Layer {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Cost => "cost",
            Self::Retry => "retry",
            Self::Breaker => "breaker",
            Self::RateLimit => "rate-limit",
            Self::Timeout => "timeout",
        }
    }
}

/// The client and the requests it sends.
pub struct Stack {
    /// The client.
    client: Client,
    /// The unary request; each call sends a clone.
    unary: ChatRequest,
    /// The streaming request; each call sends a clone.
    stream: StreamRequest,
    /// Whether responses must carry a cost (the cost layer is in the stack).
    costed: bool,
}

impl Stack {
    /// A client for the mock at `base_url`, with the default stack less the layers in
    /// `without`.
    pub fn new(base_url: &str, without: &[Layer]) -> Result<Self, String> {
        let mut builder = Client::builder()
            .base_url(base_url)
            .api_key(ApiKey::new(API_KEY).map_err(|error| error.to_string())?);
        if !without.contains(&Layer::RateLimit) {
            builder = builder.rate_limit(
                RateLimitConfig::default()
                    .requests_per_minute(REQUESTS_PER_MINUTE)
                    .tokens_per_minute(TOKENS_PER_MINUTE),
            );
        }
        for layer in without {
            builder = match layer {
                Layer::Trace => builder.no_trace(),
                Layer::Cost => builder.no_cost(),
                Layer::Retry => builder.no_retry(),
                Layer::Breaker => builder.no_circuit_breaker(),
                Layer::Timeout => builder.no_timeout(),
                Layer::RateLimit => builder,
            };
        }
        let client = builder.build().map_err(|error| error.to_string())?;
        let (unary, stream) = requests();
        Ok(Self {
            client,
            unary,
            stream,
            costed: !without.contains(&Layer::Cost),
        })
    }

    /// Sends the streaming request; returns once the stream has started.
    async fn open(&self) -> Result<ChatCompletionStream, String> {
        self.client
            .stream(self.stream.clone())
            .await
            .map_err(|error| error.to_string())
    }
}

impl BenchClient for Stack {
    type Held = ChatCompletionStream;

    async fn unary(&self) -> Result<(), String> {
        let response = self
            .client
            .send(self.unary.clone())
            .await
            .map_err(|error| error.to_string())?;
        if self.costed && response.cost().is_none() {
            return Err("the response has no cost".to_owned());
        }
        check_reply(
            response.text(),
            response.usage.map(|usage| usage.completion_tokens),
        )
    }

    async fn stream(&self) -> Result<(), String> {
        let mut stream = self.open().await?;
        let mut text = String::new();
        let mut chunks = 0;
        while let Some(event) = stream.next().await {
            match event.map_err(|error| error.to_string())? {
                ChatEvent::Chunk(chunk) => {
                    chunks += 1;
                    text.extend(chunk.text());
                }
                ChatEvent::Done(response) => {
                    if self.costed && response.cost().is_none() {
                        return Err("the stream's response has no cost".to_owned());
                    }
                    return check_stream(
                        &text,
                        chunks,
                        response.usage.map(|usage| usage.completion_tokens),
                    );
                }
            }
        }
        Err("the stream ended without its final response".to_owned())
    }

    async fn hold(&self) -> Result<Self::Held, String> {
        let mut stream = self.open().await?;
        while let Some(event) = stream.next().await {
            let event = event.map_err(|error| error.to_string())?;
            if event.text().is_some_and(|text| !text.is_empty()) {
                return Ok(stream);
            }
        }
        Err("the stream ended before its first content chunk".to_owned())
    }
}

//! [`Client`]: the default stack, ready to call.
//!
//! A [`Client`] holds two tower services built from the same layers over one
//! [`HttpTransport`](chatstack_transport::HttpTransport): a unary one
//! ([`ChatService`]: `ChatRequest` → `ChatResponse`) and a streaming one ([`StreamService`]:
//! `StreamRequest` → `ChatStream`). Its calls are thin: [`Client::chat`] for a prompt in and
//! text out, [`Client::send`] for a whole response with its metadata, [`Client::stream`]
//! for chunks as they come and the whole response at the end. [`Client::service`] and
//! [`Client::stream_service`] hand out the stacks themselves, for tower code.

mod builder;
mod stream;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::batch::Batch;
use chatstack_middleware::budget::{BudgetLayer, BudgetSnapshot};
use chatstack_middleware::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use chatstack_middleware::cost::CostLedger;
use chatstack_middleware::rate_limit::{KeyStatus, RateLimitLayer};
use chatstack_proto::{
    ChatRequest, ChatResponse, ChatStream, Error, ErrorKind, FinishReason, Message, StreamRequest,
};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

pub use builder::{
    API_KEY_VAR, BASE_URL_VAR, ClientBuilder, DEFAULT_FIRST_CHUNK_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
};
pub use stream::{ChatCompletionStream, ChatEvent};

/// The client's budget layer: in process, or (with the `redis` feature) either that or one
/// shared through Redis.
#[cfg(not(feature = "redis"))]
type ClientBudget = BudgetLayer;
#[cfg(feature = "redis")]
type ClientBudget =
    tower::util::Either<BudgetLayer, BudgetLayer<chatstack_middleware::redis::RedisBudget>>;

/// The client's unary stack as a tower service: `ChatRequest` in, `ChatResponse` out.
/// Cloneable, `Send + Sync`; clones share the client's layers' state.
pub type ChatService = BoxCloneSyncService<ChatRequest, ChatResponse, Error>;

/// The client's streaming stack as a tower service: `StreamRequest` in, `ChatStream` out.
/// Cloneable, `Send + Sync`; clones share the client's layers' state.
pub type StreamService = BoxCloneSyncService<StreamRequest, ChatStream, Error>;

/// An LLM chat client: the default chatstack stack over HTTP, ready to call.
///
/// Build one with [`Client::builder`] or [`Client::from_env`]. Cheap to clone (one `Arc`):
/// clones share the connection pool, the rate limiters, the circuits, the retry budget,
/// the spending budget and the cost ledger, and so do the unary and streaming calls of one
/// client.
///
/// ```
/// use chatstack::{ChatEvent, ChatRequest, Client, Message, ResponseExt};
/// use chatstack::middleware::auth::ApiKey;
/// use chatstack_mock::{MockConfig, MockServer};
/// use futures_util::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mock = MockServer::start(MockConfig::default().api_key("sk-mock-0123456789")).await?;
/// let client = Client::builder()
///     .base_url(mock.url())
///     .api_key(ApiKey::new("sk-mock-0123456789")?)
///     .build()?;
///
/// // Text in, text out.
/// let text = client.chat("gpt-4.1", "Say hello").await?;
/// assert!(!text.is_empty());
///
/// // The whole response, with usage, cost, attempts, latency and request id.
/// let request = ChatRequest::new("gpt-4.1", [Message::user("Say hello")]).max_completion_tokens(64);
/// let response = client.send(request.clone()).await?;
/// let cost = response.cost().expect("priced by the cost layer");
/// assert_eq!(response.meta.attempts, 1);
/// assert!(response.meta.request_id.is_some());
///
/// // A stream: chunks as they come, then the whole response, priced the same.
/// let mut stream = client.stream(request).await?;
/// let mut streamed = String::new();
/// while let Some(event) = stream.next().await {
///     match event? {
///         ChatEvent::Chunk(chunk) => streamed.extend(chunk.text()),
///         ChatEvent::Done(done) => {
///             assert_eq!(done.text(), Some(streamed.as_str()));
///             assert_eq!(done.usage, response.usage);
///             assert_eq!(done.cost(), Some(cost.clone()));
///         }
///     }
/// }
/// assert_eq!(client.ledger().snapshot().total.requests, 3);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    unary: ChatService,
    stream: StreamService,
    url: String,
    ledger: CostLedger,
    budget: Option<ClientBudget>,
    circuit_breaker: Option<CircuitBreakerLayer>,
    rate_limit: Option<RateLimitLayer>,
}

impl Client {
    /// A builder with the defaults; see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client with the default stack, the key in `OPENAI_API_KEY` (trimmed) and, when
    /// `OPENAI_BASE_URL` is set and not blank, that base URL (else OpenAI's). For more
    /// settings, start from [`ClientBuilder::from_env`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when `OPENAI_API_KEY` is not set or empty (the message says
    /// so, naming the variable), or the base URL does not parse.
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env()?.build()
    }

    /// Sends `prompt` as one user message to `model` and returns the text of the answer.
    ///
    /// # Errors
    ///
    /// Any error of [`send`](Self::send); and, when the response has no text, an error of
    /// kind [`ErrorKind::ContentFilter`] (filtered, or the model refused) or
    /// [`ErrorKind::Provider`] (no choices, tool calls only, ...), whose [`NoText`] source
    /// holds the response.
    pub async fn chat(
        &self,
        model: impl Into<String>,
        prompt: impl Into<String>,
    ) -> Result<String, Error> {
        let request = ChatRequest::new(model, [Message::user(prompt)]);
        into_text(self.send(request).await?)
    }

    /// Sends a request through the unary stack and returns the response with its metadata:
    /// `usage`, and in `meta` the attempts made, the latency, the provider's request id and
    /// rate-limit headers, and the cost (read it with
    /// [`ResponseExt::cost`](crate::ResponseExt::cost)).
    ///
    /// # Errors
    ///
    /// The typed [`Error`] of the last attempt, or of the layer that refused the request
    /// (budget, circuit open, rate-limit wait).
    pub async fn send(&self, request: ChatRequest) -> Result<ChatResponse, Error> {
        self.service().oneshot(request).await
    }

    /// Sends a request through the streaming stack. Returns once the stream has started
    /// (with the default timeouts: once its first chunk has arrived, so a failure before it
    /// is retried like a failed call); then yields each chunk as a [`ChatEvent::Chunk`] and,
    /// last, the whole response as a [`ChatEvent::Done`], with the same usage and cost a
    /// unary call would carry. `stream_options.include_usage` is set for you (by the cost
    /// layer).
    ///
    /// # Errors
    ///
    /// The call fails as [`send`](Self::send) does; an error after the stream started is
    /// its last item.
    pub async fn stream(
        &self,
        request: impl Into<StreamRequest>,
    ) -> Result<ChatCompletionStream, Error> {
        let stream = self.stream_service().oneshot(request.into()).await?;
        Ok(ChatCompletionStream::new(stream))
    }

    /// Runs `requests` through the client, at most `concurrency` at a time: see the
    /// [`batch` module](mod@crate::batch). The requests are pulled lazily (never collected up
    /// front), the results come in completion order tagged with their input index (`.in_order()`
    /// restores input order), every request yields exactly one item, and dropping the batch
    /// cancels what is in flight.
    pub fn batch<I>(
        &self,
        requests: I,
        concurrency: usize,
    ) -> Batch<ChatService, futures_util::stream::Iter<I::IntoIter>>
    where
        I: IntoIterator<Item = ChatRequest>,
    {
        crate::batch::batch(self.service(), requests, concurrency)
    }

    /// Like [`batch`](Self::batch), for requests that arrive as a stream.
    pub fn batch_stream<St>(&self, requests: St, concurrency: usize) -> Batch<ChatService, St>
    where
        St: futures_core::Stream<Item = ChatRequest>,
    {
        crate::batch::batch_stream(self.service(), requests, concurrency)
    }

    /// The unary stack, as a tower service (a clone: cheap, and sharing the client's state).
    pub fn service(&self) -> ChatService {
        self.inner.unary.clone()
    }

    /// The streaming stack, as a tower service (a clone: cheap, and sharing the client's
    /// state).
    pub fn stream_service(&self) -> StreamService {
        self.inner.stream.clone()
    }

    /// The ledger of what the client's responses cost, by model and by tag (empty with
    /// [`ClientBuilder::no_cost`]).
    pub fn ledger(&self) -> &CostLedger {
        &self.inner.ledger
    }

    /// The spending budget's figures now (cap, spent, reserved), when a budget is set.
    pub fn budget(&self) -> Option<BudgetSnapshot> {
        #[cfg(not(feature = "redis"))]
        return self.inner.budget.as_ref().map(BudgetLayer::snapshot);
        #[cfg(feature = "redis")]
        self.inner.budget.as_ref().map(|budget| match budget {
            tower::util::Either::Left(layer) => layer.snapshot(),
            tower::util::Either::Right(layer) => layer.snapshot(),
        })
    }

    /// The state of the circuit of `key` (by default a model), when the client has a
    /// circuit breaker.
    pub fn circuit_state(&self, key: &str) -> Option<CircuitState> {
        self.inner
            .circuit_breaker
            .as_ref()
            .map(|layer| layer.state(key))
    }

    /// What the rate limiter of `key` (by default a model) looks like now; `None` without a
    /// rate limit, or for a key not used yet.
    pub fn rate_limit_status(&self, key: &str) -> Option<KeyStatus> {
        self.inner.rate_limit.as_ref()?.status(key)
    }

    /// The URL requests are sent to.
    pub fn url(&self) -> &str {
        &self.inner.url
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.url)
            .field("budget", &self.budget())
            .field("circuit_breaker", &self.inner.circuit_breaker.is_some())
            .field("rate_limit", &self.inner.rate_limit.is_some())
            .finish_non_exhaustive()
    }
}

/// The text of the first choice, or an error that says why there is none and keeps the
/// response in a [`NoText`].
pub(crate) fn into_text(mut response: ChatResponse) -> Result<String, Error> {
    let text = response
        .choices
        .first_mut()
        .and_then(|choice| choice.message.content.take());
    if let Some(text) = text {
        return Ok(text);
    }
    let (kind, why) = match response.first_choice() {
        None => (ErrorKind::Provider, "it has no choices".to_owned()),
        Some(choice) => match (&choice.message.refusal, &choice.finish_reason) {
            (Some(refusal), _) => (
                ErrorKind::ContentFilter,
                format!("the model refused: {refusal}"),
            ),
            (None, Some(FinishReason::ContentFilter)) => (
                ErrorKind::ContentFilter,
                "its content was filtered".to_owned(),
            ),
            (None, _) if !choice.message.tool_calls.is_empty() => (
                ErrorKind::Provider,
                format!(
                    "the model called tools instead ({} tool calls)",
                    choice.message.tool_calls.len()
                ),
            ),
            (None, Some(reason)) => (
                ErrorKind::Provider,
                format!("its first choice has no content (finish reason `{reason}`)"),
            ),
            (None, None) => (
                ErrorKind::Provider,
                "its first choice has no content".to_owned(),
            ),
        },
    };
    let mut error = Error::new(kind, format!("the response has no text: {why}"))
        .with_attempts(response.meta.attempts);
    if let Some(id) = &response.meta.request_id {
        error = error.with_request_id(id.clone());
    }
    Err(error.with_source(NoText {
        response: Box::new(response),
    }))
}

/// The source of the error [`Client::chat`] and
/// [`ResponseExt::into_text`](crate::ResponseExt::into_text) return for a response without
/// text: it holds the response, so nothing the provider sent (tool calls, a refusal, the
/// usage and cost) is lost.
///
/// ```
/// use chatstack::{ChatResponse, NoText, ResponseExt};
///
/// let error = ChatResponse::default().into_text().unwrap_err();
/// assert!(error.to_string().contains("no choices"), "{error}");
/// let no_text = NoText::find(&error).unwrap();
/// assert!(no_text.response().choices.is_empty());
/// ```
#[derive(Debug)]
pub struct NoText {
    response: Box<ChatResponse>,
}

impl NoText {
    /// The response without text, if `error` is about one.
    pub fn find(error: &Error) -> Option<&NoText> {
        StdError::source(error)?.downcast_ref()
    }

    /// The response that had no text.
    pub fn response(&self) -> &ChatResponse {
        &self.response
    }
}

impl fmt::Display for NoText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response `{}` has no text", self.response.id)
    }
}

impl StdError for NoText {}

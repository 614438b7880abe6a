//! Streaming: chunk types, the sans-I/O [`StreamDecoder`] that turns SSE bytes into chunks,
//! and [`ChatStream`], the stream a streaming service returns.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::ChatAccumulator;
use crate::error::{Error, ErrorKind, ProviderError};
use crate::lenient::{lenient_option, lenient_struct, lenient_text, lenient_u64, null_as_empty};
use crate::meta::ResponseMeta;
use crate::request::{ChatRequest, Role, ServiceTier};
use crate::response::{ChatResponse, FinishReason, Logprobs, Usage, finish_reason, usage_option};
use crate::seam::{Completion, CompletionHook};
use crate::sse::{SseDecoder, SseError, SseEvent};

/// The searcher for `"error"` in a chunk's data, which marks a possible error envelope. Built
/// once: `memmem::find` would build a searcher for every chunk, which costs more than the
/// search.
static ERROR_KEY: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));

/// A request to be answered as a stream of chunks.
///
/// A newtype over [`ChatRequest`] so that one service can answer `ChatRequest` with a
/// [`ChatResponse`] and `StreamRequest` with a [`ChatStream`], and layers can tell them apart
/// by type. It dereferences to the inner request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamRequest(pub ChatRequest);

impl From<ChatRequest> for StreamRequest {
    fn from(request: ChatRequest) -> Self {
        Self(request)
    }
}

impl Deref for StreamRequest {
    type Target = ChatRequest;
    fn deref(&self) -> &ChatRequest {
        &self.0
    }
}

impl DerefMut for StreamRequest {
    fn deref_mut(&mut self) -> &mut ChatRequest {
        &mut self.0
    }
}

/// One chunk of a streamed response (`chat.completion.chunk`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// The completion id, the same in every chunk.
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds when the completion was created.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// Deltas per choice. Empty in a usage-only chunk or a content-filter chunk.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub choices: Vec<ChunkChoice>,
    /// Usage: on the last chunk with `stream_options.include_usage` (some servers send it
    /// on every chunk, cumulatively). `usage: {}` decodes as `None`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "usage_option"
    )]
    pub usage: Option<Usage>,
    /// The backend configuration fingerprint.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub system_fingerprint: Option<String>,
    /// The tier that serves the request.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub service_tier: Option<ServiceTier>,
}

impl ChatChunk {
    /// The content text of all choices in this chunk, concatenated (usually one choice).
    pub fn text(&self) -> impl Iterator<Item = &str> {
        self.choices
            .iter()
            .filter_map(|choice| choice.delta.content.as_deref())
    }

    /// A single chunk that carries a whole response: what a server that ignored
    /// `stream: true` and answered with plain JSON amounts to.
    pub fn from_response(response: ChatResponse) -> Self {
        Self {
            id: response.id,
            object: "chat.completion.chunk".to_owned(),
            created: response.created,
            model: response.model,
            choices: response
                .choices
                .into_iter()
                .map(|choice| ChunkChoice {
                    index: choice.index,
                    delta: Delta {
                        role: Some(choice.message.role),
                        content: choice.message.content,
                        refusal: choice.message.refusal,
                        reasoning_content: choice.message.reasoning_content,
                        tool_calls: choice
                            .message
                            .tool_calls
                            .into_iter()
                            .enumerate()
                            .map(|(index, call)| ToolCallDelta {
                                index: index as u32,
                                id: Some(call.id),
                                kind: Some(call.kind),
                                function: Some(FunctionCallDelta {
                                    name: Some(call.function.name),
                                    arguments: Some(call.function.arguments),
                                }),
                            })
                            .collect(),
                    },
                    finish_reason: choice.finish_reason,
                    logprobs: choice.logprobs,
                })
                .collect(),
            usage: response.usage,
            system_fingerprint: response.system_fingerprint,
            service_tier: response.service_tier,
        }
    }
}

/// The delta of one choice in a chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice this delta extends.
    #[serde(default)]
    pub index: u32,
    /// What the choice gained. Missing or `null` decodes as an empty delta.
    #[serde(default, deserialize_with = "lenient_struct")]
    pub delta: Delta,
    /// Set on the choice's last chunk; `""` decodes as `None`.
    #[serde(default, deserialize_with = "finish_reason")]
    pub finish_reason: Option<FinishReason>,
    /// Log probabilities of this delta's tokens.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_option"
    )]
    pub logprobs: Option<Logprobs>,
}

/// What a choice gained in one chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The role, on the first chunk.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub role: Option<Role>,
    /// More text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub content: Option<String>,
    /// More refusal text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub refusal: Option<String>,
    /// More reasoning text (DeepSeek).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub reasoning_content: Option<String>,
    /// Pieces of tool calls, by index.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A piece of a tool call: the first piece of a call carries its id and name, later pieces
/// carry more of the arguments (some servers repeat id and name in every piece).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call of the choice this extends.
    #[serde(default)]
    pub index: u32,
    /// The call id.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub id: Option<String>,
    /// Always `function`.
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub kind: Option<String>,
    /// The function name and a piece of the arguments.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_option"
    )]
    pub function: Option<FunctionCallDelta>,
}

/// A piece of a function call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The name (first piece, or every piece on some servers).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub name: Option<String>,
    /// More argument text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_text"
    )]
    pub arguments: Option<String>,
}

/// What the [`StreamDecoder`] makes of the bytes of a streamed response.
// A chunk is moved once from the decoder to the caller; boxing it would add an allocation per
// chunk on the hottest path to save stack space that is never held for long.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum StreamEvent {
    /// A chunk.
    Chunk(ChatChunk),
    /// `data: [DONE]`: the stream completed.
    Done,
    /// The stream failed: an error event, a chunk that could not be decoded, an event past
    /// the size limit, or (from [`StreamDecoder::finish`]) an end without `[DONE]`.
    Error(Error),
}

/// The most bytes of a non-SSE body the decoder keeps to read it as JSON at the end.
const RAW_PREFIX_LIMIT: usize = 64 * 1024;

/// A sans-I/O decoder of a streamed Chat Completions body: feed it bytes as they arrive,
/// take [`StreamEvent`]s out.
///
/// It reads `data:` events as chunks, `data: [DONE]` as the end, and `event: error` or a
/// `data: {"error":...}` payload as a provider error. After [`finish`](Self::finish) it tells
/// a stream that completed from one that ended early, and reads a body that was plain JSON
/// (an error envelope, or a whole response from a server that ignored `stream: true`).
///
/// ```
/// use chatstack_proto::{StreamDecoder, StreamEvent};
///
/// let mut decoder = StreamDecoder::new();
/// decoder.feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DO");
/// decoder.feed(b"NE]\n\n");
/// decoder.finish();
/// let mut text = String::new();
/// let mut done = false;
/// while let Some(event) = decoder.next_event() {
///     match event {
///         StreamEvent::Chunk(chunk) => text.extend(chunk.text()),
///         StreamEvent::Done => done = true,
///         StreamEvent::Error(error) => panic!("{error}"),
///     }
/// }
/// assert_eq!((text.as_str(), done), ("Hi", true));
/// ```
#[derive(Debug, Default)]
pub struct StreamDecoder {
    sse: SseDecoder,
    pending: VecDeque<StreamEvent>,
    raw_prefix: Vec<u8>,
    raw_prefix_overflowed: bool,
    done: bool,
    failed: bool,
    finished: bool,
    chunks: u64,
}

impl StreamDecoder {
    /// A decoder with the default event size limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refuses single events larger than `limit` bytes.
    pub fn with_max_event_size(limit: usize) -> Self {
        Self {
            sse: SseDecoder::with_max_event_size(limit),
            ..Self::default()
        }
    }

    /// Feeds bytes read from the body.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.done || self.failed {
            return;
        }
        if self.sse.events_dispatched() == 0 && !self.raw_prefix_overflowed {
            if self.raw_prefix.len() + bytes.len() <= RAW_PREFIX_LIMIT {
                self.raw_prefix.extend_from_slice(bytes);
            } else {
                self.raw_prefix_overflowed = true;
                self.raw_prefix = Vec::new();
            }
        }
        self.sse.feed(bytes);
        self.drain_sse();
    }

    /// Marks the end of the body. Queues what is left, and an [`ErrorKind::Incomplete`]
    /// error if the stream neither completed with `[DONE]` nor failed with an error.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if !self.done && !self.failed {
            if let Some(event) = self.sse.finish() {
                // The last event had no closing blank line: either a lenient server, or a
                // body cut inside the event. A payload that does not decode is the latter.
                self.decode(&event);
                if let Some(StreamEvent::Error(error)) = self.pending.back_mut() {
                    if error.is_decode() {
                        *error = Error::new(
                            ErrorKind::Incomplete,
                            "the stream broke off inside an event",
                        );
                    }
                }
            }
        }
        if self.done || self.failed {
            return;
        }
        if self.sse.events_dispatched() == 0 && !self.raw_prefix.is_empty() {
            if let Some(event) = self.read_plain_json() {
                self.push(event);
                if !self.failed {
                    self.push(StreamEvent::Done);
                }
                return;
            }
        }
        let message = if self.chunks == 0 {
            "the stream ended before any chunk"
        } else {
            "the stream ended without [DONE]"
        };
        self.push(StreamEvent::Error(Error::new(
            ErrorKind::Incomplete,
            message,
        )));
    }

    /// The next decoded event, or `None` until more bytes are fed.
    pub fn next_event(&mut self) -> Option<StreamEvent> {
        self.pending.pop_front()
    }

    /// Whether `data: [DONE]` was seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the stream reached a terminal state: done, failed, or finished.
    pub fn is_terminated(&self) -> bool {
        self.done || self.failed || self.finished
    }

    /// How many chunks were decoded.
    pub fn chunks_decoded(&self) -> u64 {
        self.chunks
    }

    fn drain_sse(&mut self) {
        while !self.done && !self.failed {
            match self.sse.next_event() {
                Some(Ok(event)) => {
                    self.decode(&event);
                    // The event's data buffer takes the next event's data.
                    self.sse.recycle(event.data);
                }
                Some(Err(SseError::EventTooLarge { limit })) => {
                    self.push(StreamEvent::Error(Error::new(
                        ErrorKind::BodyTooLarge,
                        format!("a stream event passed the {limit}-byte limit"),
                    )));
                }
                None => break,
            }
        }
        if self.sse.events_dispatched() > 0 && !self.raw_prefix.is_empty() {
            self.raw_prefix = Vec::new();
        }
    }

    /// Decodes one event into the queue.
    fn decode(&mut self, event: &SseEvent) {
        let data = event.data.trim_ascii();
        if event.is_done() {
            self.push(StreamEvent::Done);
            return;
        }
        if event.event.as_deref() == Some("error") {
            let provider = ProviderError::from_body(data.as_bytes()).unwrap_or(ProviderError {
                message: "the server sent an error event".to_owned(),
                ..ProviderError::default()
            });
            self.push(StreamEvent::Error(Error::from_provider(provider)));
            return;
        }
        if data.is_empty() {
            return;
        }
        if ERROR_KEY.find(data.as_bytes()).is_some() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(data) {
                if value.get("error").is_some_and(|e| !e.is_null())
                    || value.get("type").and_then(|t| t.as_str()) == Some("error")
                {
                    if let Some(provider) = ProviderError::from_json(&value) {
                        self.push(StreamEvent::Error(Error::from_provider(provider)));
                        return;
                    }
                }
            }
        }
        match serde_json::from_str::<ChatChunk>(data) {
            Ok(chunk) => self.push(StreamEvent::Chunk(chunk)),
            Err(error) => self.push(StreamEvent::Error(Error::decode(error, data.as_bytes()))),
        }
    }

    fn read_plain_json(&mut self) -> Option<StreamEvent> {
        let raw = std::mem::take(&mut self.raw_prefix);
        let value: serde_json::Value = serde_json::from_slice(&raw).ok()?;
        if value.get("choices").is_some() {
            let response: ChatResponse = serde_json::from_value(value).ok()?;
            return Some(StreamEvent::Chunk(ChatChunk::from_response(response)));
        }
        ProviderError::from_json(&value)
            .map(|provider| StreamEvent::Error(Error::from_provider(provider)))
    }

    fn push(&mut self, event: StreamEvent) {
        match &event {
            StreamEvent::Chunk(_) => self.chunks += 1,
            StreamEvent::Done => self.done = true,
            StreamEvent::Error(_) => self.failed = true,
        }
        self.pending.push_back(event);
    }
}

type BoxChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Error>> + Send>>;

/// The response of a streaming service: a `Stream` of [`ChatChunk`]s with the response
/// metadata beside it.
///
/// The stream ends after its first error. Layers observe its end with
/// [`LlmResponse::on_complete`](crate::LlmResponse::on_complete): the hooks run once, when
/// the stream ends, fails, or is dropped early (then with [`Completion::cancelled`] set).
///
/// ```
/// # futures_util::FutureExt::now_or_never(async {
/// use chatstack_proto::{ChatChunk, ChatStream, ResponseMeta};
///
/// let chunk: ChatChunk = serde_json::from_str(
///     r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":"stop"}]}"#,
/// ).unwrap();
/// let stream = ChatStream::new(futures_util::stream::iter([Ok(chunk)]), ResponseMeta::default());
/// let response = stream.collect_response().await.unwrap();
/// assert_eq!(response.text(), Some("Hello"));
/// # }).unwrap();
/// ```
pub struct ChatStream {
    inner: BoxChunkStream,
    /// The first chunk, read ahead by [`ChatStream::first_chunk_ready`].
    peeked: Option<ChatChunk>,
    meta: ResponseMeta,
    hooks: Vec<CompletionHook>,
    progress: Progress,
}

/// What the stream has shown so far, for completion hooks.
#[derive(Default)]
struct Progress {
    usage: Option<Usage>,
    model: String,
    id: String,
    finish_reasons: Vec<FinishReason>,
    chunks: u64,
    ended: bool,
}

impl ChatStream {
    /// Wraps a stream of chunks.
    pub fn new(
        stream: impl Stream<Item = Result<ChatChunk, Error>> + Send + 'static,
        meta: ResponseMeta,
    ) -> Self {
        Self {
            inner: Box::pin(stream),
            peeked: None,
            meta,
            hooks: Vec::new(),
            progress: Progress::default(),
        }
    }

    /// The response metadata.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// The response metadata, to change.
    pub fn meta_mut(&mut self) -> &mut ResponseMeta {
        &mut self.meta
    }

    /// How many chunks have been yielded so far.
    pub fn chunks_yielded(&self) -> u64 {
        self.progress.chunks
    }

    /// Replaces the inner stream with `f(inner)`, keeping metadata and hooks: how a layer
    /// adds per-chunk behaviour (idle timeouts, say).
    pub fn map_inner<F, S>(mut self, f: F) -> Self
    where
        F: FnOnce(BoxChunkStream) -> S,
        S: Stream<Item = Result<ChatChunk, Error>> + Send + 'static,
    {
        self.wrap_inner(f);
        self
    }

    /// Replaces the inner stream with `f(inner)` in place; see [`map_inner`](Self::map_inner).
    pub fn wrap_inner<F, S>(&mut self, f: F)
    where
        F: FnOnce(BoxChunkStream) -> S,
        S: Stream<Item = Result<ChatChunk, Error>> + Send + 'static,
    {
        let inner = std::mem::replace(&mut self.inner, Box::pin(EmptyStream));
        self.inner = Box::pin(f(inner));
    }

    /// Waits until the first chunk has arrived (and keeps it, to be yielded first), or the
    /// stream has ended. A stream that fails before its first chunk returns that error here,
    /// so a retry layer can tell "failed before the caller saw anything" (safe to retry) from
    /// a failure mid-stream (not safe). Calling it again, or after chunks were read, returns
    /// at once.
    ///
    /// Cancel-safe: the future holds nothing between polls (a chunk is stored only once it
    /// has arrived), so dropping it unfinished, or creating it afresh on every poll, loses
    /// nothing.
    pub async fn first_chunk_ready(&mut self) -> Result<(), Error> {
        if self.peeked.is_some() || self.progress.chunks > 0 || self.progress.ended {
            return Ok(());
        }
        let first = std::future::poll_fn(|cx| self.inner.as_mut().poll_next(cx)).await;
        match first {
            Some(Ok(chunk)) => {
                self.peeked = Some(chunk);
                Ok(())
            }
            Some(Err(error)) => {
                self.end(Some(&error), false);
                Err(error)
            }
            None => {
                self.end(None, false);
                Ok(())
            }
        }
    }

    /// Reads the whole stream and folds it into one response, with the metadata attached.
    pub async fn collect_response(mut self) -> Result<ChatResponse, Error> {
        let mut accumulator = ChatAccumulator::new();
        while let Some(item) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_next(cx)).await {
            accumulator.push(&item?);
        }
        let mut response = accumulator.finish();
        response.meta = std::mem::take(&mut self.meta);
        Ok(response)
    }

    pub(crate) fn add_hook(&mut self, hook: CompletionHook) {
        if self.progress.ended {
            let completion = self.progress.completion(None, false);
            hook(&completion);
        } else {
            self.hooks.push(hook);
        }
    }

    fn end(&mut self, error: Option<&Error>, cancelled: bool) {
        if self.progress.ended {
            return;
        }
        self.progress.ended = true;
        let completion = self.progress.completion(error, cancelled);
        for hook in self.hooks.drain(..) {
            hook(&completion);
        }
    }
}

impl Progress {
    fn record(&mut self, chunk: &ChatChunk) {
        self.chunks += 1;
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if self.model.is_empty() && !chunk.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        if self.id.is_empty() && !chunk.id.is_empty() {
            self.id.clone_from(&chunk.id);
        }
        for choice in &chunk.choices {
            if let Some(reason) = &choice.finish_reason {
                self.finish_reasons.push(reason.clone());
            }
        }
    }

    fn completion<'a>(&'a self, error: Option<&'a Error>, cancelled: bool) -> Completion<'a> {
        Completion {
            usage: self.usage.as_ref(),
            model: &self.model,
            response_id: &self.id,
            finish_reasons: &self.finish_reasons,
            error,
            cancelled,
        }
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(chunk) = this.peeked.take() {
            this.progress.record(&chunk);
            return Poll::Ready(Some(Ok(chunk)));
        }
        if this.progress.ended {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.progress.record(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(mut error))) => {
                // An error after the stream started belongs to the attempts that started it.
                if error.attempts() == 0 {
                    error = error.with_attempts(this.meta.attempts);
                }
                this.end(Some(&error), false);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.end(None, false);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        self.end(None, true);
    }
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("meta", &self.meta)
            .field("chunks_yielded", &self.progress.chunks)
            .field("ended", &self.progress.ended)
            .finish_non_exhaustive()
    }
}

struct EmptyStream;

impl Stream for EmptyStream {
    type Item = Result<ChatChunk, Error>;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(None)
    }
}

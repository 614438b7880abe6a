//! [`ChatCompletionStream`]: the chunks of a streamed answer, then the whole response.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use chatstack_proto::{ChatAccumulator, ChatChunk, ChatResponse, ChatStream, Error, ResponseMeta};
use futures_core::Stream;
use futures_core::stream::FusedStream;

/// One item of a [`ChatCompletionStream`].
#[derive(Debug, Clone)]
pub enum ChatEvent {
    /// A chunk as the provider sent it: text deltas, tool-call deltas, a finish reason, or
    /// (last) the usage.
    Chunk(ChatChunk),
    /// The end: every chunk folded into one response (what a unary call would have
    /// returned), with the stream's metadata, its usage, and its cost (read it with
    /// [`ResponseExt::cost`](crate::ResponseExt::cost)). Always the last item of a stream
    /// that did not fail.
    Done(ChatResponse),
}

impl ChatEvent {
    /// The text this event adds to the answer: the content delta of a chunk's first choice
    /// (index 0, the one [`ChatResponse::text`] reads). `None` for a chunk without one and
    /// for [`ChatEvent::Done`], whose text was already given by the chunks.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Chunk(chunk) => chunk
                .choices
                .iter()
                .find(|choice| choice.index == 0)?
                .delta
                .content
                .as_deref(),
            Self::Done(_) => None,
        }
    }
}

/// A streamed answer: a `Stream` of [`ChatEvent`]s, returned by
/// [`Client::stream`](crate::Client::stream).
///
/// It yields every chunk as [`ChatEvent::Chunk`], then exactly one [`ChatEvent::Done`] with
/// the whole response, then ends. A failure mid-stream is its last item, an `Err`; then no
/// `Done` comes. The final response comes in-band, as the last item, so it cannot be asked
/// for too early, nor forgotten while its stream is left unread: read the stream to its end
/// and it is there.
///
/// The chunks are folded as they pass (a [`ChatAccumulator`]), so the final response costs
/// no second read. Its usage is the provider's final usage chunk, and its cost is the cost
/// layer's, computed when the stream ended and recorded in the ledger once: the same figures
/// a unary call would have carried. Dropping the stream before its end cancels the request;
/// the cost layer then records it without usage, at zero cost.
///
/// [`meta`](Self::meta) gives the status, request id, attempts and rate-limit headers as soon
/// as the stream starts.
pub struct ChatCompletionStream {
    inner: ChatStream,
    /// `None` once the stream has ended, failed, or yielded its `Done`.
    accumulator: Option<ChatAccumulator>,
}

impl ChatCompletionStream {
    pub(crate) fn new(inner: ChatStream) -> Self {
        Self {
            inner,
            accumulator: Some(ChatAccumulator::new()),
        }
    }

    /// The response metadata: status, request id, attempts, rate-limit headers, and latency
    /// (to the response headers). Known from the start.
    pub fn meta(&self) -> &ResponseMeta {
        self.inner.meta()
    }
}

impl Stream for ChatCompletionStream {
    type Item = Result<ChatEvent, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(accumulator) = this.accumulator.as_mut() else {
            return Poll::Ready(None);
        };
        let event = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
            Some(Ok(chunk)) => {
                accumulator.push(&chunk);
                Ok(ChatEvent::Chunk(chunk))
            }
            Some(Err(error)) => {
                this.accumulator = None;
                Err(error)
            }
            None => {
                // The inner stream has ended, so its completion hooks have run: the cost
                // layer's `StreamCost` in the metadata is filled, and the ledger updated.
                let mut response = std::mem::take(accumulator).finish();
                this.accumulator = None;
                response.meta = this.inner.meta().clone();
                Ok(ChatEvent::Done(response))
            }
        };
        Poll::Ready(Some(event))
    }
}

impl FusedStream for ChatCompletionStream {
    fn is_terminated(&self) -> bool {
        self.accumulator.is_none()
    }
}

impl fmt::Debug for ChatCompletionStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatCompletionStream")
            .field("meta", self.meta())
            .field("ended", &self.accumulator.is_none())
            .finish_non_exhaustive()
    }
}

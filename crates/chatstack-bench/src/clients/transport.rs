//! chatstack's `HttpTransport` alone: the innermost tower service of every chatstack stack,
//! called as a `Service<ChatRequest>` and a `Service<StreamRequest>`, without any layer.

use chatstack::{ChatChunk, ChatRequest, ChatStream, HttpTransport, Message, StreamRequest};
use tower::ServiceExt;

use super::{
    API_KEY, BenchClient, MODEL, PROMPT, REPLY_TOKENS, StreamedChunk, check_reply, hold_after_text,
    read_chunks,
};

/// The transport and the requests it sends.
pub struct Transport {
    /// The transport, with its defaults but for the base URL and the key.
    transport: HttpTransport,
    /// The unary request; each call sends a clone.
    unary: ChatRequest,
    /// The streaming request; each call sends a clone.
    stream: StreamRequest,
}

impl Transport {
    /// A transport for the mock at `base_url`.
    pub fn new(base_url: &str) -> Result<Self, String> {
        let transport = HttpTransport::builder()
            .base_url(base_url)
            .header("authorization", &format!("Bearer {API_KEY}"))
            .build()
            .map_err(|error| error.to_string())?;
        let (unary, stream) = requests();
        Ok(Self {
            transport,
            unary,
            stream,
        })
    }

    /// Sends the request as a stream and returns the stream once its headers arrived.
    async fn open(&self) -> Result<ChatStream, String> {
        self.transport
            .clone()
            .oneshot(self.stream.clone())
            .await
            .map_err(|error| error.to_string())
    }
}

/// The unary and the streaming request of the transport and the stack, as chatstack's
/// types.
pub fn requests() -> (ChatRequest, StreamRequest) {
    let unary = ChatRequest::new(MODEL, [Message::user(PROMPT)]).max_tokens(REPLY_TOKENS);
    let stream = StreamRequest(unary.clone().include_usage());
    (unary, stream)
}

impl BenchClient for Transport {
    type Held = ChatStream;

    async fn unary(&self) -> Result<(), String> {
        let response = self
            .transport
            .clone()
            .oneshot(self.unary.clone())
            .await
            .map_err(|error| error.to_string())?;
        check_reply(
            response.text(),
            response.usage.map(|usage| usage.completion_tokens),
        )
    }

    async fn stream(&self) -> Result<(), String> {
        read_chunks(self.open().await?).await
    }

    async fn hold(&self) -> Result<Self::Held, String> {
        hold_after_text(self.open().await?).await
    }
}

impl StreamedChunk for ChatChunk {
    fn append_text(self, text: &mut String) {
        text.extend(self.text());
    }

    fn has_text(&self) -> bool {
        self.text().any(|text| !text.is_empty())
    }

    fn completion_tokens(&self) -> Option<u64> {
        self.usage.map(|usage| usage.completion_tokens)
    }
}

//! The async-openai crate (0.43): `Client<OpenAIConfig>` with the mock's base URL and the
//! key, `chat().create()` and `chat().create_stream()`, with its defaults otherwise.

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionResponseStream,
    ChatCompletionStreamOptions, CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
    CreateChatCompletionStreamResponse,
};

use super::{
    API_KEY, BenchClient, MODEL, PROMPT, REPLY_TOKENS, StreamedChunk, check_reply, hold_after_text,
    read_chunks,
};

/// The client and the requests it sends.
pub struct AsyncOpenai {
    /// The client.
    client: Client<OpenAIConfig>,
    /// The unary request; each call sends a clone.
    unary: CreateChatCompletionRequest,
    /// The streaming request; each call sends a clone.
    stream: CreateChatCompletionRequest,
}

impl AsyncOpenai {
    /// A client for the mock at `base_url`.
    pub fn new(base_url: &str) -> Result<Self, String> {
        let config = OpenAIConfig::new()
            .with_api_base(base_url)
            .with_api_key(API_KEY);
        let message = ChatCompletionRequestUserMessageArgs::default()
            .content(PROMPT)
            .build()
            .map_err(|error| error.to_string())?;
        // `max_tokens` is deprecated in favour of `max_completion_tokens`, but it is what the
        // other clients send.
        #[allow(deprecated)]
        let unary = CreateChatCompletionRequestArgs::default()
            .model(MODEL)
            .messages([message.into()])
            .max_tokens(REPLY_TOKENS)
            .build()
            .map_err(|error| error.to_string())?;
        let stream = CreateChatCompletionRequest {
            stream: Some(true),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                include_obfuscation: None,
            }),
            ..unary.clone()
        };
        Ok(Self {
            client: Client::with_config(config),
            unary,
            stream,
        })
    }

    /// Sends the streaming request; returns once the response headers arrived.
    async fn open(&self) -> Result<ChatCompletionResponseStream, String> {
        self.client
            .chat()
            .create_stream(self.stream.clone())
            .await
            .map_err(|error| error.to_string())
    }
}

impl BenchClient for AsyncOpenai {
    type Held = ChatCompletionResponseStream;

    async fn unary(&self) -> Result<(), String> {
        let response = self
            .client
            .chat()
            .create(self.unary.clone())
            .await
            .map_err(|error| error.to_string())?;
        check_reply(
            response
                .choices
                .first()
                .and_then(|choice| choice.message.content.as_deref()),
            response
                .usage
                .map(|usage| u64::from(usage.completion_tokens)),
        )
    }

    async fn stream(&self) -> Result<(), String> {
        read_chunks(self.open().await?).await
    }

    async fn hold(&self) -> Result<Self::Held, String> {
        hold_after_text(self.open().await?).await
    }
}

impl StreamedChunk for CreateChatCompletionStreamResponse {
    fn append_text(self, text: &mut String) {
        text.extend(self.choices.into_iter().filter_map(|c| c.delta.content));
    }

    fn has_text(&self) -> bool {
        self.choices
            .iter()
            .any(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()))
    }

    fn completion_tokens(&self) -> Option<u64> {
        self.usage
            .as_ref()
            .map(|usage| u64::from(usage.completion_tokens))
    }
}

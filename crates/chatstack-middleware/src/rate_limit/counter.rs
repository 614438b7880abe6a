//! [`TokenCounter`]: how many prompt tokens a request is charged for; with the `tiktoken`
//! feature, [`Tiktoken`] counts them exactly.

use chatstack_proto::LlmRequest;

/// Counts the prompt tokens a request is charged for, before it is sent.
///
/// The default is the request's own
/// [`estimated_prompt_tokens`](LlmRequest::estimated_prompt_tokens) (for a
/// [`ChatRequest`](crate::ChatRequest): about four characters a token plus a per-message
/// overhead), which costs next to nothing and is reconciled with the real usage afterwards
/// (see [`Reconcile`](super::Reconcile)). A counter replaces it through
/// [`RateLimitLayer::token_counter`](super::RateLimitLayer::token_counter); it is called
/// once per request, in `call`, and only when tokens are limited. A closure is a counter:
///
/// ```
/// use chatstack_middleware::LlmRequest;
/// use chatstack_middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
///
/// // Charge a fixed 300 tokens of prompt for requests that are not chat requests.
/// let layer = RateLimitLayer::new(RateLimitConfig::default().tokens_per_minute(100_000))
///     .token_counter(|request: &mut dyn LlmRequest| match request.as_chat_request_mut() {
///         Some(chat) => chat.estimate_prompt_tokens(),
///         None => 300,
///     });
/// # let _ = layer;
/// ```
///
/// It receives the request mutably because [`LlmRequest::as_chat_request_mut`] is how a
/// layer reaches the body of a request it does not know; a counter should not change it.
pub trait TokenCounter: Send + Sync + 'static {
    /// The prompt tokens of `request`.
    fn prompt_tokens(&self, request: &mut dyn LlmRequest) -> u64;
}

impl<F> TokenCounter for F
where
    F: Fn(&mut dyn LlmRequest) -> u64 + Send + Sync + 'static,
{
    fn prompt_tokens(&self, request: &mut dyn LlmRequest) -> u64 {
        self(request)
    }
}

#[cfg(feature = "tiktoken")]
pub use self::tiktoken::Tiktoken;

#[cfg(feature = "tiktoken")]
mod tiktoken {
    use chatstack_proto::{ChatRequest, Content, ContentPart, ImageDetail, LlmRequest};
    use tiktoken_rs::CoreBPE;
    use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

    use super::TokenCounter;

    /// Exact prompt-token counts with OpenAI's BPE tables (tiktoken): `o200k_base` for the
    /// GPT-4o, GPT-4.1, GPT-5 and o-series models and for models it does not know,
    /// `cl100k_base` for GPT-4 and GPT-3.5.
    ///
    /// A [`ChatRequest`] (or a request that wraps one, such as a
    /// [`StreamRequest`](crate::StreamRequest)) is counted the way OpenAI's cookbook counts
    /// chat messages: 3 tokens per message plus its role, content and name (1 more for a
    /// name), tool calls' names and arguments, and 3 to prime the reply. What the BPE does
    /// not cover is charged as the fast estimate charges it: 85 or 765 tokens per image
    /// (low or other detail), 256 per file, audio by its size; tool definitions by their
    /// text (name, description, JSON schema) through the BPE. Other request types fall back
    /// to their [`estimated_prompt_tokens`](LlmRequest::estimated_prompt_tokens).
    ///
    /// The tables load once per process, on first use (tens of milliseconds); counting costs
    /// about a microsecond per hundred tokens.
    ///
    /// ```
    /// use chatstack_middleware::rate_limit::{RateLimitConfig, RateLimitLayer, Tiktoken};
    /// use chatstack_middleware::{ChatRequest, Message};
    ///
    /// let request = ChatRequest::new("gpt-4o", [Message::user("Hello, world!")]);
    /// assert_eq!(Tiktoken::count(&request), 3 + 1 + 4 + 3);
    ///
    /// let layer = RateLimitLayer::new(RateLimitConfig::default().tokens_per_minute(100_000))
    ///     .token_counter(Tiktoken);
    /// # let _ = layer;
    /// ```
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Tiktoken;

    impl Tiktoken {
        /// The prompt tokens of `request`, counted with its model's BPE.
        pub fn count(request: &ChatRequest) -> u64 {
            const PER_MESSAGE: u64 = 3;
            const PER_NAME: u64 = 1;
            const PRIMING: u64 = 3;
            let bpe = bpe_for(&request.model);
            let tokens = |text: &str| bpe.encode_ordinary(text).len() as u64;
            let mut total = PRIMING;
            for message in &request.messages {
                total += PER_MESSAGE + tokens(message.role.as_str());
                if let Some(name) = &message.name {
                    total += PER_NAME + tokens(name);
                }
                match &message.content {
                    Some(Content::Text(text)) => total += tokens(text),
                    Some(Content::Parts(parts)) => {
                        for part in parts {
                            total += match part {
                                ContentPart::Text { text } => tokens(text),
                                ContentPart::Refusal { refusal } => tokens(refusal),
                                ContentPart::ImageUrl { image_url } => match image_url.detail {
                                    Some(ImageDetail::Low) => 85,
                                    _ => 765,
                                },
                                // Base64 audio, as the estimate reads it.
                                ContentPart::InputAudio { input_audio } => {
                                    input_audio.data.len() as u64 / 256
                                }
                                _ => 256,
                            };
                        }
                    }
                    None => {}
                }
                if let Some(refusal) = &message.refusal {
                    total += tokens(refusal);
                }
                if let Some(id) = &message.tool_call_id {
                    total += tokens(id);
                }
                for call in message.tool_calls.iter().flatten() {
                    total += tokens(&call.function.name) + tokens(&call.function.arguments);
                }
            }
            for tool in request.tools.iter().flatten() {
                let function = &tool.function;
                total += tokens(&function.name);
                if let Some(description) = &function.description {
                    total += tokens(description);
                }
                if let Some(parameters) = &function.parameters {
                    total += tokens(&parameters.to_string());
                }
            }
            total
        }
    }

    impl TokenCounter for Tiktoken {
        fn prompt_tokens(&self, request: &mut dyn LlmRequest) -> u64 {
            match request.as_chat_request_mut() {
                Some(chat) => Self::count(chat),
                None => request.estimated_prompt_tokens(),
            }
        }
    }

    fn bpe_for(model: &str) -> &'static CoreBPE {
        match get_tokenizer(model) {
            Some(Tokenizer::Cl100kBase) => tiktoken_rs::cl100k_base_singleton(),
            _ => tiktoken_rs::o200k_base_singleton(),
        }
    }

    #[cfg(test)]
    mod tests {
        use chatstack_proto::{ChatRequest, Message};

        use super::*;

        #[test]
        fn counts_like_the_openai_cookbook() {
            // "Hello, world!" is 4 tokens in both tables; "user" and "system" are 1 each.
            let one = ChatRequest::new("gpt-4o", [Message::user("Hello, world!")]);
            assert_eq!(Tiktoken::count(&one), 3 + (3 + 1 + 4));
            let two = ChatRequest::new(
                "gpt-4",
                [
                    Message::system("Hello, world!"),
                    Message::user("Hello, world!"),
                ],
            );
            assert_eq!(Tiktoken::count(&two), 3 + 2 * (3 + 1 + 4));
        }

        #[test]
        fn falls_back_to_the_estimate_for_other_requests() {
            struct Other(chatstack_proto::RequestMeta);
            impl LlmRequest for Other {
                fn model(&self) -> &str {
                    "m"
                }
                fn meta(&self) -> &chatstack_proto::RequestMeta {
                    &self.0
                }
                fn meta_mut(&mut self) -> &mut chatstack_proto::RequestMeta {
                    &mut self.0
                }
                fn estimated_prompt_tokens(&self) -> u64 {
                    42
                }
            }
            let mut other = Other(Default::default());
            assert_eq!(Tiktoken.prompt_tokens(&mut other), 42);
        }
    }
}

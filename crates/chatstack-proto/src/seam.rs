//! The small traits every chatstack layer is generic over.
//!
//! A layer never names `ChatRequest` or `ChatResponse` directly: it asks the request for its
//! model, its token estimate and its [`RequestMeta`] through [`LlmRequest`], and the response
//! for its [`ResponseMeta`] and usage through [`LlmResponse`]. Unary calls
//! ([`ChatRequest`] → [`ChatResponse`]) and streams ([`StreamRequest`] → [`ChatStream`])
//! implement both, and so can a user's own types, so one layer implementation serves all.
//!
//! ```
//! use chatstack_proto::{Completion, LlmRequest, LlmResponse, RequestMeta, ResponseMeta, Usage};
//!
//! // A user's own request and response types, outside chatstack.
//! #[derive(Clone, Default)]
//! struct Ask { model: String, prompt: String, meta: RequestMeta }
//! #[derive(Default)]
//! struct Answer { usage: Usage, meta: ResponseMeta }
//!
//! impl LlmRequest for Ask {
//!     fn model(&self) -> &str { &self.model }
//!     fn meta(&self) -> &RequestMeta { &self.meta }
//!     fn meta_mut(&mut self) -> &mut RequestMeta { &mut self.meta }
//!     fn estimated_prompt_tokens(&self) -> u64 { self.prompt.len().div_ceil(4) as u64 }
//! }
//! impl LlmResponse for Answer {
//!     fn meta(&self) -> &ResponseMeta { &self.meta }
//!     fn meta_mut(&mut self) -> &mut ResponseMeta { &mut self.meta }
//!     fn usage(&self) -> Option<&Usage> { Some(&self.usage) }
//!     fn on_complete<F>(self, hook: F) -> Self
//!     where F: FnOnce(&Completion<'_>) + Send + 'static {
//!         hook(&Completion::unary(self.usage(), "")); // complete as soon as it exists
//!         self
//!     }
//! }
//!
//! let ask = Ask { model: "m".into(), prompt: "12345678".into(), ..Ask::default() };
//! assert_eq!(ask.estimated_prompt_tokens(), 2);
//! ```

use crate::error::Error;
use crate::meta::{RequestMeta, ResponseMeta};
use crate::request::ChatRequest;
use crate::response::{ChatResponse, FinishReason, Usage};
use crate::stream::{ChatStream, StreamRequest};

/// What a layer may read from, and attach to, a request.
pub trait LlmRequest {
    /// The model asked for: the key of rate limits, breakers and prices.
    fn model(&self) -> &str;

    /// Per-request data that is not body.
    fn meta(&self) -> &RequestMeta;

    /// Per-request data that is not body, to change.
    fn meta_mut(&mut self) -> &mut RequestMeta;

    /// An estimate of the prompt's tokens, charged up front by rate limits and budgets.
    fn estimated_prompt_tokens(&self) -> u64 {
        0
    }

    /// The most output tokens the request may produce, when capped.
    fn max_output_tokens(&self) -> Option<u64> {
        None
    }

    /// Whether the answer comes as a stream.
    fn is_streaming(&self) -> bool {
        false
    }

    /// The request as a [`ChatRequest`], when it is one (or wraps one): how layers change the
    /// body without knowing the concrete type — a fallback rewriting the model, cost
    /// accounting asking a stream for its usage. `None` for foreign request types.
    fn as_chat_request_mut(&mut self) -> Option<&mut ChatRequest> {
        None
    }
}

/// What the end of a response looks like to a layer: its usage (when reported), the model
/// that answered, why it finished, and whether it failed or was dropped early.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Completion<'a> {
    /// The usage, when the provider reported it.
    pub usage: Option<&'a Usage>,
    /// The model that answered (empty when unknown).
    pub model: &'a str,
    /// The provider's response id (empty when unknown).
    pub response_id: &'a str,
    /// The finish reasons seen, in order.
    pub finish_reasons: &'a [FinishReason],
    /// For a stream: the error it ended with.
    pub error: Option<&'a Error>,
    /// For a stream: whether it was dropped before it ended.
    pub cancelled: bool,
}

impl<'a> Completion<'a> {
    /// The completion of a unary response that succeeded.
    pub fn unary(usage: Option<&'a Usage>, model: &'a str) -> Self {
        Self {
            usage,
            model,
            response_id: "",
            finish_reasons: &[],
            error: None,
            cancelled: false,
        }
    }

    /// Whether the response ended normally (not failed, not dropped).
    pub fn is_success(&self) -> bool {
        self.error.is_none() && !self.cancelled
    }
}

/// A callback run once when a response completes.
pub(crate) type CompletionHook = Box<dyn FnOnce(&Completion<'_>) + Send + 'static>;

/// What a layer may read from, and attach to, a response.
pub trait LlmResponse {
    /// The response metadata.
    fn meta(&self) -> &ResponseMeta;

    /// The response metadata, to change.
    fn meta_mut(&mut self) -> &mut ResponseMeta;

    /// The usage, if known now (a stream knows it only at its end: see
    /// [`on_complete`](Self::on_complete)).
    fn usage(&self) -> Option<&Usage>;

    /// Runs `hook` once, when the response is complete: at once for a unary response, at the
    /// end of a stream (or when it is dropped) for a streaming one. How cost accounting,
    /// budgets and rate-limit reconciliation see the usage of streams and unary calls alike.
    fn on_complete<F>(self, hook: F) -> Self
    where
        F: FnOnce(&Completion<'_>) + Send + 'static,
        Self: Sized;

    /// The response as a [`ChatStream`], when it is one: how layers add stream-only
    /// behaviour (first-chunk and idle timeouts, retrying a stream that failed before its
    /// first chunk) without knowing the concrete type. `None` for unary responses.
    fn as_chat_stream_mut(&mut self) -> Option<&mut ChatStream> {
        None
    }
}

impl LlmRequest for ChatRequest {
    fn model(&self) -> &str {
        &self.model
    }

    fn meta(&self) -> &RequestMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut RequestMeta {
        &mut self.meta
    }

    fn estimated_prompt_tokens(&self) -> u64 {
        self.estimate_prompt_tokens()
    }

    fn max_output_tokens(&self) -> Option<u64> {
        ChatRequest::max_output_tokens(self)
    }

    fn as_chat_request_mut(&mut self) -> Option<&mut ChatRequest> {
        Some(self)
    }
}

impl LlmRequest for StreamRequest {
    fn model(&self) -> &str {
        &self.0.model
    }

    fn meta(&self) -> &RequestMeta {
        &self.0.meta
    }

    fn meta_mut(&mut self) -> &mut RequestMeta {
        &mut self.0.meta
    }

    fn estimated_prompt_tokens(&self) -> u64 {
        self.0.estimate_prompt_tokens()
    }

    fn max_output_tokens(&self) -> Option<u64> {
        self.0.max_output_tokens()
    }

    fn is_streaming(&self) -> bool {
        true
    }

    fn as_chat_request_mut(&mut self) -> Option<&mut ChatRequest> {
        Some(&mut self.0)
    }
}

impl LlmResponse for ChatResponse {
    fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ResponseMeta {
        &mut self.meta
    }

    fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    fn on_complete<F>(self, hook: F) -> Self
    where
        F: FnOnce(&Completion<'_>) + Send + 'static,
    {
        // One choice (nearly every response) lends its reason without a copy.
        let collected: Vec<FinishReason>;
        let reasons: &[FinishReason] = match self.choices.as_slice() {
            [] => &[],
            [only] => only.finish_reason.as_slice(),
            choices => {
                collected = choices
                    .iter()
                    .filter_map(|choice| choice.finish_reason.clone())
                    .collect();
                &collected
            }
        };
        hook(&Completion {
            usage: self.usage.as_ref(),
            model: &self.model,
            response_id: &self.id,
            finish_reasons: reasons,
            error: None,
            cancelled: false,
        });
        self
    }
}

impl LlmResponse for ChatStream {
    fn meta(&self) -> &ResponseMeta {
        ChatStream::meta(self)
    }

    fn meta_mut(&mut self) -> &mut ResponseMeta {
        ChatStream::meta_mut(self)
    }

    fn usage(&self) -> Option<&Usage> {
        None
    }

    fn on_complete<F>(mut self, hook: F) -> Self
    where
        F: FnOnce(&Completion<'_>) + Send + 'static,
    {
        self.add_hook(Box::new(hook));
        self
    }

    fn as_chat_stream_mut(&mut self) -> Option<&mut ChatStream> {
        Some(self)
    }
}

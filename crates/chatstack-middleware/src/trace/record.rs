//! What one traced call records, and when.

use std::borrow::Cow;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use chatstack_proto::{
    ChatChunk, Completion, Error, ErrorKind, FinishReason, LlmRequest, LlmResponse, TimeoutKind,
};
use futures_core::Stream;
use tracing::Span;
use tracing::field::{Empty, display};

use super::layer::Settings;

/// The `error.type` of an error: a low-cardinality name of what went wrong, as OpenTelemetry
/// asks for: `rate_limited`, `insufficient_quota`, `server_error`, `overloaded`, `timeout`,
/// `connect_timeout`, `first_chunk_timeout`, `idle_timeout`, `connection_error`, `auth_error`,
/// `invalid_request`, `context_length_exceeded`, `content_filter`, `provider_error`,
/// `decode_error`, `incomplete`, `body_too_large`, `circuit_open`, `rate_limit_wait`,
/// `budget_exceeded`, `cancelled`, `config_error`; for another HTTP status, the status code
/// (`408`); `_OTHER` for a kind this version does not know.
///
/// The trace layer records it on spans and metrics; use it to label your own metrics alike.
///
/// ```
/// use chatstack_middleware::trace::error_type;
/// use chatstack_middleware::{Error, ErrorKind};
/// use http::{HeaderMap, StatusCode};
///
/// let timeout = Error::from_response(StatusCode::REQUEST_TIMEOUT, &HeaderMap::new(), b"");
/// assert_eq!(error_type(&timeout), "408");
/// assert_eq!(error_type(&Error::new(ErrorKind::RateLimited, "slow down")), "rate_limited");
/// ```
pub fn error_type(error: &Error) -> Cow<'static, str> {
    Cow::Borrowed(match error.kind() {
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::InsufficientQuota => "insufficient_quota",
        ErrorKind::Server => "server_error",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::Timeout(TimeoutKind::Connect) => "connect_timeout",
        ErrorKind::Timeout(TimeoutKind::FirstChunk) => "first_chunk_timeout",
        ErrorKind::Timeout(TimeoutKind::Idle) => "idle_timeout",
        ErrorKind::Timeout(_) => "timeout",
        ErrorKind::Connection => "connection_error",
        ErrorKind::Auth => "auth_error",
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::ContextLengthExceeded => "context_length_exceeded",
        ErrorKind::ContentFilter => "content_filter",
        ErrorKind::Status => {
            return error.status().map_or(Cow::Borrowed("_OTHER"), |status| {
                Cow::Owned(status.as_u16().to_string())
            });
        }
        ErrorKind::Provider => "provider_error",
        ErrorKind::Decode => "decode_error",
        ErrorKind::Incomplete => "incomplete",
        ErrorKind::BodyTooLarge => "body_too_large",
        ErrorKind::CircuitOpen => "circuit_open",
        ErrorKind::RateLimitWait => "rate_limit_wait",
        ErrorKind::BudgetExceeded => "budget_exceeded",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::BackendUnavailable => "backend_unavailable",
        ErrorKind::Config => "config_error",
        _ => "_OTHER",
    })
}

/// One traced call: its span and, with the `metrics` feature, what its metrics need.
pub(crate) struct Call {
    span: Span,
    #[cfg(feature = "metrics")]
    metrics: super::metrics::CallMetrics,
}

impl Call {
    /// Opens the span of `request` (as a child of the current span) and starts the clock.
    pub(crate) fn start<R: LlmRequest>(settings: &Settings, request: &R) -> Self {
        let model = request.model();
        // `otel.*` fields are read by tracing-opentelemetry: the span name OpenTelemetry
        // asks for ("{operation} {model}"; a tracing span name is static), the span kind,
        // and the error status.
        let span = tracing::info_span!(
            "gen_ai.chat",
            otel.name = %format_args!("chat {model}"),
            otel.kind = "client",
            otel.status_code = Empty,
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = &*settings.provider,
            gen_ai.request.model = model,
            gen_ai.request.max_tokens = Empty,
            gen_ai.response.model = Empty,
            gen_ai.response.id = Empty,
            gen_ai.response.finish_reasons = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            "error.type" = Empty,
            server.address = Empty,
            server.port = Empty,
        );
        if !span.is_disabled() {
            if let Some(max_tokens) = request.max_output_tokens() {
                span.record("gen_ai.request.max_tokens", max_tokens);
            }
            if let Some(address) = &settings.server_address {
                span.record("server.address", &**address);
            }
            if let Some(port) = settings.server_port {
                span.record("server.port", port);
            }
        }
        Self {
            span,
            #[cfg(feature = "metrics")]
            metrics: super::metrics::CallMetrics::start(settings, model),
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Arranges for the response's attributes to be recorded when it completes, and, for a
    /// stream, for its chunks to be read inside the span.
    pub(crate) fn attach<T: LlmResponse>(self, mut response: T) -> T {
        if self.span.is_disabled() && !cfg!(feature = "metrics") {
            // Nothing would be recorded: spare the response its completion hook.
            return response;
        }
        if !self.span.is_disabled() {
            if let Some(stream) = response.as_chat_stream_mut() {
                let span = self.span.clone();
                stream.wrap_inner(move |inner| InSpan {
                    inner,
                    span: Some(span),
                });
            }
        }
        response.on_complete(move |completion| self.completed(completion))
    }

    /// Records the end of a response: the response attributes, and `error.type` for a
    /// stream that failed or was dropped before its end.
    fn completed(self, completion: &Completion<'_>) {
        let span = &self.span;
        if !completion.model.is_empty() {
            span.record("gen_ai.response.model", completion.model);
        }
        if !completion.response_id.is_empty() {
            span.record("gen_ai.response.id", completion.response_id);
        }
        if !completion.finish_reasons.is_empty() {
            span.record(
                "gen_ai.response.finish_reasons",
                display(FinishReasons(completion.finish_reasons)),
            );
        }
        if let Some(usage) = completion.usage {
            span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
            span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
        }
        let error_type = match (completion.error, completion.cancelled) {
            (Some(error), _) => Some(error_type(error)),
            (None, true) => Some(Cow::Borrowed("cancelled")),
            (None, false) => None,
        };
        if let Some(error_type) = &error_type {
            self.record_error(error_type);
        }
        #[cfg(feature = "metrics")]
        self.metrics
            .finish(completion.model, completion.usage, error_type.as_deref());
    }

    /// Records a call that failed before it had a response.
    pub(crate) fn failed(self, error: &Error) {
        let error_type = error_type(error);
        self.record_error(&error_type);
        #[cfg(feature = "metrics")]
        self.metrics.finish("", None, Some(&error_type));
    }

    /// Records a call whose future was dropped before it completed.
    pub(crate) fn cancelled(self) {
        self.record_error("cancelled");
        #[cfg(feature = "metrics")]
        self.metrics.finish("", None, Some("cancelled"));
    }

    fn record_error(&self, error_type: &str) {
        self.span.record("error.type", error_type);
        self.span.record("otel.status_code", "ERROR");
    }
}

/// `gen_ai.response.finish_reasons`, a string array in OpenTelemetry, as a tracing field
/// can carry it: the JSON text of the array, such as `["stop"]`.
struct FinishReasons<'a>(&'a [FinishReason]);

impl fmt::Display for FinishReasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        f.write_char('[')?;
        for (i, reason) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            // A JSON string: an unknown reason is kept as the provider sent it.
            f.write_char('"')?;
            for c in reason.as_str().chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
                    c => f.write_char(c)?,
                }
            }
            f.write_char('"')?;
        }
        f.write_char(']')
    }
}

/// The chunk stream of a traced `ChatStream`, read inside the span, so that what inner
/// layers log while a chunk is read (an idle timeout, say) belongs to the request. It lets
/// go of the span when the stream ends, so that the span closes with the completion hook.
struct InSpan<St> {
    inner: St,
    span: Option<Span>,
}

impl<St> Stream for InSpan<St>
where
    St: Stream<Item = Result<ChatChunk, Error>> + Unpin,
{
    type Item = Result<ChatChunk, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = match &this.span {
            Some(span) => {
                let _entered = span.enter();
                Pin::new(&mut this.inner).poll_next(cx)
            }
            None => Pin::new(&mut this.inner).poll_next(cx),
        };
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.span = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_are_a_json_array() {
        let reasons = [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Other("we\"ird\n".to_owned()),
        ];
        assert_eq!(
            FinishReasons(&reasons).to_string(),
            r#"["stop","length","we\"ird\u000a"]"#
        );
        assert_eq!(FinishReasons(&[]).to_string(), "[]");
    }
}

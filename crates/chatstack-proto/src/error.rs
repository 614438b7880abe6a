//! The one error type of chatstack.
//!
//! [`Error`] is opaque: ask it with predicates ([`Error::is_retryable`],
//! [`Error::is_rate_limited`], ...) and accessors ([`Error::status`], [`Error::provider`],
//! [`Error::retry_after`], ...), or match on its [`ErrorKind`]. Every layer classifies
//! failures through the same [`Error::is_retryable`], so retry, circuit breaker and fallback
//! agree on what is the provider's fault.
//!
//! ```
//! use chatstack_proto::{Error, ErrorKind};
//! use http::{HeaderMap, StatusCode};
//!
//! let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
//! let error = Error::from_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body);
//! assert_eq!(error.kind(), ErrorKind::InsufficientQuota);
//! assert!(!error.is_retryable(), "an empty wallet does not refill by waiting");
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::lenient::string_or_number;
use crate::meta::{self, RateLimitSnapshot};

/// The most bytes of a raw response body an error keeps.
pub const MAX_ERROR_BODY: usize = 8 * 1024;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, broadly. More detail is on [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 429: the provider's rate limit. Retryable after [`Error::retry_after`].
    RateLimited,
    /// 429 with `insufficient_quota`: out of credit. Permanent.
    InsufficientQuota,
    /// A 5xx, or a provider error of type `server_error`.
    Server,
    /// 529, or a provider error of type `overloaded_error`.
    Overloaded,
    /// A timeout; which one is in the [`TimeoutKind`].
    Timeout(TimeoutKind),
    /// The connection failed or broke before a response.
    Connection,
    /// 401 or 403: the key is missing, wrong or lacks permission.
    Auth,
    /// 400, 404, 413 or 422: the request is wrong and will stay wrong.
    InvalidRequest,
    /// The prompt plus the output cap exceed the model's context window.
    ContextLengthExceeded,
    /// The provider's content filter refused the request or the answer.
    ContentFilter,
    /// Another HTTP status (408, 409, 402, ...); [`Error::status`] says which.
    Status,
    /// An error the provider reported in a successful response or inside a stream, of a type
    /// chatstack does not classify further.
    Provider,
    /// The response body could not be decoded; [`Error::body`] keeps its start.
    Decode,
    /// The response ended early: a body cut short, or a stream that ended without
    /// `data: [DONE]`.
    Incomplete,
    /// The response body passed the configured size limit.
    BodyTooLarge,
    /// A circuit breaker is open; [`Error::retry_after`] says when it half-opens.
    CircuitOpen,
    /// Waiting for the rate limiter would pass the request's deadline, or the request alone
    /// needs more than the whole quota.
    RateLimitWait,
    /// The spending budget would be exceeded.
    BudgetExceeded,
    /// The request was cancelled.
    Cancelled,
    /// A shared backend a layer keeps its state in (the Redis of a rate limiter or budget
    /// shared across replicas) could not be reached, and the layer is configured to fail
    /// closed. Not retryable: the retry layer would only multiply the load on a backend that
    /// is down; the error's source says which backend and why.
    BackendUnavailable,
    /// The configuration is invalid (a bad URL, a header value that is not valid).
    Config,
}

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// Establishing the connection.
    Connect,
    /// The whole attempt (for a stream: until its headers), or a stream's own limit from
    /// the call to its end.
    Total,
    /// A stream's first chunk did not arrive in time.
    FirstChunk,
    /// A stream went quiet between chunks for too long.
    Idle,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RateLimited => "rate limited",
            Self::InsufficientQuota => "insufficient quota",
            Self::Server => "server error",
            Self::Overloaded => "provider overloaded",
            Self::Timeout(TimeoutKind::Connect) => "connect timeout",
            Self::Timeout(TimeoutKind::Total) => "request timeout",
            Self::Timeout(TimeoutKind::FirstChunk) => "timeout waiting for the first chunk",
            Self::Timeout(TimeoutKind::Idle) => "stream idle timeout",
            Self::Connection => "connection error",
            Self::Auth => "authentication error",
            Self::InvalidRequest => "invalid request",
            Self::ContextLengthExceeded => "context length exceeded",
            Self::ContentFilter => "content filtered",
            Self::Status => "unexpected HTTP status",
            Self::Provider => "provider error",
            Self::Decode => "decode error",
            Self::Incomplete => "incomplete response",
            Self::BodyTooLarge => "response body too large",
            Self::CircuitOpen => "circuit open",
            Self::RateLimitWait => "rate limit wait refused",
            Self::BudgetExceeded => "budget exceeded",
            Self::Cancelled => "cancelled",
            Self::BackendUnavailable => "shared backend unavailable",
            Self::Config => "invalid configuration",
        })
    }
}

/// The error envelope providers send: `{"error":{"message","type","param","code"}}`.
///
/// [`ProviderError::from_body`] also reads the other shapes seen in the wild.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderError {
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
    /// The error type, such as `invalid_request_error` or `insufficient_quota`.
    #[serde(rename = "type", default, deserialize_with = "string_or_number")]
    pub kind: Option<String>,
    /// The request parameter at fault.
    #[serde(default, deserialize_with = "string_or_number")]
    pub param: Option<String>,
    /// A machine-readable code, such as `context_length_exceeded` (integers become strings).
    #[serde(default, deserialize_with = "string_or_number")]
    pub code: Option<String>,
}

impl ProviderError {
    /// Reads an error from a response body, whatever its shape:
    /// `{"error":{...}}` (OpenAI, llama.cpp, Anthropic's `{"type":"error","error":{...}}`),
    /// `{"error":"Type","message":"..."}`, `{"detail":"..."}`, `{"message":"..."}`, or
    /// non-empty plain text. `None` for an empty body or JSON that carries no error.
    pub fn from_body(body: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(body);
        let mut trimmed = text.trim();
        if trimmed.is_empty() {
            return None;
        }
        let first_event;
        if trimmed.starts_with("data:") || trimmed.starts_with("event:") {
            // An error sent as a stream (LiteLLM's mid-stream 503): read its first event,
            // once. Its data is read as a body, never unwrapped again: a hostile
            // `data:data:data:...` must not recurse.
            let mut decoder = crate::sse::SseDecoder::new();
            decoder.feed(trimmed.as_bytes());
            let event = match decoder.next_event() {
                Some(Ok(event)) => Some(event),
                _ => decoder.finish(),
            };
            if let Some(event) = event.filter(|e| !e.data.trim().is_empty()) {
                first_event = event.data;
                trimmed = first_event.trim();
            }
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) else {
            return Some(Self {
                message: truncate(trimmed, MAX_ERROR_BODY).to_owned(),
                ..Self::default()
            });
        };
        Self::from_json(&value)
    }

    /// Reads an error from a decoded JSON value; see [`ProviderError::from_body`].
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        use serde_json::Value;
        let text_of = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        match value.get("error") {
            Some(inner @ Value::Object(_)) => serde_json::from_value(inner.clone()).ok(),
            Some(Value::String(kind)) => Some(Self {
                message: value
                    .get("message")
                    .and_then(text_of)
                    .unwrap_or_else(|| kind.clone()),
                kind: Some(kind.clone()),
                ..Self::default()
            }),
            _ => {
                let message = value
                    .get("detail")
                    .or_else(|| value.get("message"))
                    .and_then(text_of)?;
                Some(Self {
                    message,
                    ..Self::default()
                })
            }
        }
    }

    fn is(&self, needle: &str) -> bool {
        self.code.as_deref() == Some(needle) || self.kind.as_deref() == Some(needle)
    }

    /// Whether this is an out-of-credit error (`insufficient_quota`).
    pub fn is_insufficient_quota(&self) -> bool {
        self.is("insufficient_quota")
    }

    /// Whether this says the context window was exceeded.
    pub fn is_context_length_exceeded(&self) -> bool {
        self.is("context_length_exceeded")
            || self.is("exceed_context_size_error")
            || self.message.contains("maximum context length")
            || self.message.contains("context length exceeded")
    }

    /// Whether this is a content-filter refusal.
    pub fn is_content_filter(&self) -> bool {
        self.is("content_filter") || self.is("content_policy_violation")
    }

    /// The kind this envelope implies when the HTTP status does not decide it (a 200 with an
    /// error body, an error event in a stream).
    fn implied_kind(&self) -> ErrorKind {
        if self.is_insufficient_quota() {
            ErrorKind::InsufficientQuota
        } else if self.is_context_length_exceeded() {
            ErrorKind::ContextLengthExceeded
        } else if self.is_content_filter() {
            ErrorKind::ContentFilter
        } else if self.is("overloaded_error") {
            ErrorKind::Overloaded
        } else if self.is("rate_limit_exceeded") || self.is("rate_limit_error") || self.is("429") {
            ErrorKind::RateLimited
        } else if self.is("server_error") || self.is("api_error") || self.is("internal_error") {
            ErrorKind::Server
        } else if self.is("invalid_request_error") {
            ErrorKind::InvalidRequest
        } else if self.is("authentication_error") || self.is("invalid_api_key") {
            ErrorKind::Auth
        } else if let Some(status) = self.http_status_code() {
            // Proxies (LiteLLM) and llama.cpp put an HTTP status in `code`; inside a 200
            // stream it is the only hint left, so read it as that status would be read.
            kind_for(status, Some(self))
        } else {
            ErrorKind::Provider
        }
    }

    /// The `code`, when it is an HTTP error status (`"503"`, or `503` made a string).
    fn http_status_code(&self) -> Option<StatusCode> {
        let code: u16 = self.code.as_deref()?.trim().parse().ok()?;
        StatusCode::from_u16(code)
            .ok()
            .filter(|status| status.is_client_error() || status.is_server_error())
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The error of every chatstack operation.
///
/// Opaque on purpose: query it through [`kind`](Self::kind), the `is_*` predicates and the
/// accessors. It never contains the API key: it holds no request headers.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    status: Option<StatusCode>,
    provider: Option<ProviderError>,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    should_retry: Option<bool>,
    rate_limit: RateLimitSnapshot,
    body: Option<String>,
    attempts: u32,
    source: Option<BoxError>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                status: None,
                provider: None,
                request_id: None,
                retry_after: None,
                should_retry: None,
                rate_limit: RateLimitSnapshot::default(),
                body: None,
                attempts: 0,
                source: None,
            }),
        }
    }

    /// Classifies a non-success HTTP response: the status decides the kind, refined by the
    /// error envelope (`insufficient_quota`, context length, content filter); the headers a
    /// retry needs (`retry-after(-ms)`, `x-should-retry`, `x-request-id`, `x-ratelimit-*`)
    /// are kept, and so is the start of the body when no envelope could be read.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        let provider = ProviderError::from_body(body);
        let kind = kind_for(status, provider.as_ref());
        let message = match &provider {
            Some(p) if !p.message.is_empty() => p.message.clone(),
            _ => format!(
                "HTTP {}{}",
                status.as_u16(),
                status
                    .canonical_reason()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            ),
        };
        let mut error = Self::new(kind, message)
            .with_status(status)
            .with_headers(headers);
        if provider.is_none() && !body.is_empty() {
            error = error.with_body(body);
        }
        if let Some(provider) = provider {
            error = error.with_provider(provider);
        }
        error
    }

    /// An error reported inside a response that was otherwise a success: a 200 whose body is
    /// an error envelope, or an error event in a stream. The envelope decides the kind.
    pub fn from_provider(provider: ProviderError) -> Self {
        let kind = provider.implied_kind();
        let message = if provider.message.is_empty() {
            kind.to_string()
        } else {
            provider.message.clone()
        };
        Self::new(kind, message).with_provider(provider)
    }

    /// A response body that could not be decoded; keeps the start of `body`.
    pub fn decode(source: impl Into<BoxError>, body: &[u8]) -> Self {
        let source = source.into();
        Self::new(
            ErrorKind::Decode,
            format!("could not decode the response: {source}"),
        )
        .with_body(body)
        .with_source_boxed(source)
    }

    /// Sets the HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// Keeps what a retry needs from response headers: `retry-after-ms`/`retry-after`,
    /// `x-should-retry`, `x-request-id`, and the `x-ratelimit-*` snapshot.
    pub fn with_headers(mut self, headers: &HeaderMap) -> Self {
        self.inner.retry_after = meta::retry_after(headers, SystemTime::now());
        self.inner.should_retry = meta::should_retry(headers);
        self.inner.request_id = meta::request_id(headers);
        self.inner.rate_limit = RateLimitSnapshot::from_headers(headers);
        self
    }

    /// Sets the provider's error envelope.
    pub fn with_provider(mut self, provider: ProviderError) -> Self {
        self.inner.provider = Some(provider);
        self
    }

    /// Sets the provider's request id.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.inner.request_id = Some(request_id.into());
        self
    }

    /// Sets the wait before trying again.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.inner.retry_after = Some(retry_after);
        self
    }

    /// Keeps the start of a raw body (at most [`MAX_ERROR_BODY`] bytes, lossily decoded).
    pub fn with_body(mut self, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
        self.inner.body = Some(text.into_owned());
        self
    }

    /// Sets the underlying cause.
    pub fn with_source(self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.with_source_boxed(Box::new(source))
    }

    /// Sets the underlying cause, already boxed.
    pub fn with_source_boxed(mut self, source: BoxError) -> Self {
        self.inner.source = Some(source);
        self
    }

    /// Records how many attempts were made before this error.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    /// Adds context without losing anything: appends `note` to the message and makes
    /// `context` the source. `context` receives the previous source (if any) so the cause
    /// chain stays whole: how a layer marks an error it decided about (say, "not retried:
    /// the wait would pass the deadline") while kind, status, envelope and headers stay as
    /// they were.
    pub fn with_context<C>(
        mut self,
        note: &str,
        context: impl FnOnce(Option<BoxError>) -> C,
    ) -> Self
    where
        C: StdError + Send + Sync + 'static,
    {
        if self.inner.message.is_empty() {
            self.inner.message = note.to_owned();
        } else {
            self.inner.message.push_str("; ");
            self.inner.message.push_str(note);
        }
        let previous = self.inner.source.take();
        self.inner.source = Some(Box::new(context(previous)));
        self
    }

    /// Records how many attempts were made before this error.
    pub fn set_attempts(&mut self, attempts: u32) {
        self.inner.attempts = attempts;
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The HTTP status, when a response was received.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The provider's error envelope, when it sent one.
    pub fn provider(&self) -> Option<&ProviderError> {
        self.inner.provider.as_ref()
    }

    /// The provider's request id.
    pub fn request_id(&self) -> Option<&str> {
        self.inner.request_id.as_deref()
    }

    /// How long to wait before trying again: from `retry-after(-ms)`, or, for an open
    /// circuit, the time until it half-opens.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The `x-should-retry` header, when the server sent it.
    pub fn should_retry_header(&self) -> Option<bool> {
        self.inner.should_retry
    }

    /// The `x-ratelimit-*` snapshot of the failed response.
    pub fn rate_limit(&self) -> &RateLimitSnapshot {
        &self.inner.rate_limit
    }

    /// The start of the raw body, when it could not be read as an error envelope.
    pub fn body(&self) -> Option<&str> {
        self.inner.body.as_deref()
    }

    /// How many attempts were made, the last of which ended in this error (0 when not
    /// recorded). An attempt refused inside the process (an open circuit, a key pool with
    /// no key left in rotation) counts too, so the provider may have seen fewer.
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// Whether trying the same request again may succeed.
    ///
    /// The server's `x-should-retry` decides first. Otherwise: rate limits (but never
    /// `insufficient_quota`), 5xx and 529, 408 and 409, connection failures, timeouts, and
    /// responses cut short are retryable; client errors, auth failures, decode errors,
    /// budget and circuit rejections, and an unreachable shared backend are not.
    pub fn is_retryable(&self) -> bool {
        if let Some(decided) = self.inner.should_retry {
            return decided;
        }
        match self.inner.kind {
            ErrorKind::RateLimited
            | ErrorKind::Server
            | ErrorKind::Overloaded
            | ErrorKind::Timeout(_)
            | ErrorKind::Connection
            | ErrorKind::Incomplete => true,
            ErrorKind::Status => self.inner.status.is_some_and(|status| {
                matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
            }),
            _ => false,
        }
    }

    /// Whether a provider rate limit was hit (retryable; not `insufficient_quota`).
    pub fn is_rate_limited(&self) -> bool {
        self.inner.kind == ErrorKind::RateLimited
    }

    /// Whether the account is out of credit (`insufficient_quota`).
    pub fn is_insufficient_quota(&self) -> bool {
        self.inner.kind == ErrorKind::InsufficientQuota
    }

    /// Whether a timeout fired, and which.
    pub fn timeout_kind(&self) -> Option<TimeoutKind> {
        match self.inner.kind {
            ErrorKind::Timeout(kind) => Some(kind),
            _ => None,
        }
    }

    /// Whether any timeout fired.
    pub fn is_timeout(&self) -> bool {
        self.timeout_kind().is_some()
    }

    /// Whether the connection failed.
    pub fn is_connection(&self) -> bool {
        self.inner.kind == ErrorKind::Connection
    }

    /// Whether the provider failed (5xx, 529, overloaded).
    pub fn is_server(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Server | ErrorKind::Overloaded)
    }

    /// Whether authentication failed (401, 403).
    pub fn is_auth(&self) -> bool {
        self.inner.kind == ErrorKind::Auth
    }

    /// Whether the request was refused as invalid, whatever the refinement.
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::InvalidRequest | ErrorKind::ContextLengthExceeded | ErrorKind::ContentFilter
        )
    }

    /// Whether the context window was exceeded.
    pub fn is_context_length_exceeded(&self) -> bool {
        self.inner.kind == ErrorKind::ContextLengthExceeded
    }

    /// Whether the content filter refused.
    pub fn is_content_filter(&self) -> bool {
        self.inner.kind == ErrorKind::ContentFilter
    }

    /// Whether the body could not be decoded.
    pub fn is_decode(&self) -> bool {
        self.inner.kind == ErrorKind::Decode
    }

    /// Whether the response ended early.
    pub fn is_incomplete(&self) -> bool {
        self.inner.kind == ErrorKind::Incomplete
    }

    /// Whether a circuit breaker rejected the request.
    pub fn is_circuit_open(&self) -> bool {
        self.inner.kind == ErrorKind::CircuitOpen
    }

    /// Whether the budget rejected the request.
    pub fn is_budget_exceeded(&self) -> bool {
        self.inner.kind == ErrorKind::BudgetExceeded
    }

    /// Whether the request was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.kind == ErrorKind::Cancelled
    }

    /// Whether a layer's shared backend (Redis) was unreachable and the layer failed closed.
    pub fn is_backend_unavailable(&self) -> bool {
        self.inner.kind == ErrorKind::BackendUnavailable
    }

    /// Whether the provider (not the caller, not chatstack's own limits) is at fault: what a
    /// circuit breaker counts as a failure.
    pub fn is_provider_fault(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Server
                | ErrorKind::Overloaded
                | ErrorKind::Timeout(_)
                | ErrorKind::Connection
                | ErrorKind::Incomplete
                | ErrorKind::Decode
        ) || (self.inner.kind == ErrorKind::Status
            && self.inner.status.is_some_and(|s| s.is_server_error()))
    }
}

fn kind_for(status: StatusCode, provider: Option<&ProviderError>) -> ErrorKind {
    let refined = |fallback| match provider {
        Some(p) if p.is_context_length_exceeded() => ErrorKind::ContextLengthExceeded,
        Some(p) if p.is_content_filter() => ErrorKind::ContentFilter,
        _ => fallback,
    };
    match status.as_u16() {
        429 if provider.is_some_and(ProviderError::is_insufficient_quota) => {
            ErrorKind::InsufficientQuota
        }
        429 => ErrorKind::RateLimited,
        401 | 403 => ErrorKind::Auth,
        400 | 404 | 413 | 422 => refined(ErrorKind::InvalidRequest),
        529 => ErrorKind::Overloaded,
        500..=599 if provider.is_some_and(|p| p.is("overloaded_error")) => ErrorKind::Overloaded,
        500..=599 => ErrorKind::Server,
        200..=299 => provider.map_or(ErrorKind::Provider, ProviderError::implied_kind),
        _ => refined(ErrorKind::Status),
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut debug = f.debug_struct("Error");
        debug.field("kind", &inner.kind);
        debug.field("message", &inner.message);
        if let Some(status) = inner.status {
            debug.field("status", &status.as_u16());
        }
        if let Some(provider) = &inner.provider {
            debug.field("provider", provider);
        }
        if let Some(id) = &inner.request_id {
            debug.field("request_id", id);
        }
        if let Some(wait) = inner.retry_after {
            debug.field("retry_after", &wait);
        }
        if inner.attempts > 0 {
            debug.field("attempts", &inner.attempts);
        }
        if let Some(source) = &inner.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        write!(f, "{}", inner.kind)?;
        if !inner.message.is_empty() {
            write!(f, ": {}", inner.message)?;
        }
        let mut notes = Vec::new();
        if let Some(status) = inner.status {
            notes.push(format!("status {}", status.as_u16()));
        }
        if let Some(id) = &inner.request_id {
            notes.push(format!("request id {id}"));
        }
        if inner.attempts > 1 {
            notes.push(format!("after {} attempts", inner.attempts));
        }
        if !notes.is_empty() {
            write!(f, " ({})", notes.join(", "))?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|source| &**source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    fn classify(code: u16, body: &str) -> Error {
        Error::from_response(status(code), &HeaderMap::new(), body.as_bytes())
    }

    #[test]
    fn status_classification_and_retryability() {
        let cases: &[(u16, ErrorKind, bool)] = &[
            (400, ErrorKind::InvalidRequest, false),
            (401, ErrorKind::Auth, false),
            (403, ErrorKind::Auth, false),
            (404, ErrorKind::InvalidRequest, false),
            (408, ErrorKind::Status, true),
            (409, ErrorKind::Status, true),
            (422, ErrorKind::InvalidRequest, false),
            (429, ErrorKind::RateLimited, true),
            (500, ErrorKind::Server, true),
            (502, ErrorKind::Server, true),
            (503, ErrorKind::Server, true),
            (529, ErrorKind::Overloaded, true),
            (402, ErrorKind::Status, false),
        ];
        for &(code, kind, retryable) in cases {
            let error = classify(code, "");
            assert_eq!(error.kind(), kind, "status {code}");
            assert_eq!(error.is_retryable(), retryable, "status {code}");
            assert_eq!(error.status(), Some(status(code)));
        }
    }

    #[test]
    fn insufficient_quota_is_permanent() {
        let error = classify(
            429,
            r#"{"error":{"message":"quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        );
        assert!(error.is_insufficient_quota());
        assert!(!error.is_rate_limited());
        assert!(!error.is_retryable());
    }

    #[test]
    fn an_unreachable_shared_backend_is_neither_retried_nor_the_providers_fault() {
        let error = Error::new(ErrorKind::BackendUnavailable, "redis down");
        assert!(error.is_backend_unavailable());
        assert!(
            !error.is_retryable(),
            "retrying would multiply the load on a backend that is down"
        );
        assert!(!error.is_provider_fault());
        assert!(!error.is_connection());
    }

    #[test]
    fn x_should_retry_decides_first() {
        let mut headers = HeaderMap::new();
        headers.insert("x-should-retry", "false".parse().unwrap());
        assert!(!Error::from_response(status(503), &headers, b"").is_retryable());
        headers.insert("x-should-retry", "true".parse().unwrap());
        assert!(Error::from_response(status(400), &headers, b"").is_retryable());
    }

    #[test]
    fn headers_a_retry_needs_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after-ms", "250".parse().unwrap());
        headers.insert("x-request-id", "req_123".parse().unwrap());
        headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        let error = Error::from_response(status(429), &headers, b"");
        assert_eq!(error.retry_after(), Some(Duration::from_millis(250)));
        assert_eq!(error.request_id(), Some("req_123"));
        assert_eq!(error.rate_limit().remaining_requests, Some(0));
        assert!(error.to_string().contains("req_123"));
    }

    #[test]
    fn refinements_of_invalid_requests() {
        let context = classify(
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        );
        assert!(context.is_context_length_exceeded());
        assert!(context.is_invalid_request());
        let filter = classify(
            400,
            r#"{"error":{"message":"filtered","type":null,"param":"prompt","code":"content_filter"}}"#,
        );
        assert!(filter.is_content_filter());
    }

    #[test]
    fn other_error_shapes() {
        let detail = ProviderError::from_body(br#"{"detail":"Invalid API key"}"#).unwrap();
        assert_eq!(detail.message, "Invalid API key");
        let string_error =
            ProviderError::from_body(br#"{"error":"SyntaxError","message":"Unexpected token"}"#)
                .unwrap();
        assert_eq!(string_error.kind.as_deref(), Some("SyntaxError"));
        assert_eq!(string_error.message, "Unexpected token");
        let plain = ProviderError::from_body(b"Internal Server Error").unwrap();
        assert_eq!(plain.message, "Internal Server Error");
        assert_eq!(ProviderError::from_body(b"  "), None);
        assert_eq!(ProviderError::from_body(b"{\"ok\":true}"), None);
    }

    #[test]
    fn lenient_envelope_fields() {
        // LiteLLM: string code, "None" strings; llama.cpp: integer code and extra fields.
        let litellm = ProviderError::from_body(
            br#"{"error":{"message":"limit","type":"None","param":"None","code":"429"}}"#,
        )
        .unwrap();
        assert_eq!(litellm.code.as_deref(), Some("429"));
        assert_eq!(litellm.kind, None);
        assert_eq!(litellm.param, None);
        let llama = classify(
            400,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":4096}}"#,
        );
        assert_eq!(llama.provider().unwrap().code.as_deref(), Some("400"));
        assert!(llama.is_context_length_exceeded());
    }

    #[test]
    fn provider_errors_inside_successes() {
        let overloaded = Error::from_provider(
            ProviderError::from_body(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .unwrap(),
        );
        assert_eq!(overloaded.kind(), ErrorKind::Overloaded);
        assert!(overloaded.is_retryable());
        let unknown = Error::from_provider(ProviderError {
            message: "weird".into(),
            ..ProviderError::default()
        });
        assert_eq!(unknown.kind(), ErrorKind::Provider);
        assert!(!unknown.is_retryable());
    }

    #[test]
    fn body_kept_only_when_unreadable_and_capped() {
        let big = vec![b'x'; MAX_ERROR_BODY * 2];
        let error = Error::decode(std::io::Error::other("bad"), &big);
        assert_eq!(error.body().unwrap().len(), MAX_ERROR_BODY);
        assert!(error.is_decode());
        let envelope = classify(500, r#"{"error":{"message":"boom"}}"#);
        assert_eq!(envelope.body(), None);
        assert_eq!(envelope.message(), "boom");
    }

    #[test]
    fn context_keeps_everything_and_chains_the_cause() {
        #[derive(Debug)]
        struct Mark(Option<BoxError>);
        impl fmt::Display for Mark {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("mark")
            }
        }
        impl StdError for Mark {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                self.0.as_deref().map(|e| e as &(dyn StdError + 'static))
            }
        }
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "120".parse().unwrap());
        headers.insert("x-request-id", "req_9".parse().unwrap());
        let error = Error::from_response(
            status(429),
            &headers,
            br#"{"error":{"message":"Slow down"}}"#,
        )
        .with_source(std::io::Error::other("root cause"))
        .with_attempts(2)
        .with_context("not retried: too long", Mark);
        assert_eq!(error.kind(), ErrorKind::RateLimited);
        assert_eq!(error.message(), "Slow down; not retried: too long");
        assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
        assert_eq!(error.request_id(), Some("req_9"));
        assert_eq!(error.attempts(), 2);
        let mark = StdError::source(&error).unwrap();
        assert!(mark.downcast_ref::<Mark>().is_some());
        assert_eq!(mark.source().unwrap().to_string(), "root cause");
    }

    #[test]
    fn text_truncation_respects_char_boundaries() {
        let text = "é".repeat(MAX_ERROR_BODY);
        let plain = ProviderError::from_body(text.as_bytes()).unwrap();
        assert!(plain.message.len() <= MAX_ERROR_BODY);
    }
}

//! [`TimeoutLayer`] and its configuration, [`TimeoutConfig`].

use std::time::Duration;

use tower::Layer;

use super::service::Timeout;

/// The default of every limit: 600 seconds, the OpenAI SDKs' default timeout.
///
/// Like their read timeout, which bounds every wait for bytes, it also bounds the wait for a
/// stream's first chunk and the silence between chunks, so a hung stream ends eventually
/// even when nothing was configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The default [`stream_total`](TimeoutConfig::stream_total) limit: one hour from the call
/// to a stream's end.
///
/// The other limits cannot end a stream that keeps sending (a provider or proxy that drips
/// keep-alive chunks and never `[DONE]`): every chunk restarts the idle limit. This bound
/// does, and is long enough never to cut a real answer: the longest outputs models give
/// (about 100,000 tokens) stream in well under an hour at the tens of tokens a second
/// providers serve.
pub const DEFAULT_STREAM_TOTAL: Duration = Duration::from_secs(3600);

/// The limits of a [`TimeoutLayer`]: each `None` turns that limit off.
///
/// ```
/// use std::time::Duration;
/// use chatstack_middleware::timeout::TimeoutConfig;
///
/// let config = TimeoutConfig::default()
///     .total(Duration::from_secs(30))
///     .first_chunk(Duration::from_secs(10))
///     .idle(None)
///     .stream_total(Duration::from_secs(1800));
/// assert_eq!(config.total, Some(Duration::from_secs(30)));
/// assert_eq!(config.idle, None);
/// assert_eq!(config.stream_total, Some(Duration::from_secs(1800)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// The limit of one attempt, from the call until the response: for a unary response
    /// the whole response, for a stream its headers (the chunks are the other two limits').
    /// Fails with `TimeoutKind::Total`. Default [`DEFAULT_TIMEOUT`].
    pub total: Option<Duration>,
    /// For a stream: the limit from the call until its first chunk has arrived. Fails with
    /// `TimeoutKind::FirstChunk`. Default [`DEFAULT_TIMEOUT`].
    pub first_chunk: Option<Duration>,
    /// For a stream: the longest silence between one chunk and the next. Fails with
    /// `TimeoutKind::Idle`. Default [`DEFAULT_TIMEOUT`].
    pub idle: Option<Duration>,
    /// For a stream: the limit from the call until the stream has ended (`[DONE]`, its end,
    /// or an error), per attempt. The bound on a stream that keeps sending chunks (which
    /// restart the idle limit) and never ends. Fails with `TimeoutKind::Total`, after the
    /// chunks that came before. Default [`DEFAULT_STREAM_TOTAL`] (an hour).
    pub stream_total: Option<Duration>,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            total: Some(DEFAULT_TIMEOUT),
            first_chunk: Some(DEFAULT_TIMEOUT),
            idle: Some(DEFAULT_TIMEOUT),
            stream_total: Some(DEFAULT_STREAM_TOTAL),
        }
    }
}

impl TimeoutConfig {
    /// Sets the total limit of an attempt (`None`: no limit).
    pub fn total(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.total = limit.into();
        self
    }

    /// Sets the limit from the call to a stream's first chunk (`None`: no limit).
    pub fn first_chunk(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.first_chunk = limit.into();
        self
    }

    /// Sets the longest silence between two chunks of a stream (`None`: no limit).
    pub fn idle(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.idle = limit.into();
        self
    }

    /// Sets the limit from the call to a stream's end (`None`: no limit, so a stream that
    /// keeps sending may run for ever).
    pub fn stream_total(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.stream_total = limit.into();
        self
    }

    /// Whether the layer has anything to do with a stream once its headers have arrived.
    pub(crate) fn limits_streams(&self) -> bool {
        self.first_chunk.is_some() || self.idle.is_some() || self.stream_total.is_some()
    }
}

/// Applies [`Timeout`] to a service: a total limit per attempt and, for streams, a
/// first-chunk, an idle and a stream-total limit. See the [module docs](super) for the
/// semantics.
///
/// Cheap to clone (it is `Copy`). The builder methods set one limit each; `None` turns a
/// limit off:
///
/// ```
/// use std::time::Duration;
/// use chatstack_middleware::timeout::TimeoutLayer;
///
/// let layer = TimeoutLayer::new()
///     .total(Duration::from_secs(60))
///     .first_chunk(Duration::from_secs(20))
///     .idle(Duration::from_secs(5))
///     .stream_total(Duration::from_secs(900));
/// assert_eq!(layer.config().idle, Some(Duration::from_secs(5)));
/// assert_eq!(layer.config().stream_total, Some(Duration::from_secs(900)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutLayer {
    config: TimeoutConfig,
}

impl TimeoutLayer {
    /// A layer with the default limits ([`TimeoutConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer with these limits.
    pub fn from_config(config: TimeoutConfig) -> Self {
        Self { config }
    }

    /// The limits.
    pub fn config(&self) -> &TimeoutConfig {
        &self.config
    }

    /// Sets the total limit of an attempt; see [`TimeoutConfig::total`].
    pub fn total(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.config = self.config.total(limit);
        self
    }

    /// Sets the first-chunk limit of a stream; see [`TimeoutConfig::first_chunk`].
    pub fn first_chunk(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.config = self.config.first_chunk(limit);
        self
    }

    /// Sets the idle limit of a stream; see [`TimeoutConfig::idle`].
    pub fn idle(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.config = self.config.idle(limit);
        self
    }

    /// Sets the limit from the call to a stream's end; see [`TimeoutConfig::stream_total`].
    pub fn stream_total(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.config = self.config.stream_total(limit);
        self
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.config)
    }
}

//! [`CircuitBreakerLayer`] and its [`CircuitBreakerConfig`].

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chatstack_proto::{Error, LlmRequest};
use tower::Layer;

use super::service::CircuitBreaker;
use super::state::{CircuitState, Circuits, KeyBy, Settings, StateChange};

/// The numbers of a circuit breaker, after Resilience4j's.
///
/// The defaults are Resilience4j's scaled to LLM traffic, where a model sees far fewer calls
/// than a typical microservice endpoint and each call is expensive:
///
/// | setting | default | Resilience4j |
/// |---|---|---|
/// | [`failure_rate_threshold`](Self::failure_rate_threshold) | 50 % | 50 % |
/// | [`sliding_window_size`](Self::sliding_window_size) | 20 calls | 100 calls |
/// | [`minimum_calls`](Self::minimum_calls) | 10 calls | 100 calls |
/// | [`slow_call_duration`](Self::slow_call_duration) | off | 60 s |
/// | [`slow_call_rate_threshold`](Self::slow_call_rate_threshold) | 100 % | 100 % |
/// | [`open_duration`](Self::open_duration) | 30 s | 60 s |
/// | [`half_open_probes`](Self::half_open_probes) | 3 calls | 10 calls |
///
/// Slow-call detection is off by default because an LLM call's duration grows with the length
/// of its answer (and a stream's is measured to its end): no one threshold fits every
/// workload, so it is set by whoever knows the workload.
///
/// ```
/// use std::time::Duration;
/// use chatstack_middleware::circuit_breaker::CircuitBreakerConfig;
///
/// let config = CircuitBreakerConfig::default()
///     .sliding_window_size(50)
///     .minimum_calls(20)
///     .failure_rate_threshold(25.0)
///     .slow_call_duration(Duration::from_secs(20))
///     .slow_call_rate_threshold(80.0)
///     .open_duration(Duration::from_secs(10))
///     .half_open_probes(2);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitBreakerConfig {
    pub(crate) failure_rate_threshold: f64,
    pub(crate) sliding_window_size: u32,
    pub(crate) minimum_calls: u32,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) open_duration: Duration,
    pub(crate) half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 50.0,
            sliding_window_size: 20,
            minimum_calls: 10,
            slow_call_duration: None,
            slow_call_rate_threshold: 100.0,
            open_duration: Duration::from_secs(30),
            half_open_probes: 3,
        }
    }
}

impl CircuitBreakerConfig {
    /// The failure rate, in percent of the calls in the window, at which the circuit opens
    /// (reached counts: 5 failures of 10 reach 50 %). Clamped to `0.01..=100` (a NaN counts
    /// as 100).
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.failure_rate_threshold = clamped_percent(percent);
        self
    }

    /// How many of the most recent call outcomes the rates are computed over. Each key's
    /// circuit keeps the window in memory, two bytes per call.
    /// 0 counts as 1.
    pub fn sliding_window_size(mut self, calls: u32) -> Self {
        self.sliding_window_size = calls.max(1);
        self
    }

    /// How many outcomes the window must hold before the rates are evaluated; a value above
    /// the window size counts as the window size (as in Resilience4j).
    /// 0 counts as 1.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls.max(1);
        self
    }

    /// Turns slow-call detection on: a call that takes longer than `duration`, from
    /// `call` until the response is complete (for a stream: until it ends), is slow.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = Some(duration);
        self
    }

    /// The slow-call rate, in percent of the calls in the window, at which the circuit opens.
    /// Only used with [`slow_call_duration`](Self::slow_call_duration).
    /// Clamped to `0.01..=100` (a NaN counts as 100).
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.slow_call_rate_threshold = clamped_percent(percent);
        self
    }

    /// How long an open circuit rejects calls before it half-opens.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
        self
    }

    /// How many probe calls a half-open circuit admits; their outcomes decide whether it
    /// closes or opens again.
    /// 0 counts as 1.
    pub fn half_open_probes(mut self, calls: u32) -> Self {
        self.half_open_probes = calls.max(1);
        self
    }
}

/// Keeps a threshold meaningful whatever the caller passed: configuration may come from
/// user input (a CLI flag), and a bad value must not panic.
fn clamped_percent(percent: f64) -> f64 {
    if percent.is_nan() {
        100.0
    } else {
        percent.clamp(0.01, 100.0)
    }
}

/// A [`Layer`] that wraps a service in a [`CircuitBreaker`].
///
/// A layer is a handle on one set of circuits: every service it wraps, and every clone of
/// those, shares them, and [`state`](Self::state) reads them. Give each endpoint its own layer
/// (or key the circuits by endpoint) when one layer wraps several endpoints' services.
/// The builder methods return a layer with new, empty circuits, so configure a layer before
/// using it.
///
/// ```
/// use std::borrow::Cow;
/// use chatstack_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
///
/// let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default())
///     // One circuit per tag and model, instead of per model.
///     .key_fn(|request| {
///         let tag = request.meta().tag.as_deref().unwrap_or("untagged");
///         Cow::Owned(format!("{tag}/{}", request.model()))
///     })
///     // 429s count too, not only the provider's faults.
///     .count_as_failure(|error| error.is_provider_fault() || error.is_rate_limited())
///     .on_state_change(|change| eprintln!("{change}"));
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    circuits: Arc<Circuits>,
}

impl CircuitBreakerLayer {
    /// A layer with one circuit per model, counting [`Error::is_provider_fault`] errors as
    /// failures.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            circuits: Arc::new(Circuits::new(Settings::new(config))),
        }
    }

    /// One circuit for every request, named `name` in errors, events and
    /// [`state`](Self::state): the breaker of one endpoint, for a layer that wraps that
    /// endpoint's service alone.
    pub fn per_endpoint(self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.with_settings(|settings| settings.key_by = KeyBy::Endpoint(name))
    }

    /// Keys circuits by a function of the request. Return a borrowed key where you can: a key
    /// the breaker has seen before is then found without allocating. Circuits are kept for
    /// the life of the layer, so keep the number of distinct keys bounded.
    pub fn key_fn<F>(self, key: F) -> Self
    where
        F: for<'r> Fn(&'r dyn LlmRequest) -> Cow<'r, str> + Send + Sync + 'static,
    {
        let key = Arc::new(key);
        self.with_settings(|settings| settings.key_by = KeyBy::Custom(key))
    }

    /// Which errors count as failures; the default is [`Error::is_provider_fault`], so a 400
    /// (the caller's fault) does not trip the breaker. Errors it returns `false` for count as
    /// neither success nor failure.
    pub fn count_as_failure<F>(self, is_failure: F) -> Self
    where
        F: Fn(&Error) -> bool + Send + Sync + 'static,
    {
        let is_failure = Arc::new(is_failure);
        self.with_settings(|settings| settings.is_failure = is_failure)
    }

    /// Calls `callback` at every state change, in order per circuit, besides the tracing
    /// event. It runs without any lock held, so it may call [`state`](Self::state); keep it
    /// quick, as it runs on the task whose call caused the change (or on one announcing an
    /// earlier change of the same circuit).
    pub fn on_state_change<F>(self, callback: F) -> Self
    where
        F: Fn(&StateChange) + Send + Sync + 'static,
    {
        let callback = Arc::new(callback);
        self.with_settings(|settings| settings.on_state_change = Some(callback))
    }

    /// The state of the circuit of `key` (by default, a model name). A key never used is
    /// [`CircuitState::Closed`]; an open circuit whose wait is over half-opens on this read,
    /// as it would on the next call.
    pub fn state(&self, key: &str) -> CircuitState {
        self.circuits.state(key)
    }

    fn with_settings(self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.circuits.settings().clone();
        change(&mut settings);
        Self {
            circuits: Arc::new(Circuits::new(settings)),
        }
    }
}

impl Default for CircuitBreakerLayer {
    /// A layer with the default [`CircuitBreakerConfig`].
    fn default() -> Self {
        Self::new(CircuitBreakerConfig::default())
    }
}

impl fmt::Debug for CircuitBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("settings", self.circuits.settings())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_parts(inner, Arc::clone(&self.circuits))
    }
}

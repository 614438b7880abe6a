//! [`RateLimitLayer`] and its configuration: [`RateLimitConfig`], [`Quota`], [`Reconcile`],
//! [`SlowDown`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chatstack_proto::LlmRequest;
use tower::Layer;

use super::counter::TokenCounter;
use super::service::RateLimit;
use super::state::{KeyBy, KeyStatus, Limiters, Settings};

/// How much of a [`Quota`] may go at once, by default: a twentieth of the minute's quota
/// (three seconds' worth), so the steady rate is 95 % of the quota.
pub const DEFAULT_BURST_DIVISOR: u32 = 20;

/// The output tokens charged for a request that does not cap its output
/// (no `max_tokens` / `max_completion_tokens`), by default.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 1024;

/// How many cells (requests, or tokens) a limiter admits per minute, and how many of them
/// may go at once.
///
/// The guarantee is the provider's reading of "per minute": **no 60-second window, sliding
/// or fixed, ever admits more than [`per_minute`](Self::per_minute) cells**, whatever came
/// before (an idle hour included). To keep it, the limiter is a GCRA whose bucket holds
/// [`burst`](Self::burst) cells and refills at `per_minute − burst + 1` cells a minute:
/// a full bucket emptied at once, then refilled for 60 seconds, adds up to exactly the quota.
/// (A bucket of the whole quota that also refills at the whole quota, governor's
/// `Quota::per_minute`, admits up to twice the quota in the minute after an idle spell: a
/// provider counting by the minute answers 429.)
///
/// A request may need more cells than the burst, up to the whole quota: it then waits
/// until the bucket is full and has stayed full for as long as its cells beyond the burst
/// take to refill, takes the whole burst, and leaves those cells as debt that the requests
/// after it wait out. Both halves are needed for the guarantee (the
/// [module docs](super#what-it-guarantees) have the argument), so under saturation each
/// such request costs its excess over the burst in throughput. Only a request needing more
/// than the quota itself can never pass, and is refused at once.
///
/// The burst is therefore a trade: a larger one lets larger requests through at no cost and
/// absorbs spikes, a smaller one brings the steady rate closer to the quota. The default is
/// a twentieth of the quota ([`DEFAULT_BURST_DIVISOR`]): a steady 95 %.
///
/// ```
/// use chatstack_middleware::rate_limit::Quota;
///
/// let tokens = Quota::per_minute(200_000).burst(16_000);
/// assert_eq!(tokens.limit(), 200_000);
/// assert_eq!(tokens.burst_size(), 16_000);
/// assert_eq!(tokens.steady_per_minute(), 184_001);
///
/// // Bad values are clamped, not refused: configuration may come from a command line.
/// assert_eq!(Quota::per_minute(0).limit(), 1);
/// assert_eq!(Quota::per_minute(100).burst(1_000).burst_size(), 100);
/// assert_eq!(Quota::per_minute(600).burst_size(), 30);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    per_minute: u32,
    burst: u32,
    /// The length of the quota's "minute", in nanoseconds: 60 s, except in tests that
    /// compress time (see [`scaled_minute`](Self::scaled_minute)).
    minute_nanos: u64,
}

/// A minute, in nanoseconds.
const MINUTE_NANOS: u64 = 60_000_000_000;

impl Quota {
    /// At most `cells` a minute, with the default burst (a twentieth of it, at least 1).
    /// Clamped to `1..=u32::MAX`.
    pub fn per_minute(cells: u64) -> Self {
        let per_minute = u32::try_from(cells).unwrap_or(u32::MAX).max(1);
        Self {
            per_minute,
            burst: per_minute.div_ceil(DEFAULT_BURST_DIVISOR),
            minute_nanos: MINUTE_NANOS,
        }
    }

    /// How many cells may go at once: the largest request the limiter admits without debt,
    /// and what the steady rate gives up (see the [type docs](Self)). Clamped to
    /// `1..=per_minute`.
    pub fn burst(mut self, cells: u64) -> Self {
        self.burst = u32::try_from(cells)
            .unwrap_or(u32::MAX)
            .clamp(1, self.per_minute);
        self
    }

    /// The quota: the most cells any 60-second window admits, and the largest request the
    /// limiter can ever admit.
    pub fn limit(&self) -> u32 {
        self.per_minute
    }

    /// The burst: the most cells admitted at once without debt.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// The steady rate, in cells a minute, once the burst is spent: `limit − burst + 1`.
    pub fn steady_per_minute(&self) -> u32 {
        self.per_minute - self.burst + 1
    }

    /// Compresses time for tests that cannot run on tokio's paused clock (the Redis
    /// backend's: redis-rs needs real time): the quota's "minute" lasts `minute` instead, and
    /// every guarantee holds for windows of that length. Not for production use.
    #[doc(hidden)]
    pub fn scaled_minute(mut self, minute: Duration) -> Self {
        self.minute_nanos = u64::try_from(minute.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000_000);
        self
    }

    /// The length of the quota's window: a minute (unless [scaled](Self::scaled_minute)).
    #[cfg(feature = "redis")]
    pub(crate) fn window_nanos(&self) -> u64 {
        self.minute_nanos
    }

    /// The GCRA's emission interval: a minute over the steady rate, rounded up to the
    /// nanosecond so that rounding never lets a window pass the quota.
    pub(crate) fn interval_nanos(&self) -> u64 {
        self.minute_nanos
            .div_ceil(u64::from(self.steady_per_minute()))
    }
}

/// Whether the limiter corrects its up-front charge once the real usage is known.
///
/// A request is charged its prompt estimate plus its output cap before it is sent; when the
/// response completes (at once for a unary response, at the end of a stream) its
/// `prompt_tokens + completion_tokens` are known. Responses without usage (a stream without
/// `include_usage`, a failure, a stream dropped early) are not reconciled: their charge
/// stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reconcile {
    /// Give back what was charged but not used, and charge what was used beyond the charge.
    /// Right for providers that count the tokens used (Anthropic's output tokens, most
    /// self-hosted gateways).
    #[default]
    Full,
    /// Only charge what was used beyond the charge (an estimate that was too low); keep
    /// what was over-charged. Right for providers that count the requested `max_tokens` up
    /// front, as OpenAI documents, where giving the unused cap back would overshoot them.
    DebtOnly,
    /// The up-front charge is final.
    Off,
}

impl Reconcile {
    pub(crate) fn gives_credit(self) -> bool {
        self == Self::Full
    }

    pub(crate) fn charges_debt(self) -> bool {
        matches!(self, Self::Full | Self::DebtOnly)
    }
}

/// How the limiter reacts to the provider's own signals: pause a key after a 429, or when
/// the provider's `x-ratelimit-remaining-*` headers run low.
///
/// A pause stops admissions for the key (requests already sent are not affected); waiting
/// requests keep their places and go when it ends, or fail at once if it would take them
/// past their deadline. A later signal can lengthen a pause, never shorten it.
///
/// - **429** (not `insufficient_quota`, which waiting does not cure): the pause is the
///   response's `retry-after-ms` / `retry-after`; without one, the reset time of the
///   exhausted quota from its `x-ratelimit-*` headers; without those,
///   [`default_pause`](Self::default_pause).
/// - **Running low**: a response whose `x-ratelimit-remaining-requests` (or `-tokens`) is
///   under [`low_remaining`](Self::low_remaining) of its `x-ratelimit-limit-*` pauses the key
///   until that quota's `x-ratelimit-reset-*` time. Pausing until the provider's reset,
///   rather than spreading the rest over it, is deliberate: the provider counts traffic this
///   limiter does not see (other processes, other clients of the key), so the remainder is
///   not ours to spend.
///
/// Every pause is capped at [`max_pause`](Self::max_pause), so a bogus header cannot stop a
/// key for an hour.
///
/// ```
/// use std::time::Duration;
/// use chatstack_middleware::rate_limit::SlowDown;
///
/// let slow_down = SlowDown::default()
///     .default_pause(Duration::from_secs(2))
///     .low_remaining(0.10)
///     .max_pause(Duration::from_secs(30));
/// assert_eq!(slow_down.low_remaining_fraction(), 0.10);
/// assert_eq!(SlowDown::default().low_remaining(f64::NAN).low_remaining_fraction(), 0.0);
/// # let _ = SlowDown::off();
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowDown {
    pub(crate) on_rate_limited: bool,
    pub(crate) default_pause: Duration,
    pub(crate) low_remaining: f64,
    pub(crate) max_pause: Duration,
}

impl Default for SlowDown {
    /// Pause on 429s (1 s without `retry-after`) and under 5 % remaining; at most 60 s.
    fn default() -> Self {
        Self {
            on_rate_limited: true,
            default_pause: Duration::from_secs(1),
            low_remaining: 0.05,
            max_pause: Duration::from_secs(60),
        }
    }
}

impl SlowDown {
    /// Never pause on the provider's signals.
    pub fn off() -> Self {
        Self {
            on_rate_limited: false,
            low_remaining: 0.0,
            ..Self::default()
        }
    }

    /// Whether a 429 pauses its key.
    pub fn on_rate_limited(mut self, pause: bool) -> Self {
        self.on_rate_limited = pause;
        self
    }

    /// The pause after a 429 that says neither `retry-after` nor when its quota resets.
    pub fn default_pause(mut self, pause: Duration) -> Self {
        self.default_pause = pause;
        self
    }

    /// The share of a provider quota (`x-ratelimit-remaining-*` over `x-ratelimit-limit-*`)
    /// under which the key pauses until that quota resets. Clamped to `0..=1`; 0 (or NaN)
    /// turns it off.
    pub fn low_remaining(mut self, fraction: f64) -> Self {
        self.low_remaining = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The longest pause any signal may cause.
    pub fn max_pause(mut self, pause: Duration) -> Self {
        self.max_pause = pause;
        self
    }

    /// The configured [`low_remaining`](Self::low_remaining) fraction.
    pub fn low_remaining_fraction(&self) -> f64 {
        self.low_remaining
    }
}

/// The limits of one key (by default, one model) and how the limiter treats it.
///
/// Without a quota a dimension is not limited: the default configuration limits nothing
/// and only [slows down](SlowDown) on the provider's signals.
///
/// ```
/// use chatstack_middleware::rate_limit::{Quota, RateLimitConfig, Reconcile};
///
/// let config = RateLimitConfig::default()
///     .requests_per_minute(500)
///     .tokens(Quota::per_minute(200_000).burst(20_000))
///     .default_max_output_tokens(2_048)
///     .reconcile(Reconcile::DebtOnly);
/// assert_eq!(config.tokens_quota().unwrap().burst_size(), 20_000);
/// assert_eq!(config.requests_quota().unwrap().limit(), 500);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    pub(crate) requests: Option<Quota>,
    pub(crate) tokens: Option<Quota>,
    pub(crate) default_max_output_tokens: u32,
    pub(crate) reconcile: Reconcile,
    pub(crate) slow_down: SlowDown,
}

impl Default for RateLimitConfig {
    /// No quotas, [`DEFAULT_MAX_OUTPUT_TOKENS`], [`Reconcile::Full`], [`SlowDown::default`].
    fn default() -> Self {
        Self {
            requests: None,
            tokens: None,
            default_max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
            reconcile: Reconcile::default(),
            slow_down: SlowDown::default(),
        }
    }
}

impl RateLimitConfig {
    /// Limits requests to `requests` a minute, with the default burst.
    pub fn requests_per_minute(self, requests: u64) -> Self {
        self.requests(Quota::per_minute(requests))
    }

    /// Limits requests with this quota.
    pub fn requests(mut self, quota: Quota) -> Self {
        self.requests = Some(quota);
        self
    }

    /// Limits tokens (prompt plus output cap) to `tokens` a minute, with the default burst.
    pub fn tokens_per_minute(self, tokens: u64) -> Self {
        self.tokens(Quota::per_minute(tokens))
    }

    /// Limits tokens with this quota; a request needing more than its
    /// [limit](Quota::limit) is refused, one needing more than its burst waits longer (see
    /// [`Quota`]).
    pub fn tokens(mut self, quota: Quota) -> Self {
        self.tokens = Some(quota);
        self
    }

    /// The output tokens charged for a request without an output cap.
    pub fn default_max_output_tokens(mut self, tokens: u32) -> Self {
        self.default_max_output_tokens = tokens;
        self
    }

    /// Whether and how the charge is corrected once the usage is known.
    pub fn reconcile(mut self, reconcile: Reconcile) -> Self {
        self.reconcile = reconcile;
        self
    }

    /// How the limiter reacts to 429s and low `x-ratelimit-remaining-*`.
    pub fn slow_down(mut self, slow_down: SlowDown) -> Self {
        self.slow_down = slow_down;
        self
    }

    /// The request quota, if requests are limited.
    pub fn requests_quota(&self) -> Option<Quota> {
        self.requests
    }

    /// The token quota, if tokens are limited.
    pub fn tokens_quota(&self) -> Option<Quota> {
        self.tokens
    }
}

/// A [`Layer`] that wraps a service in a [`RateLimit`].
///
/// A layer is a handle on one set of limiters: every service it wraps, and every clone of
/// those, shares them (behind an `Arc`), and [`status`](Self::status) reads them. The
/// builder methods return a layer with new, empty limiters, so configure a layer before
/// using it.
///
/// ```
/// use std::borrow::Cow;
/// use chatstack_middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
///
/// let layer = RateLimitLayer::new(
///     RateLimitConfig::default().requests_per_minute(500).tokens_per_minute(200_000),
/// )
/// // A model with limits of its own.
/// .key_config("gpt-4.1", RateLimitConfig::default().requests_per_minute(100))
/// // One limiter per tag and model, instead of per model.
/// .key_fn(|request| {
///     let tag = request.meta().tag.as_deref().unwrap_or("untagged");
///     Cow::Owned(format!("{tag}/{}", request.model()))
/// });
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    limiters: Arc<Limiters>,
}

impl RateLimitLayer {
    /// A layer with one limiter per model, each configured with `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            limiters: Arc::new(Limiters::new(Settings::new(config))),
        }
    }

    /// A layer whose limiters are shared, through Redis, with every process that uses the
    /// same Redis and [limiter name](crate::redis::RedisLimiter::name): one limiter per key
    /// (by default, per model) for the whole fleet, so that ten replicas together stay
    /// within `config`'s quotas. Configure every replica alike.
    ///
    /// Everything else is the in-process layer's: the FIFO queue of each key (per process),
    /// deadlines, reconciliation and slowing down (shared), [`status`](Self::status) (as of
    /// the last decision). Each decision is one round trip to Redis; while Redis is
    /// unreachable the layer follows the limiter's [`Outage`](crate::redis::Outage) policy.
    /// See the [`redis`](crate::redis) module.
    ///
    /// ```no_run
    /// use chatstack_middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
    /// use chatstack_middleware::redis::{Outage, RedisConnection, RedisLimiter};
    ///
    /// # fn main() -> Result<(), chatstack_middleware::Error> {
    /// let redis = RedisConnection::open("redis://127.0.0.1:6379/")?;
    /// let layer = RateLimitLayer::redis(
    ///     RateLimitConfig::default().requests_per_minute(600).tokens_per_minute(100_000),
    ///     RedisLimiter::new(redis).on_outage(Outage::FailOpen { local_share: 0.1 }),
    /// );
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(config: RateLimitConfig, limiter: crate::redis::RedisLimiter) -> Self {
        let shared = limiter.into_shared();
        Self::new(config).with_settings(|settings| settings.remote = Some(shared))
    }

    /// Keys limiters by a function of the request (by default: its model). Return a borrowed
    /// key where you can: a key seen before is then found without allocating. Limiters are
    /// kept for the life of the layer, so keep the number of distinct keys bounded.
    ///
    /// To limit per API key, put what tells the keys apart on the request (a
    /// [`tag`](chatstack_proto::RequestMeta::tag), an extension) and key by it: the
    /// authentication layer sits below this one, so the key itself is not on the request yet.
    pub fn key_fn<F>(self, key: F) -> Self
    where
        F: for<'r> Fn(&'r dyn LlmRequest) -> Cow<'r, str> + Send + Sync + 'static,
    {
        let key = Arc::new(key);
        self.with_settings(|settings| settings.key_by = KeyBy::Custom(key))
    }

    /// Configures one key (by default, a model) on its own; other keys keep the layer's
    /// configuration.
    pub fn key_config(self, key: impl Into<Arc<str>>, config: RateLimitConfig) -> Self {
        let key = key.into();
        self.with_settings(|settings| {
            Arc::make_mut(&mut settings.per_key).insert(key, config);
        })
    }

    /// Counts prompt tokens with `counter` instead of the request's own
    /// [`estimated_prompt_tokens`](LlmRequest::estimated_prompt_tokens); see
    /// [`TokenCounter`].
    pub fn token_counter(self, counter: impl TokenCounter) -> Self {
        let counter: Arc<dyn TokenCounter> = Arc::new(counter);
        self.with_settings(|settings| settings.counter = Some(counter))
    }

    /// What the limiter of `key` (by default, a model) looks like now; `None` for a key that
    /// has not been used.
    pub fn status(&self, key: &str) -> Option<KeyStatus> {
        self.limiters.status(key)
    }

    fn with_settings(self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.limiters.settings().clone();
        change(&mut settings);
        Self {
            limiters: Arc::new(Limiters::new(settings)),
        }
    }
}

impl Default for RateLimitLayer {
    /// A layer with the default [`RateLimitConfig`]: no quotas, slowing down on 429s.
    fn default() -> Self {
        Self::new(RateLimitConfig::default())
    }
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("settings", self.limiters.settings())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_parts(inner, Arc::clone(&self.limiters))
    }
}

/// The per-key configurations of a layer.
pub(crate) type PerKey = Arc<HashMap<Arc<str>, RateLimitConfig>>;

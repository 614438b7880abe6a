//! [`RetryLayer`] and its configuration: [`Backoff`], [`Jitter`] and [`RetryBudget`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use retry_policies::policies::ExponentialBackoff;
use retry_policies::{RetryDecision, RetryPolicy};
use tower::Layer;
use tower::retry::budget::TpsBudget;

use super::classify::{IsRetryable, RetryClassifier};
use super::service::Retry;

/// The longest [`Backoff`] base or cap: a day. Longer values are cut to it, so the
/// exponential cannot overflow.
const LONGEST_BACKOFF: Duration = Duration::from_secs(24 * 60 * 60);

/// How the jitter of a [`Backoff`] spreads each wait, around the exponential value
/// `computed = min(base × 2ⁿ, cap)` of retry `n` (0 for the first retry).
///
/// The modes are those of `retry_policies::Jitter`, which computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No jitter: the wait is `computed`.
    None,
    /// "Full jitter": uniform in `[0, computed]`.
    Full,
    /// Uniform in `[base / 2, computed]`: never above the exponential (so never slower than
    /// the OpenAI SDKs' upper value), never below half the base.
    #[default]
    Bounded,
}

impl From<Jitter> for retry_policies::Jitter {
    fn from(jitter: Jitter) -> Self {
        match jitter {
            Jitter::None => Self::None,
            Jitter::Full => Self::Full,
            Jitter::Bounded => Self::Bounded,
        }
    }
}

/// Exponential backoff with jitter: `min(base × 2ⁿ, cap)` before retry `n`, spread by the
/// [`Jitter`]. By default base 0.5 s, cap 8 s and [`Jitter::Bounded`], after the OpenAI SDKs.
///
/// The delays are computed by `retry_policies`' `ExponentialBackoff`; see the
/// [module docs](super) for why.
///
/// ```
/// use std::time::Duration;
/// use chatstack_middleware::retry::{Backoff, Jitter};
///
/// let backoff = Backoff::default().jitter(Jitter::None);
/// assert_eq!(backoff.delay(0), Duration::from_millis(500));
/// assert_eq!(backoff.delay(3), Duration::from_secs(4));
/// assert_eq!(backoff.delay(10), Duration::from_secs(8), "capped");
///
/// let jittered = Backoff::default().delay(2);
/// assert!(jittered >= Duration::from_millis(250) && jittered <= Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(8),
            jitter: Jitter::Bounded,
        }
    }
}

impl Backoff {
    /// The default backoff (same as [`Backoff::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The wait before the first retry, doubled for each further one (default 0.5 s; at
    /// most a day).
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base.min(LONGEST_BACKOFF);
        self
    }

    /// The longest wait (default 8 s; at most a day). A cap below the base acts as the base.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap.min(LONGEST_BACKOFF);
        self
    }

    /// How waits are spread (default [`Jitter::Bounded`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before retry `retry` (0 for the first retry), with the jitter drawn afresh,
    /// in whole microseconds.
    pub fn delay(&self, retry: u32) -> Duration {
        let cap = self.cap.max(self.base);
        let policy = ExponentialBackoff::builder()
            .retry_bounds(self.base, cap)
            .jitter(self.jitter.into())
            .base(2)
            .build_with_max_retries(u32::MAX);
        // retry_policies answers with a wall-clock time; turn it into a wait at once, so the
        // sleep itself runs on tokio's clock. The time between its clock read and this one
        // (nanoseconds) is given back by rounding up to the microsecond.
        match policy.should_retry(SystemTime::now(), retry) {
            RetryDecision::Retry { execute_after } => {
                let wait = execute_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                ceil_to_micros(wait).min(cap)
            }
            RetryDecision::DoNotRetry => cap,
        }
    }
}

fn ceil_to_micros(wait: Duration) -> Duration {
    let micros = wait.as_nanos().div_ceil(1_000);
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// A retry budget, so that a total outage multiplies the load by at most
/// `1 + retry_ratio`, plus a small reserve.
///
/// Every first attempt deposits into it, every retry withdraws; a retry the budget cannot
/// pay for is not made (the error is returned as it is). It is tower's [`TpsBudget`]: deposits
/// count for `ttl`, and `min_retries_per_second × ttl` retries are allowed on top, so a client
/// that sends few requests can still retry. Defaults: 20 %, 10 retries a second, over 10 s.
///
/// ```
/// use std::time::Duration;
/// use chatstack_middleware::retry::{RetryBudget, RetryLayer};
///
/// let layer = RetryLayer::new().budget(
///     RetryBudget::default().retry_ratio(0.1).min_retries_per_second(1).ttl(Duration::from_secs(30)),
/// );
/// let unlimited = RetryLayer::new().budget(None);
/// # let _ = (layer, unlimited);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    ttl: Duration,
    min_retries_per_second: u32,
    retry_ratio: f32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_retries_per_second: 10,
            retry_ratio: 0.2,
        }
    }
}

impl RetryBudget {
    /// The default budget (same as [`RetryBudget::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a deposit counts (default 10 s; kept within 1 to 60 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        self
    }

    /// Retries allowed each second whatever the traffic (default 10): the reserve.
    pub fn min_retries_per_second(mut self, retries: u32) -> Self {
        self.min_retries_per_second = retries.min(i32::MAX as u32 - 1);
        self
    }

    /// Retries allowed per first attempt (default 0.2, that is 20 %; kept within 0 to 1000,
    /// NaN counts as 0).
    pub fn retry_ratio(mut self, ratio: f32) -> Self {
        self.retry_ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1000.0)
        };
        self
    }

    fn build(&self) -> TpsBudget {
        TpsBudget::new(self.ttl, self.min_retries_per_second, self.retry_ratio)
    }
}

/// What a [`Retry`] service knows, shared by its clones behind one `Arc`.
pub(crate) struct RetryConfig<C> {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) retry_after_cap: Duration,
    pub(crate) total_deadline: Option<Duration>,
    pub(crate) budget: Option<Arc<TpsBudget>>,
    pub(crate) classifier: C,
}

impl<C: Clone> Clone for RetryConfig<C> {
    fn clone(&self) -> Self {
        Self {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            retry_after_cap: self.retry_after_cap,
            total_deadline: self.total_deadline,
            budget: self.budget.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for RetryConfig<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryConfig")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("retry_after_cap", &self.retry_after_cap)
            .field("total_deadline", &self.total_deadline)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Wraps a service in [`Retry`]: retries retryable errors with exponential backoff, honours
/// `retry-after`, and stops at a number of attempts, a deadline, or an empty retry budget.
///
/// Defaults: 3 attempts, [`Backoff::default`] (0.5 s · 2ⁿ, capped at 8 s, jittered),
/// `retry-after` honoured up to 60 s, no total deadline (the request's
/// [`deadline`](chatstack_proto::RequestMeta::deadline) still applies), a
/// [`RetryBudget::default`] of 20 %, and [`IsRetryable`] to classify errors.
///
/// The retry budget is created with the layer: clones of the layer, and every service it
/// wraps, share it. Call [`budget`](Self::budget) again for a separate one.
#[derive(Clone)]
pub struct RetryLayer<C = IsRetryable> {
    config: RetryConfig<C>,
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self {
            config: RetryConfig {
                max_attempts: 3,
                backoff: Backoff::default(),
                retry_after_cap: Duration::from_secs(60),
                total_deadline: None,
                budget: Some(Arc::new(RetryBudget::default().build())),
                classifier: IsRetryable,
            },
        }
    }
}

impl RetryLayer {
    /// A layer with the defaults (same as [`RetryLayer::default`]).
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C> RetryLayer<C> {
    /// The most attempts per call, the first included (default 3, that is 2 retries; 0
    /// counts as 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts.max(1);
        self
    }

    /// The backoff between attempts when the server gives no `retry-after`.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// The longest `retry-after` (or `retry-after-ms`) honoured (default 60 s). A server that
    /// asks for a longer wait gets no retry: the call fails at once with the server's error,
    /// marked with [`RetryStopped`](super::RetryStopped).
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.config.retry_after_cap = cap;
        self
    }

    /// A deadline for the whole call, counted from its start (default none): no backoff
    /// sleeps past it; when the next wait would, the call fails at once with the last error,
    /// marked with [`RetryStopped`](super::RetryStopped). An attempt in flight is not cut
    /// short: that is the timeout layer's job.
    pub fn total_deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.config.total_deadline = deadline.into();
        self
    }

    /// The retry budget (default [`RetryBudget::default`]); `None` retries without one. Each
    /// call makes a new budget, shared by the clones of this layer and the services it wraps.
    pub fn budget(mut self, budget: impl Into<Option<RetryBudget>>) -> Self {
        self.config.budget = budget.into().map(|budget| Arc::new(budget.build()));
        self
    }

    /// Decides which errors are retried, instead of [`IsRetryable`]: a [`RetryClassifier`],
    /// or a closure `Fn(&Error) -> bool`.
    pub fn classifier<D: RetryClassifier>(self, classifier: D) -> RetryLayer<D> {
        let RetryConfig {
            max_attempts,
            backoff,
            retry_after_cap,
            total_deadline,
            budget,
            classifier: _,
        } = self.config;
        RetryLayer {
            config: RetryConfig {
                max_attempts,
                backoff,
                retry_after_cap,
                total_deadline,
                budget,
                classifier,
            },
        }
    }
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_config(inner, Arc::new(self.config.clone()))
    }
}

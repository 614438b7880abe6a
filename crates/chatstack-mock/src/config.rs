//! Server configuration: [`MockConfig`] and its parts.

use std::fmt;
use std::time::Duration;

use crate::fault::{Fault, FaultRule};

/// The default reply length, in tokens (words).
pub const DEFAULT_REPLY_TOKENS: u32 = 16;
/// The most tokens a reply may have, whatever the config or `x-mock-reply-tokens` say.
pub const MAX_REPLY_TOKENS: u32 = 1_000_000;
/// The default cap on `n`.
pub const DEFAULT_MAX_CHOICES: u32 = 16;
/// The default request body limit: 32 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;
/// The default [`MockConfig::stall_cap`]: five minutes.
pub const DEFAULT_STALL_CAP: Duration = Duration::from_secs(300);
/// The default seed of the fault and jitter RNGs.
pub const DEFAULT_SEED: u64 = 0x6d6f_636b_5eed;

/// The configuration of a [`MockServer`](crate::MockServer).
///
/// Every field has a default ([`MockConfig::default`]) and a builder method:
///
/// ```
/// use std::time::Duration;
/// use chatstack_mock::{Fault, MockConfig};
///
/// let config = MockConfig::default()
///     .api_key("sk-test")
///     .reply_tokens(32)
///     .latency(Duration::from_millis(20))
///     .jitter(Duration::from_millis(10))
///     .fault(Fault::ServiceUnavailable, 0.2)
///     .seed(7);
/// assert_eq!(config.faults.len(), 1);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct MockConfig {
    /// The port to bind on 127.0.0.1; 0 (the default) picks a free one.
    pub port: u16,
    /// The key clients must send as `Authorization: Bearer KEY`; `None` (the default) accepts
    /// any request.
    pub api_key: Option<String>,
    /// Tokens per reply unless `x-mock-reply-tokens` says otherwise (default 16).
    pub reply_tokens: u32,
    /// The most choices a request gets, whatever its `n` (default 16).
    pub max_choices: u32,
    /// The models `GET /v1/models` lists. Chat requests may name any model.
    pub models: Vec<String>,
    /// Delay before every response.
    pub latency: LatencyConfig,
    /// Delay before each content chunk of a stream (and, in total, before a successful unary
    /// reply).
    /// Zero by default: a stream is written as fast as the client reads it.
    pub token_interval: Duration,
    /// Faults the server injects by itself, each with a probability.
    pub faults: Vec<FaultRule>,
    /// Seed of the RNGs that draw the fault rules and the latency jitter.
    pub seed: u64,
    /// How long a [`Fault::Stall`] stays silent, a [`Fault::NoAnswer`] holds its connection
    /// and a [`Fault::Drip`] drips before the server closes the connection (default five
    /// minutes).
    pub stall_cap: Duration,
    /// The `x-ratelimit-*` headers, and optional enforcement.
    pub rate_limits: RateLimitConfig,
    /// A context window: a request whose prompt tokens plus requested output tokens pass it
    /// gets a 400 `context_length_exceeded`. `None` (the default) accepts any size.
    pub context_window: Option<u64>,
    /// The largest request body accepted (default 32 MiB); larger ones get a 413.
    pub max_request_body: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            port: 0,
            api_key: None,
            reply_tokens: DEFAULT_REPLY_TOKENS,
            max_choices: DEFAULT_MAX_CHOICES,
            models: ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "o3-mini", "mock-1"]
                .map(String::from)
                .to_vec(),
            latency: LatencyConfig::default(),
            token_interval: Duration::ZERO,
            faults: Vec::new(),
            seed: DEFAULT_SEED,
            stall_cap: DEFAULT_STALL_CAP,
            rate_limits: RateLimitConfig::default(),
            context_window: None,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
        }
    }
}

impl fmt::Debug for MockConfig {
    /// Shows everything but the API key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field("port", &self.port)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("reply_tokens", &self.reply_tokens)
            .field("max_choices", &self.max_choices)
            .field("models", &self.models)
            .field("latency", &self.latency)
            .field("token_interval", &self.token_interval)
            .field("faults", &self.faults)
            .field("seed", &self.seed)
            .field("stall_cap", &self.stall_cap)
            .field("rate_limits", &self.rate_limits)
            .field("context_window", &self.context_window)
            .field("max_request_body", &self.max_request_body)
            .finish()
    }
}

impl MockConfig {
    /// The default configuration (same as [`MockConfig::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Requires `Authorization: Bearer KEY`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the default reply length in tokens (capped at [`MAX_REPLY_TOKENS`]).
    pub fn reply_tokens(mut self, tokens: u32) -> Self {
        self.reply_tokens = tokens.min(MAX_REPLY_TOKENS);
        self
    }

    /// Sets the cap on `n` (at least 1).
    pub fn max_choices(mut self, max: u32) -> Self {
        self.max_choices = max.max(1);
        self
    }

    /// Sets the models `GET /v1/models` lists.
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the fixed delay before every response.
    pub fn latency(mut self, fixed: Duration) -> Self {
        self.latency.fixed = fixed;
        self
    }

    /// Adds a random delay, uniform in `0..=jitter`, to every response.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.latency.jitter = jitter;
        self
    }

    /// Sets the delay before each streamed content chunk.
    pub fn token_interval(mut self, interval: Duration) -> Self {
        self.token_interval = interval;
        self
    }

    /// Injects `fault` into a share `probability` (0 to 1) of chat completions.
    pub fn fault(mut self, fault: Fault, probability: f64) -> Self {
        self.faults.push(FaultRule::new(fault, probability));
        self
    }

    /// Adds a fault rule.
    pub fn fault_rule(mut self, rule: FaultRule) -> Self {
        self.faults.push(rule);
        self
    }

    /// Seeds the fault and jitter RNGs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets how long a stall, a no-answer or a drip lasts before the server gives up on the
    /// connection.
    pub fn stall_cap(mut self, cap: Duration) -> Self {
        self.stall_cap = cap;
        self
    }

    /// Sets the rate-limit headers and enforcement.
    pub fn rate_limits(mut self, rate_limits: RateLimitConfig) -> Self {
        self.rate_limits = rate_limits;
        self
    }

    /// Rejects requests whose prompt plus requested output pass `tokens`.
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// Sets the request body limit.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.max_request_body = bytes;
        self
    }
}

/// A delay before every response: `fixed` plus a uniform random part in `0..=jitter`.
///
/// The `x-mock-latency-ms` request header replaces both for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencyConfig {
    /// The fixed part.
    pub fixed: Duration,
    /// The largest random addition, drawn from the seeded jitter RNG.
    pub jitter: Duration,
}

impl LatencyConfig {
    /// A fixed delay without jitter.
    pub fn fixed(fixed: Duration) -> Self {
        Self {
            fixed,
            jitter: Duration::ZERO,
        }
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
}

/// The provider's rate limits, as the mock reports them in `x-ratelimit-*` headers.
///
/// The mock counts requests and tokens (prompt tokens plus the requested output cap) in fixed
/// one-minute windows on tokio's clock, and reports the limit, what remains of it, and the time
/// until the window ends (OpenAI's format: `6m0s`, `1.5s`, `20ms`). With
/// [`enforce`](Self::enforce) it also answers 429 `rate_limit_exceeded` once a window is used
/// up, with `Retry-After` set to the window's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Requests per minute (default 10,000).
    pub requests_per_minute: u64,
    /// Tokens per minute (default 30,000,000).
    pub tokens_per_minute: u64,
    /// Whether to answer 429 when a limit is used up (default false: report only).
    pub enforce: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 10_000,
            tokens_per_minute: 30_000_000,
            enforce: false,
        }
    }
}

impl RateLimitConfig {
    /// Sets the request limit per minute.
    pub fn requests_per_minute(mut self, limit: u64) -> Self {
        self.requests_per_minute = limit;
        self
    }

    /// Sets the token limit per minute.
    pub fn tokens_per_minute(mut self, limit: u64) -> Self {
        self.tokens_per_minute = limit;
        self
    }

    /// Answers 429 once a limit is used up.
    pub fn enforce(mut self, enforce: bool) -> Self {
        self.enforce = enforce;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_key() {
        let config = MockConfig::default().api_key("sk-secret-123");
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-secret-123"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn builders_clamp() {
        let config = MockConfig::new().reply_tokens(u32::MAX).max_choices(0);
        assert_eq!(config.reply_tokens, MAX_REPLY_TOKENS);
        assert_eq!(config.max_choices, 1);
    }
}

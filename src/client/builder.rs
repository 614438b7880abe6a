//! [`ClientBuilder`]: the default stack, layer by layer.

use std::sync::Arc;
use std::time::Duration;

use chatstack_middleware::auth::{ApiKey, AuthLayer, KeySource};
use chatstack_middleware::budget::BudgetLayer;
use chatstack_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use chatstack_middleware::cost::{CostLayer, CostLedger, Pricing, UnknownModel, Usd};
use chatstack_middleware::fallback::FallbackLayer;
use chatstack_middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
use chatstack_middleware::retry::RetryLayer;
use chatstack_middleware::timeout::TimeoutLayer;
use chatstack_middleware::trace::TraceLayer;
use chatstack_proto::{ChatRequest, ChatResponse, ChatStream, Error, ErrorKind, StreamRequest};
use chatstack_transport::{HttpTransport, HttpTransportBuilder};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::{Client, ClientBudget, Inner};

/// The environment variable [`Client::from_env`] reads the API key from.
pub const API_KEY_VAR: &str = "OPENAI_API_KEY";

/// The environment variable [`Client::from_env`] reads the base URL from, when it is set.
pub const BASE_URL_VAR: &str = "OPENAI_BASE_URL";

/// The default limit of one attempt: 600 s, the OpenAI SDKs' timeout. For a unary call it
/// covers the whole response; for a stream, until its headers. The chunks are held by the
/// first-chunk and idle limits and by the stream limit
/// ([`DEFAULT_STREAM_TOTAL`](chatstack_middleware::timeout::DEFAULT_STREAM_TOTAL), an hour
/// from the call to the stream's end), so a long answer that keeps streaming is not cut,
/// but a server that drips empty events forever is.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(600);

/// The default limit from a stream's call to its first chunk: 120 s. Long enough for a
/// reasoning model to think before it answers, short enough that a request stuck in a
/// provider's queue is retried within two minutes rather than ten.
pub const DEFAULT_FIRST_CHUNK_TIMEOUT: Duration = Duration::from_secs(120);

/// The default longest silence between two chunks of a stream: 60 s. Providers send
/// tokens many times a second; a minute of silence mid-answer is a hung connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A layer left at its default, set explicitly, or turned off.
///
/// Defaults are made in [`ClientBuilder::build`], not when the builder is made, so every
/// client gets fresh state (circuits, retry budget) unless it is handed a layer to share.
#[derive(Debug)]
enum Setting<T> {
    Default,
    Set(T),
    Off,
}

impl<T> Setting<T> {
    fn resolve(self, default: impl FnOnce() -> T) -> Option<T> {
        match self {
            Self::Default => Some(default()),
            Self::Set(value) => Some(value),
            Self::Off => None,
        }
    }
}

/// The trace layer: made at build time (provider, server address and port from the URL),
/// given whole, or off.
#[derive(Debug)]
enum TraceSetting {
    Auto { provider: Option<Arc<str>> },
    Layer(TraceLayer),
    Off,
}

/// A spending cap: a figure priced like the cost layer prices, or a layer given whole.
#[derive(Debug)]
enum BudgetSetting {
    Cap(Usd),
    Layer(BudgetLayer),
    #[cfg(feature = "redis")]
    Shared(BudgetLayer<chatstack_middleware::redis::RedisBudget>),
}

/// Builds a [`Client`]: the default stack of DESIGN §4 over an [`HttpTransport`], each layer
/// on by default or off by default as below, each configurable with its own config type.
///
/// From the outside in:
///
/// | layer | default | set with | turn off with |
/// |---|---|---|---|
/// | trace | on: provider `openai`, server address and port from the base URL | [`trace`](Self::trace), [`provider`](Self::provider) | [`no_trace`](Self::no_trace) |
/// | budget | off | [`budget`](Self::budget), [`budget_layer`](Self::budget_layer), `shared_budget` (feature `redis`) | — |
/// | cost | on: the built-in price table, a new [`CostLedger`] | [`pricing`](Self::pricing), [`ledger`](Self::ledger) | [`no_cost`](Self::no_cost) |
/// | fallback | off | [`fallback_models`](Self::fallback_models) | — |
/// | retry | on: [`RetryLayer::new`] (3 attempts, 0.5 s · 2ⁿ backoff capped at 8 s, `retry-after` up to 60 s, a 20 % retry budget) | [`retry`](Self::retry) | [`no_retry`](Self::no_retry) |
/// | circuit breaker | on: per model, [`CircuitBreakerConfig::default`] (opens at 50 % failures of the last 20 calls, after 10; 30 s open) | [`circuit_breaker`](Self::circuit_breaker), [`circuit_breaker_layer`](Self::circuit_breaker_layer) | [`no_circuit_breaker`](Self::no_circuit_breaker) |
/// | rate limit | off | [`rate_limit`](Self::rate_limit), [`rate_limit_layer`](Self::rate_limit_layer) | — |
/// | timeout | on: [`DEFAULT_TOTAL_TIMEOUT`] (600 s) per attempt, [`DEFAULT_FIRST_CHUNK_TIMEOUT`] (120 s) to a stream's first chunk, [`DEFAULT_IDLE_TIMEOUT`] (60 s) between chunks, an hour for a whole stream | [`timeout`](Self::timeout) | [`no_timeout`](Self::no_timeout) |
/// | auth | off until a key is given | [`api_key`](Self::api_key), [`auth`](Self::auth) | — |
/// | transport | OpenAI's base URL, 10 s connect timeout, 600 s total, 16 MiB body cap | [`base_url`](Self::base_url), [`transport`](Self::transport) | — |
///
/// Every method is infallible and order-independent (but for the last call of the same
/// setting winning); what can be wrong (a URL that does not parse) is an
/// [`ErrorKind::Config`] error from [`build`](Self::build).
///
/// The unary and the streaming stacks are built from the **same** layer values, and a
/// chatstack layer is a handle on its state: so one budget, ledger, retry budget, set of
/// circuits and set of rate limiters serve both, and every clone of the client. A layer
/// given to two builders is shared by both clients; the defaults are made afresh by each
/// [`build`](Self::build).
///
/// ```
/// use std::time::Duration;
///
/// use chatstack::Client;
/// use chatstack::middleware::auth::ApiKey;
/// use chatstack::middleware::cost::Usd;
/// use chatstack::middleware::rate_limit::RateLimitConfig;
/// use chatstack::middleware::retry::RetryLayer;
/// use chatstack::middleware::timeout::TimeoutLayer;
///
/// # fn main() -> Result<(), chatstack::Error> {
/// let client = Client::builder()
///     .base_url("https://api.deepseek.com/v1")
///     .api_key(ApiKey::new("sk-0123456789abcdef0123456789abcdef")?)
///     .provider("deepseek")
///     .budget(Usd::from_dollars(20))
///     .rate_limit(RateLimitConfig::default().requests_per_minute(500).tokens_per_minute(200_000))
///     .retry(RetryLayer::new().max_attempts(5))
///     .timeout(TimeoutLayer::new().total(Duration::from_secs(120)).idle(Duration::from_secs(30)))
///     .build()?;
/// assert_eq!(client.url(), "https://api.deepseek.com/v1/chat/completions");
/// assert_eq!(client.budget().unwrap().remaining(), Usd::from_dollars(20));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    transport: HttpTransportBuilder,
    base_url: Option<String>,
    trace: TraceSetting,
    budget: Option<BudgetSetting>,
    cost: bool,
    pricing: Option<Pricing>,
    ledger: Option<CostLedger>,
    fallback_models: Vec<String>,
    retry: Setting<RetryLayer>,
    circuit_breaker: Setting<CircuitBreakerLayer>,
    rate_limit: Option<RateLimitLayer>,
    timeout: Setting<TimeoutLayer>,
    auth: Option<AuthLayer>,
}

/// The layer values both stacks are built from.
struct Layers {
    trace: Option<TraceLayer>,
    budget: Option<ClientBudget>,
    cost: Option<CostLayer>,
    retry: Option<RetryLayer>,
    circuit_breaker: Option<CircuitBreakerLayer>,
    rate_limit: Option<RateLimitLayer>,
    timeout: Option<TimeoutLayer>,
    auth: Option<AuthLayer>,
}

/// Stacks the layers over the transport in the order of DESIGN §4, outermost first:
/// `trace → budget → cost → fallback → retry → circuit breaker → rate limit → timeout →
/// auth → transport`. A macro rather than a generic function: it is instantiated for
/// `ChatRequest` and `StreamRequest`, and the bounds of nine nested services spelled out
/// generically would say nothing the two concrete instantiations do not check.
///
/// The budget is outside the cost layer so that, when a response completes, the ledger is
/// charged before the reservation is released (see `BudgetLayer::with_ledger`); fallback is
/// above retry and the breaker, so each alternative gets its retries and an open circuit
/// falls back at once.
macro_rules! stack {
    ($layers:expr, $fallback:expr, $transport:expr) => {
        ServiceBuilder::new()
            .option_layer($layers.trace.clone())
            .option_layer($layers.budget.clone())
            .option_layer($layers.cost.clone())
            .option_layer($fallback)
            .option_layer($layers.retry.clone())
            .option_layer($layers.circuit_breaker.clone())
            .option_layer($layers.rate_limit.clone())
            .option_layer($layers.timeout)
            .option_layer($layers.auth.clone())
            .service($transport.clone())
    };
}

impl Default for ClientBuilder {
    /// Same as [`ClientBuilder::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl ClientBuilder {
    /// A builder with the defaults in the [type docs](Self): no key, OpenAI's base URL.
    pub fn new() -> Self {
        Self {
            transport: HttpTransport::builder(),
            base_url: None,
            trace: TraceSetting::Auto { provider: None },
            budget: None,
            cost: true,
            pricing: None,
            ledger: None,
            fallback_models: Vec::new(),
            retry: Setting::Default,
            circuit_breaker: Setting::Default,
            rate_limit: None,
            timeout: Setting::Default,
            auth: None,
        }
    }

    /// A builder with the key in `OPENAI_API_KEY` (trimmed) and, when `OPENAI_BASE_URL` is
    /// set and not blank, that base URL: [`Client::from_env`], before the other settings.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when `OPENAI_API_KEY` is not set, empty, or not a valid key,
    /// or `OPENAI_BASE_URL` is not UTF-8. The message names the variable, never its value.
    pub fn from_env() -> Result<Self, Error> {
        let key = ApiKey::from_env(API_KEY_VAR)?;
        let mut builder = Self::new().api_key(key);
        match std::env::var(BASE_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => builder = builder.base_url(url.trim()),
            Ok(_) | Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("the environment variable {BASE_URL_VAR} does not hold UTF-8 text"),
                ));
            }
        }
        Ok(builder)
    }

    /// The base URL, such as `https://api.openai.com/v1` (the default), a relay's, or
    /// `http://localhost:11434/v1`. Wins over the base URL of a [`transport`](Self::transport)
    /// builder, whichever is set first.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// The HTTP transport's settings (connect timeout, pool, headers, body cap,
    /// reqwest middleware); see [`HttpTransportBuilder`]. The transport's own total timeout
    /// (600 s by default) should stay at least as long as the [`timeout`](Self::timeout)
    /// layer's total limit, or it ends attempts first.
    pub fn transport(mut self, transport: HttpTransportBuilder) -> Self {
        self.transport = transport;
        self
    }

    /// Puts `key` on every request as `Authorization: Bearer`: an [`ApiKey`] (literal,
    /// environment variable, file) or a [`KeySource`] callback. Same as
    /// `.auth(AuthLayer::new(key))`.
    pub fn api_key(self, key: impl Into<KeySource>) -> Self {
        self.auth(AuthLayer::new(key))
    }

    /// The authentication layer: a key pool, another header scheme (Azure's `api-key`,
    /// Anthropic's `x-api-key`), a revocation rule; see [`AuthLayer`].
    pub fn auth(mut self, layer: AuthLayer) -> Self {
        self.auth = Some(layer);
        self
    }

    /// The trace layer, instead of the default one. The default names the provider
    /// `openai` (see [`provider`](Self::provider)) and takes `server.address` and
    /// `server.port` from the base URL; a layer given here is used as it is.
    pub fn trace(mut self, layer: TraceLayer) -> Self {
        self.trace = TraceSetting::Layer(layer);
        self
    }

    /// `gen_ai.provider.name` on every span (`openai` by default; `deepseek`, `groq`,
    /// `gcp.gemini`, `azure.ai.openai`, ...). Without a trace layer it has no effect.
    pub fn provider(mut self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.trace = match self.trace {
            TraceSetting::Auto { .. } => TraceSetting::Auto {
                provider: Some(name),
            },
            TraceSetting::Layer(layer) => TraceSetting::Layer(layer.provider(name)),
            TraceSetting::Off => TraceSetting::Off,
        };
        self
    }

    /// No trace layer.
    pub fn no_trace(mut self) -> Self {
        self.trace = TraceSetting::Off;
        self
    }

    /// A hard spending cap: a request is refused before it is sent when what the client's
    /// [`ledger`](Client::ledger) shows, plus what requests in flight reserved, plus this
    /// request's worst case would pass `cap` (see [`BudgetLayer`]).
    ///
    /// The budget prices with the client's [`pricing`](Self::pricing), except that a model
    /// without a price is refused (an [`ErrorKind::Config`] error) rather than counted as
    /// free, unless the pricing says [`UnknownModel::Price`]: a cap that lets through what it
    /// cannot price is no cap. The worst case is the primary model's, also when
    /// [`fallback_models`](Self::fallback_models) are set. With [`no_cost`](Self::no_cost),
    /// the budget counts its own spending instead of the ledger.
    pub fn budget(mut self, cap: Usd) -> Self {
        self.budget = Some(BudgetSetting::Cap(cap));
        self
    }

    /// The budget layer, as it is: for a budget shared with other clients, or other settings
    /// (see [`BudgetLayer`]). Put it on the client's ledger
    /// ([`BudgetLayer::with_ledger`] with the ledger given to [`ledger`](Self::ledger)) to
    /// cap what the client spends.
    pub fn budget_layer(mut self, layer: BudgetLayer) -> Self {
        self.budget = Some(BudgetSetting::Layer(layer));
        self
    }

    /// A budget in Redis, shared by every client (in every process) whose layer has the
    /// same Redis and budget name: see `BudgetLayer::redis` in
    /// [`middleware::redis`](crate::middleware::redis). It counts its own spending (the
    /// actual cost of each response, priced by its own pricing) and is put where
    /// [`budget`](Self::budget) would be; [`Client::budget`] reads its figures as of the
    /// last reply from Redis.
    #[cfg(feature = "redis")]
    pub fn shared_budget(
        mut self,
        layer: BudgetLayer<chatstack_middleware::redis::RedisBudget>,
    ) -> Self {
        self.budget = Some(BudgetSetting::Shared(layer));
        self
    }

    /// How responses are priced: a price table, a multiplier for a relay, an unknown-model
    /// policy; see [`Pricing`]. Default: the built-in table at list price, unknown models
    /// counted as free.
    pub fn pricing(mut self, pricing: Pricing) -> Self {
        self.pricing = Some(pricing);
        self
    }

    /// The ledger the cost layer records into, instead of a new one: give several clients
    /// clones of one ledger to sum their spend.
    pub fn ledger(mut self, ledger: CostLedger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// No cost layer: responses carry no cost and the [`ledger`](Client::ledger) stays
    /// empty.
    pub fn no_cost(mut self) -> Self {
        self.cost = false;
        self
    }

    /// Models to try, in order, on the same endpoint when a call fails with a retryable
    /// error (after its retries) or an open circuit; see
    /// [`FallbackLayer`]. The response says who answered
    /// ([`ResponseExt::answered_by`](crate::ResponseExt::answered_by)).
    /// An empty list (the default) turns fallbacks off.
    pub fn fallback_models<I>(mut self, models: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.fallback_models = models.into_iter().map(Into::into).collect();
        self
    }

    /// The retry layer, instead of [`RetryLayer::new`]; see [`RetryLayer`].
    pub fn retry(mut self, layer: RetryLayer) -> Self {
        self.retry = Setting::Set(layer);
        self
    }

    /// No retries: every call makes one attempt.
    pub fn no_retry(mut self) -> Self {
        self.retry = Setting::Off;
        self
    }

    /// A circuit breaker per model with these numbers.
    pub fn circuit_breaker(self, config: CircuitBreakerConfig) -> Self {
        self.circuit_breaker_layer(CircuitBreakerLayer::new(config))
    }

    /// The circuit breaker layer, as it is: for other keys, failure rules, a state-change
    /// callback, or circuits shared with other clients; see [`CircuitBreakerLayer`].
    pub fn circuit_breaker_layer(mut self, layer: CircuitBreakerLayer) -> Self {
        self.circuit_breaker = Setting::Set(layer);
        self
    }

    /// No circuit breaker.
    pub fn no_circuit_breaker(mut self) -> Self {
        self.circuit_breaker = Setting::Off;
        self
    }

    /// A rate limit per model with these quotas; requests wait their turn rather than fail.
    /// See [`RateLimitConfig`].
    pub fn rate_limit(self, config: RateLimitConfig) -> Self {
        self.rate_limit_layer(RateLimitLayer::new(config))
    }

    /// The rate limit layer, as it is: per-model quotas, other keys, an exact token
    /// counter, or limiters shared with other clients; see [`RateLimitLayer`].
    pub fn rate_limit_layer(mut self, layer: RateLimitLayer) -> Self {
        self.rate_limit = Some(layer);
        self
    }

    /// The timeout layer, instead of the defaults ([`DEFAULT_TOTAL_TIMEOUT`],
    /// [`DEFAULT_FIRST_CHUNK_TIMEOUT`], [`DEFAULT_IDLE_TIMEOUT`]); see [`TimeoutLayer`].
    pub fn timeout(mut self, layer: TimeoutLayer) -> Self {
        self.timeout = Setting::Set(layer);
        self
    }

    /// No timeout layer (the transport's own connect and total timeouts still apply).
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Setting::Off;
        self
    }

    /// Builds the client: the transport, then the unary and streaming stacks over it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a base URL that does not parse, an invalid header on the
    /// transport builder, or an HTTP client that cannot be built.
    pub fn build(self) -> Result<Client, Error> {
        let mut transport = self.transport;
        if let Some(base_url) = self.base_url {
            transport = transport.base_url(base_url);
        }
        let transport = transport.build()?;

        let ledger = self.ledger.unwrap_or_default();
        let pricing = self.pricing.unwrap_or_default();
        let cost = self
            .cost
            .then(|| CostLayer::new(ledger.clone()).pricing(pricing.clone()));
        let budget = self.budget.map(|budget| {
            let layer = match budget {
                BudgetSetting::Layer(layer) => layer,
                BudgetSetting::Cap(cap) => {
                    let layer = if cost.is_some() {
                        BudgetLayer::with_ledger(cap, ledger.clone())
                    } else {
                        BudgetLayer::new(cap)
                    };
                    layer.pricing(budget_pricing(pricing))
                }
                #[cfg(feature = "redis")]
                BudgetSetting::Shared(layer) => return tower::util::Either::Right(layer),
            };
            in_process(layer)
        });
        let trace = match self.trace {
            TraceSetting::Auto { provider } => Some(default_trace(provider, transport.url())),
            TraceSetting::Layer(layer) => Some(layer),
            TraceSetting::Off => None,
        };
        let layers = Layers {
            trace,
            budget,
            cost,
            retry: self.retry.resolve(RetryLayer::new),
            circuit_breaker: self.circuit_breaker.resolve(CircuitBreakerLayer::default),
            rate_limit: self.rate_limit,
            timeout: self.timeout.resolve(default_timeout),
            auth: self.auth,
        };

        let models = self.fallback_models;
        let unary_fallback = (!models.is_empty()).then(|| {
            models.iter().fold(
                FallbackLayer::<ChatRequest, ChatResponse>::new(),
                |layer, model| layer.model(model.as_str()),
            )
        });
        let stream_fallback = (!models.is_empty()).then(|| {
            models.iter().fold(
                FallbackLayer::<StreamRequest, ChatStream>::new(),
                |layer, model| layer.model(model.as_str()),
            )
        });

        let unary = BoxCloneSyncService::new(stack!(layers, unary_fallback, transport));
        let stream = BoxCloneSyncService::new(stack!(layers, stream_fallback, transport));
        Ok(Client {
            inner: Arc::new(Inner {
                unary,
                stream,
                url: transport.url().to_owned(),
                ledger,
                budget: layers.budget,
                circuit_breaker: layers.circuit_breaker,
                rate_limit: layers.rate_limit,
            }),
        })
    }
}

/// The default timeouts: 600 s per attempt, 120 s to a stream's first chunk, 60 s idle.
fn default_timeout() -> TimeoutLayer {
    TimeoutLayer::new()
        .total(DEFAULT_TOTAL_TIMEOUT)
        .first_chunk(DEFAULT_FIRST_CHUNK_TIMEOUT)
        .idle(DEFAULT_IDLE_TIMEOUT)
}

/// The default trace layer: `provider` (else `openai`), and the server's address and port
/// from the URL requests go to, as OpenTelemetry's GenAI conventions ask.
fn default_trace(provider: Option<Arc<str>>, url: &str) -> TraceLayer {
    let mut layer = TraceLayer::new();
    if let Some(provider) = provider {
        layer = layer.provider(provider);
    }
    // The transport has parsed the URL already, so this does not fail in practice; if it
    // did, the span would only lack the two attributes.
    if let Ok(uri) = url.parse::<http::Uri>() {
        if let Some(host) = uri.host() {
            layer = layer.server_address(host);
        }
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        if let Some(port) = port {
            layer = layer.server_port(port);
        }
    }
    layer
}

/// An in-process budget layer, as the client holds it.
#[cfg(not(feature = "redis"))]
fn in_process(layer: BudgetLayer) -> ClientBudget {
    layer
}

/// An in-process budget layer, as the client holds it.
#[cfg(feature = "redis")]
fn in_process(layer: BudgetLayer) -> ClientBudget {
    tower::util::Either::Left(layer)
}

/// The client's pricing, made strict about unknown models for the budget (see
/// [`ClientBuilder::budget`]).
fn budget_pricing(pricing: Pricing) -> Pricing {
    match pricing.unknown_model_policy() {
        UnknownModel::Zero => pricing.unknown_model(UnknownModel::Error),
        UnknownModel::Error | UnknownModel::Price(_) => pricing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_base_url_is_a_config_error() {
        let error = ClientBuilder::new()
            .base_url("not a url")
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
    }

    #[test]
    fn base_url_wins_over_the_transport_builder_in_either_order() {
        let transport = HttpTransport::builder().base_url("http://transport/v1");
        let first = ClientBuilder::new()
            .base_url("http://mine/v1")
            .transport(transport.clone())
            .build()
            .unwrap();
        let last = ClientBuilder::new()
            .transport(transport.clone())
            .base_url("http://mine/v1")
            .build()
            .unwrap();
        assert_eq!(first.url(), "http://mine/v1/chat/completions");
        assert_eq!(last.url(), "http://mine/v1/chat/completions");
        let only_transport = ClientBuilder::new().transport(transport).build().unwrap();
        assert_eq!(only_transport.url(), "http://transport/v1/chat/completions");
    }

    #[test]
    fn default_timeouts_are_as_documented() {
        let config = *default_timeout().config();
        assert_eq!(config.total, Some(Duration::from_secs(600)));
        assert_eq!(config.first_chunk, Some(Duration::from_secs(120)));
        assert_eq!(config.idle, Some(Duration::from_secs(60)));
    }

    #[test]
    fn the_budget_refuses_unknown_models_unless_priced() {
        let strict = budget_pricing(Pricing::default());
        assert_eq!(strict.unknown_model_policy(), &UnknownModel::Error);
        let priced = Pricing::default().unknown_model(UnknownModel::Price(
            chatstack_middleware::cost::ModelPrice::per_million(1.0, 1.0),
        ));
        assert!(matches!(
            budget_pricing(priced).unknown_model_policy(),
            UnknownModel::Price(_)
        ));
    }

    #[test]
    fn defaults_are_fresh_per_build_and_layers_given_are_shared() {
        let ledger = CostLedger::new();
        let a = ClientBuilder::new().ledger(ledger.clone()).build().unwrap();
        let b = ClientBuilder::new().ledger(ledger.clone()).build().unwrap();
        let c = ClientBuilder::new().build().unwrap();
        let cost = Pricing::default()
            .price("gpt-4.1", Some(&chatstack_proto::Usage::new(10, 10)))
            .unwrap();
        ledger.record(&cost, None);
        assert_eq!(a.ledger().snapshot().total.requests, 1);
        assert_eq!(b.ledger().snapshot().total.requests, 1);
        assert_eq!(c.ledger().snapshot().total.requests, 0);
    }
}

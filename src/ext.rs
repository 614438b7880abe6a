//! Extension traits: [`ServiceBuilderExt`] adds chatstack's layers to a
//! `tower::ServiceBuilder`, [`ResponseExt`] reads what the layers attached to a response.

use chatstack_middleware::auth::AuthLayer;
use chatstack_middleware::budget::BudgetLayer;
use chatstack_middleware::circuit_breaker::CircuitBreakerLayer;
use chatstack_middleware::cost::{CostLayer, ResponseCost};
use chatstack_middleware::fallback::{AnsweredBy, FallbackLayer};
use chatstack_middleware::rate_limit::RateLimitLayer;
use chatstack_middleware::retry::RetryLayer;
use chatstack_middleware::timeout::TimeoutLayer;
use chatstack_middleware::trace::TraceLayer;
use chatstack_proto::{ChatResponse, Error};
use tower::ServiceBuilder;
use tower::layer::util::Stack;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds chatstack's layers to a [`tower::ServiceBuilder`], by name.
///
/// Each method is `.layer(that_layer)`, named so that a stack reads as what it does and an
/// IDE lists chatstack's layers after `.chat_`. They take the layers themselves, not their
/// configurations: a chatstack layer is a handle on its state (a ledger, circuits,
/// limiters, a budget), so keep a clone to read that state, or give one layer to several
/// stacks to share it. As with `ServiceBuilder::layer`, the first layer added is the
/// outermost.
///
/// Compose a stack à la carte on a bare transport, in the default order (see
/// [`ClientBuilder`](crate::ClientBuilder) for why that order), leaving out what you do not
/// need:
///
/// ```
/// use std::time::Duration;
///
/// use chatstack::middleware::auth::{ApiKey, AuthLayer};
/// use chatstack::middleware::circuit_breaker::CircuitBreakerLayer;
/// use chatstack::middleware::cost::{CostLayer, CostLedger};
/// use chatstack::middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
/// use chatstack::middleware::retry::RetryLayer;
/// use chatstack::middleware::timeout::TimeoutLayer;
/// use chatstack::middleware::trace::TraceLayer;
/// use chatstack::{ChatRequest, HttpTransport, Message, ResponseExt, ServiceBuilderExt};
/// use chatstack_mock::{MockConfig, MockServer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mock = MockServer::start(MockConfig::default().api_key("sk-mock-0123456789")).await?;
/// let ledger = CostLedger::new();
/// let service = ServiceBuilder::new()
///     .chat_trace(TraceLayer::new())
///     .chat_cost(CostLayer::new(ledger.clone()))
///     .chat_retry(RetryLayer::new())
///     .chat_circuit_breaker(CircuitBreakerLayer::default())
///     .chat_rate_limit(RateLimitLayer::new(RateLimitConfig::default().requests_per_minute(600)))
///     .chat_timeout(TimeoutLayer::new().total(Duration::from_secs(30)))
///     .chat_auth(AuthLayer::new(ApiKey::new("sk-mock-0123456789")?))
///     .service(HttpTransport::builder().base_url(mock.url()).build()?);
///
/// let response = service
///     .oneshot(ChatRequest::new("gpt-4.1", [Message::user("Hello")]))
///     .await?;
/// assert_eq!(response.cost().map(|cost| cost.cost), Some(ledger.total_cost()));
/// # Ok(())
/// # }
/// ```
///
/// Sealed: implemented for `ServiceBuilder` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Adds a [`TraceLayer`]: an OpenTelemetry GenAI span per request.
    fn chat_trace(self, layer: TraceLayer) -> ServiceBuilder<Stack<TraceLayer, L>>;

    /// Adds a [`BudgetLayer`]: a hard spending cap, checked before a request is sent. Put it
    /// outside the cost layer. In process or, with the `redis` feature, shared by a fleet
    /// (`BudgetLayer::redis`).
    fn chat_budget<B>(self, layer: BudgetLayer<B>) -> ServiceBuilder<Stack<BudgetLayer<B>, L>>;

    /// Adds a [`CostLayer`]: prices every response and records it in a ledger.
    fn chat_cost(self, layer: CostLayer) -> ServiceBuilder<Stack<CostLayer, L>>;

    /// Adds a [`FallbackLayer`]: other models or services to try when a call fails. Put it
    /// above retry and the circuit breaker.
    fn chat_fallback<R, T>(
        self,
        layer: FallbackLayer<R, T>,
    ) -> ServiceBuilder<Stack<FallbackLayer<R, T>, L>>;

    /// Adds a [`RetryLayer`]: backoff, `retry-after`, deadlines and a retry budget.
    fn chat_retry<C>(self, layer: RetryLayer<C>) -> ServiceBuilder<Stack<RetryLayer<C>, L>>;

    /// Adds a [`CircuitBreakerLayer`]: stops calling a failing model for a while.
    fn chat_circuit_breaker(
        self,
        layer: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>>;

    /// Adds a [`RateLimitLayer`]: requests and tokens per minute, waiting rather than
    /// failing; in process or, with the `redis` feature, shared by a fleet
    /// (`RateLimitLayer::redis`).
    fn chat_rate_limit(self, layer: RateLimitLayer) -> ServiceBuilder<Stack<RateLimitLayer, L>>;

    /// Adds a [`TimeoutLayer`]: per-attempt, first-chunk and idle limits. Put it beneath
    /// retry, so that each attempt gets the full limits.
    fn chat_timeout(self, layer: TimeoutLayer) -> ServiceBuilder<Stack<TimeoutLayer, L>>;

    /// Adds an [`AuthLayer`]: the API key on every request. Put it last, closest to the
    /// transport.
    fn chat_auth(self, layer: AuthLayer) -> ServiceBuilder<Stack<AuthLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn chat_trace(self, layer: TraceLayer) -> ServiceBuilder<Stack<TraceLayer, L>> {
        self.layer(layer)
    }

    fn chat_budget<B>(self, layer: BudgetLayer<B>) -> ServiceBuilder<Stack<BudgetLayer<B>, L>> {
        self.layer(layer)
    }

    fn chat_cost(self, layer: CostLayer) -> ServiceBuilder<Stack<CostLayer, L>> {
        self.layer(layer)
    }

    fn chat_fallback<R, T>(
        self,
        layer: FallbackLayer<R, T>,
    ) -> ServiceBuilder<Stack<FallbackLayer<R, T>, L>> {
        self.layer(layer)
    }

    fn chat_retry<C>(self, layer: RetryLayer<C>) -> ServiceBuilder<Stack<RetryLayer<C>, L>> {
        self.layer(layer)
    }

    fn chat_circuit_breaker(
        self,
        layer: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>> {
        self.layer(layer)
    }

    fn chat_rate_limit(self, layer: RateLimitLayer) -> ServiceBuilder<Stack<RateLimitLayer, L>> {
        self.layer(layer)
    }

    fn chat_timeout(self, layer: TimeoutLayer) -> ServiceBuilder<Stack<TimeoutLayer, L>> {
        self.layer(layer)
    }

    fn chat_auth(self, layer: AuthLayer) -> ServiceBuilder<Stack<AuthLayer, L>> {
        self.layer(layer)
    }
}

/// What the layers attached to a [`ChatResponse`], read without knowing where they put it.
///
/// ```
/// use chatstack::{ChatResponse, ResponseExt};
///
/// let response = ChatResponse::default(); // one that passed no cost layer
/// assert!(response.cost().is_none());
/// assert!(response.answered_by().is_none());
/// assert!(response.into_text().is_err(), "no choices, so no text");
/// ```
pub trait ResponseExt: sealed_response::Sealed {
    /// The cost the cost layer computed: for a unary response, or for the final response
    /// of a stream ([`ChatEvent::Done`](crate::ChatEvent::Done)). `None` without a cost
    /// layer.
    fn cost(&self) -> Option<ResponseCost>;

    /// Which model or service answered, when the stack has fallbacks: index 0 is the
    /// primary.
    fn answered_by(&self) -> Option<&AnsweredBy>;

    /// The text of the first choice.
    ///
    /// # Errors
    ///
    /// When there is none: an error of kind
    /// [`ErrorKind::ContentFilter`](crate::ErrorKind::ContentFilter) (filtered, or the model
    /// refused) or [`ErrorKind::Provider`](crate::ErrorKind::Provider) (no choices, tool
    /// calls only, ...), whose [`NoText`](crate::NoText) source keeps the response.
    fn into_text(self) -> Result<String, Error>;
}

mod sealed_response {
    pub trait Sealed {}
    impl Sealed for chatstack_proto::ChatResponse {}
}

impl ResponseExt for ChatResponse {
    fn cost(&self) -> Option<ResponseCost> {
        ResponseCost::of(&self.meta)
    }

    fn answered_by(&self) -> Option<&AnsweredBy> {
        self.meta.extensions.get()
    }

    fn into_text(self) -> Result<String, Error> {
        crate::client::into_text(self)
    }
}

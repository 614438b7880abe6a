//! [`BudgetLayer`].

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::service::Budget;
use super::state::{Backend, BudgetSnapshot, BudgetState, InProcess};
use crate::cost::{CostLedger, Pricing, UnknownModel, Usd};

/// The output tokens reserved for a request that sets no cap, for a model whose
/// [`max_output_tokens`](crate::cost::ModelPrice::max_output_tokens) is unknown.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 16_384;

/// A [`Layer`] that wraps a service in a [`Budget`]: a hard spending cap.
///
/// A layer is a handle on one budget: every service it wraps, every clone of those, and
/// every clone of the layer share its cap, spent figure and reservations.
/// [`snapshot`](Self::snapshot) reads them. The builder methods keep the budget, so
/// `layer.clone().pricing(relay)` is the same cap for an endpoint billed differently.
///
/// ```
/// use chatstack_middleware::budget::BudgetLayer;
/// use chatstack_middleware::cost::{CostLedger, Pricing, UnknownModel};
///
/// // A $25 cap from a command-line flag; prices at a relay's 85 %.
/// let cap = "$25".parse().unwrap();
/// let layer = BudgetLayer::new(cap)
///     .pricing(Pricing::default().multiplier(0.85).unknown_model(UnknownModel::Error))
///     .default_max_output_tokens(4_096);
/// assert_eq!(layer.snapshot().remaining(), cap);
///
/// // Or cap what a cost ledger shows (put this layer outside the cost layer).
/// let ledger = CostLedger::new();
/// let capped = BudgetLayer::with_ledger(cap, ledger.clone());
/// # let _ = capped;
/// ```
///
/// The budget lives in this process ([`InProcess`]), unless the layer was made with
/// `BudgetLayer::redis` (the `redis` feature): then every process that uses the same
/// Redis and budget name shares it.
pub struct BudgetLayer<B = InProcess> {
    state: Arc<B>,
    settings: Arc<Settings>,
}

impl<B> Clone for BudgetLayer<B> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            settings: Arc::clone(&self.settings),
        }
    }
}

/// How a budget prices the requests it admits.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) pricing: Pricing,
    pub(crate) default_max_output_tokens: u64,
    pub(crate) stream_usage: bool,
}

impl BudgetLayer {
    /// A budget of `cap` that counts its own spending: what the requests it admitted cost.
    /// Prices are the built-in ones, and a model without a price is refused
    /// ([`UnknownModel::Error`]): its worst case cannot be bounded.
    pub fn new(cap: Usd) -> Self {
        Self::from_state(BudgetState::new(cap, None))
    }

    /// A budget of `cap` on what `ledger` shows as spent: whatever every
    /// [`CostLayer`](crate::cost::CostLayer) recording into it has recorded, from this
    /// stack or others, before or after this layer was made. The budget then only holds
    /// reservations, and settles nothing itself.
    ///
    /// Put this layer **outside** the cost layer that records into the ledger
    /// (`ServiceBuilder::new().layer(budget).layer(cost)`), so that when a response
    /// completes the ledger is charged before the reservation is given back: the other way
    /// round, a request could be admitted in between against a figure that counts neither.
    pub fn with_ledger(cap: Usd, ledger: CostLedger) -> Self {
        Self::from_state(BudgetState::new(cap, Some(ledger)))
    }

    fn from_state(state: BudgetState) -> Self {
        Self::with_backend(state)
    }
}

impl<B: Backend> BudgetLayer<B> {
    /// The budget's figures now. For a budget in Redis, as of the last reply from Redis
    /// (every process's spending and reservations), with this layer's cap: no I/O; see
    /// `shared_snapshot` for fresh figures.
    pub fn snapshot(&self) -> BudgetSnapshot {
        self.state.figures()
    }
}

impl<B> BudgetLayer<B> {
    pub(crate) fn with_backend(backend: B) -> Self {
        Self {
            state: Arc::new(backend),
            settings: Arc::new(Settings {
                pricing: Pricing::default().unknown_model(UnknownModel::Error),
                default_max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS,
                stream_usage: true,
            }),
        }
    }

    /// Prices requests with `pricing`: the worst case of a request and, unless the spent
    /// figure is a ledger's, the actual cost of its response. With [`UnknownModel::Zero`],
    /// requests for unknown models pass unreserved and uncounted.
    pub fn pricing(self, pricing: Pricing) -> Self {
        self.with_settings(|settings| settings.pricing = pricing)
    }

    /// The output tokens reserved for a request that sets no cap, when the price table does
    /// not know its model's [`max_output_tokens`](crate::cost::ModelPrice::max_output_tokens)
    /// (default [`DEFAULT_MAX_OUTPUT_TOKENS`]).
    pub fn default_max_output_tokens(self, tokens: u64) -> Self {
        self.with_settings(|settings| settings.default_max_output_tokens = tokens)
    }

    /// Whether to set `stream_options.include_usage` on streaming requests (default: yes),
    /// so their actual cost can be settled.
    pub fn request_stream_usage(self, request: bool) -> Self {
        self.with_settings(|settings| settings.stream_usage = request)
    }

    fn with_settings(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }
}

impl<B: Backend> fmt::Debug for BudgetLayer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetLayer")
            .field("budget", &self.snapshot())
            .field("settings", &self.settings)
            .finish()
    }
}

#[cfg(feature = "redis")]
impl BudgetLayer<crate::redis::RedisBudget> {
    /// A budget of `cap` in Redis, shared by every process whose layer uses the same Redis
    /// and [budget name](crate::redis::RedisBudget::new): reservations and settlements are
    /// atomic across them (one script call each), so however many requests race in however
    /// many processes, the reservations never pass the cap. Configure every replica with
    /// the same cap.
    ///
    /// Each request waits one round trip for its reservation; settling is queued, and
    /// reaches Redis even after an outage. A reservation whose process dies is given back
    /// after its [TTL](crate::redis::RedisBudget::reservation_ttl). Prices, as for
    /// [`BudgetLayer::new`], are the built-in ones with unknown models refused. See the
    /// [`redis`](crate::redis) module.
    ///
    /// ```no_run
    /// use chatstack_middleware::budget::BudgetLayer;
    /// use chatstack_middleware::cost::Usd;
    /// use chatstack_middleware::redis::{RedisBudget, RedisConnection};
    ///
    /// # async fn run() -> Result<(), chatstack_middleware::Error> {
    /// let redis = RedisConnection::open("redis://127.0.0.1:6379/")?;
    /// let budget = BudgetLayer::redis(Usd::from_dollars(50), RedisBudget::new(redis, "nightly"));
    /// let fleet = budget.shared_snapshot().await?; // every replica's spending
    /// println!("{} of {} spent", fleet.spent, fleet.cap);
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis(cap: Usd, budget: crate::redis::RedisBudget) -> Self {
        Self::with_backend(budget.with_cap(cap))
    }

    /// The shared budget's figures in Redis now (one round trip).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::BackendUnavailable`](chatstack_proto::ErrorKind::BackendUnavailable)
    /// when Redis cannot be reached.
    pub async fn shared_snapshot(&self) -> Result<BudgetSnapshot, chatstack_proto::Error> {
        self.state.shared_snapshot().await
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget::from_parts(inner, Arc::clone(&self.state), Arc::clone(&self.settings))
    }
}

#[cfg(feature = "redis")]
impl<S> Layer<S> for BudgetLayer<crate::redis::RedisBudget> {
    type Service = Budget<S, crate::redis::RedisBudget>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget::from_parts(inner, Arc::clone(&self.state), Arc::clone(&self.settings))
    }
}

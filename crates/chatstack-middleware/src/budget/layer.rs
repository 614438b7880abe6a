//! [`BudgetLayer`].

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::service::Budget;
use super::state::{BudgetSnapshot, BudgetState};
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
#[derive(Clone)]
pub struct BudgetLayer {
    state: Arc<BudgetState>,
    settings: Arc<Settings>,
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
        Self {
            state: Arc::new(state),
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

    /// The budget's figures now.
    pub fn snapshot(&self) -> BudgetSnapshot {
        self.state.snapshot()
    }

    fn with_settings(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }
}

impl fmt::Debug for BudgetLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetLayer")
            .field("budget", &self.snapshot())
            .field("settings", &self.settings)
            .finish()
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Budget::from_parts(inner, Arc::clone(&self.state), Arc::clone(&self.settings))
    }
}

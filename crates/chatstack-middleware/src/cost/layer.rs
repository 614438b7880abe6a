//! [`CostLayer`].

use std::sync::Arc;

use tower::Layer;

use super::ledger::CostLedger;
use super::pricing::Pricing;
use super::service::Cost;

/// A [`Layer`] that wraps a service in [`Cost`]: every response is priced, the cost attached
/// to it and added to a [`CostLedger`].
///
/// Every service the layer wraps, and their clones, record into the layer's ledger, which
/// [`ledger`](Self::ledger) returns. A [`CostLedger`] is a handle: give several layers
/// clones of one to sum their spend.
///
/// ```
/// use chatstack_middleware::cost::{CostLayer, CostLedger, Pricing};
///
/// let ledger = CostLedger::new();
/// // Two endpoints, one account: the relay bills 85 % of list.
/// let direct = CostLayer::new(ledger.clone());
/// let relay = CostLayer::new(ledger.clone()).pricing(Pricing::default().multiplier(0.85));
/// # let _ = (direct, relay);
/// ```
#[derive(Debug, Clone)]
pub struct CostLayer {
    settings: Arc<Settings>,
}

/// What a [`Cost`] service and its response futures share.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) pricing: Pricing,
    pub(crate) ledger: CostLedger,
    pub(crate) stream_usage: bool,
}

impl Default for CostLayer {
    /// [`CostLayer::new`] with a new ledger.
    fn default() -> Self {
        Self::new(CostLedger::new())
    }
}

impl CostLayer {
    /// A layer that records into `ledger`, with the built-in prices ([`Pricing::default`]:
    /// list price, unknown models counted as free), asking streams for their usage.
    pub fn new(ledger: CostLedger) -> Self {
        Self {
            settings: Arc::new(Settings {
                pricing: Pricing::default(),
                ledger,
                stream_usage: true,
            }),
        }
    }

    /// Prices responses with `pricing` (table, multiplier, unknown-model policy).
    pub fn pricing(self, pricing: Pricing) -> Self {
        self.with_settings(|settings| settings.pricing = pricing)
    }

    /// Whether to set `stream_options.include_usage` on streaming requests (default: yes).
    /// Without it, most servers send no usage on a stream, which is then recorded at zero
    /// cost; turn it off only for a server that rejects `stream_options`.
    pub fn request_stream_usage(self, request: bool) -> Self {
        self.with_settings(|settings| settings.stream_usage = request)
    }

    /// The ledger the layer records into.
    pub fn ledger(&self) -> &CostLedger {
        &self.settings.ledger
    }

    fn with_settings(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }
}

impl<S> Layer<S> for CostLayer {
    type Service = Cost<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cost::from_parts(inner, Arc::clone(&self.settings))
    }
}

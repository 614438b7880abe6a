//! [`Pricing`]: a price table plus how one endpoint bills, and what it makes of a response
//! ([`ResponseCost`], [`StreamCost`]).

use std::fmt;
use std::sync::{Arc, OnceLock};

use chatstack_proto::{Error, ErrorKind, ResponseMeta, Usage};

use super::money::Usd;
use super::price::{CacheTtl, ModelPrice, TokenCounts};
use super::table::{PriceTable, builtin_table};

/// Parts per million: the multiplier 1.
const PPM: u64 = 1_000_000;
/// The largest multiplier accepted (a relay charging 1000× list is a typo).
const MAX_MULTIPLIER: f64 = 1_000.0;

/// What to do with a model the [`PriceTable`] has no price for.
///
/// Whatever the policy, such requests are counted by name in the
/// [`CostLedger`](super::CostLedger)'s [`unknown_models`](super::LedgerSnapshot::unknown_models).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UnknownModel {
    /// Refuse the request before it is sent, with an error of kind
    /// [`ErrorKind::Config`]: nothing is spent on what cannot be priced.
    Error,
    /// Let it through and count it as free (the default of [`Pricing`]).
    #[default]
    Zero,
    /// Let it through and bill it at this price.
    Price(ModelPrice),
}

/// How one endpoint bills: a [`PriceTable`], a multiplier on its list prices, what to do with
/// unknown models, and which cache-write price applies.
///
/// Cheap to clone (the table is behind an `Arc`). [`CostLayer`](super::CostLayer) and
/// [`BudgetLayer`](crate::budget::BudgetLayer) take one each.
///
/// ```
/// use chatstack_middleware::cost::{ModelPrice, Pricing, PriceTable, UnknownModel, Usd};
/// use chatstack_proto::Usage;
///
/// // A relay that bills 85 % of list, plus a model of our own.
/// let table = PriceTable::builtin().with_price("our-llama", ModelPrice::per_million(0.2, 0.2));
/// let relay = Pricing::new(table)
///     .multiplier(0.85)
///     .unknown_model(UnknownModel::Error);
/// let cost = relay.price("deepseek-chat", Some(&Usage::new(0, 1_000_000))).unwrap();
/// assert_eq!(cost.cost, Usd::from_nanos(357_000_000)); // $0.42 × 0.85
/// assert!(relay.price("mystery", None).unwrap_err().to_string().contains("mystery"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Pricing {
    table: Arc<PriceTable>,
    multiplier_ppm: u64,
    unknown: UnknownModel,
    cache_ttl: CacheTtl,
}

impl Default for Pricing {
    /// The built-in prices, at list price, counting unknown models as free.
    fn default() -> Self {
        Self::from_shared(Arc::clone(builtin_table()))
    }
}

impl fmt::Debug for Pricing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pricing")
            .field("models", &self.table.len())
            .field("multiplier", &self.multiplier_value())
            .field("unknown", &self.unknown)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

impl Pricing {
    /// Billing at the list prices of `table`.
    pub fn new(table: PriceTable) -> Self {
        Self::from_shared(Arc::new(table))
    }

    /// Billing at the list prices of a shared `table`.
    pub fn from_shared(table: Arc<PriceTable>) -> Self {
        Self {
            table,
            multiplier_ppm: PPM,
            unknown: UnknownModel::default(),
            cache_ttl: CacheTtl::default(),
        }
    }

    /// Bills `multiplier` times the list price: `0.85` for a relay that bills 85 % of list.
    /// Kept to a millionth; clamped to `0..=1000`; a NaN is `1`.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        let multiplier = if multiplier.is_nan() {
            1.0
        } else {
            multiplier.clamp(0.0, MAX_MULTIPLIER)
        };
        self.multiplier_ppm = (multiplier * PPM as f64).round() as u64;
        self
    }

    /// What to do with models the table has no price for.
    pub fn unknown_model(mut self, policy: UnknownModel) -> Self {
        self.unknown = policy;
        self
    }

    /// Which cache-write price applies to requests that do not say
    /// (a [`CacheTtl`] in a request's extensions does).
    pub fn cache_write_ttl(mut self, ttl: CacheTtl) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The price table.
    pub fn table(&self) -> &PriceTable {
        &self.table
    }

    /// The multiplier on list prices.
    pub fn multiplier_value(&self) -> f64 {
        self.multiplier_ppm as f64 / PPM as f64
    }

    /// The unknown-model policy.
    pub fn unknown_model_policy(&self) -> &UnknownModel {
        &self.unknown
    }

    /// The cost of a response from `model` that reported `usage` (`None`: no usage, so no
    /// cost), at this endpoint's prices. An unknown model follows the policy; under
    /// [`UnknownModel::Error`] it is an error of kind [`ErrorKind::Config`].
    pub fn price(&self, model: &str, usage: Option<&Usage>) -> Result<ResponseCost, Error> {
        let requested = self.resolve_request(model)?;
        Ok(self.settle(&requested, "", usage, self.cache_ttl))
    }

    /// What `workload` (a month's tokens, say) costs on each of `models`, at list price and
    /// at this endpoint's multiplier. The volumes are priced at the base tier: a sum over
    /// many requests says nothing about the size of any one prompt.
    ///
    /// ```
    /// use chatstack_middleware::cost::{Pricing, TokenCounts};
    ///
    /// let month = TokenCounts { output: 10_000_000, ..TokenCounts::default() };
    /// let models = ["gpt-4.1", "claude-sonnet-4.5", "gemini-2.5-flash", "deepseek-v3.2"];
    /// let rows = Pricing::default().multiplier(0.85).compare(models, &month);
    /// let shown: Vec<String> = rows
    ///     .iter()
    ///     .map(|row| format!("{} {:.2} {:.2}", row.model, row.list.unwrap(), row.billed.unwrap()))
    ///     .collect();
    /// assert_eq!(shown, [
    ///     "gpt-4.1 $80.00 $68.00",
    ///     "claude-sonnet-4.5 $150.00 $127.50",
    ///     "gemini-2.5-flash $25.00 $21.25",
    ///     "deepseek-v3.2 $4.20 $3.57",
    /// ]);
    /// ```
    pub fn compare<I>(&self, models: I, workload: &TokenCounts) -> Vec<PriceComparison>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        models
            .into_iter()
            .map(|model| {
                let model = model.as_ref();
                let resolved = self.table.resolve_entry(model);
                let picos = resolved.map(|(_, price)| price.base_picos(workload, self.cache_ttl));
                PriceComparison {
                    model: model.to_owned(),
                    id: resolved.map(|(id, _)| Arc::clone(id)),
                    list: picos.map(|picos| Usd::from_picos_scaled(picos, PPM)),
                    billed: picos.map(|picos| Usd::from_picos_scaled(picos, self.multiplier_ppm)),
                }
            })
            .collect()
    }

    /// Resolves the model of a request, applying the unknown-model policy.
    pub(crate) fn resolve_request(&self, model: &str) -> Result<Requested, Error> {
        if let Some((id, _)) = self.table.resolve_entry(model) {
            return Ok(Requested::Table(Arc::clone(id)));
        }
        match &self.unknown {
            UnknownModel::Error => Err(unknown_model_error(model)),
            UnknownModel::Zero => Ok(Requested::Zero(Arc::from(model))),
            UnknownModel::Price(_) => Ok(Requested::Default(Arc::from(model))),
        }
    }

    /// The price a resolved request is billed at (`None`: free).
    pub(crate) fn price_of(&self, requested: &Requested) -> Option<&ModelPrice> {
        match requested {
            Requested::Table(id) => self.table.get(id),
            Requested::Default(_) => match &self.unknown {
                UnknownModel::Price(price) => Some(price),
                _ => None,
            },
            Requested::Zero(_) => None,
        }
    }

    /// The multiplier in parts per million.
    #[cfg(feature = "budget")]
    pub(crate) fn multiplier_ppm(&self) -> u64 {
        self.multiplier_ppm
    }

    /// The default cache TTL.
    pub(crate) fn default_cache_ttl(&self) -> CacheTtl {
        self.cache_ttl
    }

    /// The cost of a completed response: priced as the model that answered when the table
    /// knows it (a dated snapshot, or another model than asked, say), else as the model
    /// asked for.
    pub(crate) fn settle(
        &self,
        requested: &Requested,
        answered: &str,
        usage: Option<&Usage>,
        ttl: CacheTtl,
    ) -> ResponseCost {
        let answered = if answered.is_empty() {
            None
        } else {
            self.table.resolve_entry(answered)
        };
        let (model, source, price) = match answered {
            Some((id, price)) => (Arc::clone(id), PriceSource::Table, Some(price)),
            None => {
                let source = match requested {
                    Requested::Table(_) => PriceSource::Table,
                    Requested::Default(_) => PriceSource::Default,
                    Requested::Zero(_) => PriceSource::Unpriced,
                };
                (
                    Arc::clone(requested.name()),
                    source,
                    self.price_of(requested),
                )
            }
        };
        let tokens = usage.map(TokenCounts::from_usage).unwrap_or_default();
        let (picos, long_context) = price.map_or((0, false), |price| price.picos(&tokens, ttl));
        ResponseCost {
            model,
            source,
            tokens,
            long_context,
            usage_reported: usage.is_some(),
            cost: Usd::from_picos_scaled(picos, self.multiplier_ppm),
        }
    }
}

fn unknown_model_error(model: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("no price for model `{model}` in the price table (unknown-model policy: error)"),
    )
}

/// A request's model, resolved against the table and the unknown-model policy.
#[derive(Debug, Clone)]
pub(crate) enum Requested {
    /// A table id.
    Table(Arc<str>),
    /// Unknown, billed at the policy's default price.
    Default(Arc<str>),
    /// Unknown, free.
    Zero(Arc<str>),
}

impl Requested {
    /// The table id, or the unknown name.
    pub(crate) fn name(&self) -> &Arc<str> {
        match self {
            Self::Table(name) | Self::Default(name) | Self::Zero(name) => name,
        }
    }
}

/// Where the price of a [`ResponseCost`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PriceSource {
    /// The price table.
    Table,
    /// The model is unknown; billed at [`UnknownModel::Price`].
    Default,
    /// The model is unknown; counted as free ([`UnknownModel::Zero`]).
    Unpriced,
}

/// What one response cost, and what it was billed for.
///
/// The [`CostLayer`](super::CostLayer) puts one in the response's
/// [`ResponseMeta::extensions`]: at once for a unary response, or, for a stream, inside a
/// [`StreamCost`] filled when the stream ends. [`ResponseCost::of`] reads either.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseCost {
    /// The model it was priced as: a price-table id (`gpt-4.1` for an answer from
    /// `gpt-4.1-2025-04-14`), or the name asked for when the model is unknown.
    pub model: Arc<str>,
    /// Where the price came from.
    pub source: PriceSource,
    /// The tokens billed, by category (zero when no usage was reported).
    pub tokens: TokenCounts,
    /// Whether the long-context (over-200k) prices applied.
    pub long_context: bool,
    /// Whether the response reported its usage. A stream that failed or was dropped before
    /// its usage chunk did not: its cost is unknown and counted as zero.
    pub usage_reported: bool,
    /// The cost, at the endpoint's multiplier.
    pub cost: Usd,
}

impl ResponseCost {
    /// The cost the cost layer attached to a response's metadata: the [`ResponseCost`] of a
    /// unary response, or the filled [`StreamCost`] of a stream that has ended. `None` before
    /// a stream ends, and for responses that did not pass a cost layer.
    ///
    /// A stream folded with `ChatStream::collect_response` hands its metadata, the handle
    /// included, to the response, so this works on that response too.
    pub fn of(meta: &ResponseMeta) -> Option<ResponseCost> {
        if let Some(cost) = meta.extensions.get::<ResponseCost>() {
            return Some(cost.clone());
        }
        meta.extensions.get::<StreamCost>()?.get().cloned()
    }
}

/// The cost of a stream, known when it ends: a shared handle the
/// [`CostLayer`](super::CostLayer) puts in the stream's [`ResponseMeta::extensions`] when
/// the call returns, and fills when the stream ends, fails or is dropped.
///
/// Clone it out of the metadata to keep it past the stream:
///
/// ```
/// # use chatstack_middleware::cost::StreamCost;
/// # fn demo(stream: &chatstack_middleware::ChatStream) -> Option<()> {
/// let cost: StreamCost = stream.meta().extensions.get::<StreamCost>()?.clone();
/// // ... read the stream to its end, or drop it ...
/// if let Some(cost) = cost.get() {
///     println!("{} for {} tokens", cost.cost, cost.tokens.total());
/// }
/// # Some(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct StreamCost(Arc<OnceLock<ResponseCost>>);

impl StreamCost {
    /// An empty handle.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The cost, once the stream has ended.
    pub fn get(&self) -> Option<&ResponseCost> {
        self.0.get()
    }

    /// Fills the handle (once).
    pub(crate) fn set(&self, cost: ResponseCost) {
        // The hook runs once, so the handle is never already set.
        let _ = self.0.set(cost);
    }
}

/// One row of [`Pricing::compare`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PriceComparison {
    /// The model as asked for.
    pub model: String,
    /// The id it resolved to; `None` when the table has no price for it.
    pub id: Option<Arc<str>>,
    /// The cost at list price.
    pub list: Option<Usd>,
    /// The cost at the endpoint's multiplier.
    pub billed: Option<Usd>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_never_panics() {
        let ppm = |m: f64| Pricing::default().multiplier(m).multiplier_ppm;
        assert_eq!(ppm(0.85), 850_000);
        assert_eq!(ppm(f64::NAN), PPM);
        assert_eq!(ppm(-2.0), 0);
        assert_eq!(ppm(f64::INFINITY), 1_000_000_000);
        assert_eq!(Pricing::default().multiplier(0.85).multiplier_value(), 0.85);
    }

    #[test]
    fn answered_model_wins_when_known() {
        let pricing = Pricing::default();
        let requested = pricing.resolve_request("openrouter/auto").unwrap();
        let usage = Usage::new(1_000_000, 0);
        let cost = pricing.settle(
            &requested,
            "gpt-4.1-2025-04-14",
            Some(&usage),
            CacheTtl::FiveMinutes,
        );
        assert_eq!(&*cost.model, "gpt-4.1");
        assert_eq!(cost.source, PriceSource::Table);
        assert_eq!(cost.cost, Usd::from_dollars(2));
        let fallback = pricing.settle(&requested, "who-knows", Some(&usage), CacheTtl::FiveMinutes);
        assert_eq!(&*fallback.model, "openrouter/auto");
        assert_eq!(fallback.source, PriceSource::Unpriced);
        assert_eq!(fallback.cost, Usd::ZERO);
    }
}

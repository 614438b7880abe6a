//! [`CostLedger`]: spend by model and by tag, shared by every service that records into it.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::money::Usd;
use super::price::TokenCounts;
use super::pricing::{PriceSource, ResponseCost};

/// A running account of what responses cost: requests, tokens by category and cost, in
/// total, by model and by tag ([`RequestMeta::tag`](chatstack_proto::RequestMeta::tag)), and
/// the requests for models without a price, by name.
///
/// A handle: clones share one account, so one ledger can sum several endpoints, and a
/// [`BudgetLayer`](crate::budget::BudgetLayer) can cap what it shows. Everything is an
/// integer, updated under one short-held lock (a few additions, plus a map insertion the
/// first time a model or tag is seen), so concurrent updates add up exactly and a
/// [`snapshot`](Self::snapshot) is consistent: its totals are the sums of its rows.
///
/// ```
/// use chatstack_middleware::cost::{CostLedger, Pricing, Usd};
/// use chatstack_proto::Usage;
///
/// let ledger = CostLedger::new();
/// let cost = Pricing::default().price("gpt-4.1", Some(&Usage::new(1_000, 100))).unwrap();
/// ledger.record(&cost, Some("team-a"));
/// ledger.record(&cost, None);
/// let snapshot = ledger.snapshot();
/// assert_eq!(snapshot.total.requests, 2);
/// assert_eq!(snapshot.total.cost, Usd::from_micros(2 * 2_800)); // 2 × ($0.002 + $0.0008)
/// assert_eq!(snapshot.by_model["gpt-4.1"].tokens.output, 200);
/// assert_eq!(snapshot.by_tag["team-a"].requests, 1);
/// assert_eq!(ledger.total_cost(), snapshot.total.cost);
/// ```
#[derive(Clone, Default)]
pub struct CostLedger {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// `state.total.cost`, readable without the lock.
    total_cost: AtomicU64,
    /// The account in Redis every record is added to as well.
    #[cfg(feature = "redis")]
    remote: Option<crate::redis::RedisLedger>,
}

#[derive(Default)]
struct State {
    total: LedgerEntry,
    by_model: HashMap<Arc<str>, LedgerEntry>,
    by_tag: HashMap<Box<str>, LedgerEntry>,
    unknown: HashMap<Box<str>, u64>,
}

/// The account of one model, one tag, or everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerEntry {
    /// Responses recorded.
    pub requests: u64,
    /// Of those, responses that reported no usage (a stream dropped early, a server that
    /// sends none): recorded at zero cost.
    pub without_usage: u64,
    /// Of those, responses billed at the long-context (over-200k) prices.
    pub long_context: u64,
    /// The tokens billed, by category.
    pub tokens: TokenCounts,
    /// The cost.
    pub cost: Usd,
}

impl LedgerEntry {
    fn add(&mut self, cost: &ResponseCost) {
        self.requests += 1;
        self.without_usage += u64::from(!cost.usage_reported);
        self.long_context += u64::from(cost.long_context);
        self.tokens += cost.tokens;
        self.cost += cost.cost;
    }
}

/// A copy of a [`CostLedger`] at one moment. Rows are sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerSnapshot {
    /// Everything recorded.
    pub total: LedgerEntry,
    /// By the model priced as: a price-table id, or the name asked for when unknown.
    pub by_model: BTreeMap<String, LedgerEntry>,
    /// By [`RequestMeta::tag`](chatstack_proto::RequestMeta::tag); untagged requests are in
    /// the total only.
    pub by_tag: BTreeMap<String, LedgerEntry>,
    /// Requests for models the price table has no price for, by the name asked for: those
    /// recorded (priced at zero or a default price) and those refused before they were sent
    /// ([`UnknownModel::Error`](super::UnknownModel::Error)).
    pub unknown_models: BTreeMap<String, u64>,
}

impl CostLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty ledger that also adds every record to an account in Redis, which every
    /// process recording into the same Redis and ledger name shares: this ledger's
    /// [`snapshot`](Self::snapshot) is this process's spending, and
    /// [`shared_snapshot`](Self::shared_snapshot) the fleet's. Records reach Redis through
    /// the connection's queue (the cost layer does not wait for them), in order, once each,
    /// after an outage too; see [`RedisLedger`](crate::redis::RedisLedger).
    ///
    /// ```no_run
    /// use chatstack_middleware::cost::{CostLayer, CostLedger};
    /// use chatstack_middleware::redis::{RedisConnection, RedisLedger};
    ///
    /// # async fn run() -> Result<(), chatstack_middleware::Error> {
    /// let redis = RedisConnection::open("redis://127.0.0.1:6379/")?;
    /// let ledger = CostLedger::redis(RedisLedger::new(redis.clone(), "team-a"));
    /// let layer = CostLayer::new(ledger.clone());
    /// // ... requests ...
    /// redis.flush().await; // everything recorded so far is in Redis
    /// let fleet = ledger.shared_snapshot().await?;
    /// println!("the fleet spent {}", fleet.total.cost);
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(ledger: crate::redis::RedisLedger) -> Self {
        Self {
            inner: Arc::new(Inner {
                remote: Some(ledger),
                ..Inner::default()
            }),
        }
    }

    /// The account in Redis (see [`CostLedger::redis`]): what every process recorded into
    /// it, by model and by tag (without [`unknown_models`](LedgerSnapshot::unknown_models),
    /// which stay per process). A ledger without Redis returns its own
    /// [`snapshot`](Self::snapshot).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::BackendUnavailable`](chatstack_proto::ErrorKind::BackendUnavailable)
    /// when Redis cannot be reached.
    #[cfg(feature = "redis")]
    pub async fn shared_snapshot(&self) -> Result<LedgerSnapshot, chatstack_proto::Error> {
        match &self.inner.remote {
            Some(remote) => remote.snapshot().await,
            None => Ok(self.snapshot()),
        }
    }

    /// Adds a response's cost, under its model and, when given, under `tag`.
    pub fn record(&self, cost: &ResponseCost, tag: Option<&str>) {
        let mut state = self.lock();
        state.total.add(cost);
        add(
            &mut state.by_model,
            &cost.model,
            || Arc::clone(&cost.model),
            cost,
        );
        if let Some(tag) = tag {
            add(&mut state.by_tag, tag, || Box::from(tag), cost);
        }
        if cost.source != PriceSource::Table {
            let first = count_unknown(&mut state.unknown, &cost.model);
            if first {
                tracing::warn!(
                    model = &*cost.model,
                    "no price for this model; its responses are billed at the unknown-model policy's price"
                );
            }
        }
        self.inner
            .total_cost
            .store(state.total.cost.as_nanos(), Ordering::Release);
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.inner.remote {
            // Queued under the lock: the records reach Redis in the order they were made.
            remote.record(cost, tag);
        }
    }

    /// Counts a request refused because its model has no price.
    pub(crate) fn record_refused_unknown(&self, model: &str) {
        count_unknown(&mut self.lock().unknown, model);
    }

    /// The total cost so far, read without locking.
    pub fn total_cost(&self) -> Usd {
        Usd::from_nanos(self.inner.total_cost.load(Ordering::Acquire))
    }

    /// A consistent copy of the whole account.
    pub fn snapshot(&self) -> LedgerSnapshot {
        let state = self.lock();
        LedgerSnapshot {
            total: state.total,
            by_model: rows(&state.by_model),
            by_tag: rows(&state.by_tag),
            unknown_models: state
                .unknown
                .iter()
                .map(|(name, count)| (name.to_string(), *count))
                .collect(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain counters, consistent after every statement: a panic elsewhere
        // while the lock was held cannot have left it half-updated.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for CostLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CostLedger")
            .field("total_cost", &self.total_cost())
            .finish_non_exhaustive()
    }
}

/// Adds `cost` to the entry of `key`, made (allocating its key once) on first sight.
fn add<K>(
    map: &mut HashMap<K, LedgerEntry>,
    key: &str,
    owned: impl FnOnce() -> K,
    cost: &ResponseCost,
) where
    K: Eq + Hash + std::borrow::Borrow<str>,
{
    match map.get_mut(key) {
        Some(entry) => entry.add(cost),
        None => {
            let mut entry = LedgerEntry::default();
            entry.add(cost);
            map.insert(owned(), entry);
        }
    }
}

/// Counts one request for an unknown model; whether it is the first for that name.
fn count_unknown(unknown: &mut HashMap<Box<str>, u64>, model: &str) -> bool {
    match unknown.get_mut(model) {
        Some(count) => {
            *count += 1;
            false
        }
        None => {
            unknown.insert(Box::from(model), 1);
            true
        }
    }
}

fn rows<K: std::fmt::Display>(map: &HashMap<K, LedgerEntry>) -> BTreeMap<String, LedgerEntry> {
    map.iter()
        .map(|(key, entry)| (key.to_string(), *entry))
        .collect()
}

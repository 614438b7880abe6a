//! [`RedisBudget`]: a spending cap in Redis, reserved and settled atomically by every
//! process that shares it.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use ::redis::Value;
use chatstack_proto::Error;

use super::connection::{Call, Failure, Link, RedisConnection};
use super::outage::{Outage, RedisUnavailable};
use super::scripts::BUDGET;
use crate::budget::sealed::Sealed;
use crate::budget::{Backend, BudgetRefusal, BudgetSnapshot, InProcess, Reservation, Settle};
use crate::cost::Usd;

/// The default time a reservation outlives its process: see
/// [`RedisBudget::reservation_ttl`].
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(300);

/// The backend that makes a [`BudgetLayer`](crate::budget::BudgetLayer) one spending cap for
/// every process that uses the same Redis and budget name: see the [module docs](super) and
/// [`BudgetLayer::redis`](crate::budget::BudgetLayer::redis).
///
/// A budget in Redis counts its own spending, as [`BudgetLayer::new`] does: the actual cost of
/// each response (priced by the layer's [pricing](crate::budget::BudgetLayer::pricing)),
/// settled into the shared spent figure.
///
/// [`BudgetLayer::new`]: crate::budget::BudgetLayer::new
///
/// ```no_run
/// use std::time::Duration;
/// use chatstack_middleware::budget::BudgetLayer;
/// use chatstack_middleware::cost::Usd;
/// use chatstack_middleware::redis::{Outage, RedisBudget, RedisConnection};
///
/// # fn main() -> Result<(), chatstack_middleware::Error> {
/// let redis = RedisConnection::open("redis://127.0.0.1:6379/")?;
/// let budget = BudgetLayer::redis(
///     Usd::from_dollars(500),
///     RedisBudget::new(redis, "team-a")
///         .reservation_ttl(Duration::from_secs(120))
///         .on_outage(Outage::FailOpen { local_share: 0.1 }),
/// );
/// # let _ = budget;
/// # Ok(())
/// # }
/// ```
pub struct RedisBudget {
    link: Arc<Link>,
    name: Arc<str>,
    cap: Usd,
    ttl: Duration,
    outage: Outage,
    /// The state hash, the reservations' expiries and amounts, this process's replay guard.
    keys: [String; 4],
    next_id: AtomicU64,
    /// This process's reservations in Redis, renewed while they live.
    live: Mutex<HashSet<u64>>,
    /// The figures of the last reply.
    seen: Mutex<Option<Figures>>,
    /// The in-process budget of the current outage, failing open: (outage, budget).
    fallback: Mutex<Option<(u64, Arc<InProcess>)>>,
    heartbeat: AtomicBool,
}

impl Backend for RedisBudget {}

impl Sealed for RedisBudget {
    fn figures(&self) -> BudgetSnapshot {
        self.snapshot()
    }
}

/// A budget's figures in Redis, in nano-dollars and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Figures {
    spent: u64,
    reserved: u64,
    in_flight: u64,
    admitted: u64,
    refused: u64,
    expired: u64,
}

impl Figures {
    /// Figures from a reply's strings, from `from` on.
    fn parse(reply: &[Value], from: usize) -> Option<Self> {
        let field = |i: usize| reply.get(from + i).and_then(number);
        Some(Self {
            spent: field(0)?,
            reserved: field(1)?,
            in_flight: field(2)?,
            admitted: field(3)?,
            refused: field(4)?,
            expired: field(5)?,
        })
    }
}

/// A non-negative integer from a reply: an integer, or the string of one (a negative one,
/// which only a bug could leave, reads as 0).
pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(number) => Some(u64::try_from(*number).unwrap_or(0)),
        Value::BulkString(bytes) => {
            let text = std::str::from_utf8(bytes).ok()?;
            if text.starts_with('-') {
                return text.parse::<i64>().ok().map(|_| 0);
            }
            text.parse().ok()
        }
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

impl RedisBudget {
    /// The budget named `name` on `connection`: processes whose layers use the same Redis,
    /// [prefix](super::RedisOptions::prefix) and name share one cap, spent figure and set of
    /// reservations. Fails closed while Redis is unreachable, unless told otherwise
    /// ([`on_outage`](Self::on_outage)).
    pub fn new(connection: RedisConnection, name: impl Into<Arc<str>>) -> Self {
        let link = Arc::clone(connection.link());
        let name = name.into();
        let tag = format!("{{{}:budget:{name}}}", link.options().prefix_str());
        let keys = [
            tag.clone(),
            format!("{tag}:exp"),
            format!("{tag}:amt"),
            format!("{tag}:seq:{}", link.process()),
        ];
        Self {
            link,
            name,
            cap: Usd::ZERO,
            ttl: DEFAULT_RESERVATION_TTL,
            outage: Outage::default(),
            keys,
            next_id: AtomicU64::new(0),
            live: Mutex::default(),
            seen: Mutex::default(),
            fallback: Mutex::default(),
            heartbeat: AtomicBool::new(false),
        }
    }

    /// How long a reservation outlives its process (default 5 minutes,
    /// [`DEFAULT_RESERVATION_TTL`]). A live process renews its reservations every third of
    /// it, so this bounds only how long a process that died (or stalled for longer) holds
    /// budget it will never spend; a process stalled longer than this may, once it resumes,
    /// settle costs whose reservations were given back, and push the spent figure past the
    /// cap by at most what it had in flight.
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_millis(30));
        self
    }

    /// What to do while Redis is unreachable (default: [`Outage::FailClosed`]). Failing
    /// open, each process reserves from an in-process budget of `local_share` of what was
    /// left (cap − spent − reserved) when it last heard from Redis; a process that never
    /// did refuses, as it has nothing to take a share of.
    pub fn on_outage(mut self, outage: Outage) -> Self {
        self.outage = outage;
        self
    }

    pub(crate) fn with_cap(mut self, cap: Usd) -> Self {
        self.cap = cap;
        self
    }

    /// The budget's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The figures of the last reply from Redis (all processes'), with this layer's cap.
    pub(crate) fn snapshot(&self) -> BudgetSnapshot {
        let figures = (*self.lock_seen()).unwrap_or_default();
        self.snapshot_of(figures)
    }

    /// The figures in Redis now.
    pub(crate) async fn shared_snapshot(&self) -> Result<BudgetSnapshot, Error> {
        let call = self.call("budget snapshot").arg("snapshot");
        let reply: Vec<Value> = self
            .link
            .eval(&call)
            .await
            .map_err(|failure| self.unavailable(&failure))?;
        let figures =
            Figures::parse(&reply, 0).ok_or_else(|| self.unavailable(&Failure::reply(&reply)))?;
        *self.lock_seen() = Some(figures);
        Ok(self.snapshot_of(figures))
    }

    fn snapshot_of(&self, figures: Figures) -> BudgetSnapshot {
        BudgetSnapshot {
            cap: self.cap,
            spent: Usd::from_nanos(figures.spent),
            reserved: Usd::from_nanos(figures.reserved),
            in_flight: figures.in_flight,
            admitted: figures.admitted,
            refused: figures.refused,
            expired: figures.expired,
        }
    }

    /// Reserves `worst_case` for a request to `model` in Redis: one round trip.
    pub(crate) fn reserve(self: &Arc<Self>, worst_case: Usd, model: &str) -> ReserveFuture {
        let budget = Arc::clone(self);
        let model: Arc<str> = Arc::from(model);
        Box::pin(async move { budget.reserve_now(worst_case, &model).await })
    }

    async fn reserve_now(
        self: Arc<Self>,
        worst_case: Usd,
        model: &str,
    ) -> Result<SharedReservation, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let failure = match self.link.gate() {
            Err(failure) => failure,
            Ok(()) => {
                let call = self
                    .call("budget reserve")
                    .arg("reserve")
                    .arg(self.member(id))
                    .arg(worst_case.as_nanos())
                    .arg(self.cap.as_nanos())
                    .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX));
                // If this future is dropped while the call is out (the caller gave up), the
                // reservation may have been made all the same: give it back then.
                let mut unanswered = Unanswered {
                    budget: Some(&*self),
                    id,
                };
                let outcome = self.link.eval_gated::<Vec<Value>>(&call).await;
                unanswered.budget = None;
                drop(unanswered);
                match outcome {
                    Ok(reply) => return self.reserved(id, worst_case, model, &reply),
                    Err(failure) => {
                        if failure.ambiguous {
                            // It may have been reserved all the same: give it back (a release
                            // of an id Redis does not hold does nothing).
                            self.release(id);
                        }
                        failure
                    }
                }
            }
        };
        self.fail(worst_case, model, &failure)
    }

    fn reserved(
        self: Arc<Self>,
        id: u64,
        worst_case: Usd,
        model: &str,
        reply: &[Value],
    ) -> Result<SharedReservation, Error> {
        let (Some(admitted), Some(figures)) =
            (reply.first().and_then(number), Figures::parse(reply, 1))
        else {
            self.release(id);
            return Err(self.unavailable(&Failure::reply(&reply)));
        };
        *self.lock_seen() = Some(figures);
        if admitted != 1 {
            let refusal = BudgetRefusal {
                cap: self.cap,
                spent: Usd::from_nanos(figures.spent),
                reserved: Usd::from_nanos(figures.reserved),
                worst_case,
            };
            tracing::debug!(budget = %self.name, model, "request refused by the shared budget");
            return Err(refusal.error(model));
        }
        self.lock_live().insert(id);
        self.start_heartbeat();
        Ok(SharedReservation {
            budget: self,
            id: Some(id),
            amount: worst_case,
            local: None,
            open: true,
        })
    }

    /// Redis did not answer: refuse, or reserve from this process's share.
    fn fail(
        self: Arc<Self>,
        worst_case: Usd,
        model: &str,
        failure: &Failure,
    ) -> Result<SharedReservation, Error> {
        let Some(share) = self.outage.local_share() else {
            tracing::debug!(budget = %self.name, model, cause = %failure, "budget: Redis unreachable; refused (fail closed)");
            return Err(self.unavailable(failure));
        };
        let Some(local) = self.fallback(share) else {
            return Err(self.unavailable(&Failure {
                cause: format!(
                    "{failure}; and no figures were ever read from Redis to take a share of"
                ),
                ambiguous: false,
            }));
        };
        let reservation = local.reserve(worst_case, model)?;
        Ok(SharedReservation {
            budget: self,
            id: None,
            amount: worst_case,
            local: Some(reservation),
            open: true,
        })
    }

    /// The in-process budget of the current outage: `share` of what was left when Redis was
    /// last heard from.
    fn fallback(&self, share: f64) -> Option<Arc<InProcess>> {
        let outage = self.link.outages();
        let mut fallback = self.fallback.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen_in, local)) = &*fallback {
            if *seen_in == outage {
                return Some(Arc::clone(local));
            }
        }
        let figures = (*self.lock_seen())?;
        let left = self
            .cap
            .as_nanos()
            .saturating_sub(figures.spent)
            .saturating_sub(figures.reserved);
        let cap = Usd::from_nanos((left as f64 * share).floor() as u64);
        tracing::warn!(budget = %self.name, local_cap = %cap, "budget: Redis unreachable; failing open on this process's share");
        let local = Arc::new(InProcess::new(cap, None));
        *fallback = Some((outage, Arc::clone(&local)));
        Some(local)
    }

    /// Queues the settlement of a reservation (`None`: one made while Redis was
    /// unreachable): the cost is added to the shared spent figure exactly once, whenever
    /// Redis can be reached.
    fn settle(&self, id: Option<u64>, actual: Usd) {
        let member = match id {
            Some(id) => {
                self.lock_live().remove(&id);
                self.member(id)
            }
            None => String::new(),
        };
        self.link.enqueue(|seq| {
            self.call("budget settle")
                .arg("settle")
                .arg(member)
                .arg(actual.as_nanos())
                .arg(seq)
        });
    }

    /// Queues the release of a reservation.
    fn release(&self, id: u64) {
        self.lock_live().remove(&id);
        let member = self.member(id);
        self.link
            .enqueue(|_| self.call("budget release").arg("release").arg(member));
    }

    fn start_heartbeat(self: &Arc<Self>) {
        if self.heartbeat.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(renew(Arc::downgrade(self), self.ttl / 3));
            }
            Err(_) => self.heartbeat.store(false, Ordering::Release),
        }
    }

    /// A script call on this budget's keys.
    fn call(&self, what: &'static str) -> Call {
        self.keys
            .iter()
            .fold(Call::new(&BUDGET, what), |call, key| call.key(key.as_str()))
    }

    /// A reservation's id in Redis: the process's and its own.
    fn member(&self, id: u64) -> String {
        format!("{}:{id}", self.link.process())
    }

    fn unavailable(&self, failure: &Failure) -> Error {
        RedisUnavailable::error("budget", Arc::clone(&self.name), failure.cause.clone())
    }

    fn lock_seen(&self) -> MutexGuard<'_, Option<Figures>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_live(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A reservation sent and not answered yet: released if the wait for it is dropped.
struct Unanswered<'a> {
    budget: Option<&'a RedisBudget>,
    id: u64,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.release(self.id);
        }
    }
}

/// Renews the live reservations of `budget` every `every`, until the budget is gone.
async fn renew(budget: Weak<RedisBudget>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(budget) = budget.upgrade() else {
            return;
        };
        let members: Vec<String> = budget
            .lock_live()
            .iter()
            .map(|&id| budget.member(id))
            .collect();
        if members.is_empty() {
            continue;
        }
        let call = members.into_iter().fold(
            budget
                .call("budget renew")
                .arg("renew")
                .arg(u64::try_from(budget.ttl.as_millis()).unwrap_or(u64::MAX)),
            Call::arg,
        );
        // A failure is retried at the next beat: a third of the TTL is left.
        let _ = budget.link.eval::<Value>(&call).await;
    }
}

impl fmt::Debug for RedisBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBudget")
            .field("name", &self.name)
            .field("cap", &self.cap)
            .field("reservation_ttl", &self.ttl)
            .field("outage", &self.outage)
            .field("last_seen", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// A reservation in flight.
pub(crate) type ReserveFuture =
    Pin<Box<dyn Future<Output = Result<SharedReservation, Error>> + Send>>;

/// An admitted request's reservation in a shared budget: in Redis, or (failing open) in the
/// process's share.
pub(crate) struct SharedReservation {
    budget: Arc<RedisBudget>,
    /// Its id in Redis; `None` when reserved in process.
    id: Option<u64>,
    amount: Usd,
    local: Option<Reservation>,
    open: bool,
}

impl Settle for SharedReservation {
    fn amount(&self) -> Usd {
        self.amount
    }

    fn counts_spending(&self) -> bool {
        true
    }

    fn settle(mut self, actual: Usd) {
        self.open = false;
        if let Some(local) = self.local.take() {
            local.settle(actual);
        }
        self.budget.settle(self.id, actual);
    }
}

impl Drop for SharedReservation {
    fn drop(&mut self) {
        // A local reservation gives itself back when dropped.
        if let (true, Some(id)) = (self.open, self.id) {
            self.budget.release(id);
        }
    }
}

//! The shared state of a budget: the cap, what is spent and reserved, and the reservations.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chatstack_proto::{Error, ErrorKind};

use crate::cost::{CostLedger, Usd};

/// Where a budget's spent figure comes from.
enum Spent {
    /// The budget's own count: what it settled.
    Own,
    /// A ledger's total: what the cost layers recording into it settled.
    Ledger(CostLedger),
}

/// The in-process budget: the default backend of a [`BudgetLayer`](super::BudgetLayer),
/// whose cap, spent figure and reservations live in this process, under one short-held
/// lock, shared by the clones of the layer and of the services it wraps. (The other
/// backend, with the `redis` feature, is `RedisBudget`, shared
/// across processes.)
pub struct InProcess {
    cap: Usd,
    spent: Spent,
    counts: Mutex<Counts>,
}

/// Where a [`BudgetLayer`](super::BudgetLayer)'s budget lives: [`InProcess`] (the default)
/// or, with the `redis` feature, `RedisBudget`. Sealed.
pub trait Backend: sealed::Sealed {}

pub(crate) mod sealed {
    use super::BudgetSnapshot;

    /// What the layer asks of every backend.
    pub trait Sealed: Send + Sync + 'static {
        /// The budget's figures, as far as this process knows them without waiting.
        fn figures(&self) -> BudgetSnapshot;
    }
}

impl Backend for InProcess {}

impl sealed::Sealed for InProcess {
    fn figures(&self) -> BudgetSnapshot {
        self.snapshot()
    }
}

/// The in-process budget's old name, inside the crate.
pub(crate) type BudgetState = InProcess;

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InProcess").field(&self.snapshot()).finish()
    }
}

/// Integers changed together under the lock.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// What was settled (own spent figure only).
    spent: u64,
    /// Worst cases of the requests in flight.
    reserved: u64,
    in_flight: u64,
    admitted: u64,
    refused: u64,
}

/// A copy of a budget's figures at one moment.
///
/// With a budget of its own, `spent + reserved ≤ cap` at every moment (as long as responses
/// cost no more than their worst case). With a budget on a ledger, the ledger is charged a
/// moment before the reservation is given back, so for that moment a completing request
/// counts in both figures: `spent ≤ cap` still holds, and `spent + reserved` may read high.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetSnapshot {
    /// The cap.
    pub cap: Usd,
    /// What was spent: settled by the budget, or the shared ledger's total.
    pub spent: Usd,
    /// The worst cases reserved by requests in flight.
    pub reserved: Usd,
    /// Requests in flight (each holding a reservation).
    pub in_flight: u64,
    /// Requests admitted so far.
    pub admitted: u64,
    /// Requests refused so far for passing the cap.
    pub refused: u64,
    /// Reservations given back because their process stopped renewing them (it died): a
    /// budget in Redis only (`RedisBudget`, with the `redis` feature), else 0.
    pub expired: u64,
}

impl BudgetSnapshot {
    /// What is left to reserve: cap − spent − reserved, or zero.
    pub fn remaining(&self) -> Usd {
        self.cap
            .saturating_sub(self.spent)
            .saturating_sub(self.reserved)
    }
}

impl InProcess {
    pub(crate) fn new(cap: Usd, ledger: Option<CostLedger>) -> Self {
        Self {
            cap,
            spent: ledger.map_or(Spent::Own, Spent::Ledger),
            counts: Mutex::default(),
        }
    }

    /// Reserves `worst_case` for a request to `model`, or refuses it when the spent figure,
    /// the reservations and this worst case together would pass the cap.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        worst_case: Usd,
        model: &str,
    ) -> Result<Reservation, Error> {
        let mut counts = self.lock();
        let spent = self.spent(&counts);
        let committed = spent
            .as_nanos()
            .saturating_add(counts.reserved)
            .saturating_add(worst_case.as_nanos());
        if committed > self.cap.as_nanos() {
            counts.refused += 1;
            let refusal = BudgetRefusal {
                cap: self.cap,
                spent,
                reserved: Usd::from_nanos(counts.reserved),
                worst_case,
            };
            drop(counts);
            return Err(refusal.error(model));
        }
        counts.reserved += worst_case.as_nanos();
        counts.in_flight += 1;
        counts.admitted += 1;
        Ok(Reservation {
            state: Arc::clone(self),
            amount: worst_case,
            open: true,
        })
    }

    pub(crate) fn snapshot(&self) -> BudgetSnapshot {
        let counts = self.lock();
        BudgetSnapshot {
            cap: self.cap,
            spent: self.spent(&counts),
            reserved: Usd::from_nanos(counts.reserved),
            in_flight: counts.in_flight,
            admitted: counts.admitted,
            refused: counts.refused,
            expired: 0,
        }
    }

    /// Ends a reservation of `amount`; `spent` is added to the own spent figure.
    fn finish(&self, amount: Usd, spent: Usd) {
        let mut counts = self.lock();
        counts.reserved = counts.reserved.saturating_sub(amount.as_nanos());
        counts.in_flight = counts.in_flight.saturating_sub(1);
        counts.spent = counts.spent.saturating_add(spent.as_nanos());
    }

    fn spent(&self, counts: &Counts) -> Usd {
        match &self.spent {
            Spent::Own => Usd::from_nanos(counts.spent),
            Spent::Ledger(ledger) => ledger.total_cost(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Plain counters, consistent after every statement: a poisoned lock is still sound.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What settling a request needs of its reservation, whichever budget holds it.
pub(crate) trait Settle: Send + 'static {
    /// The worst case reserved.
    fn amount(&self) -> Usd;

    /// Whether settling counts the actual cost as spent (not when the spent figure is a
    /// ledger's, which the cost layer charges).
    fn counts_spending(&self) -> bool;

    /// Ends the reservation, counting `actual` as spent. Dropping a reservation unsettled
    /// gives it back whole.
    fn settle(self, actual: Usd);
}

impl Settle for Reservation {
    fn amount(&self) -> Usd {
        self.amount
    }

    fn counts_spending(&self) -> bool {
        matches!(self.state.spent, Spent::Own)
    }

    fn settle(self, actual: Usd) {
        Reservation::settle(self, actual);
    }
}

/// The reservation of one admitted request: settled to the actual cost when its usage is
/// known, and given back whole if it is dropped unsettled (the call failed, its future or
/// its stream was dropped).
pub(crate) struct Reservation {
    state: Arc<BudgetState>,
    amount: Usd,
    open: bool,
}

impl Reservation {
    /// Ends the reservation, counting `actual` as spent.
    pub(crate) fn settle(mut self, actual: Usd) {
        self.open = false;
        self.state.finish(self.amount, actual);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.open {
            self.state.finish(self.amount, Usd::ZERO);
        }
    }
}

/// The figures behind a refusal: the `source` of an error of kind
/// [`ErrorKind::BudgetExceeded`]. Find it with [`BudgetRefusal::find`].
///
/// ```
/// use chatstack_middleware::budget::BudgetRefusal;
/// # fn check(error: &chatstack_middleware::Error) {
/// if let Some(refusal) = BudgetRefusal::find(error) {
///     eprintln!("{} left, {} needed", refusal.cap.saturating_sub(refusal.spent), refusal.worst_case);
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetRefusal {
    /// The cap.
    pub cap: Usd,
    /// What was spent when the request came.
    pub spent: Usd,
    /// What requests in flight had reserved.
    pub reserved: Usd,
    /// The worst case of the refused request.
    pub worst_case: Usd,
}

impl BudgetRefusal {
    /// The figures of a budget refusal, if `error` is one.
    pub fn find(error: &Error) -> Option<&BudgetRefusal> {
        StdError::source(error)?.downcast_ref()
    }

    /// The error of a refusal of a request to `model`.
    pub(crate) fn error(self, model: &str) -> Error {
        Error::new(
            ErrorKind::BudgetExceeded,
            format!("{self} (model `{model}`)"),
        )
        .with_source(self)
    }
}

impl fmt::Display for BudgetRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cap {}, spent {}, reserved {}, this request's worst case {}",
            self.cap, self.spent, self.reserved, self.worst_case
        )
    }
}

impl StdError for BudgetRefusal {}

//! Shared limits across replicas: the rate limiter, the budget and the cost ledger in Redis.
//!
//! (Module docs: see the end of the work.)

pub(crate) mod budget;
mod connection;
mod ledger;
pub(crate) mod limiter;
mod outage;
mod scripts;

pub use budget::{DEFAULT_RESERVATION_TTL, RedisBudget};
pub use connection::{RedisConnection, RedisOptions};
pub use ledger::RedisLedger;
pub use limiter::{RedisLimiter, SharedAdmission};
pub use outage::{Outage, RedisUnavailable};

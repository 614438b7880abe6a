//! Shared limits across replicas: the rate limiter, the budget and the cost ledger in Redis.
//!
//! (Module docs: see the end of the work.)

mod connection;
pub(crate) mod limiter;
mod outage;
mod scripts;

pub use connection::{RedisConnection, RedisOptions};
pub use limiter::{RedisLimiter, SharedAdmission};
pub use outage::{Outage, RedisUnavailable};

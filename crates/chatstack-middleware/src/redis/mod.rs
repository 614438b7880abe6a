//! Shared limits across replicas: the rate limiter, the budget and the cost ledger in Redis
//! (the `redis` feature).
//!
//! Ten replicas of a service share one provider quota and one budget; ten in-process
//! limiters would each allow the whole quota, and the fleet would overshoot tenfold. With
//! this backend the same layers keep their state in Redis, and the fleet behaves as one
//! client:
//!
//! - [`RateLimitLayer::redis`](crate::rate_limit::RateLimitLayer::redis): one GCRA pair
//!   (requests, tokens) per key for every process, decided by one Lua script call per
//!   admission;
//! - [`BudgetLayer::redis`](crate::budget::BudgetLayer::redis): one cap, spent figure and set
//!   of reservations, reserved and settled atomically;
//! - [`CostLedger::redis`](crate::cost::CostLedger::redis): one account that every process's
//!   cost layer adds to.
//!
//! The layers' APIs are the in-process ones; only the constructor differs. A
//! [`RedisConnection`] holds the connection (redis-rs's `ConnectionManager`: one multiplexed
//! socket, reconnecting by itself), the per-call timeout and the queue of writes; give a clone
//! to each backend of the process.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use chatstack_middleware::budget::BudgetLayer;
//! use chatstack_middleware::cost::{CostLayer, CostLedger, Usd};
//! use chatstack_middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
//! use chatstack_middleware::redis::{
//!     Outage, RedisBudget, RedisConnection, RedisLedger, RedisLimiter, RedisOptions,
//! };
//! use chatstack_middleware::{ChatRequest, ChatResponse, Error, Message};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Error> {
//! let redis = RedisConnection::open_with(
//!     "redis://127.0.0.1:6379/",
//!     RedisOptions::default().timeout(Duration::from_millis(100)),
//! )?;
//! // Every replica runs this same code: the names make the state shared.
//! let ledger = CostLedger::redis(RedisLedger::new(redis.clone(), "team-a"));
//! let stack = ServiceBuilder::new()
//!     .layer(BudgetLayer::redis(Usd::from_dollars(100), RedisBudget::new(redis.clone(), "team-a")))
//!     .layer(CostLayer::new(ledger.clone()))
//!     .layer(RateLimitLayer::redis(
//!         RateLimitConfig::default().requests_per_minute(600).tokens_per_minute(100_000),
//!         RedisLimiter::new(redis.clone())
//!             .name("openai-org-1")
//!             .on_outage(Outage::FailOpen { local_share: 0.1 }), // ten replicas
//!     ))
//!     .service(tower::service_fn(|request: ChatRequest| async move {
//!         Ok::<_, Error>(ChatResponse { model: request.model, ..Default::default() })
//!     }));
//! stack.oneshot(ChatRequest::new("gpt-4.1", [Message::user("Hi")])).await?;
//!
//! // At shutdown: everything settled reaches Redis (bounded, in case it is down).
//! let _ = tokio::time::timeout(Duration::from_secs(5), redis.flush()).await;
//! println!("the fleet spent {}", ledger.shared_snapshot().await?.total.cost);
//! # Ok(())
//! # }
//! ```
//!
//! The facade's `ClientBuilder` takes the shared layers too: `rate_limit_layer` and `ledger`
//! as they are, `shared_budget` for the budget.
//!
//! # What is shared, what stays in the process
//!
//! | | in Redis, shared by the fleet | in each process |
//! |---|---|---|
//! | rate limiter | each key's two GCRAs (theoretical arrival times), its pause, its reconciliation log | the key's FIFO queue, deadlines, the fail-open share |
//! | budget | cap test, spent, reserved, in-flight reservations and their expiry | the fail-open share; the worst-case pricing |
//! | ledger | totals, by model and by tag | the process's own account ([`CostLedger::snapshot`](crate::cost::CostLedger::snapshot)) |
//!
//! First come, first served holds per key **within** a process: only the head of a key's
//! queue asks Redis, so a process has at most one decision in flight per key. Across
//! processes, heads compete at Redis; a small request from one process can pass a large one
//! waiting in another (the large one waits for a full bucket, which others' small requests
//! keep from filling). Give requests near the quota's size a burst that covers them.
//!
//! Configure every replica alike (quotas, cap, names): each call carries its process's
//! configuration, and Redis applies whatever it is sent.
//!
//! # Why it is exact: one script per decision
//!
//! Redis runs a Lua script atomically: no other command, from any client, runs between its
//! reads and its writes. Each decision is one script call, one round trip:
//!
//! - **acquire** (`acquire.lua`) reads the key's state, makes the in-process limiter's test
//!   for both buckets (`tat + n·T ≤ now + b·T`, burst `b`, interval `T`) and, only if both
//!   pass, its update (`tat = max(tat, now) + n·T`); otherwise it writes nothing and returns
//!   the wait. The sequence of states is the one a single in-process limiter would go
//!   through, so its guarantee carries over to the fleet: **no window of a minute admits more
//!   than the quota**, whatever the number of processes (see the argument in
//!   [`rate_limit`](crate::rate_limit#what-it-guarantees)). The clock is the server's
//!   (`TIME`), one clock for every process. Times are integer nanoseconds relative to a
//!   per-key epoch, so Lua's doubles stay exact (below 2^53); the epoch moves after 26 days.
//! - **adjust** (`adjust.lua`) applies a response's reconciliation (credit, bounded by the
//!   shared slack log exactly as in process; or debt) and the provider's pauses, which thus
//!   reach every process.
//! - **budget** (`budget.lua`) reserves when `spent + reserved + worst case ≤ cap` and adds
//!   the reservation in the same step; settling replaces a reservation by the actual cost in
//!   one step. So `spent + reserved ≤ cap` at every moment, for the fleet, as long as
//!   responses cost no more than their worst case. Money is integer nano-dollars summed with
//!   `HINCRBY` (exact to $9.2 billion); the cap test compares two-limb numbers, never Lua
//!   doubles.
//! - **ledger** (`ledger.lua`) adds one response's figures with `HINCRBY`; `ledger_read.lua`
//!   reads the account.
//!
//! # Writes that nobody waits for
//!
//! The completion hooks (a settled cost, a ledger record, a reconciliation, a pause, a
//! released reservation) are synchronous and cannot wait for Redis. They go into one ordered
//! in-memory queue per [`RedisConnection`], sent in pipelined batches by a background task.
//! Each carries the connection's process id and a sequence number, increasing in queue
//! order; the scripts keep the last sequence applied per process (a key with a 7-day TTL per
//! limiter name, budget, ledger and process) and ignore what they already applied. So a batch whose reply was lost is simply sent again: **nothing is
//! counted twice, and nothing is dropped** — a batch that fails waits in the queue and goes
//! again (whole, in order) when Redis answers. [`RedisConnection::flush`] waits until the
//! queue is through; [`RedisConnection::pending`] counts what waits.
//!
//! # When Redis is down or slow
//!
//! Every call has its own timeout ([`RedisOptions::timeout`], 250 ms by default; the
//! connection's reconnection is bounded too, so no call waits out redis-rs's reconnection
//! rounds). After a failure the connection counts as **down**: for a
//! [retry interval](RedisOptions::retry_interval) calls fail at once, without touching the
//! network, while one call at a time tries Redis again; the first that succeeds marks it up.
//! Meanwhile each layer follows its [`Outage`] policy:
//!
//! - [`Outage::FailClosed`] (the default): the request fails at once with an error of kind
//!   [`ErrorKind::BackendUnavailable`](crate::ErrorKind::BackendUnavailable), whose source
//!   is a [`RedisUnavailable`]. It is not retryable: the retry layer does not multiply load
//!   on an outage.
//! - [`Outage::FailOpen`] `{ local_share }`: the process goes on alone. The rate limiter
//!   admits from in-process GCRAs of `local_share` of each quota (empty at the start of each
//!   outage, so the switch adds no burst); the budget reserves from an in-process budget of
//!   `local_share` of what was left when Redis was last heard from (a process that never
//!   heard from it refuses). Shares of `1/n` for `n` replicas keep the fleet within the
//!   quota; costs settled meanwhile reach the shared budget and ledger when Redis returns.
//!
//! A call that timed out may still have run on the server. For an acquire that is the safe
//! side (cells taken, unused); a reservation that may have been made is released through the
//! queue; a queued write is sent again and counted once.
//!
//! **Durability is Redis's.** The limiter tolerates lost state: a key without state counts as
//! empty for a window after the server first held limiter state (a sentinel key without TTL,
//! `…:boot`), so a restarted server hands out no fresh burst on top of the minute it forgot;
//! keys seen after that start full, as in process. Money does not tolerate it: run the budget
//! and ledger on a Redis with `appendonly yes` and `appendfsync always` (or `WAITAOF` on 7.2+),
//! and `maxmemory-policy noeviction`. The tests kill such a server mid-run and find every
//! settled cost, once.
//!
//! # Keys and expiry
//!
//! All keys start with the [prefix](RedisOptions::prefix) (`chatstack`) in a hash tag per
//! layer name, so that each script's keys share a cluster slot:
//!
//! | keys | what | expires |
//! |---|---|---|
//! | `{chatstack:rl:NAME}:k:KEY`, `…:s:KEY` | a key's GCRA state, its slack log | when its buckets are full again, plus an hour (at least a window) |
//! | `{chatstack:rl:NAME}:boot` | when the server first held limiter state | never |
//! | `{chatstack:budget:NAME}`, `…:exp`, `…:amt` | figures; reservations' expiries and amounts | never (reservations: after their TTL) |
//! | `{chatstack:ledger:NAME}`, `…:model:M`, `…:tag:T`, `…:models`, `…:tags` | the account | never |
//! | `…:seq:PROCESS` | a process's last write applied (replay guard) | 7 days |
//!
//! A reservation lives [`RedisBudget::reservation_ttl`] (5 minutes by default) unless renewed:
//! each process renews its live reservations every third of it, so only a process that died
//! (or stalled longer than the TTL) loses them, and its budget is free again after at most
//! the TTL. Every budget call first drops up to 64 expired reservations.
//!
//! # Cost
//!
//! One round trip per admission and per reservation (the tests count the server's script
//! calls: 1.00 per decision); settlements, records and corrections ride in batches. Measured
//! on loopback, release build, on 2 cores shared with redis-server 7.0.15 and other work
//! (`the_cost_of_a_shared_decision` in `tests/redis.rs` prints the figures):
//!
//! | per request | in process | Redis, one at a time | Redis, 64 keys in flight |
//! |---|---|---|---|
//! | rate limit admission | 0.15-0.2 µs | 31 µs; 115-125 µs when the machine's round trips are slow | 11-16 µs amortised |
//! | budget reservation and settlement | 0.3 µs | 72 µs; 110-150 µs slow | — |
//!
//! The one-at-a-time figure is the loopback round trip: this machine alternates between a
//! fast and a slow mode, and redis-rs alone (an `EVALSHA` through a `ConnectionManager`)
//! measured 30 µs and 108 µs in them; the layer adds a few microseconds. The server spends
//! about 10-18 µs of CPU per admission (`INFO commandstats`), so one Redis serves tens of
//! thousands of decisions a second: far beyond LLM rates, where a request takes seconds.
//!
//! # Requirements
//!
//! Redis 5 or later (scripts that read `TIME` and write); tested with 7.0.15. One Redis
//! (standalone, or behind a proxy): the client is built without cluster support, though the
//! key layout is ready for it. A [`RedisConnection`] belongs to the tokio runtime it is
//! first used on. Tests cannot run on tokio's paused clock (redis-rs's timers need real time):
//! the tests compress time instead, with a quota's hidden `scaled_minute`.

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

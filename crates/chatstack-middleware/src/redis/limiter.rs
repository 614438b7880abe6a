//! [`RedisLimiter`]: the rate limiter's GCRAs in Redis, one decision per round trip.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatstack_proto::Error;

pub(crate) use super::connection::Failure;
use super::connection::{Call, Link, RedisConnection};
use super::outage::{Outage, RedisUnavailable};
use super::scripts::{ACQUIRE, ADJUST};
use crate::rate_limit::{Quota, RateLimitConfig, Reconcile};

/// The backend that makes a [`RateLimitLayer`](crate::rate_limit::RateLimitLayer) shared by
/// every process that uses the same Redis and [name](Self::name): see the
/// [module docs](super) and [`RateLimitLayer::redis`](crate::rate_limit::RateLimitLayer::redis).
///
/// ```
/// use chatstack_middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
/// use chatstack_middleware::redis::{Outage, RedisConnection, RedisLimiter};
///
/// # fn main() -> Result<(), chatstack_middleware::Error> {
/// let redis = RedisConnection::open("redis://127.0.0.1:6379/")?; // connects on first use
/// let layer = RateLimitLayer::redis(
///     RateLimitConfig::default().requests_per_minute(600).tokens_per_minute(100_000),
///     RedisLimiter::new(redis)
///         .name("openai-org-1")
///         .on_outage(Outage::FailOpen { local_share: 0.25 }),
/// );
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    connection: RedisConnection,
    name: Arc<str>,
    outage: Outage,
}

impl RedisLimiter {
    /// Shared limiters on `connection`, named `default`, failing closed.
    pub fn new(connection: RedisConnection) -> Self {
        Self {
            connection,
            name: Arc::from("default"),
            outage: Outage::default(),
        }
    }

    /// The name the limiters are shared under: layers with the same name (and key, and
    /// Redis, and [prefix](super::RedisOptions::prefix)) share one limiter per key; give
    /// each provider account its own.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// What to do while Redis is unreachable (default: [`Outage::FailClosed`]).
    pub fn on_outage(mut self, outage: Outage) -> Self {
        self.outage = outage;
        self
    }

    pub(crate) fn into_shared(self) -> Arc<SharedLimiter> {
        let link = Arc::clone(self.connection.link());
        let tag = format!("{{{}:rl:{}}}", link.options().prefix_str(), self.name);
        Arc::new(SharedLimiter {
            boot_key: format!("{tag}:boot"),
            guard_key: format!("{tag}:seq:{}", link.process()),
            tag,
            link,
            name: self.name,
            outage: self.outage,
        })
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("name", &self.name)
            .field("outage", &self.outage)
            .field("connection", &self.connection)
            .finish()
    }
}

/// When a shared rate limiter admitted a request, by the Redis server's clock (one clock for
/// the whole fleet): the limiter puts it in the request's
/// [extensions](chatstack_proto::RequestMeta::extensions) before sending it on. Requests
/// admitted in process (while Redis was unreachable, failing open) carry none.
///
/// ```
/// use chatstack_middleware::ChatRequest;
/// use chatstack_middleware::redis::SharedAdmission;
///
/// fn admitted_at(request: &ChatRequest) -> Option<std::time::SystemTime> {
///     request.meta.extensions.get::<SharedAdmission>().map(|admission| admission.server_time)
/// }
/// # let _ = admitted_at;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedAdmission {
    /// The server's `TIME` when the decision was made.
    pub server_time: SystemTime,
}

/// The shared part of a layer's limiters: the connection, the name, the policy.
pub(crate) struct SharedLimiter {
    link: Arc<Link>,
    name: Arc<str>,
    outage: Outage,
    /// `{prefix:rl:name}`: every key of the layer has this hash tag, so that a script's keys
    /// share a cluster slot.
    tag: String,
    boot_key: String,
    /// This process's replay guard for the layer's queued corrections.
    guard_key: String,
}

impl fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("name", &self.name)
            .field("outage", &self.outage)
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// The share of each quota a process keeps for itself while Redis is unreachable.
    pub(crate) fn local_share(&self) -> Option<f64> {
        self.outage.local_share()
    }

    /// The shared limiter of `key`, configured with `config` (every process must configure
    /// a key alike).
    pub(crate) fn key(self: &Arc<Self>, key: &str, config: &RateLimitConfig) -> RemoteKey {
        let (req_cost, req_tol) = config.requests.map_or((0, 0), costs);
        let (tok_interval, tok_tol) = config.tokens.map_or((0, 0), costs);
        let window_nanos = [config.requests, config.tokens]
            .into_iter()
            .flatten()
            .map(|quota| quota.window_nanos())
            .max()
            .unwrap_or(MINUTE_NANOS);
        let window_ms = window_nanos.div_ceil(1_000_000).max(1);
        RemoteKey {
            shared: Arc::clone(self),
            name: Arc::from(key),
            state_key: format!("{}:k:{key}", self.tag),
            slack_key: format!("{}:s:{key}", self.tag),
            req_cost,
            req_tol,
            tok_interval,
            tok_tol,
            tok_limit: config.tokens.map_or(0, |quota| u64::from(quota.limit())),
            log: config.tokens.is_some() && config.reconcile == Reconcile::Full,
            window_ms,
            idle_ms: window_ms.max(IDLE_MS),
            outage_seen: AtomicU64::new(0),
            seen: Arc::new(Mutex::new(None)),
        }
    }
}

/// A minute, in nanoseconds.
const MINUTE_NANOS: u64 = 60_000_000_000;

/// How long a key's state is kept after its buckets are full again (at least a window).
const IDLE_MS: u64 = 3_600_000;

/// The largest cost or tolerance sent (2^50 ns, 13 days): Lua's doubles stay exact.
const MAX_NANOS: u64 = 1 << 50;

/// A quota's emission interval and tolerance (`burst × interval`), in nanoseconds.
fn costs(quota: Quota) -> (u64, u64) {
    let interval = quota.interval_nanos().min(MAX_NANOS);
    let tolerance = u64::from(quota.burst_size())
        .saturating_mul(interval)
        .min(MAX_NANOS);
    (interval, tolerance)
}

/// `quota` scaled down to `share` of itself (its limit and burst, at least one cell each),
/// for a process on its own while Redis is unreachable.
pub(crate) fn local_quota(quota: Quota, share: f64) -> Quota {
    let scale = |cells: u32| (f64::from(cells) * share).floor().max(1.0) as u64;
    Quota::per_minute(scale(quota.limit()))
        .burst(scale(quota.burst_size()))
        .scaled_minute(Duration::from_nanos(quota.window_nanos()))
}

/// What the last decision said about the buckets: how far each TAT was past the server's
/// clock, and when that was (locally).
#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    requests_ahead: u64,
    tokens_ahead: u64,
}

/// One key's limiter in Redis: its key names and what each admission costs.
pub(crate) struct RemoteKey {
    shared: Arc<SharedLimiter>,
    name: Arc<str>,
    state_key: String,
    slack_key: String,
    /// Request bucket: cost of a cell (its interval) and tolerance, in ns (0: off).
    req_cost: u64,
    req_tol: u64,
    /// Token bucket: interval and tolerance, in ns (0: off).
    tok_interval: u64,
    tok_tol: u64,
    /// The token quota (a debt is capped at it).
    tok_limit: u64,
    /// Whether admissions are logged for credits ([`Reconcile::Full`]).
    log: bool,
    window_ms: u64,
    idle_ms: u64,
    /// The outage the key's local fallback was last emptied for.
    outage_seen: AtomicU64,
    seen: Arc<Mutex<Option<Seen>>>,
}

/// What Redis said about a request.
pub(crate) enum Asked {
    /// Admitted: its slack-log sequence, and the server's clock at the decision.
    Admitted { seq: u64, at: SystemTime },
    /// Not yet: ask again after this long.
    Wait(Duration),
    /// No answer.
    Unavailable(Failure),
}

/// A decision in flight.
pub(crate) type AskFuture = Pin<Box<dyn Future<Output = Asked> + Send>>;

/// A decision: known at once (Redis counts as down), or in flight.
pub(crate) enum Ask {
    Now(Asked),
    Later(AskFuture),
}

impl RemoteKey {
    /// The policy while Redis is unreachable.
    pub(crate) fn outage(&self) -> Outage {
        self.shared.outage
    }

    /// Whether the local fallback must start empty: the first time it is used in an outage.
    pub(crate) fn new_outage(&self) -> bool {
        let outages = self.shared.link.outages();
        self.outage_seen.swap(outages, Ordering::AcqRel) != outages
    }

    /// The error of a request refused because Redis is unreachable.
    pub(crate) fn unavailable(&self, failure: &Failure) -> Error {
        RedisUnavailable::error("rate limit", Arc::clone(&self.name), failure.cause.clone())
    }

    /// Asks Redis for one request cell and `tokens` token cells, all or nothing: one script
    /// call, one round trip.
    pub(crate) fn ask(&self, tokens: u32) -> Ask {
        if let Err(failure) = self.shared.link.gate() {
            return Ask::Now(Asked::Unavailable(failure));
        }
        let tok_cost = u64::from(tokens)
            .saturating_mul(self.tok_interval)
            .min(MAX_NANOS);
        let call = Call::new(&ACQUIRE, "rate limit acquire")
            .key(self.state_key.as_str())
            .key(self.slack_key.as_str())
            .key(self.shared.boot_key.as_str())
            .arg(self.req_cost)
            .arg(self.req_tol)
            .arg(tok_cost)
            .arg(self.tok_tol)
            .arg(u8::from(self.log && tok_cost > 0))
            .arg(self.window_ms)
            .arg(self.idle_ms);
        let link = Arc::clone(&self.shared.link);
        let seen = Arc::clone(&self.seen);
        Ask::Later(Box::pin(async move {
            let reply: Vec<i64> = match link.eval_gated(&call).await {
                Ok(reply) => reply,
                Err(failure) => return Asked::Unavailable(failure),
            };
            let [admitted, wait, seq, now_us, requests_ahead, tokens_ahead] = reply[..] else {
                return Asked::Unavailable(Failure::reply(&reply));
            };
            let nonnegative = |value: i64| u64::try_from(value).unwrap_or(0);
            *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(Seen {
                at: Instant::now(),
                requests_ahead: nonnegative(requests_ahead),
                tokens_ahead: nonnegative(tokens_ahead),
            });
            if admitted == 1 {
                Asked::Admitted {
                    seq: nonnegative(seq),
                    at: UNIX_EPOCH + Duration::from_micros(nonnegative(now_us)),
                }
            } else {
                Asked::Wait(Duration::from_nanos(nonnegative(wait).max(1)))
            }
        }))
    }

    /// Corrects the charge of an admission (sequence `seq`, `charged` tokens) with the
    /// tokens `used`: sent through the queue, as in process.
    pub(crate) fn reconcile(&self, seq: u64, charged: u64, used: u64, mode: Reconcile) {
        if self.tok_interval == 0 {
            return;
        }
        if used < charged && mode.gives_credit() && seq > 0 {
            let credit = (charged - used).saturating_mul(self.tok_interval);
            self.adjust(seq, 0, credit.min(MAX_NANOS), 0);
        } else if used > charged && mode.charges_debt() {
            let debt = (used - charged)
                .min(self.tok_limit)
                .saturating_mul(self.tok_interval);
            self.adjust(0, debt.min(MAX_NANOS), 0, 0);
        }
    }

    /// Holds back the key's admissions, in every process, for `pause`.
    pub(crate) fn pause(&self, pause: Duration) {
        let nanos = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
        self.adjust(0, 0, 0, nanos.min(MAX_NANOS));
    }

    fn adjust(&self, seq: u64, debt: u64, credit: u64, pause: u64) {
        let link = &self.shared.link;
        link.enqueue(|op_seq| {
            Call::new(&ADJUST, "rate limit adjust")
                .key(self.state_key.as_str())
                .key(self.slack_key.as_str())
                .key(self.shared.guard_key.as_str())
                .arg(op_seq)
                .arg(seq)
                .arg(debt)
                .arg(credit)
                .arg(pause)
                .arg(self.idle_ms)
        });
    }

    /// The request and token cells the shared buckets held at the last decision, counted
    /// on to now; `None` for a bucket that is off, or before the first decision.
    pub(crate) fn available(&self) -> (Option<u32>, Option<u32>) {
        let Some(seen) = *self.seen.lock().unwrap_or_else(PoisonError::into_inner) else {
            return (None, None);
        };
        let elapsed = u64::try_from(seen.at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let cells = |ahead: u64, interval: u64, tolerance: u64| {
            (interval > 0).then(|| {
                let room = tolerance.saturating_sub(ahead.saturating_sub(elapsed));
                u32::try_from(room / interval).unwrap_or(u32::MAX)
            })
        };
        (
            cells(seen.requests_ahead, self.req_cost, self.req_tol),
            cells(seen.tokens_ahead, self.tok_interval, self.tok_tol),
        )
    }
}

impl fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKey")
            .field("key", &self.state_key)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_share_of_a_quota_keeps_its_window() {
        let quota = Quota::per_minute(600).scaled_minute(Duration::from_secs(6));
        let local = local_quota(quota, 0.25);
        assert_eq!((local.limit(), local.burst_size()), (150, 7));
        assert_eq!(local.window_nanos(), 6_000_000_000);
        let tiny = local_quota(Quota::per_minute(3), 0.1);
        assert_eq!((tiny.limit(), tiny.burst_size()), (1, 1));
    }

    #[test]
    fn costs_are_the_in_process_intervals() {
        let quota = Quota::per_minute(600);
        let (interval, tolerance) = costs(quota);
        assert_eq!(interval, quota.interval_nanos());
        assert_eq!(tolerance, 30 * interval);
    }
}

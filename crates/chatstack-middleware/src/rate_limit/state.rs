//! The limiter of each key: governor's GCRAs on tokio's clock, the FIFO queue of waiting
//! requests, reconciliation with the real usage, and the pauses the provider asks for.
//!
//! Everything about one key sits behind one short-held `std::sync::Mutex` (never held across
//! an `.await`, never held while waking a task): the queue, the pause, the reconciliation
//! log, and the GCRAs' states, which governor reads and writes through [`SharedTat`], a
//! [`StateStore`] this module can also read and write. That is what makes an admission that
//! needs both a request cell and token cells all or nothing, lets the queue estimate its
//! waits, and lets reconciliation give cells back — none of which governor's own stores
//! allow.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};

use chatstack_proto::{Error, LlmRequest, LlmResponse, RateLimitSnapshot, Usage};
use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use tokio::time::{Duration, Instant};

use super::counter::TokenCounter;
use super::layer::{PerKey, Quota, RateLimitConfig, Reconcile};
use super::refused::{RateLimitRefused, RefusalReason};
use crate::keyed::KeyedMap;
#[cfg(feature = "redis")]
use crate::redis::limiter::{Ask, AskFuture, Asked, RemoteKey, SharedLimiter, local_quota};

/// governor's clock: the time of the decision being made, in nanoseconds since the key's
/// origin on tokio's clock.
///
/// The key's lock holder reads tokio's clock once per decision (so that waits follow a
/// paused test clock), sets it here, and asks governor; governor and this module then agree
/// on "now" to the nanosecond, and a decision reads the clock once however many quotas it
/// checks. It reads 0 when the limiters are made, so governor's start is the origin and its
/// theoretical arrival times are nanoseconds since the origin too. governor's own waiting
/// futures (`until_ready`, on `futures-timer`, which tokio's clock does not drive) are never
/// used: this limiter asks governor *when*, and sleeps on tokio.
#[derive(Debug, Clone, Default)]
pub(crate) struct DecisionClock(Arc<AtomicU64>);

impl DecisionClock {
    fn set(&self, nanos: u64) {
        self.0.store(nanos, Ordering::Relaxed);
    }
}

impl Clock for DecisionClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::Relaxed))
    }
}

/// tokio's clock, read at most once per decision, and only if the decision needs it.
struct LazyNow(Option<Instant>);

impl LazyNow {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// The state of one GCRA, its theoretical arrival time (TAT) in nanoseconds since the
/// limiter's start (0: never used), shared between governor and the key's lock holder.
///
/// Only ever accessed with the key's lock held, so plain loads and stores suffice.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedTat(Arc<AtomicU64>);

impl SharedTat {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, tat: u64) {
        self.0.store(tat, Ordering::Relaxed);
    }
}

impl StateStore for SharedTat {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let previous = NonZeroU64::new(self.get()).map(|tat| Nanos::from(tat.get()));
        let (outcome, next) = f(previous)?;
        self.set(next.as_u64());
        Ok(outcome)
    }
}

/// One GCRA: a bucket of `burst` cells refilled one cell per `interval`.
struct Bucket {
    gcra: RateLimiter<NotKeyed, SharedTat, DecisionClock, NoOpMiddleware<Nanos>>,
    tat: SharedTat,
    quota: Quota,
    /// Nanoseconds per cell.
    interval: u64,
}

impl Bucket {
    fn new(quota: Quota, clock: DecisionClock) -> Self {
        let interval = quota.interval_nanos();
        let burst = NonZeroU32::new(quota.burst_size()).unwrap_or(NonZeroU32::MIN);
        let gcra_quota = governor::Quota::with_period(Duration::from_nanos(interval))
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        let tat = SharedTat::default();
        Self {
            gcra: RateLimiter::new(gcra_quota, tat.clone(), clock),
            tat,
            quota,
            interval,
        }
    }

    /// The bucket's capacity in nanoseconds: `burst × interval` (GCRA's `τ + T`).
    fn capacity(&self) -> u64 {
        u64::from(self.quota.burst_size()).saturating_mul(self.interval)
    }

    /// Takes `cells` at `now` (the time the key's clock was set to), or says how long until
    /// they could be taken.
    ///
    /// Up to the burst, that is governor's GCRA test: `tat + cells × T ≤ now + burst × T`.
    /// Beyond it, the same test, which governor refuses to make (its bucket cannot hold the
    /// cells), is made [here](Self::take_beyond_burst).
    fn take(&self, cells: NonZeroU32, now: u64) -> Result<(), Duration> {
        if cells.get() > self.quota.burst_size() {
            return self.take_beyond_burst(cells.get(), now);
        }
        let decision = if cells == NonZeroU32::MIN {
            Ok(self.gcra.check())
        } else {
            self.gcra.check_n(cells)
        };
        match decision {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(Nanos::from(now))),
            // Within the burst, governor always has the capacity.
            Err(_) => self.take_beyond_burst(cells.get(), now),
        }
    }

    /// Takes more cells than the burst: once the bucket is full **and** has stayed full for
    /// as long as the cells beyond the burst take to refill (`tat + (cells − burst) × T ≤
    /// now`: the GCRA test, `tat + cells × T ≤ now + burst × T`, for a bucket deeper than
    /// this one), it takes the whole burst and [owes](Self::owe) the rest, which holds back
    /// the requests after it for as long again. The wait before keeps the minute *before*
    /// the request within the quota, the debt after the minute *after* it; the module docs
    /// (`What it guarantees`) have the argument. A bucket never charged has no past to wait
    /// for.
    fn take_beyond_burst(&self, cells: u32, now: u64) -> Result<(), Duration> {
        let tat = self.tat.get();
        if tat != 0 {
            let beyond = u64::from(cells.saturating_sub(self.quota.burst_size()));
            let earliest = tat.saturating_add(beyond.saturating_mul(self.interval));
            if earliest > now {
                return Err(Duration::from_nanos(earliest - now));
            }
        }
        // The bucket is full (`tat ≤ now`): owing all the cells is taking the whole burst
        // and owing the rest.
        self.owe(u64::from(cells), now);
        Ok(())
    }

    /// Charges `cells` at `now` whether or not the bucket holds them: what it lacks becomes
    /// debt (the theoretical arrival time goes past `now + burst × T`), which later
    /// admissions wait out. Both a request larger than the burst and a response that used
    /// more than it was charged are charged this way.
    fn owe(&self, cells: u64, now: u64) {
        let tat = self
            .tat
            .get()
            .max(now)
            .saturating_add(cells.saturating_mul(self.interval));
        self.tat.set(tat);
    }

    /// A lower bound of the wait until `cells` in all could have been taken, one request
    /// after the other: the GCRA's earliest time for taking them at once. (Each admission
    /// moves the TAT on by at least its cells, and the last one needs `tat + cells × T ≤
    /// now + burst × T`, whether or not it is larger than the burst. For a bucket never
    /// charged that holds once there are two requests or more, as in the queue.)
    fn wait_for(&self, cells: u64, now: u64) -> Duration {
        let earliest = self
            .tat
            .get()
            .saturating_add(cells.saturating_mul(self.interval))
            .saturating_sub(self.capacity());
        Duration::from_nanos(earliest.saturating_sub(now))
    }

    /// The cells that could be taken at once now.
    fn available(&self, now: u64) -> u32 {
        let room = now
            .saturating_add(self.capacity())
            .saturating_sub(self.tat.get());
        u32::try_from(room / self.interval)
            .unwrap_or(u32::MAX)
            .min(self.quota.burst_size())
    }
}

/// Names the limiter of a request.
pub(crate) type KeyFn = Arc<dyn for<'r> Fn(&'r dyn LlmRequest) -> Cow<'r, str> + Send + Sync>;

/// How a request is mapped to its limiter.
#[derive(Clone)]
pub(crate) enum KeyBy {
    /// One limiter per model.
    Model,
    /// A user's function of the request.
    Custom(KeyFn),
}

impl KeyBy {
    /// The key of `request`; borrowed (no allocation) for per-model keys.
    pub(crate) fn key_of<'a, R: LlmRequest>(&'a self, request: &'a R) -> Cow<'a, str> {
        match self {
            Self::Model => Cow::Borrowed(request.model()),
            Self::Custom(key) => key(request),
        }
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Model => "Model",
            Self::Custom(_) => "Custom",
        })
    }
}

/// Everything a layer is configured with.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) config: RateLimitConfig,
    pub(crate) per_key: PerKey,
    pub(crate) key_by: KeyBy,
    pub(crate) counter: Option<Arc<dyn TokenCounter>>,
    /// The limiters in Redis, shared with other processes; `None`: in process.
    #[cfg(feature = "redis")]
    pub(crate) remote: Option<Arc<SharedLimiter>>,
}

impl Settings {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            per_key: PerKey::default(),
            key_by: KeyBy::Model,
            counter: None,
            #[cfg(feature = "redis")]
            remote: None,
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Settings");
        debug
            .field("config", &self.config)
            .field("per_key", &self.per_key)
            .field("key_by", &self.key_by)
            .field("token_counter", &self.counter.is_some());
        #[cfg(feature = "redis")]
        debug.field("redis", &self.remote);
        debug.finish()
    }
}

/// The limiters of one layer, by key. Limiters are made on first use and kept.
pub(crate) struct Limiters {
    settings: Arc<Settings>,
    by_key: KeyedMap<KeyLimiter>,
}

impl Limiters {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings: Arc::new(settings),
            by_key: KeyedMap::default(),
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The limiter of `key`, made if new. Allocates only when the key is new.
    pub(crate) fn limiter(&self, key: &str) -> Arc<KeyLimiter> {
        self.by_key.get_or_insert_with(key, |key| {
            let config = self
                .settings
                .per_key
                .get(&key)
                .copied()
                .unwrap_or(self.settings.config);
            #[cfg(feature = "redis")]
            if let Some(shared) = &self.settings.remote {
                return KeyLimiter::shared(key, config, shared);
            }
            KeyLimiter::new(key, config)
        })
    }

    pub(crate) fn status(&self, key: &str) -> Option<KeyStatus> {
        self.by_key.get(key).map(|limiter| limiter.status())
    }
}

/// What the limiter of one key looks like at one moment; see
/// [`RateLimitLayer::status`](super::RateLimitLayer::status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyStatus {
    /// Requests that could be admitted at once (`None`: requests are not limited).
    pub requests_available: Option<u32>,
    /// Tokens that could be admitted at once (`None`: tokens are not limited); 0 while the
    /// key is in debt.
    pub tokens_available: Option<u32>,
    /// Requests waiting in the key's queue.
    pub waiting: usize,
    /// How long the key stays paused by the provider's signals, if it is.
    pub paused_for: Option<Duration>,
    /// Tokens given back so far because responses used fewer than they were charged.
    pub tokens_credited: u64,
    /// Tokens charged afterwards so far because responses used more than they were charged.
    pub tokens_debited: u64,
}

/// How many reconciliation records a key keeps; older admissions get no credit back.
const SLACK_LOG_CAPACITY: usize = 1024;

/// What a refund may give back without letting any 60-second window pass the quota.
///
/// Giving `d` cells back to a request admitted at sequence `q` must leave the GCRA exactly as
/// if that request had been charged `d` cells less when it was admitted. Every charge since
/// then that found the bucket partly full ("slack": its TAT minus the time, floored at 0)
/// absorbed part of that difference, so the refund is `min(d, least slack since q)`. This log
/// answers "least slack since q" with a monotonic stack of suffix minima: entries ordered by
/// sequence, with strictly growing slack; an entry is dropped once a later one has no more
/// slack.
#[derive(Debug, Default)]
struct SlackLog {
    /// `(sequence, slack in nanoseconds)`.
    entries: VecDeque<(u64, u64)>,
    /// The sequence of the newest entry dropped for capacity: refunds to requests admitted
    /// before it cannot be bounded, and get nothing.
    forgotten: u64,
}

impl SlackLog {
    fn record(&mut self, seq: u64, slack: u64) {
        while self.entries.back().is_some_and(|&(_, last)| last >= slack) {
            self.entries.pop_back();
        }
        self.entries.push_back((seq, slack));
        if self.entries.len() > SLACK_LOG_CAPACITY {
            if let Some((dropped, _)) = self.entries.pop_front() {
                self.forgotten = dropped;
            }
        }
    }

    /// The least slack of the charges after `seq` (`u64::MAX` when there were none).
    fn least_since(&self, seq: u64) -> u64 {
        if seq < self.forgotten {
            return 0;
        }
        let first = self.entries.partition_point(|&(entry, _)| entry <= seq);
        self.entries
            .get(first)
            .map_or(u64::MAX, |&(_, slack)| slack)
    }

    /// After a refund of `by` (which [`least_since`](Self::least_since)`(seq)` allowed) to the
    /// request admitted at `seq`: the charges since then would have found that much less
    /// slack. Exactly that much for every entry kept: the first entry after `seq` is the
    /// least slack since then (so it absorbed the whole refund or was emptied by it), and
    /// every later one saw the refund shrunk to at most that first slack, which `by` is.
    /// Entries dropped earlier only ever mattered through a later, smaller one.
    fn lower_since(&mut self, seq: u64, by: u64) {
        let first = self.entries.partition_point(|&(entry, _)| entry <= seq);
        for entry in self.entries.range_mut(first..) {
            entry.1 = entry.1.saturating_sub(by);
        }
        let Some(&(_, lowest)) = self.entries.get(first) else {
            return;
        };
        let mut keep = first;
        while keep > 0 && self.entries[keep - 1].1 >= lowest {
            keep -= 1;
        }
        self.entries.drain(keep..first);
    }
}

/// A request waiting in a key's queue.
struct Waiter {
    tokens: u32,
    waker: Option<Waker>,
}

/// The part of a key's limiter behind its lock.
#[derive(Default)]
struct KeyState {
    /// Waiting requests, oldest first. `None` marks one that left (its future was dropped or
    /// its deadline refused it) while others were ahead of it; it is skipped once it reaches
    /// the front, which is always a live waiter.
    queue: VecDeque<Option<Waiter>>,
    /// The ticket of `queue[0]`; tickets are consecutive.
    front_ticket: u64,
    /// Live waiters in the queue.
    waiting: usize,
    /// Their tokens.
    waiting_tokens: u64,
    /// No admissions until then (the provider's 429 or low remaining quota).
    paused_until: Option<Instant>,
    /// The sequence of the last charge to the token bucket.
    seq: u64,
    slack: SlackLog,
    credited: u64,
    debited: u64,
}

impl KeyState {
    fn enqueue(&mut self, tokens: u32) -> u64 {
        let ticket = self.front_ticket + self.queue.len() as u64;
        self.queue.push_back(Some(Waiter {
            tokens,
            waker: None,
        }));
        self.waiting += 1;
        self.waiting_tokens += u64::from(tokens);
        ticket
    }

    /// The position of a ticket in the queue.
    fn index(&self, ticket: u64) -> usize {
        let index = usize::try_from(ticket - self.front_ticket).unwrap_or(usize::MAX);
        debug_assert!(matches!(self.queue.get(index), Some(Some(_))));
        index
    }

    /// Takes the waiter at `index` out of the queue; if it was the head, returns the waker
    /// of the new head, which must be woken once the lock is released.
    #[must_use]
    fn remove(&mut self, index: usize) -> Option<Waker> {
        if let Some(waiter) = self.queue.get_mut(index).and_then(Option::take) {
            self.waiting -= 1;
            self.waiting_tokens -= u64::from(waiter.tokens);
        }
        if index != 0 {
            return None;
        }
        while matches!(self.queue.front(), Some(None)) {
            self.queue.pop_front();
            self.front_ticket += 1;
        }
        self.head_waker()
    }

    fn head_waker(&mut self) -> Option<Waker> {
        self.queue.front_mut()?.as_mut()?.waker.take()
    }

    fn set_waker(&mut self, index: usize, waker: &Waker) {
        if let Some(Some(waiter)) = self.queue.get_mut(index) {
            match &mut waiter.waker {
                Some(known) if known.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
    }

    /// How long the key stays paused, clearing a pause that is over.
    fn pause_left(&mut self, now: Instant) -> Duration {
        match self.paused_until {
            Some(until) if until > now => until - now,
            Some(_) => {
                self.paused_until = None;
                Duration::ZERO
            }
            None => Duration::ZERO,
        }
    }
}

/// How a request's call begins.
pub(crate) enum Start {
    /// Admitted at once: send it.
    Admitted(Charge),
    /// In the queue: the response future waits its turn.
    Queued(Ticket),
    /// Refused at once.
    Refused(Error),
}

/// What a waiting request learns when its future is polled.
pub(crate) enum Turn {
    /// Admitted: send it.
    Admitted(Charge),
    /// Not yet: wake up at this time (also woken earlier when its turn may have come).
    Wait(Option<Instant>),
    /// Refused: its deadline cannot be met.
    Refused(Error),
}

/// The limiter of one key: requests and tokens, a queue, a pause.
pub(crate) struct KeyLimiter {
    key: Arc<str>,
    config: RateLimitConfig,
    /// Time zero of the key's GCRAs.
    origin: Instant,
    clock: DecisionClock,
    /// The GCRAs of `config`'s quotas; with a shared limiter, of the share this process
    /// keeps for itself while Redis is unreachable.
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    state: Mutex<KeyState>,
    /// The key's limiter in Redis, which decides instead of the buckets while it answers.
    #[cfg(feature = "redis")]
    remote: Option<RemoteKey>,
}

impl KeyLimiter {
    fn new(key: Arc<str>, config: RateLimitConfig) -> Self {
        Self::with_buckets(key, config, config.requests, config.tokens)
    }

    fn with_buckets(
        key: Arc<str>,
        config: RateLimitConfig,
        requests: Option<Quota>,
        tokens: Option<Quota>,
    ) -> Self {
        let clock = DecisionClock::default();
        Self {
            key,
            origin: Instant::now(),
            requests: requests.map(|quota| Bucket::new(quota, clock.clone())),
            tokens: tokens.map(|quota| Bucket::new(quota, clock.clone())),
            clock,
            config,
            state: Mutex::default(),
            #[cfg(feature = "redis")]
            remote: None,
        }
    }

    /// A key whose limiter is in Redis; its in-process buckets hold the local share of the
    /// quotas, for an outage.
    #[cfg(feature = "redis")]
    fn shared(key: Arc<str>, config: RateLimitConfig, shared: &Arc<SharedLimiter>) -> Self {
        let share = shared.local_share().unwrap_or(1.0);
        let remote = shared.key(&key, &config);
        let requests = config.requests.map(|quota| local_quota(quota, share));
        let tokens = config.tokens.map(|quota| local_quota(quota, share));
        let mut limiter = Self::with_buckets(key, config, requests, tokens);
        limiter.remote = Some(remote);
        limiter
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Whether the key's limiter is in Redis.
    fn is_shared(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.remote.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// The tokens `request` is charged: its prompt tokens plus its output cap (or the
    /// configured default). 0 when tokens are not limited, without counting.
    pub(crate) fn tokens_of<R: LlmRequest>(
        &self,
        request: &mut R,
        counter: Option<&dyn TokenCounter>,
    ) -> u64 {
        if self.tokens.is_none() {
            return 0;
        }
        let prompt = match counter {
            Some(counter) => counter.prompt_tokens(request),
            None => request.estimated_prompt_tokens(),
        };
        let output = request
            .max_output_tokens()
            .unwrap_or(u64::from(self.config.default_max_output_tokens));
        prompt.saturating_add(output)
    }

    /// Admits a request of `tokens` at once if it may go now and nobody waits; else queues it,
    /// unless it can never pass (more tokens than the whole quota) or would pass its
    /// deadline. A request larger than the burst but within the quota is admitted like any
    /// other, once its bucket allows it (see [`Bucket::take_beyond_burst`]).
    pub(crate) fn start(self: &Arc<Self>, tokens: u64, deadline: Option<Instant>) -> Start {
        let tokens = match &self.config.tokens {
            Some(quota) if tokens > u64::from(quota.limit()) => {
                let limit = quota.limit();
                return Start::Refused(self.refuse(RefusalReason::TooLarge { tokens, limit }));
            }
            // Within the quota, so within u32.
            _ => u32::try_from(tokens).unwrap_or(u32::MAX),
        };
        let mut now = LazyNow(None);
        let mut state = self.lock();
        #[cfg(feature = "redis")]
        if self.remote.is_some() {
            // Decided in Redis, by the head of the queue, from the response future.
            let ticket = state.enqueue(tokens);
            drop(state);
            return Start::Queued(self.ticket(ticket, tokens, now.get()));
        }
        let wait = if state.waiting == 0 {
            match self.admit_now(&mut state, tokens, &mut now) {
                Ok(seq) => {
                    drop(state);
                    return Start::Admitted(self.charge(seq, tokens));
                }
                Err(wait) => wait,
            }
        } else if deadline.is_some() {
            let (all_tokens, all_requests) = (state.waiting_tokens, state.waiting as u64);
            self.estimate(
                &mut state,
                all_tokens + u64::from(tokens),
                all_requests + 1,
                now.get(),
            )
        } else {
            Duration::ZERO
        };
        let now = now.get();
        if let Some(reason) = past_deadline(now, wait, deadline) {
            drop(state);
            return Start::Refused(self.refuse(reason));
        }
        let ticket = state.enqueue(tokens);
        drop(state);
        Start::Queued(self.ticket(ticket, tokens, now))
    }

    fn ticket(self: &Arc<Self>, ticket: u64, tokens: u32, since: Instant) -> Ticket {
        Ticket {
            limiter: Arc::clone(self),
            ticket,
            tokens,
            since,
            queued: true,
            #[cfg(feature = "redis")]
            ask: None,
        }
    }

    /// Takes a request cell and `tokens` token cells, all or nothing; the sequence of the
    /// charge, or how long until it could go.
    fn admit_now(
        &self,
        state: &mut KeyState,
        tokens: u32,
        now: &mut LazyNow,
    ) -> Result<u64, Duration> {
        if state.paused_until.is_some() {
            let paused = state.pause_left(now.get());
            if !paused.is_zero() {
                return Err(paused);
            }
        }
        let tokens = self.tokens.as_ref().zip(NonZeroU32::new(tokens));
        if self.requests.is_none() && tokens.is_none() {
            return Ok(state.seq);
        }
        let nanos = self.nanos_since_origin(now.get());
        self.clock.set(nanos);
        let mut wait: Option<Duration> = None;
        let requests_before = self.requests.as_ref().map(|bucket| bucket.tat.get());
        if let Some(bucket) = &self.requests {
            if let Err(not_yet) = bucket.take(NonZeroU32::MIN, nanos) {
                wait = Some(not_yet);
            }
        }
        let tokens_before = tokens.map(|(bucket, _)| bucket.tat.get());
        if let Some((bucket, cells)) = tokens {
            if let Err(not_yet) = bucket.take(cells, nanos) {
                wait = Some(wait.map_or(not_yet, |other| other.max(not_yet)));
            }
        }
        if let Some(wait) = wait {
            // All or nothing: put back what the other bucket took (a bucket that said no
            // changed nothing, so restoring it is harmless).
            if let (Some(bucket), Some(tat)) = (&self.requests, requests_before) {
                bucket.tat.set(tat);
            }
            if let (Some((bucket, _)), Some(tat)) = (tokens, tokens_before) {
                bucket.tat.set(tat);
            }
            return Err(wait);
        }
        if let (Some(_), Some(before)) = (tokens, tokens_before) {
            state.seq += 1;
            state.slack.record(state.seq, before.saturating_sub(nanos));
        }
        Ok(state.seq)
    }

    /// A lower bound of the wait of a request behind `tokens` and `requests` in all (its own
    /// included): the pause, and each bucket's earliest time for all of them.
    fn estimate(&self, state: &mut KeyState, tokens: u64, requests: u64, now: Instant) -> Duration {
        let nanos = self.nanos_since_origin(now);
        let mut wait = state.pause_left(now);
        if let Some(bucket) = &self.requests {
            wait = wait.max(bucket.wait_for(requests, nanos));
        }
        if let Some(bucket) = &self.tokens {
            wait = wait.max(bucket.wait_for(tokens, nanos));
        }
        wait
    }

    /// Empties the in-process buckets at `now`: the local share of a shared limiter starts
    /// so at each outage, adding no burst to what the fleet was sending.
    #[cfg(feature = "redis")]
    fn empty_buckets(&self, now: Instant) {
        let nanos = self.nanos_since_origin(now);
        for bucket in [&self.requests, &self.tokens].into_iter().flatten() {
            bucket.tat.set(
                bucket
                    .tat
                    .get()
                    .max(nanos.saturating_add(bucket.capacity())),
            );
        }
    }

    fn charge(self: &Arc<Self>, seq: u64, tokens: u32) -> Charge {
        Charge {
            limiter: Arc::clone(self),
            seq,
            tokens,
            #[cfg(feature = "redis")]
            shared_at: None,
        }
    }

    fn refuse(&self, reason: RefusalReason) -> Error {
        match reason {
            RefusalReason::TooLarge { tokens, limit } => tracing::info!(
                key = %self.key, tokens, limit, "rate limit: request larger than the quota refused"
            ),
            RefusalReason::PastDeadline { wait, left } => tracing::info!(
                key = %self.key,
                wait_ms = wait.as_millis() as u64,
                left_ms = left.as_millis() as u64,
                "rate limit: wait past the deadline refused"
            ),
        }
        RateLimitRefused::error(Arc::clone(&self.key), reason)
    }

    /// Corrects the charge of a completed request (sequence `seq`, `charged` tokens) with its
    /// real usage.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    fn reconcile(&self, seq: u64, charged: u32, usage: Option<&Usage>, shared: bool) {
        let (Some(bucket), Some(usage)) = (&self.tokens, usage.filter(|usage| !usage.is_empty()))
        else {
            return;
        };
        let used = usage.prompt_tokens.saturating_add(usage.completion_tokens);
        let charged = u64::from(charged);
        let mode = self.config.reconcile;
        #[cfg(feature = "redis")]
        if let (Some(remote), true) = (&self.remote, shared) {
            remote.reconcile(seq, charged, used, mode);
            let mut state = self.lock();
            if used < charged && mode.gives_credit() {
                state.credited += charged - used;
            } else if used > charged && mode.charges_debt() {
                let limit = self.config.tokens.map_or(0, |quota| quota.limit());
                state.debited += (used - charged).min(u64::from(limit));
            }
            return;
        }
        if used < charged && mode.gives_credit() {
            let over = (charged - used).saturating_mul(bucket.interval);
            let wake = {
                let mut state = self.lock();
                let refund = over.min(state.slack.least_since(seq));
                if refund == 0 {
                    return;
                }
                bucket.tat.set(bucket.tat.get().saturating_sub(refund));
                state.slack.lower_since(seq, refund);
                state.credited += refund / bucket.interval;
                state.head_waker()
            };
            tracing::trace!(key = %self.key, charged, used, "rate limit: unused tokens given back");
            if let Some(waker) = wake {
                waker.wake();
            }
        } else if used > charged && mode.charges_debt() {
            // At most a minute's quota per response: a bogus usage must not stop the key
            // for much longer than a minute.
            let under = (used - charged).min(u64::from(bucket.quota.limit()));
            let mut state = self.lock();
            let now = self.nanos_since_origin(Instant::now());
            let before = bucket.tat.get();
            bucket.owe(under, now);
            state.seq += 1;
            let seq = state.seq;
            state.slack.record(seq, before.saturating_sub(now));
            state.debited += under;
            drop(state);
            tracing::trace!(key = %self.key, charged, used, "rate limit: tokens used beyond the charge owed");
        }
    }

    /// Pauses admissions for `pause` (capped), unless a longer pause is on.
    fn pause(&self, pause: Duration, reason: &'static str) {
        let pause = pause.min(self.config.slow_down.max_pause);
        if pause.is_zero() {
            return;
        }
        let until = Instant::now() + pause;
        let wakers: Vec<Waker> = {
            let mut state = self.lock();
            if state.paused_until.is_some_and(|current| current >= until) {
                return;
            }
            state.paused_until = Some(until);
            #[cfg(feature = "redis")]
            if let Some(remote) = &self.remote {
                // The provider's quota is the fleet's: every process holds back. (Queued
                // under the lock, so that pauses reach Redis in the order they were made.)
                remote.pause(pause);
            }
            // Every waiter looks again: the head sleeps until the pause ends, and a waiter
            // whose deadline falls inside it is refused now rather than at its deadline.
            state
                .queue
                .iter_mut()
                .flatten()
                .filter_map(|waiter| waiter.waker.take())
                .collect()
        };
        tracing::warn!(
            key = %self.key,
            pause_ms = pause.as_millis() as u64,
            reason,
            "rate limit: slowing down"
        );
        for waker in wakers {
            waker.wake();
        }
    }

    /// Slows down when a response says the provider's quota runs low.
    fn observe(&self, snapshot: &RateLimitSnapshot) {
        let slow_down = self.config.slow_down;
        if slow_down.low_remaining <= 0.0 || !snapshot.is_present() {
            return;
        }
        let low = |limit: Option<u64>, remaining: Option<u64>| match (limit, remaining) {
            (Some(limit), Some(remaining)) if limit > 0 => {
                (remaining as f64) < slow_down.low_remaining * limit as f64
            }
            _ => false,
        };
        let mut pause: Option<(Duration, &'static str)> = None;
        if low(snapshot.limit_requests, snapshot.remaining_requests) {
            let until_reset = snapshot.reset_requests.unwrap_or(slow_down.default_pause);
            pause = Some((until_reset, "remaining requests low"));
        }
        if low(snapshot.limit_tokens, snapshot.remaining_tokens) {
            let until_reset = snapshot.reset_tokens.unwrap_or(slow_down.default_pause);
            if pause.is_none_or(|(longest, _)| until_reset > longest) {
                pause = Some((until_reset, "remaining tokens low"));
            }
        }
        if let Some((pause, reason)) = pause {
            self.pause(pause, reason);
        }
    }

    /// Slows down after the provider's 429.
    fn observe_error(&self, error: &Error) {
        let slow_down = self.config.slow_down;
        if !slow_down.on_rate_limited || !error.is_rate_limited() {
            return;
        }
        let snapshot = error.rate_limit();
        let exhausted_reset = [
            (snapshot.remaining_requests, snapshot.reset_requests),
            (snapshot.remaining_tokens, snapshot.reset_tokens),
        ]
        .into_iter()
        .filter_map(|(remaining, reset)| if remaining == Some(0) { reset } else { None })
        .max();
        let pause = error
            .retry_after()
            .filter(|wait| !wait.is_zero())
            .or(exhausted_reset)
            .unwrap_or(slow_down.default_pause);
        self.pause(pause, "provider answered 429");
    }

    fn status(&self) -> KeyStatus {
        let now = Instant::now();
        let nanos = self.nanos_since_origin(now);
        let mut state = self.lock();
        let paused = state.pause_left(now);
        #[allow(unused_mut)]
        let mut available = (
            self.requests.as_ref().map(|bucket| bucket.available(nanos)),
            self.tokens.as_ref().map(|bucket| bucket.available(nanos)),
        );
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.remote {
            // As of the last decision Redis made for this process.
            available = remote.available();
        }
        KeyStatus {
            requests_available: available.0,
            tokens_available: available.1,
            waiting: state.waiting,
            paused_for: (!paused.is_zero()).then_some(paused),
            tokens_credited: state.credited,
            tokens_debited: state.debited,
        }
    }

    fn nanos_since_origin(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `Some` refusal when waiting `wait` from `now` would pass `deadline`.
fn past_deadline(now: Instant, wait: Duration, deadline: Option<Instant>) -> Option<RefusalReason> {
    let deadline = deadline?;
    let left = deadline.saturating_duration_since(now);
    (wait > left || left.is_zero()).then_some(RefusalReason::PastDeadline { wait, left })
}

/// A request's place in its key's queue. Dropping it (with the response future) leaves the
/// queue, handing the turn on if it was the head.
pub(crate) struct Ticket {
    limiter: Arc<KeyLimiter>,
    ticket: u64,
    tokens: u32,
    since: Instant,
    /// Still in the queue (not yet admitted or refused).
    queued: bool,
    /// The head's decision in flight, for a limiter in Redis.
    #[cfg(feature = "redis")]
    ask: Option<AskFuture>,
}

impl Ticket {
    /// Whether this request may go now; registers the task for when that may change.
    pub(crate) fn poll_turn(&mut self, deadline: Option<Instant>, cx: &mut Context<'_>) -> Turn {
        #[cfg(feature = "redis")]
        if self.limiter.remote.is_some() {
            return self.poll_shared_turn(deadline, cx);
        }
        let waker = cx.waker();
        let limiter = Arc::clone(&self.limiter);
        let mut now = LazyNow(None);
        let mut state = limiter.lock();
        let index = state.index(self.ticket);
        if index != 0 {
            return self.behind(state, index, now.get(), deadline, waker);
        }
        let (outcome, wake) = match limiter.admit_now(&mut state, self.tokens, &mut now) {
            Ok(seq) => (Ok(seq), state.remove(0)),
            Err(wait) => match past_deadline(now.get(), wait, deadline) {
                Some(reason) => (Err(reason), state.remove(0)),
                None => {
                    state.set_waker(0, waker);
                    return Turn::Wait(Some(now.get() + wait));
                }
            },
        };
        drop(state);
        let outcome = outcome
            .map(|seq| limiter.charge(seq, self.tokens))
            .map_err(|reason| limiter.refuse(reason));
        self.leave(outcome, wake, now.get())
    }

    /// A request behind others. Its wait is known once it is the head; until then it is
    /// refused early only if its deadline has come, or falls inside a pause.
    fn behind(
        &mut self,
        mut state: MutexGuard<'_, KeyState>,
        index: usize,
        now: Instant,
        deadline: Option<Instant>,
        waker: &Waker,
    ) -> Turn {
        let limiter = Arc::clone(&self.limiter);
        let pause = state.pause_left(now);
        if past_deadline(now, pause, deadline).is_none() {
            state.set_waker(index, waker);
            return Turn::Wait(deadline);
        }
        let (tokens, requests) = state
            .queue
            .range(..=index)
            .flatten()
            .fold((0, 0), |(tokens, requests), waiter| {
                (tokens + u64::from(waiter.tokens), requests + 1)
            });
        // A shared limiter's wait is Redis's to know: only the pause is known here.
        let wait = if limiter.is_shared() {
            pause
        } else {
            limiter.estimate(&mut state, tokens, requests, now)
        };
        let left = deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
        let wake = state.remove(index);
        drop(state);
        let refusal = Err(limiter.refuse(RefusalReason::PastDeadline { wait, left }));
        self.leave(refusal, wake, now)
    }

    /// Leaves the queue admitted or refused, waking the next head.
    fn leave(&mut self, outcome: Result<Charge, Error>, wake: Option<Waker>, now: Instant) -> Turn {
        self.queued = false;
        if let Some(waker) = wake {
            waker.wake();
        }
        match outcome {
            Ok(charge) => {
                tracing::debug!(
                    key = %self.limiter.key,
                    cells = self.tokens,
                    wait_ms = now.saturating_duration_since(self.since).as_millis() as u64,
                    "rate limit: waited"
                );
                Turn::Admitted(charge)
            }
            Err(error) => Turn::Refused(error),
        }
    }

    /// The turn of a request whose limiter is in Redis: the head of the queue asks Redis
    /// (one decision in flight per key and process), waits as long as Redis says, and asks
    /// again; while Redis is unreachable it follows the key's [`Outage`] policy.
    #[cfg(feature = "redis")]
    fn poll_shared_turn(&mut self, deadline: Option<Instant>, cx: &mut Context<'_>) -> Turn {
        use std::task::Poll;

        let limiter = Arc::clone(&self.limiter);
        let Some(remote) = &limiter.remote else {
            unreachable!("a shared turn has a shared limiter");
        };
        let now = Instant::now();
        {
            let mut state = limiter.lock();
            let index = state.index(self.ticket);
            if index != 0 {
                return self.behind(state, index, now, deadline, cx.waker());
            }
            let paused = state.pause_left(now);
            if !paused.is_zero() {
                if let Some(reason) = past_deadline(now, paused, deadline) {
                    let wake = state.remove(0);
                    drop(state);
                    return self.leave(Err(limiter.refuse(reason)), wake, now);
                }
                state.set_waker(0, cx.waker());
                return Turn::Wait(Some(now + paused));
            }
        }
        let mut ask: AskFuture = match self.ask.take() {
            Some(ask) => ask,
            None => match remote.ask(self.tokens) {
                Ask::Later(ask) => ask,
                Ask::Now(asked) => return self.asked(asked, deadline, cx),
            },
        };
        match ask.as_mut().poll(cx) {
            Poll::Ready(asked) => self.asked(asked, deadline, cx),
            Poll::Pending => {
                self.ask = Some(ask);
                Turn::Wait(None)
            }
        }
    }

    /// What the head does with Redis's answer.
    #[cfg(feature = "redis")]
    fn asked(&mut self, asked: Asked, deadline: Option<Instant>, cx: &mut Context<'_>) -> Turn {
        /// Why the head leaves the queue without being admitted.
        enum Refusal {
            Limit(RefusalReason),
            Unavailable(crate::redis::limiter::Failure),
        }
        let limiter = Arc::clone(&self.limiter);
        let Some(remote) = &limiter.remote else {
            unreachable!("a shared turn has a shared limiter");
        };
        let now = Instant::now();
        let mut state = limiter.lock();
        let outcome = match asked {
            Asked::Admitted { seq, at } => {
                let mut charge = limiter.charge(seq, self.tokens);
                charge.shared_at = Some(at);
                Ok(charge)
            }
            Asked::Wait(wait) => match past_deadline(now, wait, deadline) {
                Some(reason) => Err(Refusal::Limit(reason)),
                None => {
                    state.set_waker(0, cx.waker());
                    return Turn::Wait(Some(now + wait));
                }
            },
            Asked::Unavailable(failure) if remote.outage().local_share().is_none() => {
                Err(Refusal::Unavailable(failure))
            }
            Asked::Unavailable(_) => {
                // Fail open: this process's share of the quota, in process, starting empty.
                let mut lazy = LazyNow(Some(now));
                if remote.new_outage() {
                    limiter.empty_buckets(now);
                }
                match limiter.admit_now(&mut state, self.tokens, &mut lazy) {
                    Ok(seq) => Ok(limiter.charge(seq, self.tokens)),
                    Err(wait) => match past_deadline(now, wait, deadline) {
                        Some(reason) => Err(Refusal::Limit(reason)),
                        None => {
                            state.set_waker(0, cx.waker());
                            return Turn::Wait(Some(now + wait));
                        }
                    },
                }
            }
        };
        let wake = state.remove(0);
        drop(state);
        let outcome = outcome.map_err(|refusal| match refusal {
            Refusal::Limit(reason) => limiter.refuse(reason),
            Refusal::Unavailable(failure) => {
                tracing::debug!(key = %limiter.key, cause = %failure, "rate limit: Redis unreachable; refused (fail closed)");
                remote.unavailable(&failure)
            }
        });
        self.leave(outcome, wake, now)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.queued {
            return;
        }
        let wake = {
            let mut state = self.limiter.lock();
            let index = state.index(self.ticket);
            state.remove(index)
        };
        if let Some(waker) = wake {
            waker.wake();
        }
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.limiter.key)
            .field("ticket", &self.ticket)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// What an admitted request was charged, held while it is in flight: it reads the
/// provider's signals off the outcome and reconciles the charge with the usage.
pub(crate) struct Charge {
    limiter: Arc<KeyLimiter>,
    seq: u64,
    tokens: u32,
    /// For an admission by the shared limiter: the Redis server's clock at the decision.
    #[cfg(feature = "redis")]
    pub(crate) shared_at: Option<std::time::SystemTime>,
}

impl Charge {
    /// The response arrived: slow down if the provider runs low, and reconcile once the
    /// response completes.
    pub(crate) fn settle<T: LlmResponse>(self, response: T) -> T {
        self.limiter.observe(&response.meta().rate_limit);
        if self.tokens == 0
            || self.limiter.tokens.is_none()
            || self.limiter.config.reconcile == Reconcile::Off
        {
            return response;
        }
        let shared = self.is_shared();
        let Self {
            limiter,
            seq,
            tokens,
            ..
        } = self;
        response.on_complete(move |completion| {
            limiter.reconcile(seq, tokens, completion.usage, shared);
        })
    }

    /// Whether the shared limiter (not the in-process fallback) admitted the request.
    fn is_shared(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.shared_at.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// The call failed: slow down after a 429. The charge stands.
    pub(crate) fn failed(self, error: &Error) {
        self.limiter.observe_error(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_log_keeps_suffix_minima() {
        let mut log = SlackLog::default();
        assert_eq!(log.least_since(0), u64::MAX);
        for (seq, slack) in [(1, 50), (2, 30), (3, 40), (4, 60)] {
            log.record(seq, slack);
        }
        assert_eq!(log.least_since(0), 30);
        assert_eq!(log.least_since(1), 30);
        assert_eq!(log.least_since(2), 40);
        assert_eq!(log.least_since(3), 60);
        assert_eq!(log.least_since(4), u64::MAX);

        // A refund of 35 to the request admitted at 2 lowers what came after it.
        log.lower_since(2, 35);
        assert_eq!(log.least_since(2), 5);
        assert_eq!(
            log.least_since(0),
            5,
            "the lowered entries now bound the older ones"
        );
        assert_eq!(log.least_since(3), 25);
    }

    #[test]
    fn slack_log_forgets_safely() {
        let mut log = SlackLog::default();
        for seq in 1..=(SLACK_LOG_CAPACITY as u64 + 10) {
            log.record(seq, seq * 10);
        }
        assert_eq!(log.entries.len(), SLACK_LOG_CAPACITY);
        assert_eq!(log.least_since(3), 0, "too old to bound: no credit");
        assert_eq!(
            log.least_since(SLACK_LOG_CAPACITY as u64),
            10 * (SLACK_LOG_CAPACITY as u64 + 1)
        );
    }

    /// Admits `sizes` one after the other on a bucket of `quota`, each at the earliest time
    /// the bucket allows after an idle spell of `idle(i)` nanoseconds; the admissions.
    fn admit_all(quota: Quota, sizes: &[u32], idle: impl Fn(usize) -> u64) -> Vec<(u64, u64)> {
        let clock = DecisionClock::default();
        let bucket = Bucket::new(quota, clock.clone());
        let mut now = 0;
        let mut admitted = Vec::new();
        for (i, &cells) in sizes.iter().enumerate() {
            now += idle(i);
            let cells = NonZeroU32::new(cells).unwrap();
            loop {
                clock.set(now);
                match bucket.take(cells, now) {
                    Ok(()) => break,
                    Err(wait) => now += u64::try_from(wait.as_nanos()).unwrap().max(1),
                }
            }
            admitted.push((now, u64::from(cells.get())));
        }
        admitted
    }

    /// The most cells any window `[s, s + 60 s)` holds.
    fn busiest_minute(admitted: &[(u64, u64)]) -> u64 {
        const MINUTE: u64 = 60_000_000_000;
        (0..admitted.len())
            .map(|first| {
                let start = admitted[first].0;
                admitted[first..]
                    .iter()
                    .take_while(|&&(at, _)| at < start + MINUTE)
                    .map(|&(_, cells)| cells)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn requests_larger_than_the_burst_never_let_a_window_pass_the_quota() {
        // Sizes from 1 to the whole quota, some idle spells, a small burst.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (limit, burst) in [(50, 5), (600, 30), (1_000, 999), (7, 1)] {
            let quota = Quota::per_minute(limit).burst(burst);
            let sizes: Vec<u32> = (0..400)
                .map(|_| match next() % 4 {
                    0 => 1 + (next() % limit) as u32,
                    _ => 1 + (next() % burst) as u32,
                })
                .collect();
            let idles: Vec<u64> = (0..400)
                .map(|_| match next() % 8 {
                    0 => next() % 90_000_000_000,
                    _ => 0,
                })
                .collect();
            let admitted = admit_all(quota, &sizes, |i| idles[i]);
            let busiest = busiest_minute(&admitted);
            assert!(busiest <= limit, "{quota:?}: a window of {busiest}");
        }
    }

    #[test]
    fn a_request_larger_than_the_burst_waits_for_its_excess_and_leaves_it_as_debt() {
        // 6,000 a minute, burst 1,001: one cell every 12 ms.
        let quota = Quota::per_minute(6_000).burst(1_001);
        const MS: u64 = 1_000_000;
        // Never charged: the whole quota at once, and the next cell 5,000 cells later.
        let admitted = admit_all(quota, &[6_000, 1], |_| 0);
        assert_eq!(admitted, [(0, 6_000), (5_000 * 12 * MS, 1)]);
        // After a cell, 3,000 wait for that cell and their 1,999 beyond the burst; the next
        // 100 wait for those 1,999 and their own 100.
        let admitted = admit_all(quota, &[1, 3_000, 100], |_| 0);
        assert_eq!(
            admitted,
            [(0, 1), (2_000 * 12 * MS, 3_000), (4_099 * 12 * MS, 100)]
        );
    }

    #[test]
    fn quota_interval_never_lets_a_window_pass_the_quota() {
        // 7 a minute with a burst of 1: one every 60/7 s, rounded up.
        let quota = Quota::per_minute(7).burst(1);
        assert_eq!(quota.interval_nanos(), 8_571_428_572);
        let quota = Quota::per_minute(600);
        assert_eq!(quota.burst_size(), 30);
        assert_eq!(quota.steady_per_minute(), 571);
    }
}

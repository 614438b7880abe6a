//! The state machine of one circuit, the permits calls hold while in flight, and the registry
//! of circuits by key.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chatstack_proto::{Completion, Error, ErrorKind, LlmRequest};
use tokio::time::{Duration, Instant};

use super::layer::CircuitBreakerConfig;
use crate::keyed::KeyedMap;

/// The state of one circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls pass, and their outcomes fill the sliding window.
    Closed,
    /// Calls are rejected with [`ErrorKind::CircuitOpen`] until the open duration has passed.
    Open,
    /// A limited number of probe calls pass; their outcomes decide whether the circuit closes
    /// or opens again.
    HalfOpen,
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// A transition of one circuit, as the tracing event and the
/// [`on_state_change`](super::CircuitBreakerLayer::on_state_change) callback see it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StateChange {
    /// The key of the circuit (by default, the model).
    pub key: Arc<str>,
    /// The state it left.
    pub from: CircuitState,
    /// The state it entered.
    pub to: CircuitState,
    /// How many recorded outcomes decided the transition: the sliding window's when a closed
    /// circuit opens, the probes' when a half-open one closes or opens again, 0 when an open
    /// circuit half-opens because its wait is over.
    pub calls: u32,
    /// The failure rate of those outcomes, in percent (`None` when `calls` is 0).
    pub failure_rate: Option<f64>,
    /// The slow-call rate of those outcomes, in percent (`None` when `calls` is 0).
    pub slow_call_rate: Option<f64>,
}

impl fmt::Display for StateChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit `{}`: {} -> {}", self.key, self.from, self.to)?;
        if let (Some(failures), Some(slow)) = (self.failure_rate, self.slow_call_rate) {
            write!(
                f,
                " (failure rate {failures:.1}%, slow-call rate {slow:.1}% of {} calls)",
                self.calls
            )?;
        }
        Ok(())
    }
}

/// Decides whether an error counts as a failure.
pub(crate) type FailurePredicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;
/// Hears every state change.
pub(crate) type StateChangeCallback = Arc<dyn Fn(&StateChange) + Send + Sync>;
/// Names the circuit of a request.
pub(crate) type KeyFn = Arc<dyn for<'r> Fn(&'r dyn LlmRequest) -> Cow<'r, str> + Send + Sync>;

/// How a request is mapped to its circuit.
#[derive(Clone)]
pub(crate) enum KeyBy {
    /// One circuit per model.
    Model,
    /// One circuit for every request, under this name.
    Endpoint(Arc<str>),
    /// A user's function of the request.
    Custom(KeyFn),
}

impl KeyBy {
    /// The key of `request`; borrowed (no allocation) for per-model and per-endpoint keys.
    pub(crate) fn key_of<'a, R: LlmRequest>(&'a self, request: &'a R) -> Cow<'a, str> {
        match self {
            Self::Model => Cow::Borrowed(request.model()),
            Self::Endpoint(name) => Cow::Borrowed(name),
            Self::Custom(key) => key(request),
        }
    }
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model => f.write_str("Model"),
            Self::Endpoint(name) => f.debug_tuple("Endpoint").field(name).finish(),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Everything a breaker is configured with; shared by all its circuits.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) config: CircuitBreakerConfig,
    pub(crate) key_by: KeyBy,
    pub(crate) is_failure: FailurePredicate,
    pub(crate) on_state_change: Option<StateChangeCallback>,
}

impl Settings {
    pub(crate) fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            key_by: KeyBy::Model,
            is_failure: Arc::new(Error::is_provider_fault),
            on_state_change: None,
        }
    }

    /// Tells the world about a transition: a tracing event, then the callback.
    fn announce(&self, change: &StateChange) {
        let (key, from, to) = (&*change.key, change.from, change.to);
        let (calls, failure_rate, slow_call_rate) =
            (change.calls, change.failure_rate, change.slow_call_rate);
        if to == CircuitState::Open {
            tracing::warn!(key, %from, %to, calls, failure_rate, slow_call_rate, "circuit breaker state change");
        } else {
            tracing::info!(key, %from, %to, calls, failure_rate, slow_call_rate, "circuit breaker state change");
        }
        if let Some(callback) = &self.on_state_change {
            callback(change);
        }
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("config", &self.config)
            .field("key_by", &self.key_by)
            .field("on_state_change", &self.on_state_change.is_some())
            .finish_non_exhaustive()
    }
}

/// The circuits of one breaker, by key. Circuits are made on first use and kept.
pub(crate) struct Circuits {
    settings: Arc<Settings>,
    by_key: KeyedMap<Circuit>,
}

impl Circuits {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings: Arc::new(settings),
            by_key: KeyedMap::default(),
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The circuit of `key`, made if new. Allocates only when the key is new.
    pub(crate) fn circuit(&self, key: &str) -> Arc<Circuit> {
        self.by_key
            .get_or_insert_with(key, |key| Circuit::new(key, Arc::clone(&self.settings)))
    }

    /// The state of `key`'s circuit; [`CircuitState::Closed`] for a key never used.
    pub(crate) fn state(&self, key: &str) -> CircuitState {
        self.by_key
            .get(key)
            .map_or(CircuitState::Closed, |circuit| circuit.state())
    }
}

/// The phase bits of [`Circuit::status`].
const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const PHASE_BITS: u32 = 2;
const PHASE_MASK: u64 = (1 << PHASE_BITS) - 1;

/// One circuit: the state machine of one key.
pub(crate) struct Circuit {
    key: Arc<str>,
    settings: Arc<Settings>,
    /// `epoch << PHASE_BITS | phase`, written under the lock at every transition, so a call to
    /// a closed circuit (the common case) is admitted without taking the lock.
    status: AtomicU64,
    machine: Mutex<Machine>,
}

/// What the lock guards.
struct Machine {
    /// Counts transitions: an outcome is recorded only in the epoch its call was admitted in,
    /// so calls that straddle a transition cannot skew the next state's numbers.
    epoch: u64,
    phase: Phase,
    /// The outcomes of the closed state.
    window: Window,
    /// Transitions not yet announced, oldest first.
    pending: VecDeque<StateChange>,
    /// Whether some thread is announcing `pending` (it announces whatever is added meanwhile).
    announcing: bool,
}

enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        /// Probes admitted and not released.
        admitted: u32,
        /// The outcomes of probes.
        tally: Tally,
    },
}

impl Phase {
    fn state(&self) -> CircuitState {
        match self {
            Self::Closed => CircuitState::Closed,
            Self::Open { .. } => CircuitState::Open,
            Self::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn code(&self) -> u64 {
        match self {
            Self::Closed => CLOSED,
            Self::Open { .. } => OPEN,
            Self::HalfOpen { .. } => HALF_OPEN,
        }
    }
}

/// The outcome of one call that counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Outcome {
    failed: bool,
    slow: bool,
}

/// Counts of outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.calls += 1;
        self.failures += u32::from(outcome.failed);
        self.slow += u32::from(outcome.slow);
    }

    fn remove(&mut self, outcome: Outcome) {
        self.calls -= 1;
        self.failures -= u32::from(outcome.failed);
        self.slow -= u32::from(outcome.slow);
    }

    /// Whether the failures or the slow calls, as a share of `of` calls, reach their
    /// thresholds. Compared exactly: 5 of 10 reaches 50 %.
    fn reaches_thresholds(&self, config: &CircuitBreakerConfig, of: u32) -> bool {
        let reaches =
            |count: u32, threshold: f64| f64::from(count) * 100.0 >= threshold * f64::from(of);
        reaches(self.failures, config.failure_rate_threshold)
            || reaches(self.slow, config.slow_call_rate_threshold)
    }

    fn rate(count: u32, of: u32) -> Option<f64> {
        (of > 0).then(|| f64::from(count) * 100.0 / f64::from(of))
    }
}

/// The count-based sliding window: the outcomes of the last `size` calls, in a ring.
struct Window {
    ring: Box<[Outcome]>,
    next: usize,
    tally: Tally,
}

impl Window {
    fn new(size: u32) -> Self {
        Self {
            ring: vec![Outcome::default(); size as usize].into_boxed_slice(),
            next: 0,
            tally: Tally::default(),
        }
    }

    fn push(&mut self, outcome: Outcome) {
        if self.tally.calls as usize == self.ring.len() {
            self.tally.remove(self.ring[self.next]);
        }
        self.ring[self.next] = outcome;
        self.tally.add(outcome);
        self.next += 1;
        if self.next == self.ring.len() {
            self.next = 0;
        }
    }

    fn clear(&mut self) {
        self.next = 0;
        self.tally = Tally::default();
    }
}

/// Why a call was not admitted.
enum Rejection {
    Open { remaining: Duration },
    ProbesBusy { probes: u32 },
}

impl Circuit {
    fn new(key: Arc<str>, settings: Arc<Settings>) -> Self {
        let window = Window::new(settings.config.sliding_window_size);
        Self {
            key,
            settings,
            status: AtomicU64::new(CLOSED),
            machine: Mutex::new(Machine {
                epoch: 0,
                phase: Phase::Closed,
                window,
                pending: VecDeque::new(),
                announcing: false,
            }),
        }
    }

    /// The key this circuit is for.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Admits a call, or says why not: a closed circuit admits every call (without locking),
    /// an open one none until its wait is over (then it half-opens), a half-open one as many
    /// probes as configured.
    pub(crate) fn admit(self: Arc<Self>) -> Result<Permit, Error> {
        let status = self.status.load(Ordering::Acquire);
        if status & PHASE_MASK == CLOSED {
            return Ok(Permit::new(self, status >> PHASE_BITS, false));
        }
        let now = Instant::now();
        let mut machine = self.lock();
        self.half_open_if_due(&mut machine, now);
        let epoch = machine.epoch;
        let admission = match &mut machine.phase {
            Phase::Closed => Ok(false),
            Phase::Open { until } => Err(Rejection::Open {
                remaining: until.saturating_duration_since(now),
            }),
            Phase::HalfOpen { admitted, .. } => {
                let probes = self.settings.config.half_open_probes;
                if *admitted < probes {
                    *admitted += 1;
                    Ok(true)
                } else {
                    Err(Rejection::ProbesBusy { probes })
                }
            }
        };
        self.unlock(machine);
        match admission {
            Ok(probe) => Ok(Permit::new(self, epoch, probe)),
            Err(rejection) => Err(self.rejection_error(rejection)),
        }
    }

    /// The state now; an open circuit whose wait is over half-opens here.
    pub(crate) fn state(&self) -> CircuitState {
        if self.status.load(Ordering::Acquire) & PHASE_MASK == CLOSED {
            return CircuitState::Closed;
        }
        let mut machine = self.lock();
        self.half_open_if_due(&mut machine, Instant::now());
        let state = machine.phase.state();
        self.unlock(machine);
        state
    }

    fn rejection_error(&self, rejection: Rejection) -> Error {
        let key = &self.key;
        match rejection {
            Rejection::Open { remaining } => Error::new(
                ErrorKind::CircuitOpen,
                format!("the circuit for `{key}` is open; it half-opens in {remaining:?}"),
            )
            .with_retry_after(remaining),
            Rejection::ProbesBusy { probes } => Error::new(
                ErrorKind::CircuitOpen,
                format!(
                    "the circuit for `{key}` is half-open and its {probes} probe call(s) are in flight"
                ),
            ),
        }
    }

    /// Records the outcome of a call admitted in `epoch`; `None` for a call that counts as
    /// neither success nor failure (ignored error, dropped future or stream).
    fn record(&self, epoch: u64, probe: bool, outcome: Option<Outcome>) {
        if outcome.is_none() && !probe {
            return; // Nothing to count, no probe slot to give back.
        }
        let mut guard = self.lock();
        let machine = &mut *guard;
        if machine.epoch != epoch {
            return; // Admitted before a transition: not evidence about the present state.
        }
        let config = &self.settings.config;
        let verdict = match (&mut machine.phase, outcome) {
            (Phase::Closed, Some(outcome)) => {
                machine.window.push(outcome);
                let tally = machine.window.tally;
                let enough = tally.calls >= config.minimum_calls.min(config.sliding_window_size);
                (enough && tally.reaches_thresholds(config, tally.calls))
                    .then_some((CircuitState::Open, tally))
            }
            (Phase::HalfOpen { admitted, .. }, None) => {
                *admitted = admitted.saturating_sub(1);
                None
            }
            (Phase::HalfOpen { tally, .. }, Some(outcome)) => {
                tally.add(outcome);
                let probes = config.half_open_probes;
                // Re-open as soon as the probes' rates reach a threshold whatever the
                // remaining probes bring; close only once every probe has counted.
                if tally.reaches_thresholds(config, probes) {
                    Some((CircuitState::Open, *tally))
                } else if tally.calls >= probes {
                    Some((CircuitState::Closed, *tally))
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some((to, tally)) = verdict {
            let phase = match to {
                CircuitState::Open => Phase::Open {
                    until: Instant::now() + config.open_duration,
                },
                _ => Phase::Closed,
            };
            self.transition(machine, phase, tally);
        }
        self.unlock(guard);
    }

    fn half_open_if_due(&self, machine: &mut Machine, now: Instant) {
        if let Phase::Open { until } = machine.phase {
            if now >= until {
                let phase = Phase::HalfOpen {
                    admitted: 0,
                    tally: Tally::default(),
                };
                self.transition(machine, phase, Tally::default());
            }
        }
    }

    /// Moves to `phase` (under the lock), starting a new epoch, and queues the announcement.
    fn transition(&self, machine: &mut Machine, phase: Phase, decided_by: Tally) {
        let from = machine.phase.state();
        machine.epoch += 1;
        machine.phase = phase;
        if let Phase::Closed = machine.phase {
            machine.window.clear();
        }
        self.status.store(
            machine.epoch << PHASE_BITS | machine.phase.code(),
            Ordering::Release,
        );
        machine.pending.push_back(StateChange {
            key: Arc::clone(&self.key),
            from,
            to: machine.phase.state(),
            calls: decided_by.calls,
            failure_rate: Tally::rate(decided_by.failures, decided_by.calls),
            slow_call_rate: Tally::rate(decided_by.slow, decided_by.calls),
        });
    }

    /// Releases the lock and announces queued transitions, in order, without holding it: the
    /// callback may call back into the breaker. One thread announces at a time; transitions
    /// queued meanwhile by others are announced by it, after those before them.
    fn unlock<'a>(&'a self, mut machine: MutexGuard<'a, Machine>) {
        if machine.announcing || machine.pending.is_empty() {
            return;
        }
        machine.announcing = true;
        let mut announcer = Announcer {
            circuit: self,
            finished: false,
        };
        while let Some(change) = machine.pending.pop_front() {
            drop(machine);
            self.settings.announce(&change);
            machine = self.lock();
        }
        machine.announcing = false;
        announcer.finished = true;
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands the announcing role back if a callback panics.
struct Announcer<'a> {
    circuit: &'a Circuit,
    finished: bool,
}

impl Drop for Announcer<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.circuit.lock().announcing = false;
        }
    }
}

/// A call's admission, held until its outcome is known. Dropped without an outcome (the
/// future or the stream was dropped), it counts as neither success nor failure and gives its
/// probe slot back, so a dropped probe cannot keep a circuit half-open.
pub(crate) struct Permit {
    circuit: Arc<Circuit>,
    epoch: u64,
    probe: bool,
    /// When the call started, when slow calls are detected.
    started: Option<Instant>,
    settled: bool,
}

impl Permit {
    fn new(circuit: Arc<Circuit>, epoch: u64, probe: bool) -> Self {
        let started = circuit
            .settings
            .config
            .slow_call_duration
            .map(|_| Instant::now());
        Self {
            circuit,
            epoch,
            probe,
            started,
            settled: false,
        }
    }

    /// The call failed before a response.
    pub(crate) fn record_error(mut self, error: &Error) {
        let failed = (self.circuit.settings.is_failure)(error);
        self.settle(failed.then_some(true));
    }

    /// The response completed: a unary response when it exists, a stream when it ends.
    pub(crate) fn record_completion(mut self, completion: &Completion<'_>) {
        let failed = match completion.error {
            _ if completion.cancelled => None,
            Some(error) => (self.circuit.settings.is_failure)(error).then_some(true),
            None => Some(false),
        };
        self.settle(failed);
    }

    /// `failed`: `Some(true)` a failure, `Some(false)` a success, `None` neither.
    fn settle(&mut self, failed: Option<bool>) {
        if self.settled {
            return;
        }
        self.settled = true;
        let outcome = failed.map(|failed| Outcome {
            failed,
            slow: self.is_slow(),
        });
        self.circuit.record(self.epoch, self.probe, outcome);
    }

    fn is_slow(&self) -> bool {
        match (
            self.started,
            self.circuit.settings.config.slow_call_duration,
        ) {
            (Some(started), Some(threshold)) => started.elapsed() > threshold,
            _ => false,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.settle(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: Outcome = Outcome {
        failed: true,
        slow: false,
    };
    const PASS: Outcome = Outcome {
        failed: false,
        slow: false,
    };

    #[test]
    fn the_window_keeps_the_last_outcomes_only() {
        let mut window = Window::new(3);
        for outcome in [FAIL, FAIL, PASS] {
            window.push(outcome);
        }
        assert_eq!(window.tally.failures, 2);
        window.push(PASS); // evicts the first failure
        window.push(PASS); // evicts the second
        assert_eq!(
            window.tally,
            Tally {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        window.clear();
        assert_eq!(window.tally, Tally::default());
        window.push(FAIL);
        assert_eq!(window.tally.calls, 1);
    }

    #[test]
    fn thresholds_compare_exactly_and_inclusively() {
        let config = CircuitBreakerConfig::default().failure_rate_threshold(50.0);
        let tally = |failures, calls| Tally {
            calls,
            failures,
            slow: 0,
        };
        assert!(tally(5, 10).reaches_thresholds(&config, 10));
        assert!(!tally(4, 10).reaches_thresholds(&config, 10));
        // Two failed probes of three reach 50 % whatever the third brings.
        assert!(tally(2, 2).reaches_thresholds(&config, 3));
        assert!(!tally(1, 1).reaches_thresholds(&config, 3));
        let third = CircuitBreakerConfig::default().failure_rate_threshold(100.0 / 3.0);
        assert!(tally(1, 3).reaches_thresholds(&third, 3));
    }

    #[test]
    fn slow_calls_are_judged_against_their_own_threshold() {
        let config = CircuitBreakerConfig::default()
            .slow_call_duration(Duration::from_secs(1))
            .slow_call_rate_threshold(75.0);
        let slow = |slow, calls| Tally {
            calls,
            failures: 0,
            slow,
        };
        assert!(slow(3, 4).reaches_thresholds(&config, 4));
        assert!(!slow(2, 4).reaches_thresholds(&config, 4));
    }

    #[test]
    fn a_state_change_reads_well() {
        let change = StateChange {
            key: Arc::from("gpt-4.1"),
            from: CircuitState::Closed,
            to: CircuitState::Open,
            calls: 10,
            failure_rate: Some(50.0),
            slow_call_rate: Some(0.0),
        };
        assert_eq!(
            change.to_string(),
            "circuit `gpt-4.1`: closed -> open (failure rate 50.0%, slow-call rate 0.0% of 10 calls)"
        );
    }
}

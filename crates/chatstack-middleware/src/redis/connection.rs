//! [`RedisConnection`]: one connection to the Redis that holds the shared state, its
//! health, the per-call timeouts, and the ordered queue of writes that do not wait for a
//! reply.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, FromRedisValue, RedisError, RedisResult, Script, ToRedisArgs, Value};
use chatstack_proto::{Error, ErrorKind};
use tokio::sync::{Notify, OnceCell, mpsc, watch};

/// How a [`RedisConnection`] talks to Redis: timeouts, the pace of reconnection, and the
/// prefix of every key it writes.
///
/// ```
/// use std::time::Duration;
/// use chatstack_middleware::redis::RedisOptions;
///
/// let options = RedisOptions::default()
///     .timeout(Duration::from_millis(100))
///     .retry_interval(Duration::from_millis(500))
///     .prefix("myapp");
/// assert_eq!(options.timeout_duration(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    timeout: Duration,
    connect_timeout: Duration,
    retry_interval: Duration,
    prefix: Arc<str>,
}

impl Default for RedisOptions {
    /// 250 ms per call and per connection attempt, a retry every second while Redis is
    /// down, keys under `chatstack`.
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_millis(250),
            retry_interval: Duration::from_secs(1),
            prefix: Arc::from("chatstack"),
        }
    }
}

impl RedisOptions {
    /// How long one call (one decision: an acquire, a reservation) may take before it
    /// counts as a failure, and the layer applies its [`Outage`](super::Outage) policy.
    /// A batch of queued writes gets four times as long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one attempt to (re)connect may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// While Redis is down, how often one call tries it again (the others fail at once
    /// meanwhile, without waiting), and how often the queue of writes retries.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The prefix of every key (default `chatstack`); give each application sharing a
    /// Redis its own.
    pub fn prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The per-call timeout.
    pub fn timeout_duration(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn prefix_str(&self) -> &str {
        &self.prefix
    }
}

/// A connection to the Redis that holds the state a fleet of processes shares: give a
/// clone to each [`RedisLimiter`](super::RedisLimiter), [`RedisBudget`](super::RedisBudget)
/// and [`RedisLedger`](super::RedisLedger) of the process.
///
/// Opening it does no I/O: it connects on first use, from within a tokio runtime, and
/// reconnects by itself (redis-rs's `ConnectionManager`, one multiplexed socket that every
/// clone shares). Every call has its own [timeout](RedisOptions::timeout); after a failure
/// the connection counts as **down** and, for a [retry interval](RedisOptions::retry_interval),
/// calls fail at once instead of each waiting for a timeout, while one call at a time tries
/// Redis again.
///
/// Writes that nobody waits for (a settled cost, a released reservation, a ledger record, a
/// rate-limit correction) go into one ordered, in-memory queue per connection, sent in
/// batches by a background task; while Redis is down they wait there and are sent when it
/// returns, in order. Each carries this connection's process id and a sequence number, so a
/// batch sent twice (its reply was lost) counts once. [`flush`](Self::flush) waits until
/// everything queued so far has reached Redis.
///
/// A connection belongs to the tokio runtime it is first used on (its background tasks run
/// there); use one connection per runtime.
#[derive(Clone)]
pub struct RedisConnection {
    link: Arc<Link>,
}

impl RedisConnection {
    /// A connection to `url` (`redis://host:port/db`, `redis+unix:///path`), with the
    /// default [`RedisOptions`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the URL does not parse.
    pub fn open(url: &str) -> Result<Self, Error> {
        Self::open_with(url, RedisOptions::default())
    }

    /// A connection to `url` with `options`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] when the URL does not parse.
    pub fn open_with(url: &str, options: RedisOptions) -> Result<Self, Error> {
        let client = Client::open(url)
            .map_err(|error| Error::new(ErrorKind::Config, format!("redis: bad URL: {error}")))?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let (flushed, _) = watch::channel(0);
        let conn = Arc::new(Conn {
            client,
            manager: OnceCell::new(),
            health: Health::new(options.retry_interval),
            up: Notify::new(),
            options,
        });
        Ok(Self {
            link: Arc::new(Link {
                conn,
                process: Arc::from(process_id()),
                queue: Mutex::new(Queue {
                    sent: 0,
                    sender,
                    receiver: Some(receiver),
                }),
                flushed: Arc::new(flushed),
            }),
        })
    }

    /// This connection's process id: what tells its queued writes apart from other
    /// processes' in Redis.
    pub fn process_id(&self) -> &str {
        &self.link.process
    }

    /// Whether the last call reached Redis (false while it counts as down).
    pub fn is_up(&self) -> bool {
        self.link.conn.health.is_up()
    }

    /// Writes queued and not yet acknowledged by Redis.
    pub fn pending(&self) -> u64 {
        let sent = self.link.queue().sent;
        sent.saturating_sub(*self.link.flushed.borrow())
    }

    /// Waits until every write queued before this call has reached Redis: settled costs,
    /// released reservations, ledger records, rate-limit corrections. While Redis is down
    /// that lasts until it returns; bound it with a timeout, at shutdown for instance.
    pub async fn flush(&self) {
        let target = {
            let queue = self.link.queue();
            queue.sent
        };
        self.link.start_flusher();
        let mut flushed = self.link.flushed.subscribe();
        // The sender lives in `link`, so the channel outlives this wait.
        let _ = flushed.wait_for(|&done| done >= target).await;
    }

    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("process", &self.link.process)
            .field("up", &self.is_up())
            .field("options", &self.link.conn.options)
            .finish_non_exhaustive()
    }
}

/// A process id that no other process (or other connection of this one) shares: the OS
/// process id and 64 random bits.
fn process_id() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos()),
    );
    format!("{:x}-{:016x}", std::process::id(), hasher.finish())
}

/// One script call: which script, its keys and its arguments, encoded.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    script: &'static Script,
    /// What it is, for logs.
    what: &'static str,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call {
    pub(crate) fn new(script: &'static Script, what: &'static str) -> Self {
        Self {
            script,
            what,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub(crate) fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    pub(crate) fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn invocation(&self) -> ::redis::ScriptInvocation<'static> {
        let mut invocation = self.script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key.as_str());
        }
        for arg in &self.args {
            invocation.arg(arg.as_slice());
        }
        invocation
    }
}

/// Why a call did not get an answer.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What went wrong, for the error's message.
    pub(crate) cause: String,
    /// Whether the call may have run on the server all the same (it was sent, and its reply
    /// was lost or late).
    pub(crate) ambiguous: bool,
}

impl Failure {
    /// A reply of an unexpected shape (a script from another version of this crate?).
    pub(crate) fn reply(reply: &dyn fmt::Debug) -> Self {
        Self {
            cause: format!("unexpected reply from Redis: {reply:?}"),
            ambiguous: true,
        }
    }

    fn down() -> Self {
        Self {
            cause: "Redis is down (a recent call failed); not tried again until the retry \
                    interval has passed"
                .to_owned(),
            ambiguous: false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)
    }
}

/// What the flusher task needs; shared with it, so that it can finish the queue after the
/// last handle is gone.
pub(crate) struct Conn {
    client: Client,
    manager: OnceCell<ConnectionManager>,
    health: Health,
    /// Woken when a call finds Redis back, so that the queue goes at once.
    up: Notify,
    options: RedisOptions,
}

impl Conn {
    async fn manager(&self) -> Result<ConnectionManager, Failure> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                // Bounded reconnection: one retry, short delays. With redis-rs's defaults
                // every command waits out a reconnection round while Redis is down (9 s
                // measured); here the health flag keeps callers away meanwhile instead.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.options.connect_timeout))
                    .set_response_timeout(Some(self.options.timeout * BATCH_TIMEOUT_FACTOR))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(200));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .map_err(|error| Failure {
                cause: error.to_string(),
                ambiguous: false,
            })?;
        Ok(manager.clone())
    }

    /// Runs `call` once, within the timeout, and keeps the health flag.
    async fn eval<T: FromRedisValue>(&self, call: &Call) -> Result<T, Failure> {
        let mut manager = self.manager().await?;
        let invocation = call.invocation();
        let outcome =
            tokio::time::timeout(self.options.timeout, invocation.invoke_async(&mut manager)).await;
        self.outcome(call.what, outcome)
    }

    /// Runs `calls` in one pipeline; the reply of each (a script error fails that one only).
    ///
    /// A pipeline does not load a script the server does not know (a new or restarted
    /// server), as a single call does: when a reply says so, the batch goes again with the
    /// scripts loaded first. Every queued write is safe to send twice.
    async fn eval_batch(&self, calls: &[Call]) -> Result<Vec<RedisResult<Value>>, Failure> {
        let replies = self.pipeline(calls, false).await?;
        let unknown_script = replies.iter().any(|reply| {
            reply.as_ref().is_err_and(|error| {
                error.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript)
            })
        });
        if unknown_script {
            return self.pipeline(calls, true).await;
        }
        Ok(replies)
    }

    async fn pipeline(
        &self,
        calls: &[Call],
        load: bool,
    ) -> Result<Vec<RedisResult<Value>>, Failure> {
        let mut manager = self.manager().await?;
        let mut pipe = ::redis::pipe();
        if load {
            let mut scripts: Vec<&'static Script> = Vec::new();
            for call in calls {
                if !scripts
                    .iter()
                    .any(|known| std::ptr::eq(*known, call.script))
                {
                    scripts.push(call.script);
                    pipe.load_script(call.script).ignore();
                }
            }
        }
        // One transaction: a batch runs whole or not at all, so a batch sent again can
        // never find a later write applied and an earlier one not (the scripts' replay guards
        // remember the highest sequence number applied).
        pipe.atomic();
        for call in calls {
            pipe.invoke_script(&call.invocation());
        }
        pipe.ignore_errors();
        let outcome = tokio::time::timeout(
            self.options.timeout * BATCH_TIMEOUT_FACTOR,
            pipe.query_async::<Vec<RedisResult<Value>>>(&mut manager),
        )
        .await;
        self.outcome("queued writes", outcome)
    }

    fn outcome<T>(
        &self,
        what: &'static str,
        outcome: Result<RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, Failure> {
        match outcome {
            Ok(Ok(value)) => {
                if self.health.set_up() {
                    tracing::info!("redis: reachable again");
                    self.up.notify_one();
                }
                Ok(value)
            }
            Ok(Err(error)) if !is_unreachable(&error) => {
                // Redis answered, with an error: a bug, not an outage.
                tracing::error!(%error, what, "redis: the call failed");
                Err(Failure {
                    cause: error.to_string(),
                    ambiguous: false,
                })
            }
            Ok(Err(error)) => {
                self.set_down(what, &error);
                Err(Failure {
                    ambiguous: !error.is_connection_refusal(),
                    cause: error.to_string(),
                })
            }
            Err(_) => {
                let cause = format!("no reply within {:?}", self.options.timeout);
                self.set_down(what, &cause);
                Err(Failure {
                    cause,
                    ambiguous: true,
                })
            }
        }
    }

    fn set_down(&self, what: &'static str, error: &dyn fmt::Display) {
        if self.health.set_down() {
            tracing::warn!(%error, what, "redis: unreachable; calls fail fast until it answers again");
        }
    }
}

/// A batch of queued writes may take this many per-call timeouts.
const BATCH_TIMEOUT_FACTOR: u32 = 4;

/// Whether an error means Redis could not be reached (rather than that it answered with an
/// error).
fn is_unreachable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}

/// Up, or down until a time: one call per retry interval tries Redis while it is down.
struct Health {
    /// Milliseconds since `base` (plus one) until which calls fail at once; 0: up.
    down_until: AtomicU64,
    /// Outages so far: the layers' fail-open state starts afresh with each.
    outages: AtomicU64,
    base: Instant,
    retry_ms: u64,
}

impl Health {
    fn new(retry: Duration) -> Self {
        Self {
            down_until: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            base: Instant::now(),
            retry_ms: u64::try_from(retry.as_millis()).unwrap_or(u64::MAX).max(1),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn is_up(&self) -> bool {
        self.down_until.load(Ordering::Acquire) == 0
    }

    /// Whether a call may go: always while up; while down, one call per retry interval.
    fn may_call(&self) -> bool {
        let until = self.down_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        now >= until
            && self
                .down_until
                .compare_exchange(
                    until,
                    now.saturating_add(self.retry_ms),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Marks it up; whether it was down.
    fn set_up(&self) -> bool {
        self.down_until.load(Ordering::Acquire) != 0
            && self.down_until.swap(0, Ordering::AcqRel) != 0
    }

    /// Marks it down for a retry interval; whether it was up (a new outage).
    fn set_down(&self) -> bool {
        let until = self.now_ms().saturating_add(self.retry_ms);
        let was_up = self.down_until.swap(until, Ordering::AcqRel) == 0;
        if was_up {
            self.outages.fetch_add(1, Ordering::AcqRel);
        }
        was_up
    }
}

/// The writing side of the queue: its sender and how many writes went in.
struct Queue {
    sent: u64,
    sender: mpsc::UnboundedSender<(u64, Call)>,
    /// Taken by the flusher task when it starts.
    receiver: Option<mpsc::UnboundedReceiver<(u64, Call)>>,
}

/// What the backends share: the connection, the process id, the queue of writes.
pub(crate) struct Link {
    conn: Arc<Conn>,
    process: Arc<str>,
    queue: Mutex<Queue>,
    /// The number of the last write Redis acknowledged.
    flushed: Arc<watch::Sender<u64>>,
}

impl Link {
    pub(crate) fn options(&self) -> &RedisOptions {
        &self.conn.options
    }

    pub(crate) fn process(&self) -> &str {
        &self.process
    }

    /// Outages so far (an outage begins when a call fails while Redis counted as up).
    pub(crate) fn outages(&self) -> u64 {
        self.conn.health.outages.load(Ordering::Acquire)
    }

    /// Whether a call may be made now: always while Redis is up; while it is down, one call
    /// per retry interval (the others fail at once, without waiting for a timeout).
    pub(crate) fn gate(&self) -> Result<(), Failure> {
        if !self.conn.health.may_call() {
            return Err(Failure::down());
        }
        self.start_flusher();
        Ok(())
    }

    /// Runs `call` (which passed the [gate](Self::gate)) and returns its reply.
    pub(crate) async fn eval_gated<T: FromRedisValue>(&self, call: &Call) -> Result<T, Failure> {
        self.conn.eval(call).await
    }

    /// Runs `call` if the [gate](Self::gate) lets it, and returns its reply.
    pub(crate) async fn eval<T: FromRedisValue>(&self, call: &Call) -> Result<T, Failure> {
        self.gate()?;
        self.conn.eval(call).await
    }

    /// Queues a write whose reply nobody waits for; `make` is given its sequence number,
    /// which is increasing in the order the writes are sent.
    pub(crate) fn enqueue(&self, make: impl FnOnce(u64) -> Call) {
        let mut queue = self.queue();
        let seq = queue.sent + 1;
        let call = make(seq);
        if queue.sender.send((seq, call)).is_ok() {
            queue.sent = seq;
        } else {
            tracing::error!(
                "redis: the queue's task is gone (its runtime shut down); a write was dropped"
            );
        }
        drop(queue);
        self.start_flusher();
    }

    /// Starts the task that sends the queue, if it has not started and a runtime is at hand.
    fn start_flusher(&self) {
        let receiver = {
            let mut queue = self.queue();
            if queue.receiver.is_none() {
                return;
            }
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let receiver = queue.receiver.take();
            drop(queue);
            receiver.map(|receiver| (runtime, receiver))
        };
        if let Some((runtime, receiver)) = receiver {
            runtime.spawn(flush_queue(
                Arc::clone(&self.conn),
                receiver,
                Arc::clone(&self.flushed),
            ));
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The most writes sent in one pipeline.
const BATCH: usize = 128;

/// Whether a queued write's reply is a refusal to run it that waiting cures (a server still
/// loading its data, read-only, busy), rather than a failure of the script itself.
fn is_transient(reply: &RedisResult<Value>) -> bool {
    reply
        .as_ref()
        .is_err_and(|error| !matches!(error.retry_method(), ::redis::RetryMethod::NoRetry))
}

/// Sends the queue in order, in batches, until every handle is gone and the queue is
/// empty; a batch that fails is sent again (whole: the scripts ignore what they already
/// applied) once Redis answers.
async fn flush_queue(
    conn: Arc<Conn>,
    mut receiver: mpsc::UnboundedReceiver<(u64, Call)>,
    flushed: Arc<watch::Sender<u64>>,
) {
    let mut batch: Vec<(u64, Call)> = Vec::with_capacity(BATCH);
    loop {
        if batch.is_empty() {
            match receiver.recv().await {
                Some(write) => batch.push(write),
                None => return,
            }
        }
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        if !conn.health.may_call() {
            let retry = Duration::from_millis(conn.health.retry_ms);
            let _ = tokio::time::timeout(retry, conn.up.notified()).await;
            continue;
        }
        let calls: Vec<Call> = batch.iter().map(|(_, call)| call.clone()).collect();
        match conn.eval_batch(&calls).await {
            // A server that refused a write before running it (still loading its data
            // after a restart, read-only, busy): the batch is kept and goes again, like a
            // lost connection's. The batch is one transaction, so none of it ran.
            Ok(replies) if replies.iter().any(is_transient) => {
                let error = replies.iter().find_map(|reply| reply.as_ref().err());
                let error = error.map_or_else(String::new, ToString::to_string);
                tracing::debug!(%error, writes = batch.len(), "redis: queued writes wait for Redis");
                conn.set_down("queued writes", &error);
            }
            Ok(replies) => {
                for (reply, call) in replies.iter().zip(&calls) {
                    if let Err(error) = reply {
                        tracing::error!(%error, what = call.what, "redis: a queued write failed; dropped");
                    }
                }
                let last = batch.last().map_or(0, |(seq, _)| *seq);
                flushed.send_replace(last);
                batch.clear();
            }
            Err(failure) => {
                // Kept, whatever the failure: a settled cost is never dropped. The batch goes
                // again once a retry interval has passed (or a call finds Redis back).
                tracing::debug!(%failure, writes = batch.len(), "redis: queued writes wait for Redis");
                conn.set_down("queued writes", &failure);
            }
        }
    }
}

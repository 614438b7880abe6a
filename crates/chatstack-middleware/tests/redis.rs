//! Shared limits across replicas, against a real `redis-server` on loopback (one per test,
//! killed when the test ends): four independent clients (each with its own connection, so
//! its own process id) share one rate limiter and one budget.
//!
//! Real time throughout (redis-rs's timers break on tokio's paused clock), compressed where
//! it matters: the rate limiter's "minute" is scaled down tenfold, so two minutes of
//! saturation take 12 s. Run with `-- --nocapture` to see the figures.
#![cfg(feature = "redis")]

mod redis_support;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatstack_middleware::budget::{Budget, BudgetLayer};
use chatstack_middleware::cost::{Cost, CostLayer, CostLedger, Usd};
use chatstack_middleware::rate_limit::{Quota, RateLimitConfig, RateLimitLayer, Reconcile};
use chatstack_middleware::redis::{
    Outage, RedisBudget, RedisConnection, RedisLedger, RedisLimiter, RedisOptions,
    RedisUnavailable, SharedAdmission,
};
use chatstack_middleware::{ChatRequest, ChatResponse, Error, ErrorKind, LlmRequest, Message};
use chatstack_proto::Usage;
use redis_support::RedisServer;
use support::{Answer, Ask};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// The scaled minute: a tenth of a real one.
const MINUTE: Duration = Duration::from_secs(6);

fn scaled(quota: Quota) -> Quota {
    quota.scaled_minute(MINUTE)
}

/// A request charged `tokens` tokens: 10 of prompt, the rest of output cap.
fn ask(tokens: u64) -> Ask {
    let mut ask = Ask::new("gpt-4.1");
    ask.prompt = "x".repeat(40);
    ask.max_tokens = Some(tokens - 10);
    assert_eq!(
        ask.estimated_prompt_tokens() + ask.max_tokens.unwrap(),
        tokens
    );
    ask
}

/// A plain connection to `server`, for the test's own commands.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Marks the limiter's state in `server` as kept for longer than a window, as on a server
/// that has been up: a fresh server is otherwise taken for one that lost its state, and
/// every key starts empty (see acquire.lua).
async fn long_running(server: &RedisServer, name: &str) {
    let mut redis = raw(server).await;
    let long_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .saturating_sub(Duration::from_secs(3600))
        .as_micros() as u64;
    let () = redis::cmd("SET")
        .arg(format!("{{chatstack:rl:{name}}}:boot"))
        .arg(long_ago)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// Admissions `(server time in µs, tokens)`.
type Log = Arc<Mutex<Vec<(u64, u64)>>>;

/// An inner service that logs each request's admission time (the server's, from
/// [`SharedAdmission`]) and answers with a usage equal to its charge.
fn logging_provider(
    log: Log,
) -> impl Service<Ask, Response = Answer, Error = Error, Future: Send> + Clone + Send {
    tower::service_fn(move |ask: Ask| {
        let log = Arc::clone(&log);
        async move {
            let admitted = ask
                .meta
                .extensions
                .get::<SharedAdmission>()
                .expect("admitted by the shared limiter");
            let at = admitted
                .server_time
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            let tokens = ask.estimated_prompt_tokens() + ask.max_tokens.unwrap();
            log.lock().unwrap().push((at, tokens));
            let mut answer = Answer::ok("hi");
            answer.usage = Some(chatstack_proto::Usage::new(10, tokens - 10));
            Ok::<_, Error>(answer)
        }
    })
}

/// The most requests and tokens any window of `window` holds, over admissions sorted by time.
fn busiest(admissions: &[(u64, u64)], window: Duration) -> (u64, u64) {
    let window = window.as_micros() as u64;
    let (mut requests, mut tokens) = (0, 0);
    let mut end = 0;
    let mut in_window = 0u64;
    for start in 0..admissions.len() {
        while end < admissions.len() && admissions[end].0 < admissions[start].0 + window {
            in_window += admissions[end].1;
            end += 1;
        }
        requests = requests.max((end - start) as u64);
        tokens = tokens.max(in_window);
        in_window -= admissions[start].1;
    }
    (requests, tokens)
}

/// Four clients, each with `callers` requests in flight at all times, saturate a shared
/// limiter of 600 requests and 100k tokens a (scaled) minute for two (scaled) minutes; the
/// admissions, sorted.
async fn saturate(server: &RedisServer, name: &str, tokens: u64) -> Vec<(u64, u64)> {
    long_running(server, name).await;
    let config = RateLimitConfig::default()
        .requests(scaled(Quota::per_minute(600)))
        .tokens(scaled(Quota::per_minute(100_000)))
        .reconcile(Reconcile::Full);
    let log: Log = Arc::default();
    let stop = Instant::now() + 2 * MINUTE + Duration::from_millis(500);
    let mut callers = Vec::new();
    for _client in 0..4 {
        let connection = RedisConnection::open(&server.url()).unwrap();
        let layer = RateLimitLayer::redis(config, RedisLimiter::new(connection).name(name));
        let service = layer.layer(logging_provider(Arc::clone(&log)));
        for _ in 0..4 {
            let mut service = service.clone();
            callers.push(tokio::spawn(async move {
                while Instant::now() < stop {
                    let request = ask(tokens);
                    let call = service.ready().await.unwrap().call(request);
                    match tokio::time::timeout_at(stop, call).await {
                        Ok(result) => {
                            result.unwrap();
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let mut admissions = std::mem::take(&mut *log.lock().unwrap());
    admissions.sort_unstable();
    admissions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clients_share_one_quota_within_it_and_near_it() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Two runs at once on one server: requests bind with 100 tokens a request (600 × 100 =
    // 60k a minute), tokens bind with 300 (100k / 300 = 333 requests a minute).
    let (small, large) = tokio::join!(
        saturate(&server, "requests-bind", 100),
        saturate(&server, "tokens-bind", 300)
    );
    for (label, admissions, binding) in [
        ("600 rpm (100 tokens each)", small, "requests"),
        ("100k tpm (300 tokens each)", large, "tokens"),
    ] {
        let first = admissions.first().expect("admissions").0;
        let two_minutes = (2 * MINUTE).as_micros() as u64;
        let within: Vec<_> = admissions
            .iter()
            .copied()
            .filter(|&(at, _)| at < first + two_minutes)
            .collect();
        let requests = within.len() as u64;
        let tokens: u64 = within.iter().map(|&(_, tokens)| tokens).sum();
        let (busiest_requests, busiest_tokens) = busiest(&admissions, MINUTE);
        let share = if binding == "requests" {
            requests as f64 / 1_200.0
        } else {
            tokens as f64 / 200_000.0
        };
        println!(
            "quota {label}, 4 clients, 2 scaled minutes: {requests} requests, {tokens} tokens \
             admitted = {:.1} % of the {binding} quota; busiest minute {busiest_requests} \
             requests, {busiest_tokens} tokens",
            100.0 * share
        );
        assert!(
            busiest_requests <= 600,
            "{label}: {busiest_requests} requests in a minute"
        );
        assert!(
            busiest_tokens <= 100_000,
            "{label}: {busiest_tokens} tokens in a minute"
        );
        assert!(
            share >= 0.95,
            "{label}: only {:.1} % admitted",
            100.0 * share
        );
    }
}

/// A call's outcome, and when it came (since the start of the run).
type Outcome = (Duration, Result<(), Error>);

/// Output token counts for the provider's answers, one per call.
type Completions = Arc<Mutex<Box<dyn FnMut() -> u64 + Send>>>;

/// A pseudo-random sequence (xorshift), so that runs are alike.
fn random(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut x = seed.max(1);
    move |below| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % below.max(1)
    }
}

/// A provider that answers after `delay` with `completion` output tokens and the prompt
/// tokens the request estimated (so that no response costs more than its worst case).
fn priced_provider(
    delay: Duration,
    completion: Completions,
) -> impl Service<ChatRequest, Response = ChatResponse, Error = Error, Future: Send> + Clone + Send
{
    tower::service_fn(move |request: ChatRequest| {
        let completion = (completion.lock().unwrap())();
        async move {
            // Longer answers take longer: up to `delay` more.
            tokio::time::sleep(delay + delay * completion as u32 / 1_000).await;
            Ok::<_, Error>(ChatResponse {
                model: request.model.clone(),
                usage: Some(Usage::new(request.estimated_prompt_tokens(), completion)),
                ..ChatResponse::default()
            })
        }
    })
}

/// One "process": its own connection (so its own process id), a shared budget over a
/// cost layer recording into a shared ledger, over `provider`.
struct Replica<S> {
    connection: RedisConnection,
    budget: BudgetLayer<RedisBudget>,
    ledger: CostLedger,
    service: Budget<Cost<S>, RedisBudget>,
}

fn replica<S>(
    url: &str,
    options: RedisOptions,
    cap: Usd,
    outage: Outage,
    provider: S,
) -> Replica<S> {
    let connection = RedisConnection::open_with(url, options).unwrap();
    let budget = BudgetLayer::redis(
        cap,
        RedisBudget::new(connection.clone(), "shared").on_outage(outage),
    );
    let ledger = CostLedger::redis(RedisLedger::new(connection.clone(), "shared"));
    let service = budget.layer(CostLayer::new(ledger.clone()).layer(provider));
    Replica {
        connection,
        budget,
        ledger,
        service,
    }
}

fn hello() -> ChatRequest {
    ChatRequest::new("gpt-4.1", [Message::user("Hello")]).max_tokens(1_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_shared_by_four_clients_is_never_exceeded_under_a_thousand_requests() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let cap = Usd::from_dollars(2);
    let mut next = random(7);
    let usage: Completions = Arc::new(Mutex::new(Box::new(move || next(1_001))));
    let replicas: Vec<_> = (0..4)
        .map(|_| {
            let provider = priced_provider(Duration::from_millis(20), Arc::clone(&usage));
            replica(
                &server.url(),
                RedisOptions::default(),
                cap,
                Outage::FailClosed,
                provider,
            )
        })
        .collect();

    // Watch the figures in Redis while the requests race: the cap holds at every moment.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let budget = replicas[0].budget.clone();
        let watching = Arc::clone(&watching);
        tokio::spawn(async move {
            let mut looks = 0;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let figures = budget.shared_snapshot().await.unwrap();
                assert!(figures.spent <= cap, "{figures:?}");
                assert!(figures.spent + figures.reserved <= cap, "{figures:?}");
                looks += 1;
            }
            looks
        })
    };
    let mut calls = Vec::new();
    for replica in &replicas {
        for _ in 0..250 {
            let call = replica.service.clone().oneshot(hello());
            calls.push(tokio::spawn(call));
        }
    }
    let (mut admitted, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(error) => {
                assert!(error.is_budget_exceeded(), "{error}");
                refused += 1;
            }
        }
    }
    for replica in &replicas {
        tokio::time::timeout(Duration::from_secs(10), replica.connection.flush())
            .await
            .expect("the settlements reach Redis");
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let looks = watcher.await.unwrap();

    let figures = replicas[0].budget.shared_snapshot().await.unwrap();
    let settled: Usd = replicas.iter().map(|r| r.ledger.total_cost()).sum();
    let ledger = replicas[0].ledger.shared_snapshot().await.unwrap();
    println!(
        "budget {cap} shared by 4 clients, 1000 concurrent requests: {admitted} admitted, \
         {refused} refused; spent {} (reserved {}, {} in flight) = the {} settled; checked \
         {looks} times while running",
        figures.spent, figures.reserved, figures.in_flight, settled
    );
    assert_eq!(admitted + refused, 1_000);
    assert!(
        admitted > 100 && refused > 100,
        "the cap binds: {admitted} admitted"
    );
    assert!(figures.spent <= cap);
    assert_eq!((figures.reserved, figures.in_flight), (Usd::ZERO, 0));
    assert_eq!(figures.spent, settled, "every settled cost counted once");
    assert_eq!((figures.admitted, figures.refused), (admitted, refused));
    assert_eq!(ledger.total.cost, settled, "the shared ledger agrees");
    assert_eq!(ledger.total.requests, admitted);
    assert_eq!(ledger.by_model["gpt-4.1"].cost, settled);
}

/// Runs `service` once every `pace` until `until`, logging (time since `start`, outcome).
async fn keep_calling<S>(
    mut service: S,
    request: impl Fn() -> Ask,
    start: Instant,
    until: Instant,
    pace: Duration,
) -> Vec<Outcome>
where
    S: Service<Ask, Response = Answer, Error = Error>,
{
    let mut log = Vec::new();
    while Instant::now() < until {
        let result = service.ready().await.unwrap().call(request()).await;
        log.push((start.elapsed(), result.map(|_| ())));
        tokio::time::sleep(pace).await;
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_limiter_fails_closed_or_open_as_configured() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let options = RedisOptions::default()
        .timeout(Duration::from_millis(100))
        .retry_interval(Duration::from_millis(200));
    // 600 a scaled minute: 100 a second for the fleet; failing open, a quarter of it.
    let config = RateLimitConfig::default().requests(scaled(Quota::per_minute(600)));
    let limiter = |name: &str, outage| {
        let connection = RedisConnection::open_with(&server.url(), options.clone()).unwrap();
        RateLimitLayer::redis(
            config,
            RedisLimiter::new(connection).name(name).on_outage(outage),
        )
        .layer(tower::service_fn(|_: Ask| async {
            Ok::<_, Error>(Answer::ok("hi"))
        }))
    };
    let closed = limiter("closed", Outage::FailClosed);
    let open = limiter("open", Outage::FailOpen { local_share: 0.25 });

    let start = Instant::now();
    let (down, up) = (Duration::from_secs(1), Duration::from_millis(2_500));
    let until = start + Duration::from_millis(3_500);
    let pace = Duration::from_millis(1);
    let request = || Ask::new("gpt-4.1");
    let calls = tokio::spawn(async move {
        tokio::join!(
            keep_calling(closed, request, start, until, pace),
            keep_calling(open, request, start, until, pace)
        )
    });
    tokio::time::sleep_until(start + down).await;
    server.kill();
    tokio::time::sleep_until(start + up).await;
    server.restart();
    let (closed, open) = calls.await.unwrap();

    let during = |log: &[Outcome], ok: bool| {
        // The outage, give or take the calls in flight when it began and ended.
        log.iter()
            .filter(|(at, result)| {
                *at > down + Duration::from_millis(150) && *at < up && result.is_ok() == ok
            })
            .count()
    };
    let after = |log: &[Outcome]| {
        log.iter()
            .filter(|(at, result)| *at > up + Duration::from_millis(500) && result.is_ok())
            .count()
    };
    for (_, result) in &closed {
        if let Err(error) = result {
            assert_eq!(error.kind(), ErrorKind::BackendUnavailable, "{error}");
            assert!(!error.is_retryable());
            let mark = RedisUnavailable::find(error).expect("a typed source");
            assert_eq!((mark.layer(), mark.name()), ("rate limit", "gpt-4.1"));
        }
    }
    let (closed_refused, closed_admitted) = (during(&closed, false), during(&closed, true));
    let (open_admitted, open_refused) = (during(&open, true), during(&open, false));
    // 1.35 s at a quarter of 100 a second, starting empty.
    let open_bound = (0.25 * 100.0 * 1.35_f64).ceil() as usize + 1;
    println!(
        "Redis killed for 1.5 s: fail closed: {closed_refused} calls refused with \
         BackendUnavailable, {closed_admitted} admitted; fail open (a quarter of 100/s): \
         {open_admitted} admitted in process (bound {open_bound}), {open_refused} refused; \
         after the restart: {} and {} admitted",
        after(&closed),
        after(&open)
    );
    assert_eq!(
        closed_admitted, 0,
        "failing closed admits nothing without Redis"
    );
    assert!(
        closed_refused > 10,
        "refusals come at once, not after timeouts"
    );
    assert_eq!(open_refused, 0, "failing open refuses nothing");
    assert!(
        open_admitted >= 10,
        "failing open keeps admitting: {open_admitted}"
    );
    assert!(
        open_admitted <= open_bound,
        "at the local share: {open_admitted}"
    );
    assert!(after(&closed) > 10 && after(&open) > 10, "both recover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_settled_cost_and_counts_none_twice() {
    // Money needs persistence: every write in the AOF before it is acknowledged.
    let Some(mut server) = RedisServer::start_persistent() else {
        return;
    };
    let options = RedisOptions::default()
        .timeout(Duration::from_millis(100))
        .retry_interval(Duration::from_millis(100));
    let cap = Usd::from_dollars(1_000);
    let mut next = random(11);
    let usage: Completions = Arc::new(Mutex::new(Box::new(move || next(1_001))));
    let provider = || priced_provider(Duration::from_millis(5), Arc::clone(&usage));
    let closed = replica(
        &server.url(),
        options.clone(),
        cap,
        Outage::FailClosed,
        provider(),
    );
    let open = replica(
        &server.url(),
        options.clone(),
        cap,
        Outage::FailOpen { local_share: 0.5 },
        provider(),
    );

    let start = Instant::now();
    let until = start + Duration::from_millis(3_000);
    let (down, up) = (Duration::from_millis(1_000), Duration::from_millis(2_000));
    let run = |service: Budget<Cost<_>, RedisBudget>| {
        tokio::spawn(async move {
            let mut log: Vec<Outcome> = Vec::new();
            let mut calls = Vec::new();
            while Instant::now() < until {
                // Eight at a time, so that some are in flight when Redis dies. Each outcome
                // is logged at its call's start: a call in flight at the kill may fail late
                // on a loaded machine, and it did not start during the outage.
                let started = start.elapsed();
                for _ in 0..8 {
                    calls.push(tokio::spawn(service.clone().oneshot(hello())));
                }
                for call in calls.drain(..) {
                    log.push((started, call.await.unwrap().map(|_| ())));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            log
        })
    };
    let (closed_calls, open_calls) = (run(closed.service.clone()), run(open.service.clone()));
    tokio::time::sleep_until(start + down).await;
    server.kill();
    tokio::time::sleep_until(start + up).await;
    let pending = (closed.connection.pending(), open.connection.pending());
    server.restart();
    let (closed_log, open_log) = (closed_calls.await.unwrap(), open_calls.await.unwrap());
    for replica in [&closed, &open] {
        tokio::time::timeout(Duration::from_secs(10), replica.connection.flush())
            .await
            .expect("the queue drains once Redis is back");
    }

    fn outage(log: &[Outcome], down: Duration, up: Duration) -> (usize, Vec<&Outcome>) {
        let within = log
            .iter()
            .filter(|(at, _)| *at > down + Duration::from_millis(150) && *at < up);
        let (ok, failed): (Vec<_>, Vec<_>) = within.partition(|(_, result)| result.is_ok());
        (ok.len(), failed)
    }
    let (closed_ok, closed_failed) = outage(&closed_log, down, up);
    let (open_ok, open_failed) = outage(&open_log, down, up);
    assert!(closed_failed.iter().all(|(_, result)| {
        result
            .as_ref()
            .is_err_and(chatstack_proto::Error::is_backend_unavailable)
    }));

    let settled = closed.ledger.total_cost() + open.ledger.total_cost();
    let requests = closed.ledger.snapshot().total.requests + open.ledger.snapshot().total.requests;
    let budget = closed.budget.shared_snapshot().await.unwrap();
    let ledger = closed.ledger.shared_snapshot().await.unwrap();
    println!(
        "Redis (AOF, appendfsync always) killed for 1 s under load: fail closed {} refused, \
         {closed_ok} admitted; fail open {open_ok} admitted in process, {} refused; {} + {} \
         writes queued at the restart; after it: budget spent {} and ledger {} over {} \
         requests = the {settled} settled by the clients over {requests}",
        closed_failed.len(),
        open_failed.len(),
        pending.0,
        pending.1,
        budget.spent,
        ledger.total.cost,
        ledger.total.requests,
    );
    assert_eq!(
        closed_ok, 0,
        "failing closed sends nothing the budget did not reserve"
    );
    assert!(!closed_failed.is_empty());
    assert!(
        open_ok > 0 && open_failed.is_empty(),
        "failing open keeps going: {open_ok} admitted, refused: {open_failed:?}"
    );
    assert!(
        pending.0 + pending.1 > 0,
        "costs settled during the outage waited in the queue"
    );
    assert_eq!(
        budget.spent, settled,
        "the budget lost no settled cost, doubled none"
    );
    assert_eq!(
        ledger.total.cost, settled,
        "the ledger lost no settled cost, doubled none"
    );
    assert_eq!(ledger.total.requests, requests);
    assert_eq!((budget.reserved, budget.in_flight), (Usd::ZERO, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_process_holds_its_reservation_only_until_its_ttl() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_millis(900);
    let url = server.url();
    let layer = move |connection: RedisConnection| {
        BudgetLayer::redis(
            Usd::from_dollars(1),
            RedisBudget::new(connection, "ttl").reservation_ttl(ttl),
        )
    };

    // A process that reserves, then dies mid-call: no settlement, no release, no heartbeat.
    let crashed = std::thread::spawn({
        let url = url.clone();
        move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let reached = Arc::new(tokio::sync::Notify::new());
            let mut call = {
                let _entered = runtime.enter();
                let reached = Arc::clone(&reached);
                let provider = tower::service_fn(move |_: ChatRequest| {
                    reached.notify_one();
                    std::future::pending::<Result<ChatResponse, Error>>()
                });
                let connection = RedisConnection::open(&url).unwrap();
                Box::pin(layer(connection).layer(provider).oneshot(hello()))
            };
            runtime.block_on(async {
                tokio::select! {
                    _ = &mut call => unreachable!("the call never ends"),
                    () = reached.notified() => {}
                }
            });
            // Its destructors never run (the process is gone), nor does its runtime.
            std::mem::forget(call);
            runtime.shutdown_background();
        }
    });
    crashed.join().unwrap();

    // A live process whose call outlasts the TTL: its heartbeat keeps the reservation.
    let connection = RedisConnection::open(&url).unwrap();
    let live = layer(connection.clone());
    let slow = priced_provider(
        ttl * 3,
        Arc::new(Mutex::new(
            Box::new(|| 500_u64) as Box<dyn FnMut() -> u64 + Send>
        )),
    );
    let call = tokio::spawn(live.layer(slow).oneshot(hello()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let both = live.shared_snapshot().await.unwrap();
    assert_eq!(both.in_flight, 2, "{both:?}");

    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let one = live.shared_snapshot().await.unwrap();
    println!(
        "reservation TTL {ttl:?}: reserved {} by two processes; {} after the TTL (the dead \
         one's expired: {}, the live one's renewed)",
        both.reserved, one.reserved, one.expired
    );
    assert_eq!((one.in_flight, one.expired), (1, 1), "{one:?}");
    assert_eq!(
        one.reserved + one.reserved,
        both.reserved,
        "the two reserved alike"
    );

    call.await.unwrap().unwrap();
    connection.flush().await;
    let done = live.shared_snapshot().await.unwrap();
    assert_eq!(
        (done.in_flight, done.reserved, done.expired),
        (0, Usd::ZERO, 1)
    );
    assert!(done.spent > Usd::ZERO, "the live call settled: {done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_and_pauses_reach_every_process() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    long_running(&server, "corrections").await;
    // 60,000 tokens a scaled minute with a burst of 1,000: a token every ~0.1 ms.
    let config = RateLimitConfig::default()
        .tokens(scaled(Quota::per_minute(60_000).burst(1_000)))
        .reconcile(Reconcile::Full);
    let client = |answer: fn() -> Result<Answer, Error>| {
        let connection = RedisConnection::open(&server.url()).unwrap();
        let layer = RateLimitLayer::redis(
            config,
            RedisLimiter::new(connection.clone()).name("corrections"),
        );
        let service = layer.layer(tower::service_fn(move |_: Ask| async move { answer() }));
        (connection, service)
    };
    // One process's response used 5,100 tokens where 100 were charged...
    let (a, mut greedy) = client(|| {
        let mut answer = Answer::ok("long");
        answer.usage = Some(chatstack_proto::Usage::new(10, 5_090));
        Ok(answer)
    });
    let (_b, mut other) = client(|| Ok(Answer::ok("hi")));
    greedy.ready().await.unwrap().call(ask(100)).await.unwrap();
    a.flush().await;
    // ... so another waits out the debt: (5,100 + 100 − 1,000) tokens.
    let start = Instant::now();
    other.ready().await.unwrap().call(ask(100)).await.unwrap();
    let waited_for_debt = start.elapsed();

    // One process's provider answers 429 with retry-after: every process pauses.
    let (c, mut limited) = client(|| {
        Err(Error::new(ErrorKind::RateLimited, "slow down")
            .with_retry_after(Duration::from_millis(700)))
    });
    limited
        .ready()
        .await
        .unwrap()
        .call(ask(100))
        .await
        .unwrap_err();
    c.flush().await;
    let start = Instant::now();
    other.ready().await.unwrap().call(ask(100)).await.unwrap();
    let waited_for_pause = start.elapsed();
    println!(
        "shared corrections: waited {waited_for_debt:?} for another process's debt of 5,000 \
         tokens, {waited_for_pause:?} for its 429's 700 ms pause"
    );
    assert!(
        waited_for_debt >= Duration::from_millis(350),
        "{waited_for_debt:?}"
    );
    assert!(
        waited_for_pause >= Duration::from_millis(550),
        "{waited_for_pause:?}"
    );
}

/// The server's count of script calls (`EVALSHA`, `EVAL`) that ran: not those refused for a
/// script it did not know yet, which the client loads and sends again.
async fn script_calls(server: &RedisServer) -> u64 {
    let mut redis = raw(server).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis)
        .await
        .unwrap();
    let stat = |line: &str, name: &str| -> u64 {
        let value = line.split(&format!("{name}=")).nth(1).unwrap_or("0");
        value.split(',').next().unwrap().parse().unwrap()
    };
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .map(|line| stat(line, "calls") - stat(line, "failed_calls"))
        .sum()
}

/// Times `calls` sequential calls of `service`, then `per_task` calls on each of 64 tasks
/// (each on its own key): µs per call sequentially (mean and median), and amortised at
/// concurrency 64.
async fn time_calls<S>(service: S, calls: u32, per_task: u32) -> ((f64, f64), f64)
where
    S: Service<Ask, Response = Answer, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut one = service.clone();
    for _ in 0..100 {
        one.ready().await.unwrap().call(ask(100)).await.unwrap();
    }
    let mut each = Vec::with_capacity(calls as usize);
    let start = std::time::Instant::now();
    for _ in 0..calls {
        let call = std::time::Instant::now();
        one.ready().await.unwrap().call(ask(100)).await.unwrap();
        each.push(call.elapsed());
    }
    let mean = start.elapsed().as_secs_f64() * 1e6 / f64::from(calls);
    each.sort_unstable();
    let sequential = (mean, each[each.len() / 2].as_secs_f64() * 1e6);
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let mut service = service.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let mut request = ask(100);
                    request.model = format!("model-{task}");
                    service.ready().await.unwrap().call(request).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent = start.elapsed().as_secs_f64() * 1e6 / f64::from(64 * per_task);
    (sequential, concurrent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_of_a_shared_decision() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Quotas that never bind: the cost of deciding, not of waiting.
    let config = RateLimitConfig::default()
        .requests(Quota::per_minute(u64::MAX))
        .tokens(Quota::per_minute(u64::MAX))
        .reconcile(Reconcile::Off);
    let provider = tower::service_fn(|_: Ask| async { Ok::<_, Error>(Answer::ok("hi")) });
    let local = RateLimitLayer::new(config).layer(provider);
    let (local_sequential, local_concurrent) = time_calls(local, 20_000, 500).await;

    long_running(&server, "cost").await;
    let connection = RedisConnection::open(&server.url()).unwrap();
    let shared =
        RateLimitLayer::redis(config, RedisLimiter::new(connection).name("cost")).layer(provider);
    let before = script_calls(&server).await;
    let (calls, per_task) = (2_000, 50);
    let (shared_sequential, shared_concurrent) = time_calls(shared, calls, per_task).await;
    let scripts = script_calls(&server).await - before;
    let decisions = u64::from(100 + calls + 64 * per_task);

    let budget_connection = RedisConnection::open(&server.url()).unwrap();
    let budget = BudgetLayer::redis(
        Usd::from_dollars(1_000_000),
        RedisBudget::new(budget_connection.clone(), "cost"),
    );
    let answer = |request: ChatRequest| async move {
        Ok::<_, Error>(ChatResponse {
            model: request.model,
            usage: Some(Usage::new(5, 5)),
            ..ChatResponse::default()
        })
    };
    let mut shared_budget = budget.layer(tower::service_fn(answer));
    let mut local_budget =
        BudgetLayer::new(Usd::from_dollars(1_000_000)).layer(tower::service_fn(answer));
    let time_budget = async |n: u32,
                             call: &mut dyn FnMut() -> std::pin::Pin<
        Box<dyn std::future::Future<Output = ()> + Send>,
    >| {
        let start = std::time::Instant::now();
        for _ in 0..n {
            call().await;
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    let before = script_calls(&server).await;
    let shared_budget_us = time_budget(1_000, &mut || {
        let call = shared_budget.call(hello());
        Box::pin(async move {
            call.await.unwrap();
        })
    })
    .await;
    budget_connection.flush().await;
    let budget_scripts = script_calls(&server).await - before;
    let local_budget_us = time_budget(20_000, &mut || {
        let call = local_budget.call(hello());
        Box::pin(async move {
            call.await.unwrap();
        })
    })
    .await;

    println!(
        "cost per decision (this build, 2 cores shared with redis-server):\n\
         \x20 rate limit, in process: {:.2} µs sequential (median {:.2}), \
         {local_concurrent:.2} µs amortised at concurrency 64\n\
         \x20 rate limit, Redis:      {:.1} µs sequential (median {:.1}), \
         {shared_concurrent:.1} µs amortised at concurrency 64; {:.2} script calls \
         (round trips) per decision\n\
         \x20 budget, in process:     {local_budget_us:.2} µs per request\n\
         \x20 budget, Redis:          {shared_budget_us:.1} µs per request (1 round trip to \
         reserve; the settlement queued: {:.2} script calls per request in all)",
        local_sequential.0,
        local_sequential.1,
        shared_sequential.0,
        shared_sequential.1,
        scripts as f64 / decisions as f64,
        budget_scripts as f64 / 1_000.0,
    );
    assert_eq!(scripts, decisions, "one round trip per decision");
    assert_eq!(
        budget_scripts, 2_000,
        "a reservation and a settlement per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_given_up_while_its_reservation_is_out_gives_it_back() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let connection = RedisConnection::open(&server.url()).unwrap();
    let budget = BudgetLayer::redis(
        Usd::from_dollars(1),
        RedisBudget::new(connection.clone(), "given-up"),
    );
    let service = budget.layer(tower::service_fn(|request: ChatRequest| async move {
        Ok::<_, Error>(ChatResponse {
            model: request.model,
            usage: Some(Usage::new(5, 5)),
            ..ChatResponse::default()
        })
    }));
    // Each call is polled until its reservation is on the wire, then dropped (a caller's
    // timeout above the budget): some reservations are made in Redis, none answered here.
    for _ in 0..200 {
        let mut call = Box::pin(service.clone().oneshot(hello()));
        // A timeout of zero polls the call once.
        let _ = tokio::time::timeout(Duration::ZERO, call.as_mut()).await;
        tokio::task::yield_now().await;
        drop(call);
    }
    connection.flush().await;
    let figures = budget.shared_snapshot().await.unwrap();
    println!(
        "200 calls given up mid-reservation: {} reserved in Redis, all given back: reserved \
         {}, {} in flight",
        figures.admitted, figures.reserved, figures.in_flight
    );
    assert_eq!((figures.reserved, figures.in_flight), (Usd::ZERO, 0));
}

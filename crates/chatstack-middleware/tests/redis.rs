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

use chatstack_middleware::rate_limit::{Quota, RateLimitConfig, RateLimitLayer, Reconcile};
use chatstack_middleware::redis::{RedisConnection, RedisLimiter, SharedAdmission};
use chatstack_middleware::{Error, LlmRequest};
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

/// Marks the limiter's state in `server` as kept for longer than a window, as on a server
/// that has been up: a fresh server is otherwise taken for one that lost its state, and
/// every key starts empty (see acquire.lua).
async fn long_running(server: &RedisServer, name: &str) {
    let mut redis = server.client().await;
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

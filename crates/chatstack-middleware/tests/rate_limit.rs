//! The rate limiter: alone over `service_fn`s on tokio's paused clock (saturation over five
//! simulated minutes, requests larger than the burst, refusals, deadlines, fairness,
//! cancellation, reconciliation, the provider's signals, keys and clones, events), and over
//! real loopback HTTP through `HttpTransport` against chatstack-mock (real time, short
//! waits).
#![cfg(feature = "rate-limit")]

mod capture;
mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use capture::Capture;
use chatstack_middleware::rate_limit::{
    Quota, RateLimit, RateLimitConfig, RateLimitLayer, RateLimitRefused, Reconcile, RefusalReason,
    SlowDown,
};
use chatstack_middleware::{Error, ErrorKind, LlmRequest};
use chatstack_proto::{RateLimitSnapshot, Usage};
use futures_util::future::join_all;
use http::{HeaderMap, StatusCode};
use support::{Answer, Ask, Script, Step};
use tokio::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};

const MINUTE: Duration = Duration::from_secs(60);

async fn send<S>(service: &mut S, ask: Ask) -> Result<Answer, Error>
where
    S: Service<Ask, Response = Answer, Error = Error>,
{
    service.ready().await?.call(ask).await
}

/// A request charged `prompt_tokens + max_tokens` tokens (the prompt estimate is a token per
/// four characters).
fn ask(model: &str, prompt_tokens: usize, max_tokens: u64) -> Ask {
    Ask {
        prompt: "x".repeat(prompt_tokens * 4),
        max_tokens: Some(max_tokens),
        ..Ask::new(model)
    }
}

fn charge_of(ask: &Ask) -> u64 {
    ask.estimated_prompt_tokens() + ask.max_tokens.unwrap_or(0)
}

fn with_deadline(mut ask: Ask, after: Duration) -> Ask {
    ask.meta.deadline = Some((Instant::now() + after).into_std());
    ask
}

fn refusal(error: &Error) -> RefusalReason {
    assert_eq!(error.kind(), ErrorKind::RateLimitWait, "{error:?}");
    RateLimitRefused::find(error)
        .expect("marked as refused")
        .reason()
}

/// One call that reached the provider.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    at: Instant,
    charged: u64,
    used: u64,
}

/// A provider that records every call it receives (with tokio's instant and the tokens the
/// request is charged) and answers after `latency`, reporting `used_percent` of the charge as
/// its usage.
#[derive(Clone)]
struct Provider {
    log: Arc<Mutex<Vec<Admitted>>>,
    latency: Duration,
    used_percent: u64,
}

impl Provider {
    fn new(latency: Duration, used_percent: u64) -> Self {
        Self {
            log: Arc::default(),
            latency,
            used_percent,
        }
    }

    fn service(
        &self,
    ) -> impl Service<
        Ask,
        Response = Answer,
        Error = Error,
        Future = impl Future<Output = Result<Answer, Error>> + Send,
    > + Clone
    + Send {
        let provider = self.clone();
        tower::service_fn(move |ask: Ask| {
            let charged = charge_of(&ask);
            let used = charged * provider.used_percent / 100;
            provider.log.lock().unwrap().push(Admitted {
                at: Instant::now(),
                charged,
                used,
            });
            let latency = provider.latency;
            async move {
                tokio::time::sleep(latency).await;
                Ok(Answer {
                    usage: Some(Usage::new(used, 0)),
                    ..Answer::ok("done")
                })
            }
        })
    }

    fn admitted(&self) -> Vec<Admitted> {
        self.log.lock().unwrap().clone()
    }
}

/// `clients` callers, each sending the requests `make(client, n)` one after the other until
/// `duration` has passed.
async fn saturate<S>(service: &S, clients: usize, duration: Duration, make: fn(usize, usize) -> Ask)
where
    S: Service<Ask, Response = Answer, Error = Error> + Clone,
{
    let end = Instant::now() + duration;
    join_all((0..clients).map(|client| {
        let mut service = service.clone();
        async move {
            let mut n = 0;
            while Instant::now() < end {
                send(&mut service, make(client, n)).await.unwrap();
                n += 1;
            }
        }
    }))
    .await;
}

/// The most `weight` any 60-second window (sliding: `[t, t + 60 s)` for every `t`) holds.
fn busiest_window(admitted: &[Admitted], weight: fn(&Admitted) -> u64) -> u64 {
    let (mut busiest, mut sum, mut first) = (0, 0, 0);
    for admission in admitted {
        sum += weight(admission);
        while admission.at - admitted[first].at >= MINUTE {
            sum -= weight(&admitted[first]);
            first += 1;
        }
        busiest = busiest.max(sum);
    }
    busiest
}

/// The `weight` of each whole minute from `start`.
fn per_minute(
    admitted: &[Admitted],
    start: Instant,
    minutes: u32,
    weight: fn(&Admitted) -> u64,
) -> Vec<u64> {
    (0..minutes)
        .map(|minute| {
            let (from, to) = (start + MINUTE * minute, start + MINUTE * (minute + 1));
            admitted
                .iter()
                .filter(|admission| admission.at >= from && admission.at < to)
                .map(weight)
                .sum()
        })
        .collect()
}

/// Checks that no window of a five-minute run passes `quota` and returns the fraction of
/// the quota achieved.
fn check_window(
    what: &str,
    admitted: &[Admitted],
    start: Instant,
    quota: u32,
    weight: fn(&Admitted) -> u64,
) -> f64 {
    let quota = u64::from(quota);
    let busiest = busiest_window(admitted, weight);
    let minutes = per_minute(admitted, start, 5, weight);
    let total: u64 = minutes.iter().sum();
    let achieved = total as f64 / (5 * quota) as f64;
    let worst = *minutes.iter().min().unwrap() as f64 / quota as f64;
    eprintln!(
        "{what}: busiest sliding 60 s window {busiest} of {quota}; per minute {minutes:?}; \
         achieved {:.1}% of the quota over five minutes (worst minute {:.1}%)",
        achieved * 100.0,
        worst * 100.0,
    );
    assert!(busiest <= quota, "{what}: a window passed the quota");
    assert!(minutes.iter().all(|&minute| minute <= quota));
    achieved
}

/// [`check_window`], and the run reached 95 % of the quota.
fn check_saturation(
    what: &str,
    admitted: &[Admitted],
    start: Instant,
    quota: u32,
    weight: fn(&Admitted) -> u64,
) -> f64 {
    let achieved = check_window(what, admitted, start, quota, weight);
    assert!(achieved >= 0.95, "{what}: only {:.1}%", achieved * 100.0);
    achieved
}

/// A quota's emission interval (as the limiter computes it): a minute over its steady rate,
/// rounded up to the nanosecond.
fn interval_of(quota: Quota) -> Duration {
    Duration::from_nanos(60_000_000_000_u64.div_ceil(u64::from(quota.steady_per_minute())))
}

/// Checks that `elapsed` is `expected` on the paused clock, whose timers fire on the
/// millisecond: at it or after, by less than a millisecond.
fn assert_waited(elapsed: Duration, expected: Duration, what: &str) {
    assert!(
        elapsed >= expected && elapsed < expected + Duration::from_millis(1),
        "{what}: waited {elapsed:?}, expected {expected:?}"
    );
}

// Saturation: more demand than quota, for five simulated minutes.

#[tokio::test(start_paused = true)]
async fn requests_per_minute_at_saturation_never_pass_the_quota_and_reach_95_percent() {
    // The default burst (a twentieth: 30 of 600), 40 clients whose calls take 2 s: 1200
    // requests a minute wanted, 600 allowed.
    let provider = Provider::new(Duration::from_secs(2), 100);
    let layer = RateLimitLayer::new(RateLimitConfig::default().requests_per_minute(600));
    let service = layer.layer(provider.service());
    let start = Instant::now();
    saturate(&service, 40, 5 * MINUTE, |_, _| Ask::new("gpt-4.1")).await;
    let admitted = provider.admitted();
    check_saturation("requests", &admitted, start, 600, |_| 1);
}

#[tokio::test(start_paused = true)]
async fn tokens_per_minute_at_saturation_never_pass_the_quota_and_reach_95_percent() {
    // 60,000 tokens a minute with a burst of 2,000; requests of 150 to 1,200 tokens, used in
    // full (so reconciliation changes nothing); 30 clients whose calls take 1 s.
    let provider = Provider::new(Duration::from_secs(1), 100);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default()
            .requests_per_minute(100_000)
            .tokens(Quota::per_minute(60_000).burst(2_000)),
    );
    let service = layer.layer(provider.service());
    let start = Instant::now();
    saturate(&service, 30, 5 * MINUTE, |client, n| {
        ask(
            "gpt-4.1",
            50 + (client * 37 + n * 101) % 700,
            100 + (n % 5) as u64 * 100,
        )
    })
    .await;
    let admitted = provider.admitted();
    check_saturation("tokens charged", &admitted, start, 60_000, |a| a.charged);
}

#[tokio::test(start_paused = true)]
async fn with_reconciliation_the_tokens_used_never_pass_the_quota_and_reach_95_percent() {
    // As above, but responses use 40 % of their charge and the rest is given back: the
    // quota holds for the tokens actually used, and they reach it. (The over-charge of the
    // requests in flight occupies the burst until they complete: with calls of 1 s instead
    // of 0.5 s it nears the burst and the tokens used fall to about 93 % of the quota.)
    let provider = Provider::new(Duration::from_millis(500), 40);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default()
            .requests_per_minute(100_000)
            .tokens(Quota::per_minute(60_000).burst(2_000))
            .reconcile(Reconcile::Full),
    );
    let service = layer.layer(provider.service());
    let start = Instant::now();
    saturate(&service, 60, 5 * MINUTE, |client, n| {
        ask(
            "gpt-4.1",
            50 + (client * 37 + n * 101) % 700,
            100 + (n % 5) as u64 * 100,
        )
    })
    .await;
    let admitted = provider.admitted();
    check_saturation("tokens used (reconciled)", &admitted, start, 60_000, |a| {
        a.used
    });
    let charged: u64 = admitted.iter().map(|a| a.charged).sum();
    eprintln!(
        "tokens charged up front: {:.0}% of the quota",
        charged as f64 / 3_000.0
    );
    let status = layer.status("gpt-4.1").unwrap();
    assert!(status.tokens_credited > 0, "{status:?}");
}

/// A number from `client` and `n`, spread evenly (splitmix64).
fn spread(client: usize, n: usize) -> u64 {
    let mut x = (client as u64) << 32 ^ n as u64;
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[tokio::test(start_paused = true)]
async fn tokens_at_saturation_with_requests_larger_than_the_burst_never_pass_the_quota() {
    // 60,000 tokens a minute with the default burst (3,000); one request in ten needs 30 % to
    // 80 % of the quota (18,000 to 48,000 tokens: up to 16 bursts), the others 150 to 1,200;
    // 30 clients whose calls take 1 s.
    const QUOTA: u32 = 60_000;
    let quota = Quota::per_minute(u64::from(QUOTA));
    let burst = u64::from(quota.burst_size());
    let provider = Provider::new(Duration::from_secs(1), 100);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default()
            .requests_per_minute(100_000)
            .tokens(quota),
    );
    let service = layer.layer(provider.service());
    let start = Instant::now();
    saturate(&service, 30, 5 * MINUTE, |client, n| {
        let x = spread(client, n);
        if x % 10 == 0 {
            ask("gpt-4.1", 0, 18_000 + (x >> 8) % 30_001)
        } else {
            ask(
                "gpt-4.1",
                50 + (x >> 8) as usize % 700,
                100 + (x >> 20) % 5 * 100,
            )
        }
    })
    .await;
    let admitted = provider.admitted();
    let in_run: Vec<Admitted> = admitted
        .iter()
        .copied()
        .filter(|a| a.at < start + 5 * MINUTE)
        .collect();
    let large: Vec<u64> = in_run
        .iter()
        .map(|a| a.charged)
        .filter(|&charged| charged > burst)
        .collect();
    let tokens: u64 = in_run.iter().map(|a| a.charged).sum();
    let large_tokens: u64 = large.iter().sum();
    let excess: u64 = large.iter().map(|&charged| charged - burst).sum();
    let achieved = check_window(
        "tokens, with large requests",
        &admitted,
        start,
        QUOTA,
        |a| a.charged,
    );
    // Each request of n > burst tokens costs its excess n − burst: the limiter waits that
    // long before it (so the minute before it stays within the quota) and after it (its
    // debt, for the minute after). Nothing else is lost: the tokens admitted plus that
    // price reach the steady 95 %.
    let with_price = (tokens + excess) as f64 / (5 * u64::from(QUOTA)) as f64;
    eprintln!(
        "{} of {} requests larger than the burst ({:.0}% of the tokens): achieved {:.1}% of \
         the quota; with the price of their excess over the burst, {:.1}%",
        large.len(),
        in_run.len(),
        large_tokens as f64 * 100.0 / tokens as f64,
        achieved * 100.0,
        with_price * 100.0,
    );
    assert!(large.len() >= 3, "large requests were admitted: {large:?}");
    assert!(with_price >= 0.95, "{:.1}%", with_price * 100.0);
}

// Refusals.

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_quota_fails_at_once_and_one_of_exactly_the_quota_passes() {
    let script = Script::new([Step::ok()]);
    // 10,000 tokens a minute, with the default burst of 500; charges stand (the script
    // reports a usage of 15).
    let quota = Quota::per_minute(10_000);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default()
            .tokens(quota)
            .reconcile(Reconcile::Off),
    );
    let mut service = layer.layer(script.service());
    let start = Instant::now();

    let error = send(&mut service, ask("m", 8, 12_000)).await.unwrap_err();
    assert_eq!(
        refusal(&error),
        RefusalReason::TooLarge {
            tokens: 12_008,
            limit: 10_000
        }
    );
    assert_eq!(error.retry_after(), None, "no wait helps");
    assert!(error.to_string().contains("can never pass"), "{error}");
    assert!(
        error.to_string().contains("token quota of 10000 a minute"),
        "says the quota: {error}"
    );
    assert!(error.to_string().contains("`m`"), "names the key: {error}");
    // One token more than the quota is just as impossible.
    let error = send(&mut service, ask("m", 1, 10_000)).await.unwrap_err();
    assert_eq!(
        refusal(&error),
        RefusalReason::TooLarge {
            tokens: 10_001,
            limit: 10_000
        }
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(script.calls(), 0, "nothing reached the provider");

    // Exactly the quota passes, here at once: nothing went before it.
    send(&mut service, ask("m", 1, 9_999)).await.unwrap();
    assert_eq!(script.calls(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(layer.status("m").unwrap().tokens_available, Some(0));
    // Its debt keeps the rest of its minute empty: the next request, of 100 tokens, waits
    // for the 9,500 tokens beyond the burst and its own 100 to refill.
    send(&mut service, ask("m", 0, 100)).await.unwrap();
    assert_waited(
        start.elapsed(),
        interval_of(quota) * 9_600,
        "after the quota",
    );
    assert!(start.elapsed() > MINUTE);
}

#[tokio::test(start_paused = true)]
async fn a_request_of_half_the_quota_waits_for_a_full_bucket_and_passes() {
    let script = Script::new([Step::ok()]);
    // 30,000 tokens a minute with the default burst (1,500): the request of 2,000 tokens that
    // a burst-sized maximum refused, and one of 15,000.
    let quota = Quota::per_minute(30_000);
    assert_eq!(quota.burst_size(), 1_500);
    let interval = interval_of(quota);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default()
            .tokens(quota)
            .reconcile(Reconcile::Off),
    );
    let mut service = layer.layer(script.service());
    send(&mut service, ask("m", 0, 2_000)).await.unwrap();
    assert_eq!(script.calls(), 1, "admitted, not refused");

    // The first 2,000 left 500 of debt. Half the quota waits for those 500 and the burst to
    // refill (the bucket is full) and for its own 13,500 beyond the burst.
    let start = Instant::now();
    send(&mut service, ask("m", 0, 15_000)).await.unwrap();
    assert_eq!(script.calls(), 2);
    assert_waited(
        start.elapsed(),
        interval * (500 + 1_500 + 13_500),
        "half the quota",
    );
    eprintln!(
        "a request of half the quota (15,000 of 30,000 a minute, burst 1,500) after one of \
         2,000 waited {:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_wait_of_a_request_larger_than_the_burst_counts_against_deadlines() {
    let script = Script::new([Step::ok()]);
    let quota = Quota::per_minute(30_000); // burst 1,500
    let interval = interval_of(quota);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default()
            .tokens(quota)
            .reconcile(Reconcile::Off),
    );
    let mut service = layer.layer(script.service());
    send(&mut service, ask("m", 0, 1_500)).await.unwrap(); // empties the bucket
    let start = Instant::now();

    // Half the quota waits 1,500 + 13,500 intervals (31.6 s): a deadline of 30 s fails at once.
    let wait = interval * 15_000;
    let error = send(
        &mut service,
        with_deadline(ask("m", 0, 15_000), Duration::from_secs(30)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refusal(&error),
        RefusalReason::PastDeadline {
            wait,
            left: Duration::from_secs(30)
        }
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "failed at once");

    // With a deadline it meets, it waits and passes; a small request behind it, whose
    // deadline (40 s) the large one's debt passes (its turn comes at 60.2 s), fails as soon
    // as it is first in line, when the large one goes, not at its deadline.
    let large = service
        .ready()
        .await
        .unwrap()
        .call(with_deadline(ask("m", 0, 15_000), Duration::from_secs(32)));
    let small = service
        .ready()
        .await
        .unwrap()
        .call(with_deadline(ask("m", 0, 100), Duration::from_secs(40)));
    assert_eq!(layer.status("m").unwrap().waiting, 2);
    let small = async { (small.await, start.elapsed()) };
    let (large, (small, refused_at)) = tokio::join!(large, small);
    large.unwrap();
    let error = small.unwrap_err();
    let RefusalReason::PastDeadline { wait, .. } = refusal(&error) else {
        panic!("{error:?}");
    };
    // The large one's debt (13,500) and the small one's own 100, less the burst.
    assert_eq!(wait, interval * (13_500 + 100));
    assert_waited(
        refused_at,
        interval * 15_000,
        "refused when the large one went",
    );
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_debt_of_a_request_larger_than_the_burst_delays_the_next_one_exactly() {
    // 6,000 a minute with a burst of 1,001: a steady 5,000 a minute, one token every 12 ms.
    let provider = Provider::new(Duration::ZERO, 100);
    let quota = Quota::per_minute(6_000).burst(1_001);
    assert_eq!(interval_of(quota), Duration::from_millis(12));
    let layer = RateLimitLayer::new(RateLimitConfig::default().tokens(quota));
    let mut service = layer.layer(provider.service());
    let start = Instant::now();

    // 3,000 on a full bucket: at once, the whole burst taken and 1,999 owed.
    send(&mut service, ask("m", 0, 3_000)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(layer.status("m").unwrap().tokens_available, Some(0));
    // The next, of 100, waits for the debt and its own 100 beyond the empty burst:
    // (1,999 + 100) × 12 ms.
    send(&mut service, ask("m", 0, 100)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(2_099 * 12));
    // And the one after it, of 100, the interval of its 100 tokens.
    send(&mut service, ask("m", 0, 100)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(2_199 * 12));
    let charges: Vec<u64> = provider.admitted().iter().map(|a| a.charged).collect();
    assert_eq!(charges, [3_000, 100, 100]);
}

#[tokio::test(start_paused = true)]
async fn after_steady_traffic_a_large_request_keeps_the_minute_before_it_within_the_quota() {
    // 6,000 a minute, burst 1,001, one token every 12 ms. A client sends 99 tokens every
    // 1.2 s, just under the refill rate: each leaves the bucket full again 12 ms before the
    // next. After a minute of it (4,950 tokens), a request of 3,000 arrives on a full bucket:
    // admitted then, it would make 7,950 in the minute ending with it. It waits until its
    // 1,999 beyond the burst have refilled as well; its debt then holds the client back.
    let provider = Provider::new(Duration::ZERO, 100);
    let quota = Quota::per_minute(6_000).burst(1_001);
    let layer = RateLimitLayer::new(RateLimitConfig::default().tokens(quota));
    let service = layer.layer(provider.service());
    let start = Instant::now();
    let steady = {
        let mut service = service.clone();
        async move {
            let mut next = start;
            while next < start + 3 * MINUTE {
                tokio::time::sleep_until(next).await;
                send(&mut service, ask("m", 0, 99)).await.unwrap();
                next += Duration::from_millis(1_200);
            }
        }
    };
    let large = {
        let mut service = service.clone();
        let layer = layer.clone();
        async move {
            // 1,190 ms after the client's send at 60 s, whose 99 tokens refilled at 1,188.
            tokio::time::sleep_until(start + MINUTE + Duration::from_millis(1_190)).await;
            let available = layer.status("m").unwrap().tokens_available;
            let arrived = Instant::now();
            send(&mut service, ask("m", 0, 3_000)).await.unwrap();
            (available, arrived.elapsed())
        }
    };
    let ((), (available, waited)) = tokio::join!(steady, large);
    assert_eq!(available, Some(1_001), "the bucket was full");
    // 1,999 × 12 ms from the moment the bucket was full (2 ms before it arrived).
    assert_eq!(waited, Duration::from_millis(1_999 * 12 - 2));
    let admitted = provider.admitted();
    let busiest = busiest_window(&admitted, |a| a.charged);
    eprintln!(
        "a request of 3,000 after a minute at nearly the refill rate, on a full bucket, \
         waited {waited:?}; busiest sliding 60 s window {busiest} of 6,000"
    );
    assert!(busiest <= 6_000, "{busiest}");
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_fails_at_once_and_one_that_fits_waits_and_passes() {
    // One request a second.
    let script = Script::new([Step::ok()]);
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(60).burst(1)));
    let mut service = layer.layer(script.service());
    send(&mut service, Ask::new("m")).await.unwrap();

    let start = Instant::now();
    let error = send(
        &mut service,
        with_deadline(Ask::new("m"), Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    let RefusalReason::PastDeadline { wait, left } = refusal(&error) else {
        panic!("{error:?}");
    };
    assert_eq!(left, Duration::from_millis(500));
    assert_eq!(wait, Duration::from_secs(1));
    assert_eq!(error.retry_after(), Some(wait));
    assert!(error.to_string().contains("deadline"), "{error}");
    assert_eq!(start.elapsed(), Duration::ZERO, "failed at once");
    assert_eq!(script.calls(), 1);

    send(
        &mut service,
        with_deadline(Ask::new("m"), Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    assert_eq!(script.calls(), 2);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1002),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_behind_a_queue_fails_at_once_if_the_queue_passes_its_deadline() {
    let script = Script::new([Step::ok()]);
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(60).burst(1)));
    let mut service = layer.layer(script.service());
    // The first goes at once, three wait (their futures are polled below).
    let mut queued = Vec::new();
    for _ in 0..4 {
        queued.push(service.ready().await.unwrap().call(Ask::new("m")));
    }
    assert_eq!(layer.status("m").unwrap().waiting, 3);

    // Three ahead: the fourth second at the earliest.
    let start = Instant::now();
    let error = send(
        &mut service,
        with_deadline(Ask::new("m"), Duration::from_millis(3500)),
    )
    .await
    .unwrap_err();
    let RefusalReason::PastDeadline { wait, .. } = refusal(&error) else {
        panic!("{error:?}");
    };
    assert_eq!(wait, Duration::from_secs(4));
    assert_eq!(start.elapsed(), Duration::ZERO);

    // One whose deadline the queue meets gets in line and through.
    let patient = service
        .ready()
        .await
        .unwrap()
        .call(with_deadline(Ask::new("m"), Duration::from_millis(4500)));
    let (queued, patient) = tokio::join!(join_all(queued), patient);
    patient.unwrap();
    assert!(queued.iter().all(Result::is_ok));
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!(script.calls(), 5);
}

// Fairness and cancellation.

#[tokio::test(start_paused = true)]
async fn a_large_request_is_not_starved_by_a_stream_of_small_ones() {
    // 6,000 tokens a minute, burst 1,000: the steady rate is 5,001 a minute (83 a second).
    // Twenty clients keep sending 100-token requests; after 10 s, one 1,000-token request
    // arrives. Without a queue, each 100 tokens that trickle in would go to a small request
    // and the large one would wait forever.
    let provider = Provider::new(Duration::ZERO, 100);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default().tokens(Quota::per_minute(6_000).burst(1_000)),
    );
    let service = layer.layer(provider.service());
    let start = Instant::now();
    let small = saturate(&service, 20, 2 * MINUTE, |_, _| ask("m", 50, 50));
    let large = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let ahead = layer.status("m").unwrap().waiting as u64;
        let arrived = Instant::now();
        let mut service = service.clone();
        send(&mut service, ask("m", 500, 500)).await.unwrap();
        (ahead, arrived.elapsed())
    };
    let ((), (ahead, waited)) = tokio::join!(small, large);
    // It waits for the cells of those ahead of it and its own, at the steady rate.
    let cells = ahead * 100 + 1_000;
    let bound = Duration::from_secs_f64(cells as f64 * 60.0 / 5_001.0) + Duration::from_secs(1);
    eprintln!(
        "a 1,000-token request behind {ahead} small ones waited {waited:?} (bound {bound:?})"
    );
    assert!(ahead > 0, "the small ones were queued");
    assert!(waited <= bound, "{waited:?} > {bound:?}");
    assert!(start.elapsed() >= 2 * MINUTE);
}

#[tokio::test(start_paused = true)]
async fn newcomers_never_jump_the_queue() {
    // A large request first in line; a small one that arrives later and would fit at once
    // waits behind it.
    let provider = Provider::new(Duration::ZERO, 100);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default().tokens(Quota::per_minute(6_000).burst(1_000)),
    );
    let mut service = layer.layer(provider.service());
    send(&mut service, ask("m", 450, 450)).await.unwrap(); // 900 of the 1,000
    let large = service.ready().await.unwrap().call(ask("m", 500, 500));
    assert_eq!(layer.status("m").unwrap().waiting, 1);
    // 100 tokens are free right now, but the large request is first.
    let small = service.ready().await.unwrap().call(ask("m", 50, 50));
    let (large, small) = tokio::join!(large, small);
    large.unwrap();
    small.unwrap();
    let charges: Vec<u64> = provider.admitted().iter().map(|a| a.charged).collect();
    assert_eq!(charges, [900, 1_000, 100]);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_future_does_not_wedge_the_queue() {
    let script = Script::new([Step::ok()]);
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(60).burst(1)));
    let mut service = layer.layer(script.service());
    send(&mut service, Ask::new("m")).await.unwrap();
    let start = Instant::now();

    // The first in line, dropped while it waits.
    let mut head = Box::pin(service.ready().await.unwrap().call(Ask::new("m")));
    let polled = std::future::poll_fn(|cx| Poll::Ready(head.as_mut().poll(cx).is_pending()));
    assert!(polled.await, "it waits");
    // Another in the middle, dropped without ever being polled.
    let head_next = service.ready().await.unwrap().call(Ask::new("m"));
    let middle = service.ready().await.unwrap().call(Ask::new("m"));
    assert_eq!(layer.status("m").unwrap().waiting, 3);
    drop(head);
    drop(middle);
    assert_eq!(layer.status("m").unwrap().waiting, 1);

    // The rest go through in their turn, and the queue empties.
    head_next.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    send(&mut service, Ask::new("m")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(script.calls(), 3);
    let status = layer.status("m").unwrap();
    assert_eq!(status.waiting, 0);

    // A dropped waiter took no cell: the next second's cell is there.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(layer.status("m").unwrap().requests_available, Some(1));
}

// Reconciliation.

/// How many requests one sequential caller gets through in a minute, each answered in
/// 100 ms with `usage` (prompt, completion), each charged 300 tokens (or `max_tokens`).
async fn one_minute_of(
    reconcile: Reconcile,
    max_tokens: u64,
    used: (u64, u64),
) -> (u32, RateLimitLayer) {
    let service = tower::service_fn(move |_: Ask| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, Error>(Answer {
            usage: Some(Usage::new(used.0, used.1)),
            ..Answer::ok("done")
        })
    });
    let layer = RateLimitLayer::new(
        RateLimitConfig::default()
            .tokens(Quota::per_minute(6_000).burst(600))
            .reconcile(reconcile),
    );
    let mut service = layer.layer(service);
    let end = Instant::now() + MINUTE;
    let mut count = 0;
    while Instant::now() < end {
        send(&mut service, ask("m", 0, max_tokens)).await.unwrap();
        count += 1;
    }
    (count, layer)
}

#[tokio::test(start_paused = true)]
async fn usage_below_the_estimate_is_given_back_and_more_requests_get_through() {
    // Charged 300 (an output cap of 300), used 15.
    let (without, _) = one_minute_of(Reconcile::Off, 300, (10, 5)).await;
    let (debt_only, _) = one_minute_of(Reconcile::DebtOnly, 300, (10, 5)).await;
    let (with, layer) = one_minute_of(Reconcile::Full, 300, (10, 5)).await;
    eprintln!("requests in a minute: {without} without reconciliation, {with} with");
    assert_eq!(debt_only, without, "DebtOnly keeps what was over-charged");
    assert!(without <= 6_000 / 300 + 1, "{without}");
    assert!(with > 10 * without, "{with} vs {without}");
    let status = layer.status("m").unwrap();
    assert!(
        status.tokens_credited >= 285 * u64::from(with - 1),
        "{status:?}"
    );
    assert_eq!(status.tokens_debited, 0);
}

#[tokio::test(start_paused = true)]
async fn usage_above_the_estimate_is_charged_as_debt_and_slows_the_next_requests() {
    // Charged 3 (the prompt is empty, the output cap 3), used 30.
    let (without, _) = one_minute_of(Reconcile::Off, 3, (10, 20)).await;
    let (with, layer) = one_minute_of(Reconcile::DebtOnly, 3, (10, 20)).await;
    let (full, _) = one_minute_of(Reconcile::Full, 3, (10, 20)).await;
    eprintln!("requests in a minute: {without} without reconciliation, {with} with debt");
    assert_eq!(full, with);
    // Without, the calls' 100 ms bound it (600); with, the tokens do.
    assert!(with * 2 < without, "{with} vs {without}");
    // The debt keeps the tokens used within the quota: 6,000 a minute, 30 a request.
    assert!(u64::from(with) * 30 <= 6_000 + 600, "{with}");
    let status = layer.status("m").unwrap();
    assert_eq!(status.tokens_debited, 27 * u64::from(with));
    assert_eq!(status.tokens_credited, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_usage_less_response_keeps_its_charge() {
    let failing = Script::new([Step::fail(|| Error::new(ErrorKind::Server, "down"))]);
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().tokens(Quota::per_minute(6_000).burst(600)));
    let mut service = layer.layer(failing.service());
    let _ = send(&mut service, ask("m", 0, 300)).await.unwrap_err();
    assert_eq!(layer.status("m").unwrap().tokens_available, Some(300));

    let silent = tower::service_fn(|_: Ask| async {
        Ok::<_, Error>(Answer {
            usage: None,
            ..Answer::ok("done")
        })
    });
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().tokens(Quota::per_minute(6_000).burst(600)));
    let mut service = layer.layer(silent);
    send(&mut service, ask("m", 0, 300)).await.unwrap();
    let status = layer.status("m").unwrap();
    assert_eq!(status.tokens_available, Some(300));
    assert_eq!((status.tokens_credited, status.tokens_debited), (0, 0));
}

// The provider's signals.

fn too_many_requests(headers: &[(&'static str, &'static str)]) -> Error {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, value.parse().unwrap());
    }
    Error::from_response(
        StatusCode::TOO_MANY_REQUESTS,
        &map,
        br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
    )
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_the_key_for_its_retry_after() {
    let script = Script::new([
        Step::fail(|| too_many_requests(&[("retry-after", "7")])),
        Step::ok(),
    ]);
    let layer = RateLimitLayer::default();
    let mut service = layer.layer(script.service());
    let error = send(&mut service, Ask::new("m")).await.unwrap_err();
    assert!(error.is_rate_limited());
    assert_eq!(
        layer.status("m").unwrap().paused_for,
        Some(Duration::from_secs(7))
    );

    // Another model is not paused.
    let start = Instant::now();
    send(&mut service, Ask::new("other")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    // This one waits out the pause.
    send(&mut service, Ask::new("m")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    assert_eq!(layer.status("m").unwrap().paused_for, None);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_pauses_until_the_reset_or_by_default_and_pauses_are_capped() {
    type Headers = Vec<(&'static str, &'static str)>;
    let cases: [(&str, Headers, Duration); 4] = [
        (
            "no headers: the default pause",
            vec![],
            Duration::from_secs(2),
        ),
        (
            "the exhausted quota's reset",
            vec![
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "12s"),
                ("x-ratelimit-remaining-tokens", "500"),
                ("x-ratelimit-reset-tokens", "40s"),
            ],
            Duration::from_secs(12),
        ),
        (
            "capped",
            vec![("retry-after", "3600")],
            Duration::from_secs(30),
        ),
        (
            "retry-after-ms",
            vec![("retry-after-ms", "250")],
            Duration::from_millis(250),
        ),
    ];
    for (name, headers, pause) in cases {
        let headers = Arc::new(headers);
        let script = Script::new([Step::fail(move || too_many_requests(&headers)), Step::ok()]);
        let layer = RateLimitLayer::new(
            RateLimitConfig::default().slow_down(
                SlowDown::default()
                    .default_pause(Duration::from_secs(2))
                    .max_pause(Duration::from_secs(30)),
            ),
        );
        let mut service = layer.layer(script.service());
        send(&mut service, Ask::new("m")).await.unwrap_err();
        let start = Instant::now();
        send(&mut service, Ask::new("m")).await.unwrap();
        assert_eq!(start.elapsed(), pause, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn slow_down_can_be_turned_off_and_insufficient_quota_does_not_pause() {
    let script = Script::new([
        Step::fail(|| too_many_requests(&[("retry-after", "7")])),
        Step::ok(),
    ]);
    let layer = RateLimitLayer::new(RateLimitConfig::default().slow_down(SlowDown::off()));
    let mut service = layer.layer(script.service());
    send(&mut service, Ask::new("m")).await.unwrap_err();
    assert_eq!(layer.status("m").unwrap().paused_for, None);

    let quota = Script::new([
        Step::fail(|| {
            Error::from_response(
                StatusCode::TOO_MANY_REQUESTS,
                &HeaderMap::new(),
                br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
            )
        }),
        Step::ok(),
    ]);
    let layer = RateLimitLayer::default();
    let mut service = layer.layer(quota.service());
    assert!(
        send(&mut service, Ask::new("m"))
            .await
            .unwrap_err()
            .is_insufficient_quota()
    );
    assert_eq!(layer.status("m").unwrap().paused_for, None);
}

/// A provider whose responses carry this rate-limit snapshot.
fn reporting(
    snapshot: RateLimitSnapshot,
) -> impl Service<Ask, Response = Answer, Error = Error, Future = impl Future + Send> + Clone {
    tower::service_fn(move |_: Ask| async move {
        let mut answer = Answer::ok("done");
        answer.meta.rate_limit = snapshot;
        Ok::<_, Error>(answer)
    })
}

#[tokio::test(start_paused = true)]
async fn low_remaining_quota_pauses_until_its_reset() {
    let low = RateLimitSnapshot {
        limit_requests: Some(100),
        remaining_requests: Some(4),
        reset_requests: Some(Duration::from_secs(20)),
        limit_tokens: Some(10_000),
        remaining_tokens: Some(9_000),
        reset_tokens: Some(Duration::from_secs(50)),
    };
    let layer = RateLimitLayer::default();
    let mut service = layer.layer(reporting(low));
    send(&mut service, Ask::new("m")).await.unwrap();
    assert_eq!(
        layer.status("m").unwrap().paused_for,
        Some(Duration::from_secs(20)),
        "4 of 100 requests left is under 5 %; the tokens are fine"
    );
    let start = Instant::now();
    send(&mut service, Ask::new("m")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(20));

    // Plenty left: no pause.
    let plenty = RateLimitSnapshot {
        remaining_requests: Some(50),
        ..low
    };
    let layer = RateLimitLayer::default();
    let mut service = layer.layer(reporting(plenty));
    send(&mut service, Ask::new("m")).await.unwrap();
    assert_eq!(layer.status("m").unwrap().paused_for, None);
}

#[tokio::test(start_paused = true)]
async fn a_pause_refuses_waiters_whose_deadline_falls_inside_it() {
    let script = Script::new([
        Step::ok(),
        Step::fail(|| too_many_requests(&[("retry-after", "30")])),
        Step::ok(),
    ]);
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(60).burst(1)));
    let mut service = layer.layer(script.service());
    send(&mut service, Ask::new("m")).await.unwrap();
    // Second in line (answered with the 429 at 1 s), third with a deadline at 10 s.
    let second = service.ready().await.unwrap().call(Ask::new("m"));
    let third = service
        .ready()
        .await
        .unwrap()
        .call(with_deadline(Ask::new("m"), Duration::from_secs(10)));
    let third = async {
        let result = third.await;
        (result, Instant::now())
    };
    let start = Instant::now();
    let (second, (third, when)) = tokio::join!(second, third);
    assert!(second.unwrap_err().is_rate_limited());
    let error = third.unwrap_err();
    assert!(matches!(
        refusal(&error),
        RefusalReason::PastDeadline { .. }
    ));
    assert_eq!(
        when - start,
        Duration::from_secs(1),
        "refused when the pause began"
    );
    assert_eq!(script.calls(), 2);
}

// Keys and clones.

#[tokio::test(start_paused = true)]
async fn keys_are_independent_and_clones_share_the_limiter() {
    let provider = Provider::new(Duration::ZERO, 100);
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(60).burst(1)));
    let service = layer.layer(provider.service());
    // Model a saturated: a queue of ten.
    let saturating = join_all((0..10).map(|_| {
        let mut service = service.clone();
        async move { send(&mut service, Ask::new("a")).await.unwrap() }
    }));
    let other = async {
        tokio::task::yield_now().await;
        assert_eq!(layer.status("a").unwrap().waiting, 9);
        let start = Instant::now();
        let mut service = service.clone();
        send(&mut service, Ask::new("b")).await.unwrap();
        start.elapsed()
    };
    let (_, b_waited) = tokio::join!(saturating, other);
    assert_eq!(b_waited, Duration::ZERO, "model b is unaffected");

    // A clone of the service and another service from the same layer share a's limiter.
    let mut clone = service.clone();
    let mut sibling = layer.layer(provider.service());
    // a's last cell went a moment ago: each waits a second, for the other's cell too.
    let start = Instant::now();
    send(&mut clone, Ask::new("a")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    send(&mut sibling, Ask::new("a")).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "one a second between them"
    );
    // A layer configured anew has limiters of its own.
    let mut fresh =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(60).burst(1)))
            .layer(provider.service());
    send(&mut fresh, Ask::new("a")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2), "no wait");
}

#[tokio::test(start_paused = true)]
async fn key_functions_and_per_key_configurations() {
    let script = Script::new([Step::ok()]);
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(60).burst(1)))
            .key_config(
                "tag-b",
                RateLimitConfig::default().requests(Quota::per_minute(600).burst(5)),
            )
            .key_fn(|request| {
                request.meta().tag.as_deref().map_or(
                    std::borrow::Cow::Borrowed("untagged"),
                    std::borrow::Cow::Borrowed,
                )
            });
    let mut service = layer.layer(script.service());
    let tagged = |tag: &str| {
        let mut ask = Ask::new("same-model");
        ask.meta.tag = Some(tag.to_owned());
        ask
    };
    let start = Instant::now();
    for _ in 0..5 {
        send(&mut service, tagged("tag-b")).await.unwrap();
    }
    send(&mut service, tagged("tag-a")).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "two keys, each within its burst"
    );
    assert_eq!(layer.status("tag-b").unwrap().requests_available, Some(0));
    assert_eq!(layer.status("tag-a").unwrap().requests_available, Some(0));
    send(&mut service, tagged("tag-a")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(
        layer.status("same-model").is_none(),
        "keyed by tag, not model"
    );
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_services_and_a_waiting_call_keeps_the_ready_one() {
    use std::sync::atomic::{AtomicU32, Ordering};
    // An inner service that is ready once per clone: a call on a clone that was never
    // polled ready would panic.
    #[derive(Clone)]
    struct Once {
        ready: bool,
        calls: Arc<AtomicU32>,
    }
    impl Service<Ask> for Once {
        type Response = Answer;
        type Error = Error;
        type Future = std::future::Ready<Result<Answer, Error>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Error>> {
            self.ready = true;
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Ask) -> Self::Future {
            assert!(std::mem::take(&mut self.ready), "called without poll_ready");
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Answer::ok("done")))
        }
    }
    let calls = Arc::new(AtomicU32::new(0));
    let inner = Once {
        ready: false,
        calls: Arc::clone(&calls),
    };
    let layer =
        RateLimitLayer::new(RateLimitConfig::default().requests(Quota::per_minute(60).burst(1)));
    let mut service = layer.layer(inner);
    let first = service.ready().await.unwrap().call(Ask::new("m"));
    let second = service.ready().await.unwrap().call(Ask::new("m"));
    first.await.unwrap();
    second.await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// Events.

/// Three requests a second apart (the second and third wait), the third answered 429, then
/// one larger than the token quota.
async fn wait_slow_down_and_refuse() {
    let script = Script::new([
        Step::ok(),
        Step::ok(),
        Step::fail(|| too_many_requests(&[("retry-after", "5")])),
    ]);
    let layer = RateLimitLayer::new(
        RateLimitConfig::default()
            .requests(Quota::per_minute(60).burst(1))
            .tokens_per_minute(100_000),
    );
    let mut service = layer.layer(script.service());
    send(&mut service, ask("gpt-4.1", 10, 90)).await.unwrap();
    send(&mut service, ask("gpt-4.1", 10, 90)).await.unwrap();
    send(&mut service, ask("gpt-4.1", 10, 90))
        .await
        .unwrap_err();
    send(&mut service, ask("gpt-4.1", 10, 100_000))
        .await
        .unwrap_err();
}

#[tokio::test(start_paused = true)]
async fn each_wait_slow_down_and_refusal_is_a_tracing_event() {
    let capture = Capture::default();
    let _installed = capture.install();
    wait_slow_down_and_refuse().await;
    let events = capture.events();
    let named = |message: &str| -> Vec<_> {
        events
            .iter()
            .filter(|event| event.field("message").is_some_and(|m| m.contains(message)))
            .collect()
    };

    let waits = named("rate limit: waited");
    assert_eq!(waits.len(), 2, "{events:#?}");
    assert_eq!(waits[0].level, tracing::Level::DEBUG);
    assert_eq!(waits[0].field("key"), Some("gpt-4.1"));
    assert_eq!(waits[0].field("cells"), Some("100"));
    assert_eq!(waits[0].field("wait_ms"), Some("1000"));

    let slow_downs = named("slowing down");
    assert_eq!(slow_downs.len(), 1, "{events:#?}");
    assert_eq!(slow_downs[0].level, tracing::Level::WARN);
    assert_eq!(slow_downs[0].field("key"), Some("gpt-4.1"));
    assert_eq!(slow_downs[0].field("pause_ms"), Some("5000"));
    assert_eq!(slow_downs[0].field("reason"), Some("provider answered 429"));

    let refusals = named("larger than the quota");
    assert_eq!(refusals.len(), 1, "{events:#?}");
    assert_eq!(refusals[0].level, tracing::Level::INFO);
    assert_eq!(refusals[0].field("tokens"), Some("100010"));
    assert_eq!(refusals[0].field("limit"), Some("100000"));
}

// Over the wire: real sockets, real time, short waits.

mod wire {
    use super::*;
    use chatstack_middleware::{ChatRequest, ChatStream, Message, StreamRequest};
    use chatstack_mock::{MockConfig, MockServer};
    use chatstack_transport::HttpTransport;
    use futures_util::StreamExt;

    async fn setup(
        mock: MockConfig,
        config: RateLimitConfig,
    ) -> (MockServer, RateLimitLayer, RateLimit<HttpTransport>) {
        let mock = MockServer::start(mock).await.unwrap();
        let transport = HttpTransport::builder()
            .base_url(mock.url())
            .build()
            .unwrap();
        let layer = RateLimitLayer::new(config);
        let service = layer.layer(transport);
        (mock, layer, service)
    }

    fn request(model: &str, headers: &[(&'static str, &str)]) -> ChatRequest {
        let mut request =
            ChatRequest::new(model, [Message::user("Name three rivers.")]).max_tokens(500);
        for (name, value) in headers {
            request.meta.headers.insert(*name, value.parse().unwrap());
        }
        request
    }

    async fn unary(
        service: &mut RateLimit<HttpTransport>,
        request: ChatRequest,
    ) -> Result<chatstack_middleware::ChatResponse, Error> {
        ServiceExt::<ChatRequest>::ready(service)
            .await?
            .call(request)
            .await
    }

    #[tokio::test]
    async fn a_429_from_the_mock_pauses_the_key_for_its_retry_after() {
        let (mock, layer, mut service) =
            setup(MockConfig::default(), RateLimitConfig::default()).await;
        let error = unary(
            &mut service,
            request("gpt-4.1", &[("x-mock-fault", "rate_limit_ms:300")]),
        )
        .await
        .unwrap_err();
        assert!(error.is_rate_limited(), "{error:?}");
        let paused = layer.status("gpt-4.1").unwrap().paused_for.unwrap();
        assert!(paused > Duration::from_millis(200), "{paused:?}");

        let start = Instant::now();
        unary(&mut service, request("gpt-4o", &[])).await.unwrap();
        let other = start.elapsed();
        unary(&mut service, request("gpt-4.1", &[])).await.unwrap();
        let paused_model = start.elapsed();
        assert!(other < Duration::from_millis(200), "{other:?}");
        assert!(
            paused_model >= Duration::from_millis(250),
            "{paused_model:?}"
        );
        assert_eq!(mock.counters().total(), 3);
    }

    #[tokio::test]
    async fn low_remaining_headers_from_the_mock_slow_down() {
        // The mock allows 20 requests a minute; under half of them left pauses the key (for
        // the rest of the mock's minute, capped here at 300 ms).
        let mock = MockConfig::default()
            .rate_limits(chatstack_mock::RateLimitConfig::default().requests_per_minute(20));
        let config = RateLimitConfig::default().slow_down(
            SlowDown::default()
                .low_remaining(0.5)
                .max_pause(Duration::from_millis(300)),
        );
        let (_mock, layer, mut service) = setup(mock, config).await;
        for _ in 0..10 {
            unary(&mut service, request("gpt-4.1", &[])).await.unwrap();
        }
        let status = layer.status("gpt-4.1").unwrap();
        assert_eq!(status.paused_for, None, "10 of 20 left: no pause yet");
        unary(&mut service, request("gpt-4.1", &[])).await.unwrap();
        assert!(
            layer.status("gpt-4.1").unwrap().paused_for.is_some(),
            "9 of 20 left"
        );
        let before = Instant::now();
        unary(&mut service, request("gpt-4.1", &[])).await.unwrap();
        assert!(
            before.elapsed() >= Duration::from_millis(250),
            "{:?}",
            before.elapsed()
        );
    }

    #[tokio::test]
    async fn the_usage_the_mock_reports_is_reconciled_for_unary_calls_and_streams() {
        let config = RateLimitConfig::default().tokens(Quota::per_minute(600_000).burst(60_000));
        let (_mock, layer, mut service) = setup(MockConfig::default(), config).await;
        // Charged the estimate plus 500 output tokens; the mock reports 5 + 16.
        unary(
            &mut service,
            request("gpt-4.1", &[("x-mock-usage", r#"{"prompt_tokens":5}"#)]),
        )
        .await
        .unwrap();
        let charged = request("gpt-4.1", &[]).estimated_prompt_tokens() + 500;
        let status = layer.status("gpt-4.1").unwrap();
        assert_eq!(status.tokens_credited, charged - 21, "{status:?}");

        // More than charged: 5,000 prompt tokens are debt.
        unary(
            &mut service,
            request("gpt-4.1", &[("x-mock-usage", r#"{"prompt_tokens":5000}"#)]),
        )
        .await
        .unwrap();
        let status = layer.status("gpt-4.1").unwrap();
        assert_eq!(status.tokens_debited, 5_016 - charged, "{status:?}");

        // A stream is reconciled at its end, from its usage chunk.
        let stream: ChatStream = ServiceExt::<StreamRequest>::ready(&mut service)
            .await
            .unwrap()
            .call(StreamRequest(request("gpt-4o", &[]).include_usage()))
            .await
            .unwrap();
        assert_eq!(layer.status("gpt-4o").unwrap().tokens_credited, 0);
        let chunks = stream.collect::<Vec<_>>().await;
        assert!(chunks.iter().all(Result::is_ok));
        let status = layer.status("gpt-4o").unwrap();
        let used = request("gpt-4o", &[]).estimated_prompt_tokens() + 16;
        assert_eq!(status.tokens_credited, charged - used, "{status:?}");
    }
}

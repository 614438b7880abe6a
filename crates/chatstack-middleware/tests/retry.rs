//! The retry layer: alone over scripted services on tokio's paused clock, and over real
//! loopback HTTP with the transport and the mock provider.
#![cfg(feature = "retry")]

mod capture;
mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use capture::Capture;
use chatstack_middleware::retry::{
    Backoff, IsRetryable, Jitter, RetryBudget, RetryClassifier, RetryLayer, RetryStopped,
    StopReason,
};
use chatstack_mock::{Fault, MockConfig, MockServer};
use chatstack_proto::{
    ChatChunk, ChatRequest, ChatStream, ChunkChoice, Delta, Error, ErrorKind, Message,
    ResponseMeta, StreamRequest, TimeoutKind,
};
use chatstack_transport::HttpTransport;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use support::{Answer, Ask, Script, Step};
use tokio::time::{Duration, Instant};
use tower::{Layer, Service, ServiceExt};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// An error as the transport builds it from a response.
fn response_error(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> Error {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_static(value));
    }
    Error::from_response(StatusCode::from_u16(status).unwrap(), &map, body.as_bytes())
}

fn status_error(status: u16) -> Error {
    response_error(status, &[], "")
}

const INSUFFICIENT_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;

/// The default layer's exponential value before retry `retry`: min(0.5 s × 2ⁿ, 8 s).
fn exponential(retry: usize) -> Duration {
    ms(500 * (1 << retry)).min(secs(8))
}

// ---------------------------------------------------------------------------------------
// Classification: attempts and waits per status and error kind (paused clock).
// ---------------------------------------------------------------------------------------

type MakeError = fn() -> Error;

/// Every status and error kind of the SDKs' rules, with the attempts the default layer
/// (3 attempts) makes.
fn classification_cases() -> [(&'static str, MakeError, u32); 21] {
    [
        ("429", || status_error(429), 3),
        (
            "429 insufficient_quota",
            || response_error(429, &[], INSUFFICIENT_QUOTA),
            1,
        ),
        ("500", || status_error(500), 3),
        ("502", || status_error(502), 3),
        ("503", || status_error(503), 3),
        ("529", || status_error(529), 3),
        ("408", || status_error(408), 3),
        ("409", || status_error(409), 3),
        ("400", || status_error(400), 1),
        ("401", || status_error(401), 1),
        ("403", || status_error(403), 1),
        ("404", || status_error(404), 1),
        ("422", || status_error(422), 1),
        (
            "connection error",
            || Error::new(ErrorKind::Connection, "connection refused"),
            3,
        ),
        (
            "timeout",
            || {
                Error::new(
                    ErrorKind::Timeout(TimeoutKind::Total),
                    "no response within 10s",
                )
            },
            3,
        ),
        (
            "503 + x-should-retry: false",
            || response_error(503, &[("x-should-retry", "false")], ""),
            1,
        ),
        (
            "400 + x-should-retry: true",
            || response_error(400, &[("x-should-retry", "true")], ""),
            3,
        ),
        (
            "429 insufficient_quota + x-should-retry: true",
            || response_error(429, &[("x-should-retry", "true")], INSUFFICIENT_QUOTA),
            3,
        ),
        (
            "circuit open (own limit)",
            || Error::new(ErrorKind::CircuitOpen, "open").with_retry_after(secs(1)),
            1,
        ),
        (
            "budget exceeded (own limit)",
            || Error::new(ErrorKind::BudgetExceeded, "spent"),
            1,
        ),
        (
            "rate-limit wait refused (own limit)",
            || Error::new(ErrorKind::RateLimitWait, "too long"),
            1,
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn each_status_and_error_kind_gets_the_sdk_attempts_and_jittered_waits() {
    for (name, make, expected) in classification_cases() {
        let script = Script::new([Step::fail(make)]);
        let started = Instant::now();
        let error = RetryLayer::new()
            .layer(script.service())
            .oneshot(Ask::new("m"))
            .await
            .expect_err(name);
        let gaps = script.gaps();
        eprintln!(
            "{name:<48} attempts {} gaps {gaps:?} elapsed {:?}",
            script.calls(),
            started.elapsed()
        );
        assert_eq!(script.calls(), expected, "{name}: calls");
        assert_eq!(error.attempts(), expected, "{name}: Error::attempts");
        assert_eq!(
            error.kind(),
            make().kind(),
            "{name}: the error is the last attempt's"
        );
        assert!(RetryStopped::find(&error).is_none(), "{name}");
        assert_eq!(gaps.len() as u32, expected - 1);
        for (retry, gap) in gaps.iter().enumerate() {
            assert!(
                *gap >= ms(250) && *gap <= exponential(retry),
                "{name}: wait {retry} was {gap:?}, outside [250ms, {:?}]",
                exponential(retry)
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_jitter_the_waits_are_the_exponential_capped_at_8s() {
    let script = Script::new([Step::fail(|| status_error(503))]);
    let error = RetryLayer::new()
        .max_attempts(7)
        .backoff(Backoff::default().jitter(Jitter::None))
        .layer(script.service())
        .oneshot(Ask::new("m"))
        .await
        .unwrap_err();
    assert_eq!(error.attempts(), 7);
    assert_eq!(
        script.gaps(),
        [ms(500), secs(1), secs(2), secs(4), secs(8), secs(8)]
    );
}

#[test]
fn jitter_stays_within_its_bounds_and_spreads() {
    let base = ms(500);
    for retry in 0..6_u32 {
        let computed = exponential(retry as usize);
        let bounded: Vec<Duration> = (0..2_000)
            .map(|_| Backoff::default().delay(retry))
            .collect();
        let full: Vec<Duration> = (0..2_000)
            .map(|_| Backoff::default().jitter(Jitter::Full).delay(retry))
            .collect();
        for delay in &bounded {
            assert!(
                *delay >= base / 2 && *delay <= computed,
                "bounded {retry}: {delay:?}"
            );
        }
        for delay in &full {
            assert!(*delay <= computed, "full {retry}: {delay:?}");
        }
        // Spread: the draws cover the range, not one point of it.
        let span =
            |draws: &[Duration]| (*draws.iter().min().unwrap(), *draws.iter().max().unwrap());
        let (low, high) = span(&full);
        assert!(
            low < computed / 10 && high > computed * 9 / 10,
            "full {retry}: {low:?}..{high:?}"
        );
        if retry > 0 {
            let (low, high) = span(&bounded);
            let lower = base / 2;
            assert!(
                low < lower + (computed - lower) / 10 && high > computed * 9 / 10,
                "bounded {retry}: {low:?}..{high:?}"
            );
        }
        assert_eq!(
            Backoff::default().jitter(Jitter::None).delay(retry),
            computed
        );
    }
}

#[test]
fn backoff_settings_are_kept_sane() {
    let odd = Backoff::default()
        .base(secs(10))
        .cap(secs(1))
        .jitter(Jitter::None);
    assert_eq!(
        odd.delay(0),
        secs(10),
        "a cap below the base acts as the base"
    );
    assert_eq!(odd.delay(5), secs(10));
    let huge = Backoff::default().base(Duration::MAX).jitter(Jitter::None);
    assert_eq!(huge.delay(40), secs(86_400), "at most a day, no overflow");
}

// ---------------------------------------------------------------------------------------
// Retry-After (paused clock; HTTP dates over the wire below).
// ---------------------------------------------------------------------------------------

/// One failure with `error`, then an answer: returns the wait between the two attempts.
async fn wait_before_second_attempt(layer: RetryLayer, make: MakeError) -> Duration {
    let script = Script::new([Step::fail(make), Step::ok()]);
    let answer = layer
        .layer(script.service())
        .oneshot(Ask::new("m"))
        .await
        .unwrap();
    assert_eq!(answer.meta.attempts, 2);
    assert_eq!(script.calls(), 2);
    script.gaps()[0]
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_exactly_in_seconds_fractions_and_milliseconds() {
    let cases: [(&str, MakeError, Duration); 5] = [
        (
            "retry-after: 3",
            || response_error(429, &[("retry-after", "3")], ""),
            secs(3),
        ),
        (
            "retry-after: 1.5",
            || response_error(503, &[("retry-after", "1.5")], ""),
            ms(1500),
        ),
        (
            "retry-after-ms: 250",
            || response_error(429, &[("retry-after-ms", "250")], ""),
            ms(250),
        ),
        (
            "retry-after-ms wins over retry-after",
            || response_error(429, &[("retry-after", "9"), ("retry-after-ms", "40")], ""),
            ms(40),
        ),
        (
            "retry-after: 20 (above the 8s backoff cap, below the 60s retry-after cap)",
            || response_error(529, &[("retry-after", "20")], ""),
            secs(20),
        ),
    ];
    for (name, make, expected) in cases {
        let gap = wait_before_second_attempt(RetryLayer::new(), make).await;
        eprintln!("{name:<72} wait {gap:?}");
        assert_eq!(gap, expected, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_zero_or_past_retry_after_falls_back_to_the_backoff() {
    let cases: [(&str, MakeError); 2] = [
        ("retry-after: 0", || {
            response_error(429, &[("retry-after", "0")], "")
        }),
        ("retry-after: an HTTP date in the past", || {
            response_error(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], "")
        }),
    ];
    for (name, make) in cases {
        assert_eq!(make().retry_after(), Some(Duration::ZERO), "{name}");
        let gap = wait_before_second_attempt(RetryLayer::new(), make).await;
        assert!(gap >= ms(250) && gap <= ms(500), "{name}: {gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_above_the_cap_fails_at_once_with_the_original_error_marked() {
    let script = Script::new([Step::fail(|| {
        response_error(
            429,
            &[("retry-after", "120"), ("x-request-id", "req_42")],
            r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        )
    })]);
    let started = Instant::now();
    let error = RetryLayer::new()
        .layer(script.service())
        .oneshot(Ask::new("m"))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "no wait at all");
    assert_eq!(script.calls(), 1);
    assert_eq!(error.attempts(), 1);
    assert_eq!(error.kind(), ErrorKind::RateLimited, "the kind is kept");
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(error.request_id(), Some("req_42"));
    assert_eq!(error.retry_after(), Some(secs(120)));
    assert_eq!(
        error.provider().unwrap().code.as_deref(),
        Some("rate_limit_exceeded")
    );
    let text = error.to_string();
    assert!(
        text.contains("Rate limit reached; not retried: the server asked to wait 120s, more than the retry-after cap of 60s"),
        "{text}"
    );
    let stopped = RetryStopped::find(&error).expect("marked");
    assert_eq!(
        stopped.reason(),
        StopReason::RetryAfterAboveCap { cap: secs(60) }
    );
    assert_eq!(stopped.wait(), secs(120));
}

#[tokio::test(start_paused = true)]
async fn the_retry_after_cap_is_configurable() {
    let gap = wait_before_second_attempt(RetryLayer::new().retry_after_cap(secs(300)), || {
        response_error(429, &[("retry-after", "120")], "")
    })
    .await;
    assert_eq!(gap, secs(120));
}

// ---------------------------------------------------------------------------------------
// Deadlines (paused clock).
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_backoff_past_the_total_deadline_fails_fast() {
    let script = Script::new([Step::fail(|| status_error(503))]);
    let started = Instant::now();
    let error = RetryLayer::new()
        .max_attempts(5)
        .backoff(Backoff::default().jitter(Jitter::None))
        .total_deadline(secs(1))
        .layer(script.service())
        .oneshot(Ask::new("m"))
        .await
        .unwrap_err();
    // Attempt 1 at 0, a 500 ms wait, attempt 2 at 500 ms; the next wait (1 s) would end at
    // 1.5 s, past the deadline: no sleep.
    assert_eq!(script.gaps(), [ms(500)]);
    assert_eq!(started.elapsed(), ms(500));
    assert_eq!(error.attempts(), 2);
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let stopped = RetryStopped::find(&error).expect("marked");
    assert_eq!(stopped.reason(), StopReason::PastDeadline { left: ms(500) });
    assert_eq!(stopped.wait(), secs(1));
    assert!(
        error.to_string().contains("would pass the deadline"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_request_deadline_fails_fast() {
    let script = Script::new([Step::fail(|| {
        response_error(429, &[("retry-after", "2")], "")
    })]);
    let mut ask = Ask::new("m");
    ask.meta.deadline = Some((Instant::now() + ms(1200)).into_std());
    let started = Instant::now();
    let error = RetryLayer::new()
        .layer(script.service())
        .oneshot(ask)
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(script.calls(), 1);
    assert_eq!(
        RetryStopped::find(&error).map(RetryStopped::reason),
        Some(StopReason::PastDeadline { left: ms(1200) })
    );
    assert!(error.is_rate_limited());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_with_room_lets_every_retry_happen() {
    let script = Script::new([Step::fail(|| status_error(500))]);
    let mut ask = Ask::new("m");
    ask.meta.deadline = Some((Instant::now() + secs(30)).into_std());
    let error = RetryLayer::new()
        .total_deadline(secs(60))
        .layer(script.service())
        .oneshot(ask)
        .await
        .unwrap_err();
    assert_eq!(error.attempts(), 3);
    assert!(RetryStopped::find(&error).is_none());
}

// ---------------------------------------------------------------------------------------
// Metadata, classifier, poll_ready, budget, cancellation (paused clock).
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn attempts_are_in_the_response_metadata() {
    let script = Script::new([Step::ok()]);
    let answer = RetryLayer::new()
        .layer(script.service())
        .oneshot(Ask::new("m"))
        .await
        .unwrap();
    assert_eq!(answer.meta.attempts, 1);

    let script = Script::new([
        Step::fail(|| status_error(502)),
        Step::fail(|| Error::new(ErrorKind::Connection, "reset")),
        Step::ok(),
    ]);
    let answer = RetryLayer::new()
        .layer(script.service())
        .oneshot(Ask::new("m"))
        .await
        .unwrap();
    assert_eq!(answer.meta.attempts, 3);
    assert_eq!(answer.text, "done");
}

#[tokio::test(start_paused = true)]
async fn the_classifier_is_replaceable() {
    let never = |_: &Error| false;
    let script = Script::new([Step::fail(|| status_error(503))]);
    let error = RetryLayer::new()
        .classifier(never)
        .layer(script.service())
        .oneshot(Ask::new("m"))
        .await
        .unwrap_err();
    assert_eq!((script.calls(), error.attempts()), (1, 1));

    let also_context_length = |error: &Error| {
        IsRetryable.is_retryable(error) || error.status() == Some(StatusCode::BAD_REQUEST)
    };
    let script = Script::new([Step::fail(|| status_error(400)), Step::ok()]);
    let answer = RetryLayer::new()
        .classifier(also_context_length)
        .layer(script.service())
        .oneshot(Ask::new("m"))
        .await
        .unwrap();
    assert_eq!(answer.meta.attempts, 2);
}

/// Ready once; every later `poll_ready` fails. Each call fails with a 503.
#[derive(Clone, Default)]
struct ReadyOnce {
    polls: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
}

impl Service<Ask> for ReadyOnce {
    type Response = Answer;
    type Error = Error;
    type Future = std::future::Ready<Result<Answer, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.polls.fetch_add(1, Ordering::SeqCst) == 0 {
            Poll::Ready(Ok(()))
        } else {
            Poll::Ready(Err(Error::new(ErrorKind::Connection, "the pool is closed")))
        }
    }

    fn call(&mut self, _: Ask) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err(status_error(503)))
    }
}

#[tokio::test(start_paused = true)]
async fn an_inner_poll_ready_error_ends_the_call_with_it() {
    let inner = ReadyOnce::default();
    let error = RetryLayer::new()
        .layer(inner.clone())
        .oneshot(Ask::new("m"))
        .await
        .unwrap_err();
    assert_eq!(error.message(), "the pool is closed");
    assert_eq!(error.attempts(), 1);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    assert_eq!(inner.polls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_shared_by_clones_and_caps_retries() {
    // 10 % and no reserve: every tenth first attempt earns one retry.
    let script = Script::new([Step::fail(|| status_error(503))]);
    let service = RetryLayer::new()
        .budget(
            RetryBudget::default()
                .retry_ratio(0.1)
                .min_retries_per_second(0),
        )
        .layer(script.service());
    for _ in 0..10 {
        let error = service.clone().oneshot(Ask::new("m")).await.unwrap_err();
        assert!(error.is_server());
    }
    assert_eq!(
        script.calls(),
        11,
        "10 first attempts and the one retry they paid for"
    );

    let script = Script::new([Step::fail(|| status_error(503))]);
    let unbudgeted = RetryLayer::new().budget(None).layer(script.service());
    for _ in 0..10 {
        unbudgeted.clone().oneshot(Ask::new("m")).await.unwrap_err();
    }
    assert_eq!(script.calls(), 30);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_during_a_backoff_leaves_nothing_behind() {
    let held = Arc::new(());
    let references_before = Arc::strong_count(&held);
    let calls = Arc::new(AtomicU32::new(0));
    let inner = tower::service_fn({
        let held = held.clone();
        let calls = calls.clone();
        move |_: Ask| {
            let _service_holds = &held;
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Err::<Answer, Error>(status_error(503)) }
        }
    });
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();

    let mut call = Box::pin(RetryLayer::new().layer(inner).oneshot(Ask::new("m")));
    // The first attempt fails at once; the backoff (at least 250 ms) is then running.
    assert!(
        tokio::time::timeout(ms(100), call.as_mut()).await.is_err(),
        "still in the backoff"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        Arc::strong_count(&held) > references_before,
        "the call holds the service"
    );
    drop(call);

    assert_eq!(
        Arc::strong_count(&held),
        references_before,
        "nothing holds it now"
    );
    assert_eq!(
        metrics.num_alive_tasks(),
        tasks_before,
        "no task was spawned"
    );
    tokio::time::sleep(secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no attempt after the drop");
}

// ---------------------------------------------------------------------------------------
// Streams, alone (paused clock).
// ---------------------------------------------------------------------------------------

fn chunk(text: &str) -> ChatChunk {
    ChatChunk {
        choices: vec![ChunkChoice {
            delta: Delta {
                content: Some(text.to_owned()),
                ..Delta::default()
            },
            ..ChunkChoice::default()
        }],
        ..ChatChunk::default()
    }
}

/// The items of one streamed answer; errors are made when the answer is given.
type StreamAnswer = Vec<Result<ChatChunk, MakeError>>;

/// A streaming service whose calls answer with the given items, in turn (the last repeats).
#[derive(Clone)]
struct StreamScript {
    answers: Arc<Mutex<VecDeque<StreamAnswer>>>,
    calls: Arc<AtomicU32>,
}

impl StreamScript {
    fn new(answers: impl IntoIterator<Item = StreamAnswer>) -> Self {
        Self {
            answers: Arc::new(Mutex::new(answers.into_iter().collect())),
            calls: Arc::default(),
        }
    }

    fn service(
        &self,
    ) -> impl Service<
        StreamRequest,
        Response = ChatStream,
        Error = Error,
        Future = impl Future<Output = Result<ChatStream, Error>> + Send,
    > + Clone
    + Send {
        let script = self.clone();
        tower::service_fn(move |_: StreamRequest| {
            script.calls.fetch_add(1, Ordering::SeqCst);
            let items: Vec<Result<ChatChunk, Error>> = {
                let mut answers = script.answers.lock().unwrap();
                let answer = if answers.len() > 1 {
                    answers.pop_front().unwrap()
                } else {
                    answers[0].clone()
                };
                answer
                    .into_iter()
                    .map(|item| item.map_err(|make| make()))
                    .collect()
            };
            async move {
                // The first chunk comes a little after the headers.
                let items = futures_util::stream::iter(items).then(|item| async move {
                    tokio::time::sleep(ms(10)).await;
                    item
                });
                Ok(ChatStream::new(items, ResponseMeta::default()))
            }
        })
    }
}

fn stream_request() -> StreamRequest {
    StreamRequest(ChatRequest::new("m", [Message::user("hi")]))
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_before_its_first_chunk_is_retried() {
    let unavailable: MakeError = || status_error(503);
    let script = StreamScript::new([
        vec![Err(unavailable)],
        vec![Ok(chunk("Hel")), Ok(chunk("lo"))],
    ]);
    let stream = RetryLayer::new()
        .layer(script.service())
        .oneshot(stream_request())
        .await
        .unwrap();
    assert_eq!(stream.meta().attempts, 2);
    assert_eq!(script.calls.load(Ordering::SeqCst), 2);
    let response = stream.collect_response().await.unwrap();
    assert_eq!(response.text(), Some("Hello"));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_after_its_first_chunk_is_the_callers() {
    let cut: MakeError = || Error::new(ErrorKind::Incomplete, "cut");
    let script = StreamScript::new([vec![Ok(chunk("Hel")), Err(cut)]]);
    let mut stream = RetryLayer::new()
        .layer(script.service())
        .oneshot(stream_request())
        .await
        .unwrap();
    assert_eq!(stream.meta().attempts, 1);
    assert_eq!(stream.next().await.unwrap().unwrap(), chunk("Hel"));
    assert!(stream.next().await.unwrap().unwrap_err().is_incomplete());
    assert_eq!(script.calls.load(Ordering::SeqCst), 1, "never retried");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_always_fails_before_its_first_chunk_uses_every_attempt() {
    let empty: MakeError =
        || Error::new(ErrorKind::Incomplete, "the stream ended before any chunk");
    let script = StreamScript::new([vec![Err(empty)]]);
    let error = RetryLayer::new()
        .layer(script.service())
        .oneshot(stream_request())
        .await
        .unwrap_err();
    assert_eq!(error.attempts(), 3);
    assert_eq!(script.calls.load(Ordering::SeqCst), 3);
}

// ---------------------------------------------------------------------------------------
// Tracing: one warning per retry.
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn each_retry_is_a_tracing_warning_with_its_fields() {
    let capture = Capture::default();
    let _installed = capture.install();
    let script = Script::new([Step::fail(|| status_error(503))]);
    RetryLayer::new()
        .layer(script.service())
        .oneshot(Ask::new("gpt-4.1"))
        .await
        .unwrap_err();
    let events = capture.events();
    let retries: Vec<_> = events
        .iter()
        .filter(|event| event.field("message") == Some("retrying"))
        .map(|event| (event.level, &event.fields))
        .collect();
    assert_eq!(retries.len(), 2, "{events:#?}");
    for (index, (level, fields)) in retries.iter().enumerate() {
        assert_eq!(*level, tracing::Level::WARN);
        assert_eq!(fields["attempt"], (index + 1).to_string());
        assert_eq!(fields["model"], "gpt-4.1");
        assert_eq!(fields["status"], "503");
        assert_eq!(fields["error.kind"], "server error");
        assert_eq!(fields["delay_from"], "backoff");
        // The timer sleeps whole milliseconds, rounded up; the field is rounded down.
        let delay = ms(fields["delay_ms"].parse().unwrap());
        let gap = script.gaps()[index];
        assert!(
            gap >= delay && gap <= delay + ms(1),
            "{fields:?}, gap {gap:?}"
        );
        assert!(
            delay >= ms(250) && delay <= exponential(index),
            "{fields:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Over the wire: transport + mock, real time, tiny waits.
// ---------------------------------------------------------------------------------------

fn tiny_backoff() -> Backoff {
    Backoff::default().base(ms(1)).cap(ms(4))
}

fn chat(fault: Option<&str>) -> ChatRequest {
    let mut request = ChatRequest::new("gpt-4o-mini", [Message::user("Hello")]);
    if let Some(fault) = fault {
        request
            .meta
            .headers
            .insert("x-mock-fault", HeaderValue::from_str(fault).unwrap());
    }
    request
}

#[tokio::test]
async fn over_the_wire_each_status_and_failure_gets_the_sdk_attempts() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .timeout(ms(200))
        .build()
        .unwrap();
    let client = RetryLayer::new()
        .backoff(tiny_backoff())
        .budget(None)
        .layer(transport);
    let cases: [(&str, u32, Option<ErrorKind>); 11] = [
        ("rate_limit_ms:5", 3, Some(ErrorKind::RateLimited)),
        ("insufficient_quota", 1, Some(ErrorKind::InsufficientQuota)),
        ("500", 3, Some(ErrorKind::Server)),
        ("502", 3, Some(ErrorKind::Server)),
        ("503", 3, Some(ErrorKind::Server)),
        ("529", 3, Some(ErrorKind::Overloaded)),
        ("401", 1, Some(ErrorKind::Auth)),
        (
            "context_length_exceeded",
            1,
            Some(ErrorKind::ContextLengthExceeded),
        ),
        ("reset", 3, Some(ErrorKind::Connection)),
        (
            "latency:1000",
            3,
            Some(ErrorKind::Timeout(TimeoutKind::Total)),
        ),
        ("latency:1", 1, None),
    ];
    for (fault, attempts, kind) in cases {
        mock.counters().reset();
        let result = client.clone().oneshot(chat(Some(fault))).await;
        eprintln!(
            "wire {fault:<24} attempts {} -> {:?}",
            mock.counters().total(),
            result
                .as_ref()
                .map(|r| r.meta.attempts)
                .map_err(Error::kind)
        );
        assert_eq!(
            mock.counters().total(),
            u64::from(attempts),
            "{fault}: at the mock"
        );
        match (result, kind) {
            (Ok(response), None) => assert_eq!(response.meta.attempts, attempts),
            (Err(error), Some(kind)) => {
                assert_eq!(error.kind(), kind, "{fault}: {error}");
                assert_eq!(error.attempts(), attempts, "{fault}");
            }
            (result, kind) => panic!("{fault}: {result:?}, expected {kind:?}"),
        }
    }
}

#[tokio::test]
async fn over_the_wire_a_refused_connection_is_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let transport = HttpTransport::builder()
        .base_url(format!("http://{address}/v1"))
        .build()
        .unwrap();
    let error = RetryLayer::new()
        .backoff(tiny_backoff())
        .layer(transport)
        .oneshot(chat(None))
        .await
        .unwrap_err();
    assert!(error.is_connection(), "{error}");
    assert_eq!(error.attempts(), 3);
}

/// What a wrapped transport saw: when each attempt started, and when it failed with which
/// `retry-after`.
#[derive(Debug)]
enum Seen {
    Start(Instant),
    Failed(Instant, Option<Duration>),
}

#[tokio::test]
async fn over_the_wire_an_http_date_retry_after_is_waited_exactly() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = tower::service_fn({
        let seen = seen.clone();
        move |request: ChatRequest| {
            let transport = transport.clone();
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(Seen::Start(Instant::now()));
                let result = transport.oneshot(request).await;
                if let Err(error) = &result {
                    seen.lock()
                        .unwrap()
                        .push(Seen::Failed(Instant::now(), error.retry_after()));
                }
                result
            }
        }
    });
    let error = RetryLayer::new()
        .max_attempts(2)
        .layer(recorded)
        .oneshot(chat(Some("rate_limit_date:2")))
        .await
        .unwrap_err();
    assert_eq!(error.attempts(), 2);
    assert_eq!(mock.counters().total(), 2);
    let seen = seen.lock().unwrap();
    let [
        Seen::Start(_),
        Seen::Failed(failed, Some(asked)),
        Seen::Start(second),
        Seen::Failed(..),
    ] = seen.as_slice()
    else {
        panic!("{seen:?}");
    };
    // An HTTP date has whole seconds: two seconds from the server's now, cut to the second,
    // so more than one second after the server's now, read a little later by the client.
    assert!(*asked > ms(900) && *asked <= secs(2), "{asked:?}");
    let waited = *second - *failed;
    eprintln!("wire rate_limit_date:2 asked {asked:?} waited {waited:?}");
    assert!(
        waited + ms(2) >= *asked && waited <= *asked + ms(100),
        "asked {asked:?}, waited {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_wire_a_total_outage_is_amplified_by_at_most_the_budget() {
    const REQUESTS: u64 = 1_000;
    let mock = MockServer::start(MockConfig::default().fault(Fault::ServiceUnavailable, 1.0))
        .await
        .unwrap();
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .build()
        .unwrap();
    // The default budget: 20 %, and a reserve of 10 retries a second over 10 s.
    let client = RetryLayer::new().backoff(tiny_backoff()).layer(transport);
    let started = std::time::Instant::now();
    let results: Vec<Result<_, Error>> = futures_util::stream::iter(0..REQUESTS)
        .map(|_| client.clone().oneshot(chat(None)))
        .buffer_unordered(50)
        .collect()
        .await;
    let attempts = mock.counters().total();
    let reserve = 10 * 10;
    let bound = REQUESTS + REQUESTS / 5 + reserve;
    eprintln!(
        "wire outage: {REQUESTS} requests -> {attempts} attempts (bound {bound}) in {:?}",
        started.elapsed()
    );
    assert!(attempts <= bound, "{attempts} attempts > {bound}");
    assert!(
        attempts > REQUESTS + reserve / 2,
        "the budget allowed retries: {attempts}"
    );
    let mut counted = 0;
    for result in results {
        let error = result.unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        counted += u64::from(error.attempts());
    }
    assert_eq!(
        counted, attempts,
        "Error::attempts adds up to what the mock saw"
    );
}

#[tokio::test]
async fn over_the_wire_streams_are_retried_only_before_their_first_chunk() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .build()
        .unwrap();
    let client = RetryLayer::new()
        .backoff(tiny_backoff())
        .budget(None)
        .layer(transport.clone());

    // Failing before the stream starts (a status, a reset): every attempt is used.
    for fault in ["503", "reset"] {
        mock.counters().reset();
        let error = client
            .clone()
            .oneshot(StreamRequest(chat(Some(fault))))
            .await
            .unwrap_err();
        assert_eq!(error.attempts(), 3, "{fault}");
        assert_eq!(mock.counters().total(), 3, "{fault}");
    }

    // Failing on the first attempt only: the second one streams.
    mock.counters().reset();
    let first = Arc::new(AtomicU32::new(0));
    let fail_first = tower::ServiceBuilder::new()
        .layer(RetryLayer::new().backoff(tiny_backoff()))
        .map_request(move |mut request: StreamRequest| {
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                request
                    .meta
                    .headers
                    .insert("x-mock-fault", HeaderValue::from_static("503"));
            }
            request
        })
        .service(transport.clone());
    let stream = fail_first.oneshot(StreamRequest(chat(None))).await.unwrap();
    assert_eq!(stream.meta().attempts, 2);
    assert_eq!(mock.counters().total(), 2);
    let response = stream.collect_response().await.unwrap();
    assert!(response.text().is_some_and(|text| !text.is_empty()));

    // Failing after the first chunk (the mock sends the role chunk, then N content chunks,
    // then an error event): never retried, the caller gets the chunks, then the error.
    for (fault, chunks) in [("mid_stream_error:0", 1), ("mid_stream_error:3", 4)] {
        mock.counters().reset();
        let mut stream = client
            .clone()
            .oneshot(StreamRequest(chat(Some(fault))))
            .await
            .unwrap();
        assert_eq!(stream.meta().attempts, 1, "{fault}");
        let mut received = 0;
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => received += 1,
                Err(error) => failure = Some(error),
            }
        }
        assert_eq!(received, chunks, "{fault}");
        assert!(failure.expect(fault).is_server(), "{fault}");
        assert_eq!(
            mock.counters().total(),
            1,
            "{fault}: one attempt at the mock"
        );
    }
}

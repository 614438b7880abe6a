//! The fault matrix: every fault the mock provider can inject, through the whole default
//! `Client` stack (trace, cost, retry, circuit breaker, timeout, auth with a key, transport)
//! over real loopback HTTP, unary and streaming, on the first attempt only and on every
//! attempt.
//!
//! Each fault has a row that says what the library promises for it (the retry rules of
//! `Error::is_retryable` and the retry and timeout module docs):
//!
//! - **retried**: a fault on attempt 1 only is recovered on attempt 2; a fault on every
//!   attempt fails with its typed error after all [`MAX_ATTEMPTS`];
//! - **fails**: a permanent fault fails at once with its typed error, after 1 attempt;
//! - **breaks** (streams): the stream starts, delivers the chunks before the fault, then
//!   ends with the typed error and never with a `Done` (a stream is not retried once its
//!   first chunk reached the caller);
//! - **answered**: not a failure at all (a redirect within the origin is followed).
//!
//! Every case checks the attempts the client reports (`meta.attempts`,
//! `Error::attempts`) against the sends a reqwest middleware counted and the requests and
//! faults the mock counted. A fault is put on chosen attempts by that middleware, which adds
//! the `x-mock-fault` header to the first N sends only.
//!
//! A 401 or `insufficient_quota` also takes the client's only key out of rotation (the auth
//! layer's rule): the next call fails at once, unsent.
//!
//! Every row of the table is checked against the mock's own list of faults
//! ([`Fault::NAMES`]): a new fault without a row fails `every_fault_of_the_mock_has_a_row`.
//!
//! Real time (real sockets) and a fast backoff. The faults about time run under [`SHORT`]
//! limits (seconds), the others under [`GENEROUS`] ones that no healthy answer reaches on a
//! busy machine, so that no case fails on scheduling. Each test takes seconds, and every
//! test body runs under [`DEADLINE`]: a hang is a failure, not a stuck suite.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chatstack::middleware::auth::ApiKey;
use chatstack::middleware::retry::{Backoff, RetryLayer};
use chatstack::middleware::timeout::TimeoutLayer;
use chatstack::proto::TimeoutKind;
use chatstack::{
    ChatCompletionStream, ChatEvent, ChatRequest, ChatResponse, Client, ClientBuilder, Error,
    ErrorKind, HttpTransport, Message,
};
use chatstack_mock::{Fault, MockConfig, MockServer};
use futures_util::StreamExt;
use futures_util::future::join_all;
use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tokio::time::Instant;

/// Attempts the retry policy allows (the default of `RetryLayer`).
const MAX_ATTEMPTS: u32 = 3;
/// The response body cap of the transport (the `oversized` fault sends more).
const MAX_BODY: usize = 1 << 20;
/// How long the mock holds a stalled, silent or dripping connection: far past every limit.
const HOLD: Duration = Duration::from_secs(30);
/// The deadline of every test body.
const DEADLINE: Duration = Duration::from_secs(120);
/// The API key the mock wants.
const KEY: &str = "sk-fault-matrix-0123456789";

/// The limits of one attempt (the timeout layer's), in two sets.
#[derive(Debug, Clone, Copy)]
struct Limits {
    total: Duration,
    first_chunk: Duration,
    idle: Duration,
    stream_total: Duration,
}

impl Limits {
    fn layer(&self) -> TimeoutLayer {
        TimeoutLayer::new()
            .total(self.total)
            .first_chunk(self.first_chunk)
            .idle(self.idle)
            .stream_total(self.stream_total)
    }
}

/// For the faults that are about time (delays, silence, stalls, drips): short, so that a
/// fault on every attempt costs seconds, yet far above what a healthy answer takes on a
/// loaded machine (milliseconds).
const SHORT: Limits = Limits {
    total: Duration::from_millis(2000),
    first_chunk: Duration::from_millis(1500),
    idle: Duration::from_millis(1000),
    stream_total: Duration::from_millis(3000),
};

/// For every other fault: no limit should ever pass, however busy the machine.
const GENEROUS: Limits = Limits {
    total: Duration::from_secs(30),
    first_chunk: Duration::from_secs(20),
    idle: Duration::from_secs(20),
    stream_total: Duration::from_secs(60),
};

const TIMEOUT_TOTAL: ErrorKind = ErrorKind::Timeout(TimeoutKind::Total);
const TIMEOUT_FIRST_CHUNK: ErrorKind = ErrorKind::Timeout(TimeoutKind::FirstChunk);
const TIMEOUT_IDLE: ErrorKind = ErrorKind::Timeout(TimeoutKind::Idle);

// ---- the table ----

/// What a call does when a fault hits it.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Retryable: recovered on attempt 2 when only attempt 1 has the fault; this error after
    /// [`MAX_ATTEMPTS`] when every attempt has it.
    Retried(ErrorKind),
    /// Permanent: this error on attempt 1, never retried.
    Fails(ErrorKind),
    /// A stream that starts (on attempt 1), yields between `at_least` and `at_most` chunks,
    /// then this error, and no `Done`. Not retried: its first chunk reached the caller.
    Breaks {
        kind: ErrorKind,
        at_least: usize,
        at_most: usize,
    },
    /// Not a failure: answered on attempt 1, after `requests` HTTP requests.
    Answered { requests: u64 },
}

/// One fault and what it does to a unary call and to a stream.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// The fault as the `x-mock-fault` header names it.
    spec: &'static str,
    unary: Outcome,
    stream: Outcome,
    /// The status of the HTTP error that carries the fault, when there is one.
    status: Option<u16>,
    /// The least a retry waits: the `retry-after` the fault sends.
    retry_after: Duration,
    /// The limits of each attempt.
    limits: Limits,
}

const fn row(spec: &'static str, unary: Outcome, stream: Outcome) -> Row {
    Row {
        spec,
        unary,
        stream,
        status: None,
        retry_after: Duration::ZERO,
        limits: GENEROUS,
    }
}

const fn http(spec: &'static str, status: u16, outcome: Outcome) -> Row {
    Row {
        spec,
        unary: outcome,
        stream: outcome,
        status: Some(status),
        retry_after: Duration::ZERO,
        limits: GENEROUS,
    }
}

const fn after(row: Row, retry_after: Duration) -> Row {
    Row { retry_after, ..row }
}

/// A row of a fault about time: under the [`SHORT`] limits.
const fn timed(row: Row) -> Row {
    Row {
        limits: SHORT,
        ..row
    }
}

const fn breaks(kind: ErrorKind, at_least: usize, at_most: usize) -> Outcome {
    Outcome::Breaks {
        kind,
        at_least,
        at_most,
    }
}

const RATE_LIMITS: &[Row] = &[
    after(
        http(
            "rate_limit:1",
            429,
            Outcome::Retried(ErrorKind::RateLimited),
        ),
        Duration::from_secs(1),
    ),
    http(
        "rate_limit_date:1",
        429,
        Outcome::Retried(ErrorKind::RateLimited),
    ),
    after(
        http(
            "rate_limit_ms:200",
            429,
            Outcome::Retried(ErrorKind::RateLimited),
        ),
        Duration::from_millis(200),
    ),
    http(
        "insufficient_quota",
        429,
        Outcome::Fails(ErrorKind::InsufficientQuota),
    ),
];

const SERVER_ERRORS: &[Row] = &[
    http("server_error", 500, Outcome::Retried(ErrorKind::Server)),
    // An HTML page from a proxy, not an envelope: still a server error.
    http("bad_gateway", 502, Outcome::Retried(ErrorKind::Server)),
    http("unavailable", 503, Outcome::Retried(ErrorKind::Server)),
    http("overloaded", 529, Outcome::Retried(ErrorKind::Overloaded)),
    // The error envelope in a 200 (unary) or as the first event of a stream.
    row(
        "error_in_200",
        Outcome::Retried(ErrorKind::Server),
        Outcome::Retried(ErrorKind::Server),
    ),
    // Unary: a 200 whose body is a `server_error` envelope. Stream: two content chunks,
    // then the error event.
    row(
        "mid_stream_error:2",
        Outcome::Retried(ErrorKind::Server),
        breaks(ErrorKind::Server, 3, 3),
    ),
];

const CLIENT_ERRORS: &[Row] = &[
    http("unauthorized", 401, Outcome::Fails(ErrorKind::Auth)),
    http(
        "context_length_exceeded",
        400,
        Outcome::Fails(ErrorKind::ContextLengthExceeded),
    ),
    // To another origin: never followed (credentials never leave the origin).
    http(
        "redirect:http://localhost:9/v1/chat/completions",
        307,
        Outcome::Fails(ErrorKind::Status),
    ),
    // Within the origin: followed, the fault header and all; answered on attempt 1.
    row(
        "redirect:/v1/chat/completions?moved=1",
        Outcome::Answered { requests: 2 },
        Outcome::Answered { requests: 2 },
    ),
];

/// The faults about time, under the [`SHORT`] limits.
const DELAYS: &[Row] = &[
    // A delay under the limits is only slow.
    timed(row(
        "latency:50",
        Outcome::Answered { requests: 1 },
        Outcome::Answered { requests: 1 },
    )),
    // Past the limits: the total limit (unary) or the first-chunk one (streams, whose
    // first-chunk limit is the shorter) ends the attempt, and it is retried.
    timed(row(
        "latency:30000",
        Outcome::Retried(TIMEOUT_TOTAL),
        Outcome::Retried(TIMEOUT_FIRST_CHUNK),
    )),
    timed(row(
        "slow_first_chunk:30000",
        Outcome::Retried(TIMEOUT_TOTAL),
        Outcome::Retried(TIMEOUT_FIRST_CHUNK),
    )),
    // Nothing at all, not even a status line.
    timed(row(
        "no_answer",
        Outcome::Retried(TIMEOUT_TOTAL),
        Outcome::Retried(TIMEOUT_FIRST_CHUNK),
    )),
    // Unary: headers and no body. Stream: the role chunk and two content chunks, then
    // silence.
    timed(row(
        "stall:2",
        Outcome::Retried(TIMEOUT_TOTAL),
        breaks(TIMEOUT_IDLE, 3, 3),
    )),
    // Endless tiny events (empty chunks and comments), never `[DONE]`: each chunk restarts
    // the idle limit, and the stream-total limit ends the stream. Unary: a space at a time,
    // until the total limit.
    timed(row(
        "drip:10",
        Outcome::Retried(TIMEOUT_TOTAL),
        breaks(TIMEOUT_TOTAL, 2, usize::MAX),
    )),
];

const BROKEN_CONNECTIONS: &[Row] = &[
    row(
        "reset",
        Outcome::Retried(ErrorKind::Connection),
        Outcome::Retried(ErrorKind::Connection),
    ),
    // Unary: half the body. Stream: the role chunk and half the 16 content chunks.
    row(
        "truncated",
        Outcome::Retried(ErrorKind::Incomplete),
        breaks(ErrorKind::Incomplete, 9, 9),
    ),
];

const BAD_BODIES: &[Row] = &[
    // Stream: the role chunk, then an event of broken JSON.
    row(
        "malformed_json",
        Outcome::Fails(ErrorKind::Decode),
        breaks(ErrorKind::Decode, 1, 1),
    ),
    row(
        "oversized:1500000",
        Outcome::Fails(ErrorKind::BodyTooLarge),
        Outcome::Fails(ErrorKind::BodyTooLarge),
    ),
    row(
        "wrong_content_type",
        Outcome::Fails(ErrorKind::Decode),
        Outcome::Fails(ErrorKind::Decode),
    ),
    // Stream: the role chunk and content chunk 1, then chunk 2 with `0xFF 0xFE`.
    row(
        "invalid_utf8:2",
        Outcome::Fails(ErrorKind::Decode),
        breaks(ErrorKind::Decode, 2, 2),
    ),
    row(
        "corrupt_gzip",
        Outcome::Fails(ErrorKind::Decode),
        Outcome::Fails(ErrorKind::Decode),
    ),
];

/// Every family of the table.
const FAMILIES: &[(&str, &[Row])] = &[
    ("rate limits", RATE_LIMITS),
    ("server errors", SERVER_ERRORS),
    ("client errors", CLIENT_ERRORS),
    ("delays", DELAYS),
    ("broken connections", BROKEN_CONNECTIONS),
    ("bad bodies", BAD_BODIES),
];

fn all_rows() -> impl Iterator<Item = &'static Row> {
    FAMILIES.iter().flat_map(|(_, rows)| rows.iter())
}

/// The canonical name of the fault a spec injects.
fn fault_of(spec: &str) -> Fault {
    spec.parse()
        .unwrap_or_else(|error| panic!("the row `{spec}` does not parse: {error}"))
}

// ---- injection ----

/// Which attempts carry the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Injection {
    /// Attempt 1 only: a transient fault.
    FirstAttempt,
    /// Every attempt: a fault that lasts.
    EveryAttempt,
}

type BoxFuture<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'a>>;

/// Pins a closure to the higher-ranked signature reqwest-middleware implements `Middleware`
/// for.
fn middleware<F>(f: F) -> impl Middleware
where
    F: for<'a> Fn(reqwest::Request, &'a mut Extensions, Next<'a>) -> BoxFuture<'a>
        + Send
        + Sync
        + 'static,
{
    f
}

/// Counts the HTTP sends, and puts `x-mock-fault: SPEC` on the first `faulty` of them. It
/// sits under the retry layer, so each attempt is one send (a redirect is followed by reqwest
/// beneath it, within the send).
fn inject(spec: &'static str, faulty: u32, sends: Arc<AtomicU32>) -> impl Middleware {
    middleware(move |mut request, extensions, next| {
        let send = sends.fetch_add(1, Ordering::SeqCst);
        if send < faulty {
            let value = http::HeaderValue::from_static(spec);
            request.headers_mut().insert("x-mock-fault", value);
        }
        Box::pin(next.run(request, extensions))
    })
}

/// A mock that holds connections for [`HOLD`] and wants [`KEY`].
async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config.stall_cap(HOLD).api_key(KEY))
        .await
        .expect("the mock starts")
}

/// The default stack with these limits, a fast backoff and the key, over a transport that
/// injects `spec` into the first `faulty` sends.
fn client(
    mock: &MockServer,
    spec: &'static str,
    faulty: u32,
    sends: Arc<AtomicU32>,
    limits: TimeoutLayer,
) -> Client {
    builder(mock, spec, faulty, sends, limits)
        .api_key(ApiKey::new(KEY).expect("a valid key"))
        .build()
        .expect("the client builds")
}

/// The builder of [`client`], without the key.
fn builder(
    mock: &MockServer,
    spec: &'static str,
    faulty: u32,
    sends: Arc<AtomicU32>,
    limits: TimeoutLayer,
) -> ClientBuilder {
    Client::builder()
        .base_url(mock.url())
        .transport(
            HttpTransport::builder()
                .max_response_bytes(MAX_BODY)
                .middleware(inject(spec, faulty, sends)),
        )
        .retry(
            RetryLayer::new().max_attempts(MAX_ATTEMPTS).backoff(
                Backoff::default()
                    .base(Duration::from_millis(5))
                    .cap(Duration::from_millis(20)),
            ),
        )
        .timeout(limits)
}

fn request() -> ChatRequest {
    ChatRequest::new("gpt-4.1", [Message::user("Say hello")])
}

// ---- running a case ----

/// Fails the case with a message, instead of panicking, so that a family reports every case
/// that failed at once.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// What the numbers of a case should be.
struct Expected {
    /// The attempts the client reports.
    attempts: u32,
    /// The HTTP requests the mock receives.
    requests: u64,
    /// The faults the mock injects.
    faults: u64,
}

fn expected(outcome: Outcome, injection: Injection) -> Expected {
    let (attempts, requests, faults) = match (outcome, injection) {
        (Outcome::Retried(_), Injection::FirstAttempt) => (2, 2, 1),
        (Outcome::Retried(_), Injection::EveryAttempt) => (
            MAX_ATTEMPTS,
            u64::from(MAX_ATTEMPTS),
            u64::from(MAX_ATTEMPTS),
        ),
        (Outcome::Fails(_) | Outcome::Breaks { .. }, _) => (1, 1, 1),
        (Outcome::Answered { requests }, _) => (1, requests, 1),
    };
    Expected {
        attempts,
        requests,
        faults,
    }
}

/// The error a call should fail with, if it should.
fn expected_error(outcome: Outcome, injection: Injection) -> Option<ErrorKind> {
    match (outcome, injection) {
        (Outcome::Retried(kind), Injection::EveryAttempt) | (Outcome::Fails(kind), _) => Some(kind),
        _ => None,
    }
}

/// Checks a call that failed: its kind, attempts, retryability and status.
fn check_error(
    row: &Row,
    outcome: Outcome,
    injection: Injection,
    error: &Error,
    attempts: u32,
) -> Result<(), String> {
    let Some(kind) = expected_error(outcome, injection) else {
        return Err(format!(
            "failed instead of answering: {:?}: {error}",
            error.kind()
        ));
    };
    ensure!(
        error.kind() == kind,
        "failed with {:?}, not {kind:?}: {error}",
        error.kind()
    );
    ensure!(
        error.attempts() == attempts,
        "the error says {} attempts, not {attempts}: {error}",
        error.attempts()
    );
    let retryable = matches!(outcome, Outcome::Retried(_));
    ensure!(
        error.is_retryable() == retryable,
        "is_retryable() is {}: {error}",
        error.is_retryable()
    );
    if let Some(status) = row.status {
        ensure!(
            error.status().map(|s| s.as_u16()) == Some(status),
            "status {:?}, not {status}: {error}",
            error.status()
        );
    }
    Ok(())
}

/// Checks the counters after a case: the sends the middleware saw and what the mock saw.
fn check_counters(
    mock: &MockServer,
    fault: &Fault,
    sends: &AtomicU32,
    expected: &Expected,
) -> Result<(), String> {
    let sends = sends.load(Ordering::SeqCst);
    ensure!(
        sends == expected.attempts,
        "{sends} sends for {} attempts",
        expected.attempts
    );
    let counters = mock.counters();
    ensure!(
        counters.total() == expected.requests,
        "the mock got {} requests, not {}",
        counters.total(),
        expected.requests
    );
    ensure!(
        counters.fault(fault.clone()) == expected.faults,
        "the mock injected `{}` {} times, not {}",
        fault.name(),
        counters.fault(fault.clone()),
        expected.faults
    );
    Ok(())
}

/// After a 401 or `insufficient_quota`, the auth layer takes the client's only key out of
/// rotation: the next call fails at once, unsent.
async fn check_key_revoked(
    outcome: Outcome,
    client: &Client,
    mock: &MockServer,
) -> Result<(), String> {
    if !matches!(
        outcome,
        Outcome::Fails(ErrorKind::Auth | ErrorKind::InsufficientQuota)
    ) {
        return Ok(());
    }
    let before = mock.counters().total();
    let error = match client.send(request()).await {
        Ok(_) => return Err("the refused key was used again".to_owned()),
        Err(error) => error,
    };
    ensure!(
        error.kind() == ErrorKind::Auth && error.message().contains("not sent"),
        "after the refusal: {:?}: {error}",
        error.kind()
    );
    ensure!(
        mock.counters().total() == before,
        "a request with the refused key was sent"
    );
    Ok(())
}

/// The least time a call takes: the `retry-after` of each retry it waited.
fn check_waited(row: &Row, retries: u32, elapsed: Duration) -> Result<(), String> {
    let least = row.retry_after * retries;
    ensure!(
        elapsed >= least,
        "took {elapsed:?}: the retry-after ({:?} per retry) was not honoured",
        row.retry_after
    );
    Ok(())
}

/// One case, ready to run: its mock, and a client whose middleware injects the fault.
struct Case {
    row: &'static Row,
    injection: Injection,
    mock: MockServer,
    client: Client,
    sends: Arc<AtomicU32>,
}

impl Case {
    /// Starts the mock and builds the client. Cases are all prepared before any of them
    /// runs: building a client takes tens of milliseconds of CPU (a TLS configuration),
    /// which would hold up, and time out, the cases already running on the same thread.
    async fn prepare(row: &'static Row, injection: Injection) -> Self {
        let faulty = match injection {
            Injection::FirstAttempt => 1,
            Injection::EveryAttempt => u32::MAX,
        };
        let mock = mock(MockConfig::default()).await;
        let sends = Arc::new(AtomicU32::new(0));
        let client = client(&mock, row.spec, faulty, sends.clone(), row.limits.layer());
        Self {
            row,
            injection,
            mock,
            client,
            sends,
        }
    }
}

async fn unary_case(case: Case) -> Result<(), String> {
    let Case {
        row,
        injection,
        mock,
        client,
        sends,
    } = case;
    let outcome = row.unary;
    let expected = expected(outcome, injection);
    let started = Instant::now();
    let result = client.send(request()).await;
    let elapsed = started.elapsed();
    match (&result, expected_error(outcome, injection)) {
        (Ok(response), None) => {
            ensure!(
                response.text().is_some_and(|text| !text.is_empty()),
                "an answer without text: {response:?}"
            );
            ensure!(
                response.meta.attempts == expected.attempts,
                "answered after {} attempts, not {}",
                response.meta.attempts,
                expected.attempts
            );
        }
        (Ok(response), Some(kind)) => {
            return Err(format!(
                "answered after {} attempts instead of failing with {kind:?}",
                response.meta.attempts
            ));
        }
        (Err(error), _) => check_error(row, outcome, injection, error, expected.attempts)?,
    }
    check_counters(&mock, &fault_of(row.spec), &sends, &expected)?;
    check_waited(row, expected.attempts.saturating_sub(1), elapsed)?;
    check_key_revoked(outcome, &client, &mock).await
}

/// How a stream ended.
enum End {
    Done(Box<ChatResponse>),
    Failed(Error),
    /// Ended without `Done` and without an error: a silent truncation, always a bug.
    Silent,
}

/// Reads a stream to its end: its chunks, their text, and how it ended. Checks that nothing
/// comes after the end.
async fn drain(stream: &mut ChatCompletionStream) -> Result<(usize, String, End), String> {
    let mut chunks = 0;
    let mut text = String::new();
    let end = loop {
        match stream.next().await {
            Some(Ok(event @ ChatEvent::Chunk(_))) => {
                chunks += 1;
                text.push_str(event.text().unwrap_or_default());
            }
            Some(Ok(ChatEvent::Done(response))) => break End::Done(Box::new(response)),
            Some(Err(error)) => break End::Failed(error),
            None => break End::Silent,
        }
    };
    ensure!(
        stream.next().await.is_none(),
        "an item came after the end of the stream"
    );
    Ok((chunks, text, end))
}

async fn stream_case(case: Case) -> Result<(), String> {
    let Case {
        row,
        injection,
        mock,
        client,
        sends,
    } = case;
    let outcome = row.stream;
    let expected = expected(outcome, injection);
    let started = Instant::now();
    match client.stream(request()).await {
        Err(error) => check_error(row, outcome, injection, &error, expected.attempts)?,
        Ok(mut stream) => {
            let attempts = stream.meta().attempts;
            ensure!(
                attempts == expected.attempts,
                "the stream started after {attempts} attempts, not {}",
                expected.attempts
            );
            let (chunks, text, end) = drain(&mut stream).await?;
            match (outcome, end) {
                (
                    Outcome::Breaks {
                        kind,
                        at_least,
                        at_most,
                    },
                    End::Failed(error),
                ) => {
                    ensure!(
                        error.kind() == kind,
                        "the stream broke with {:?}, not {kind:?}: {error}",
                        error.kind()
                    );
                    ensure!(
                        (at_least..=at_most).contains(&chunks),
                        "{chunks} chunks before the error, not {at_least}..={at_most}: {error}"
                    );
                }
                (Outcome::Breaks { .. }, End::Done(_)) => {
                    return Err(format!(
                        "a broken stream ended with Done after {chunks} chunks"
                    ));
                }
                (_, End::Silent) => {
                    return Err(format!(
                        "the stream ended after {chunks} chunks without Done or an error"
                    ));
                }
                (_, End::Failed(error)) => {
                    return Err(format!(
                        "the stream failed after {chunks} chunks: {:?}: {error}",
                        error.kind()
                    ));
                }
                (Outcome::Fails(kind), End::Done(_)) => {
                    return Err(format!("the stream was answered instead of {kind:?}"));
                }
                (_, End::Done(response)) => {
                    if let Some(kind) = expected_error(outcome, injection) {
                        return Err(format!("the stream was answered instead of {kind:?}"));
                    }
                    ensure!(chunks > 1, "an answer of {chunks} chunks");
                    // Complete: a finish reason, and the usage chunk that comes last.
                    ensure!(
                        response
                            .choices
                            .first()
                            .is_some_and(|choice| choice.finish_reason.is_some()),
                        "Done without a finish reason: {response:?}"
                    );
                    ensure!(response.usage.is_some(), "Done without usage: {response:?}");
                    ensure!(
                        response.text() == Some(text.as_str()) && !text.is_empty(),
                        "Done says {:?}, the chunks said {text:?}",
                        response.text()
                    );
                    ensure!(
                        response.meta.attempts == expected.attempts,
                        "Done says {} attempts, not {}",
                        response.meta.attempts,
                        expected.attempts
                    );
                }
            }
        }
    }
    let elapsed = started.elapsed();
    check_counters(&mock, &fault_of(row.spec), &sends, &expected)?;
    check_waited(row, expected.attempts.saturating_sub(1), elapsed)?;
    check_key_revoked(outcome, &client, &mock).await
}

/// Runs every row of a family, unary and streaming, with the fault on the first attempt and
/// on every attempt, all at once; fails with every case that failed.
async fn run_family(rows: &'static [Row]) {
    let mut prepared = Vec::new();
    for row in rows {
        for injection in [Injection::FirstAttempt, Injection::EveryAttempt] {
            for stream in [false, true] {
                prepared.push((stream, Case::prepare(row, injection).await));
            }
        }
    }
    let count = prepared.len();
    let cases = prepared.into_iter().map(|(stream, case)| async move {
        let mode = if stream { "stream" } else { "unary" };
        let label = format!("`{}`, {mode}, fault on {:?}", case.row.spec, case.injection);
        let result = if stream {
            stream_case(case).await
        } else {
            unary_case(case).await
        };
        (label, result)
    });
    let results = within_deadline(join_all(cases)).await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(label, result)| result.err().map(|error| format!("{label}: {error}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Runs a test body under [`DEADLINE`].
async fn within_deadline<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(DEADLINE, body)
        .await
        .expect("the test finishes within the deadline: no hang")
}

// ---- the table against the mock's list ----

#[test]
fn every_fault_of_the_mock_has_a_row() {
    let covered: Vec<&str> = all_rows().map(|row| fault_of(row.spec).name()).collect();
    for name in Fault::NAMES {
        let spec = match *name {
            "redirect" => "redirect:/elsewhere".to_owned(),
            name => name.to_owned(),
        };
        let fault: Fault = spec.parse().expect("the mock's own names parse");
        assert!(
            covered.contains(&fault.name()),
            "the mock's fault `{name}` ({}) has no row in the fault matrix",
            fault.name()
        );
    }
    // And no row names something the mock does not know.
    for row in all_rows() {
        assert!(Fault::NAMES.contains(&fault_of(row.spec).name()), "{row:?}");
    }
}

// ---- one test per family ----

#[tokio::test]
async fn rate_limits_are_retried_after_retry_after_and_quota_is_permanent() {
    run_family(RATE_LIMITS).await;
}

#[tokio::test]
async fn server_errors_are_retried() {
    run_family(SERVER_ERRORS).await;
}

#[tokio::test]
async fn client_errors_and_redirects_elsewhere_are_permanent() {
    run_family(CLIENT_ERRORS).await;
}

#[tokio::test]
async fn delays_past_the_limits_are_timeouts_and_retried() {
    run_family(DELAYS).await;
}

#[tokio::test]
async fn broken_connections_are_retried_or_break_the_stream() {
    run_family(BROKEN_CONNECTIONS).await;
}

#[tokio::test]
async fn bad_bodies_are_typed_errors() {
    run_family(BAD_BODIES).await;
}

// ---- the hostile stream: endless tiny events, never `[DONE]` ----

/// Streams `spec` (on every attempt) with these limits: the chunks, how the stream ended,
/// the attempts it reports, and the time it took.
async fn hostile_stream(
    mock: &MockServer,
    spec: &'static str,
    limits: TimeoutLayer,
) -> (usize, End, u32, Duration) {
    let sends = Arc::new(AtomicU32::new(0));
    let client = client(mock, spec, u32::MAX, sends, limits);
    let started = Instant::now();
    let mut stream = client.stream(request()).await.expect("the stream starts");
    let attempts = stream.meta().attempts;
    let (chunks, _, end) = drain(&mut stream).await.expect("nothing after the end");
    (chunks, end, attempts, started.elapsed())
}

#[tokio::test]
async fn a_drip_slower_than_the_idle_limit_ends_with_an_idle_timeout() {
    within_deadline(async {
        let mock = mock(MockConfig::default()).await;
        // After the role chunk, a comment every second and an empty chunk every two: the
        // idle limit of 300 ms passes first.
        let idle = Duration::from_millis(300);
        let (chunks, end, attempts, elapsed) =
            hostile_stream(&mock, "drip:1000", GENEROUS.layer().idle(idle)).await;
        let End::Failed(error) = end else {
            panic!("the drip stream must end with an error");
        };
        assert_eq!(error.kind(), TIMEOUT_IDLE, "{error}");
        assert!(
            error
                .message()
                .contains("idle limit of 300ms after chunk 1"),
            "{error}"
        );
        assert_eq!(chunks, 1, "the role chunk, then nothing in time");
        assert!(elapsed >= idle, "{elapsed:?}");
        assert_eq!(attempts, 1, "the first chunk reached the caller: no retry");
        assert_eq!(mock.counters().total(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_drip_faster_than_the_idle_limit_ends_at_the_stream_total_limit() {
    within_deadline(async {
        let stream_total = Duration::from_millis(1500);
        // Every 10 ms (an empty chunk every 20 ms, far within the idle limit of 1 s), and as
        // fast as the client reads: each chunk restarts the idle limit, so only the
        // stream-total limit can end the stream.
        for spec in ["drip:10", "drip:0"] {
            let mock = mock(MockConfig::default()).await;
            let limits = GENEROUS
                .layer()
                .idle(Duration::from_secs(1))
                .stream_total(stream_total);
            let (chunks, end, attempts, elapsed) = hostile_stream(&mock, spec, limits).await;
            let End::Failed(error) = end else {
                panic!("`{spec}`: the drip stream must end with an error");
            };
            assert_eq!(error.kind(), TIMEOUT_TOTAL, "`{spec}`: {error}");
            assert!(
                error.message().contains("stream-total limit of 1.5s"),
                "`{spec}`: {error}"
            );
            assert!(chunks >= 10, "`{spec}`: {chunks} chunks");
            assert!(elapsed >= stream_total, "`{spec}`: {elapsed:?}");
            assert!(
                elapsed < HOLD,
                "`{spec}`: {elapsed:?}: the mock gave up before the client did"
            );
            assert_eq!(attempts, 1, "`{spec}`");
            assert_eq!(mock.counters().total(), 1, "`{spec}`");
            // The client dropped the connection: the mock's stream ends soon after.
            let settled = Instant::now();
            while mock.counters().in_flight_streams() > 0 {
                assert!(
                    settled.elapsed() < Duration::from_secs(10),
                    "`{spec}`: the mock still streams"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_default_client_ends_an_endless_drip_stream() {
    // The default limits (600 s total to the headers, 120 s to the first chunk, 60 s idle):
    // an empty chunk every 40 s keeps the idle limit from passing, for as long as the
    // server likes (three hours here); the stream-total limit of an hour ends it. On
    // tokio's paused clock, the mock in-process: the hour passes at once.
    let mock = MockServer::start(MockConfig::default().stall_cap(Duration::from_secs(3 * 3600)))
        .await
        .expect("the mock starts");
    let client = Client::builder()
        .base_url(mock.url())
        .build()
        .expect("the client builds");
    let mut request = request();
    request
        .meta
        .headers
        .insert("x-mock-fault", http::HeaderValue::from_static("drip:20000"));
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(2 * 3600), async {
        let mut stream = client.stream(request).await.expect("the stream starts");
        drain(&mut stream).await.expect("nothing after the end")
    })
    .await
    .expect("the default client ends a stream that never ends");
    let (chunks, _, end) = outcome;
    let End::Failed(error) = end else {
        panic!("the drip stream must end with an error");
    };
    assert_eq!(error.kind(), TIMEOUT_TOTAL, "{error}");
    assert!(
        error.message().contains("stream-total limit of 3600s"),
        "{error}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3600));
    // The role chunk, then an empty chunk every 40 s.
    assert_eq!(chunks, 90);
}

// ---- no answer at all ----

#[tokio::test]
async fn no_answer_is_bounded_by_the_limits_typed_and_retried() {
    let unary_mock = mock(MockConfig::default()).await;
    let stream_mock = mock(MockConfig::default()).await;
    let unary_client = client(
        &unary_mock,
        "no_answer",
        u32::MAX,
        Arc::default(),
        SHORT.layer(),
    );
    let stream_client = client(
        &stream_mock,
        "no_answer",
        u32::MAX,
        Arc::default(),
        SHORT.layer(),
    );
    within_deadline(async {
        let unary = async {
            let started = Instant::now();
            let error = unary_client.send(request()).await.unwrap_err();
            let elapsed = started.elapsed();
            assert_eq!(error.kind(), TIMEOUT_TOTAL, "{error}");
            assert_eq!(error.attempts(), MAX_ATTEMPTS, "{error}");
            assert!(error.is_retryable());
            let counters = unary_mock.counters();
            assert_eq!(counters.total(), u64::from(MAX_ATTEMPTS));
            assert_eq!(counters.fault(Fault::NoAnswer), u64::from(MAX_ATTEMPTS));
            // Each attempt waited its whole limit, and not much more (backoff, and a
            // loaded machine's slack).
            let limit = SHORT.total * MAX_ATTEMPTS;
            assert!(elapsed >= limit, "{elapsed:?}");
            assert!(elapsed < limit + HOLD / 3, "{elapsed:?}");
        };
        let stream = async {
            let started = Instant::now();
            let error = stream_client.stream(request()).await.unwrap_err();
            let elapsed = started.elapsed();
            assert_eq!(error.kind(), TIMEOUT_FIRST_CHUNK, "{error}");
            assert_eq!(error.attempts(), MAX_ATTEMPTS, "{error}");
            assert!(error.is_retryable());
            let counters = stream_mock.counters();
            assert_eq!(counters.total(), u64::from(MAX_ATTEMPTS));
            assert_eq!(counters.fault(Fault::NoAnswer), u64::from(MAX_ATTEMPTS));
            let limit = SHORT.first_chunk * MAX_ATTEMPTS;
            assert!(elapsed >= limit, "{elapsed:?}");
            assert!(elapsed < limit + HOLD / 3, "{elapsed:?}");
        };
        tokio::join!(unary, stream);
    })
    .await;
}

// ---- what a mid-stream error says ----

#[tokio::test]
async fn a_mid_stream_error_carries_the_attempts_of_its_stream() {
    within_deadline(async {
        for spec in [
            "mid_stream_error:2",
            "truncated",
            "stall:2",
            "invalid_utf8:2",
        ] {
            let mock = mock(MockConfig::default()).await;
            let sends = Arc::new(AtomicU32::new(0));
            let client = client(&mock, spec, u32::MAX, sends, SHORT.layer());
            let mut stream = client.stream(request()).await.expect("the stream starts");
            let attempts = stream.meta().attempts;
            let (_, _, end) = drain(&mut stream).await.expect("nothing after the end");
            let End::Failed(error) = end else {
                panic!("`{spec}`: the stream must fail");
            };
            assert_eq!(attempts, 1, "`{spec}`");
            assert_eq!(error.attempts(), attempts, "`{spec}`: {error}");
        }
    })
    .await;
}

// ---- a batch through every fault ----

#[tokio::test]
async fn a_batch_through_every_fault_yields_every_item_once() {
    const N: usize = 200;
    // Each row's fault on 1.2 % of requests: about 30 % of first attempts get one.
    const RATE: f64 = 0.012;
    within_deadline(async {
        let mut config = MockConfig::default().seed(0xfa17_5eed);
        for row in all_rows() {
            config = config.fault(fault_of(row.spec), RATE);
        }
        let mock = MockServer::start(config.stall_cap(HOLD))
            .await
            .expect("the mock starts");
        let sends = Arc::new(AtomicU32::new(0));
        // No key: one 401 or `insufficient_quota` would take the only key out of rotation,
        // and every later request would fail unsent (the matrix checks that rule), which
        // would leave most faults unseen.
        let client = builder(&mock, "", 0, sends.clone(), SHORT.layer())
            .build()
            .expect("the client builds");
        let requests = (0..N).map(|index| {
            let mut request = ChatRequest::new(
                ["gpt-4.1", "gpt-4o-mini"][index % 2],
                [Message::user(format!("Question {index}?"))],
            );
            request.meta.id = Some(format!("req-{index}"));
            request
        });
        let mut batch = client.batch(requests, 16);
        let mut seen = vec![0_u32; N];
        let (mut ok, mut failed, mut attempts) = (0, 0, 0);
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        // The kinds the table expects, and an open circuit (the breaker is on).
        let typed: Vec<ErrorKind> = all_rows()
            .flat_map(|row| [row.unary, row.stream])
            .filter_map(|outcome| match outcome {
                Outcome::Retried(kind) | Outcome::Fails(kind) | Outcome::Breaks { kind, .. } => {
                    Some(kind)
                }
                Outcome::Answered { .. } => None,
            })
            .chain([ErrorKind::CircuitOpen])
            .collect();
        while let Some(item) = batch.next().await {
            let index = usize::try_from(item.index).expect("an index");
            assert!(index < N, "index {index} out of 0..{N}");
            seen[index] += 1;
            assert_eq!(item.id.as_deref(), Some(format!("req-{index}").as_str()));
            match &item.result {
                Ok(response) => {
                    ok += 1;
                    attempts += response.meta.attempts;
                    assert!(response.text().is_some_and(|text| !text.is_empty()));
                    assert!((1..=MAX_ATTEMPTS).contains(&response.meta.attempts));
                }
                Err(error) => {
                    failed += 1;
                    attempts += error.attempts();
                    assert!(
                        typed.contains(&error.kind()),
                        "item {index}: an untyped failure: {:?}: {error}",
                        error.kind()
                    );
                    assert!(
                        (1..=MAX_ATTEMPTS).contains(&error.attempts()),
                        "item {index}: {error}"
                    );
                    *kinds.entry(format!("{:?}", error.kind())).or_default() += 1;
                }
            }
        }
        for (index, count) in seen.iter().enumerate() {
            assert_eq!(*count, 1, "item {index} came {count} times");
        }
        assert_eq!(ok + failed, N);
        let progress = batch.progress();
        assert_eq!(progress.done, N as u64);
        assert_eq!((progress.ok, progress.failed), (ok as u64, failed as u64));
        // Every attempt was sent, but those an open circuit refused.
        let sends = u64::from(sends.load(Ordering::SeqCst));
        let refused = kinds.get("CircuitOpen").copied().unwrap_or(0) as u64;
        assert_eq!(u64::from(attempts) - refused, sends);
        let counters = mock.counters();
        // A redirect within the origin is two requests for one send.
        assert!(counters.total() >= sends);
        let faults: u64 = counters.snapshot().by_fault.values().sum();
        println!(
            "{ok} ok, {failed} failed {kinds:?}; {attempts} attempts, {sends} sends, {} requests, {faults} faults",
            counters.total()
        );
        assert!(faults > N as u64 / 5, "the mix injected only {faults} faults");
        assert!(ok > N / 2, "{ok} of {N} answered");
    })
    .await;
}

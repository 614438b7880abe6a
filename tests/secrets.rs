//! The API key never shows: not in `Debug` or `Display` of the key, the client, its builder,
//! the transport, the auth layer and service, requests and responses; not in any error of a
//! matrix of failures (nor their source chains, nor the panic message of `unwrap`/`expect`
//! on them); not in any tracing event or span field at TRACE level from any crate (chatstack,
//! the in-process mock, reqwest, hyper-util, h2), nor in reqwest's `log` records.
//!
//! The key is distinctive (`sk-test-SECRET-...`) and searched for whole, by its middle part,
//! as `Bearer <key>`, and in base64 (every alignment). The key goes in both ways a user can
//! give it: `ClientBuilder::api_key(ApiKey)` (the auth layer) and
//! `HttpTransportBuilder::header("authorization", ..)`. So that the test is not vacuous,
//! every success proves the key reached the mock (which answers 401 to any other key), and a
//! reqwest middleware under the transport checks the header on the wire-bound request.
//!
//! One tracing subscriber and one `log` logger are installed for the whole binary (tracing
//! caches each callsite's interest, so a per-test default subscriber could miss events that
//! another test's thread registered first); every test runs its requests before it reads the
//! buffer, so each check covers at least its own traffic.
#![forbid(unsafe_code)]

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chatstack::middleware::auth::{ApiKey, AuthLayer, KeySource};
use chatstack::middleware::circuit_breaker::CircuitBreakerConfig;
use chatstack::middleware::cost::Usd;
use chatstack::middleware::rate_limit::RateLimitConfig;
use chatstack::middleware::retry::{Backoff, RetryLayer};
use chatstack::middleware::timeout::TimeoutLayer;
use chatstack::{
    ChatEvent, ChatRequest, Client, ClientBuilder, Error, ErrorKind, HttpTransport,
    HttpTransportBuilder, Message,
};
use chatstack_mock::{MockConfig, MockServer};
use futures_util::StreamExt;
use http::{Extensions, HeaderValue};
use reqwest_middleware::reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use tower::{Layer, ServiceExt};
use tracing_subscriber::fmt::format::FmtSpan;

/// The key under test.
const KEY: &str = "sk-test-SECRET-1234567890abcdef";
/// A key the mock accepts in the 401 scenario instead of [`KEY`].
const OTHER_KEY: &str = "sk-test-other-key-000000000000";
const MODEL: &str = "gpt-4.1";
/// Every test's whole body runs under this deadline.
const DEADLINE: Duration = Duration::from_secs(60);

// --- what must never appear ----------------------------------------------------------------

/// Standard base64 of `bytes`, with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The needles: the key, its distinctive middle, `Bearer <key>`, and the key in base64 at
/// each of the three alignments it can have inside a longer base64 text (the encoding of
/// the key's bytes from offset 0, 1 and 2, whole groups only: any base64 of a text that
/// contains the key contains one of them).
fn needles() -> Vec<String> {
    let mut needles = vec![
        KEY.to_owned(),
        "SECRET-1234567890".to_owned(),
        format!("Bearer {KEY}"),
    ];
    for skip in 0..3 {
        let rest = &KEY.as_bytes()[skip..];
        needles.push(base64(&rest[..rest.len() / 3 * 3]));
    }
    needles
}

/// Panics if `text` (what `what` printed) shows the key in any form.
#[track_caller]
fn assert_no_key(what: &str, text: &str) {
    for needle in needles() {
        assert!(
            !text.contains(&needle),
            "{what} shows the key (as `{needle}`):\n{text}"
        );
    }
}

#[test]
fn the_needles_are_right() {
    assert_eq!(base64(b"Bearer"), "QmVhcmVy");
    assert_eq!(base64(b"sk-1"), "c2stMQ==");
    // A base64 blob that holds the key at any offset holds one of the alignments.
    for prefix in ["", "x", "xy", "Basic user:"] {
        let blob = base64(format!("{prefix}{KEY}").as_bytes());
        assert!(
            needles()[3..].iter().any(|needle| blob.contains(needle)),
            "{prefix:?}"
        );
    }
}

// --- the capture: one tracing subscriber and one logger for the binary ---------------------

/// Everything tracing and `log` wrote, from every thread.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// reqwest logs through `log`: its records go to the same buffer.
struct LogCapture(Buffer);

impl log::Log for LogCapture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!(
            "log {} {}: {}\n",
            record.level(),
            record.target(),
            record.args()
        );
        io::Write::write_all(&mut self.0.clone(), line.as_bytes()).ok();
    }

    fn flush(&self) {}
}

/// The buffer of the binary's subscriber and logger, installed on first use: every span (with
/// its fields, at creation, on each enter and exit, and at close with the fields recorded
/// later) and every event, at every level, of every crate.
fn capture() -> &'static Buffer {
    static CAPTURE: OnceLock<Buffer> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(FmtSpan::FULL)
            .with_target(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in this binary");
        log::set_boxed_logger(Box::new(LogCapture(buffer.clone())))
            .expect("no other logger in this binary");
        log::set_max_level(log::LevelFilter::Trace);
        buffer
    })
}

// --- panics: capture their messages silently ------------------------------------------------

/// The messages of panics on threads named `expected-panic`, as the panic hook would print
/// them (location and payload).
fn panic_messages() -> &'static Mutex<Vec<String>> {
    static MESSAGES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    MESSAGES.get_or_init(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("expected-panic") {
                panic_messages()
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(info.to_string());
            } else {
                previous(info);
            }
        }));
        Mutex::default()
    })
}

/// Runs `f`, which must panic, on a thread of its own, and returns the panic payload's text
/// and what the panic hook was given to print.
fn panic_text(f: impl FnOnce() + Send + 'static) -> String {
    let messages = panic_messages();
    let outcome = std::thread::Builder::new()
        .name("expected-panic".into())
        .spawn(move || {
            let before = messages
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("it panics");
            let payload = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .expect("a text payload");
            let hooked =
                messages.lock().unwrap_or_else(PoisonError::into_inner)[before..].join("\n");
            format!("{payload}\n{hooked}")
        })
        .expect("a thread")
        .join();
    outcome.expect("the thread returns the panic's text")
}

// --- the clients and the failure matrix -----------------------------------------------------

type BoxFuture<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'a>>;

/// Pins a closure to the higher-ranked signature reqwest-middleware implements `Middleware`
/// for.
fn middleware<F>(f: F) -> impl Middleware
where
    F: for<'a> Fn(Request, &'a mut Extensions, Next<'a>) -> BoxFuture<'a> + Send + Sync + 'static,
{
    f
}

/// What the wire check saw: requests that carried `Authorization: Bearer KEY`, marked
/// sensitive, and the `Debug` text of every request (checked for the key).
#[derive(Clone, Default)]
struct Wire {
    with_key: Arc<AtomicU64>,
    debug: Arc<Mutex<Vec<String>>>,
}

impl Wire {
    /// A reqwest middleware, under the transport, that inspects each request about to go out.
    fn middleware(&self) -> impl Middleware {
        let wire = self.clone();
        middleware(move |request, extensions, next| {
            if let Some(value) = request.headers().get("authorization") {
                if value.as_bytes() == format!("Bearer {KEY}").as_bytes() {
                    assert!(
                        value.is_sensitive(),
                        "the key header is not marked sensitive"
                    );
                    wire.with_key.fetch_add(1, Ordering::Relaxed);
                }
            }
            wire.debug
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("{request:?} {:?}", request.headers()));
            Box::pin(next.run(request, extensions))
        })
    }

    fn check(&self) {
        for text in self
            .debug
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            assert_no_key("Debug of a reqwest request", text);
        }
    }
}

/// The mocks: one that wants [`KEY`], one that wants another key (so it answers 401), one
/// that wants none (for keys in other headers), and one the first and third redirect to,
/// which must never see a request.
struct Mocks {
    good: MockServer,
    other: MockServer,
    open: MockServer,
    elsewhere: MockServer,
    /// A port nothing listens on, on 127.0.0.2 (loopback too, on Linux), where no mock of a
    /// parallel test can bind it again: they all bind 127.0.0.1.
    closed_port: u16,
    wire: Wire,
}

impl Mocks {
    async fn start() -> Self {
        let good = MockServer::start(MockConfig::default().api_key(KEY))
            .await
            .expect("the mock starts");
        let other = MockServer::start(MockConfig::default().api_key(OTHER_KEY))
            .await
            .expect("the mock starts");
        let open = MockServer::start(MockConfig::default())
            .await
            .expect("the mock starts");
        let elsewhere = MockServer::start(MockConfig::default())
            .await
            .expect("the mock starts");
        let closed_port = {
            let listener = TcpListener::bind("127.0.0.2:0").expect("a free port");
            listener.local_addr().expect("its address").port()
        };
        Self {
            good,
            other,
            open,
            elsewhere,
            closed_port,
            wire: Wire::default(),
        }
    }

    /// The transport settings of every client here: the wire check, over HTTP/1.1 or HTTP/2
    /// (prior knowledge: the mock speaks both on one port).
    fn transport(&self, http2: bool) -> HttpTransportBuilder {
        HttpTransport::builder()
            .http2_prior_knowledge(http2)
            .middleware(self.wire.middleware())
    }

    /// The URL of `elsewhere`'s chat completions, as a fault that redirects there.
    fn redirect_elsewhere(&self) -> String {
        format!("redirect:{}", self.elsewhere.chat_completions_url())
    }

    /// A client of the default stack on `url` with the key given as an [`ApiKey`], retries
    /// quick.
    fn client(&self, url: &str) -> ClientBuilder {
        Client::builder()
            .transport(self.transport(false))
            .base_url(url)
            .api_key(ApiKey::new(KEY).expect("a valid key"))
            .retry(RetryLayer::new().backoff(Backoff::default().base(Duration::from_millis(1))))
    }
}

/// A request the mock answers with `fault` (an `x-mock-fault` value, or none).
fn request(fault: Option<&str>) -> ChatRequest {
    let mut request = ChatRequest::new(MODEL, [Message::user("Hello")]).max_completion_tokens(32);
    if let Some(fault) = fault {
        let fault = HeaderValue::from_str(fault).expect("a header value");
        request.meta.headers.insert("x-mock-fault", fault);
    }
    request
}

/// The error a stream ends with (before it started, or as its last item).
async fn stream_error(client: &Client, request: ChatRequest) -> Error {
    let mut stream = match client.stream(request).await {
        Ok(stream) => stream,
        Err(error) => return error,
    };
    assert_no_key("Debug of a started stream", &format!("{stream:?}"));
    while let Some(event) = stream.next().await {
        match event {
            Ok(ChatEvent::Chunk(chunk)) => assert_no_key("Debug of a chunk", &format!("{chunk:?}")),
            Ok(ChatEvent::Done(_)) => panic!("the stream was to fail"),
            Err(error) => return error,
        }
    }
    panic!("the stream ended without its Done or an error")
}

/// The failures of the matrix, by name.
const SCENARIOS: &[&str] = &[
    "401 (the mock wants another key)",
    "500, retried",
    "429 with retry-after, not retried",
    "connection refused",
    "total timeout",
    "malformed JSON (a decode error that keeps the body)",
    "truncated body",
    "mid-stream error",
    "malformed JSON in a stream",
    "first-chunk timeout",
    "budget exceeded",
    "circuit open",
    "rate-limit wait refused",
    "500 from a bare transport keyed by header",
    "401 from a bare transport keyed by header",
    "a redirect to another host, keyed by the auth layer",
    "a redirect to another host, keyed by an x-api-key header",
    "ApiKey::from_env given the key",
    "ApiKey::from_file given the key",
    "ApiKey::new of a key with a space",
    "a header value with the key that HTTP cannot carry",
];

/// Makes the error of `scenario`, each time afresh (a 401 takes the key out of its client's
/// rotation, so every call builds its own client).
async fn failure(mocks: &Mocks, scenario: &str) -> Error {
    let good = mocks.good.url();
    match scenario {
        "401 (the mock wants another key)" => {
            let client = mocks.client(mocks.other.url()).build().unwrap();
            client.send(request(None)).await.unwrap_err()
        }
        "500, retried" => {
            let client = mocks.client(good).build().unwrap();
            client.send(request(Some("500"))).await.unwrap_err()
        }
        "429 with retry-after, not retried" => {
            let client = mocks.client(good).no_retry().build().unwrap();
            client
                .send(request(Some("rate_limit:1")))
                .await
                .unwrap_err()
        }
        "connection refused" => {
            let url = format!("http://127.0.0.2:{}/v1", mocks.closed_port);
            let client = mocks.client(&url).build().unwrap();
            client.send(request(None)).await.unwrap_err()
        }
        "total timeout" => {
            let client = mocks
                .client(good)
                .no_retry()
                .timeout(TimeoutLayer::new().total(Duration::from_millis(100)))
                .build()
                .unwrap();
            client
                .send(request(Some("latency:2000")))
                .await
                .unwrap_err()
        }
        "malformed JSON (a decode error that keeps the body)" => {
            let client = mocks.client(good).build().unwrap();
            let error = client
                .send(request(Some("malformed_json")))
                .await
                .unwrap_err();
            assert!(error.body().is_some(), "the body is kept: {error:?}");
            error
        }
        "truncated body" => {
            let client = mocks.client(good).no_retry().build().unwrap();
            client.send(request(Some("truncated"))).await.unwrap_err()
        }
        "mid-stream error" => {
            let client = mocks.client(good).build().unwrap();
            stream_error(&client, request(Some("mid_stream_error:2"))).await
        }
        "malformed JSON in a stream" => {
            let client = mocks.client(good).build().unwrap();
            stream_error(&client, request(Some("malformed_json"))).await
        }
        "first-chunk timeout" => {
            let client = mocks
                .client(good)
                .no_retry()
                .timeout(TimeoutLayer::new().first_chunk(Duration::from_millis(100)))
                .build()
                .unwrap();
            stream_error(&client, request(Some("slow_first_chunk:2000"))).await
        }
        "budget exceeded" => {
            let client = mocks
                .client(good)
                .budget(Usd::from_nanos(1))
                .build()
                .unwrap();
            client.send(request(None)).await.unwrap_err()
        }
        "circuit open" => {
            let client = mocks
                .client(good)
                .no_retry()
                .circuit_breaker(
                    CircuitBreakerConfig::default()
                        .sliding_window_size(1)
                        .minimum_calls(1),
                )
                .build()
                .unwrap();
            client.send(request(Some("500"))).await.unwrap_err();
            client.send(request(None)).await.unwrap_err()
        }
        "rate-limit wait refused" => {
            let client = mocks
                .client(good)
                .rate_limit(RateLimitConfig::default().tokens_per_minute(10))
                .build()
                .unwrap();
            client.send(request(None)).await.unwrap_err()
        }
        "500 from a bare transport keyed by header" => {
            let transport = mocks
                .transport(false)
                .base_url(good)
                .header("authorization", &format!("Bearer {KEY}"))
                .build()
                .unwrap();
            transport.send(request(Some("500"))).await.unwrap_err()
        }
        "401 from a bare transport keyed by header" => {
            let transport = mocks
                .transport(true)
                .base_url(mocks.other.url())
                .header("authorization", &format!("Bearer {KEY}"))
                .build()
                .unwrap();
            transport.send(request(None)).await.unwrap_err()
        }
        "a redirect to another host, keyed by the auth layer" => {
            let client = mocks.client(good).build().unwrap();
            let fault = mocks.redirect_elsewhere();
            client.send(request(Some(&fault))).await.unwrap_err()
        }
        "a redirect to another host, keyed by an x-api-key header" => {
            let transport = mocks
                .transport(true)
                .base_url(mocks.open.url())
                .header("x-api-key", KEY)
                .build()
                .unwrap();
            let fault = mocks.redirect_elsewhere();
            transport.send(request(Some(&fault))).await.unwrap_err()
        }
        "ApiKey::from_env given the key" => ApiKey::from_env(KEY).unwrap_err(),
        "ApiKey::from_file given the key" => ApiKey::from_file(KEY).unwrap_err(),
        "ApiKey::new of a key with a space" => ApiKey::new(format!("{KEY} {KEY}")).unwrap_err(),
        "a header value with the key that HTTP cannot carry" => HttpTransport::builder()
            .header("authorization", &format!("Bearer {KEY}\n"))
            .build()
            .unwrap_err(),
        other => unreachable!("no scenario {other}"),
    }
}

/// The kind each scenario must fail with: the matrix covers what it claims.
fn expected_kind(scenario: &str) -> fn(&Error) -> bool {
    match scenario {
        "401 (the mock wants another key)" | "401 from a bare transport keyed by header" => {
            Error::is_auth
        }
        "500, retried" | "500 from a bare transport keyed by header" => Error::is_server,
        "429 with retry-after, not retried" => Error::is_rate_limited,
        "connection refused" => Error::is_connection,
        "total timeout" | "first-chunk timeout" => Error::is_timeout,
        "malformed JSON (a decode error that keeps the body)" => Error::is_decode,
        "truncated body" => |e| e.is_incomplete() || e.is_decode(),
        "mid-stream error" => |e| e.kind() == ErrorKind::Provider || e.is_server(),
        "malformed JSON in a stream" => Error::is_decode,
        "budget exceeded" => Error::is_budget_exceeded,
        "circuit open" => Error::is_circuit_open,
        "rate-limit wait refused" => |e| e.kind() == ErrorKind::RateLimitWait,
        "a redirect to another host, keyed by the auth layer"
        | "a redirect to another host, keyed by an x-api-key header" => {
            |e| e.status().is_some_and(|status| status.is_redirection())
        }
        _ => |e| e.kind() == ErrorKind::Config,
    }
}

/// A call's result that failed with `error`, as a caller holds it before `unwrap`.
fn failed(error: Error) -> Result<(), Error> {
    Err(error)
}

/// Every way an error prints: `{}`, `{:#}`, `{:?}`, `{:#?}`, its message, body and provider
/// envelope, and the same for each error of its source chain.
fn renderings(error: &Error) -> Vec<(String, String)> {
    let mut out = vec![
        ("Display".to_owned(), format!("{error}")),
        ("alternate Display".to_owned(), format!("{error:#}")),
        ("Debug".to_owned(), format!("{error:?}")),
        ("pretty Debug".to_owned(), format!("{error:#?}")),
        ("message".to_owned(), error.message().to_owned()),
        ("body".to_owned(), format!("{:?}", error.body())),
        ("provider".to_owned(), format!("{:?}", error.provider())),
    ];
    let mut source = error.source();
    let mut depth = 0;
    while let Some(cause) = source {
        depth += 1;
        out.push((format!("source {depth} Display"), format!("{cause}")));
        out.push((format!("source {depth} alternate"), format!("{cause:#}")));
        out.push((format!("source {depth} Debug"), format!("{cause:?}")));
        source = cause.source();
    }
    out
}

// --- the tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_and_display_of_keys_clients_transports_requests_and_responses() {
    capture();
    tokio::time::timeout(DEADLINE, async {
        let mocks = Mocks::start().await;
        let key = ApiKey::new(KEY).unwrap();
        let source = KeySource::from(key.clone());
        let layer = AuthLayer::new(key.clone());
        let by_header = mocks
            .transport(false)
            .base_url(mocks.good.url())
            .header("authorization", &format!("Bearer {KEY}"));
        let header_transport = by_header.clone().build().unwrap();
        let builder = mocks.client(mocks.good.url());
        let builder_text = (format!("{builder:?}"), format!("{builder:#?}"));
        let client = builder.build().unwrap();
        let header_client = Client::builder()
            .transport(by_header.clone())
            .build()
            .unwrap();
        let auth_service = layer.layer(header_transport.clone());
        // The other ways a transport takes the key: a capitalized name, a header map whose
        // value is not marked sensitive, Azure's and Anthropic's headers.
        let mut map = http::HeaderMap::new();
        map.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap(),
        );
        let other_ways = HttpTransport::builder()
            .header("Authorization", &format!("Bearer {KEY}"))
            .header("api-key", KEY)
            .header("X-Api-Key", KEY);
        let by_map = HttpTransport::builder().headers(map);
        for (what, text) in [
            ("ApiKey Debug", format!("{key:?}")),
            ("ApiKey Display", format!("{key}")),
            ("ApiKey fingerprint", format!("{:?}", key.fingerprint())),
            ("KeySource", format!("{source:?}")),
            ("AuthLayer", format!("{layer:#?}")),
            ("Auth service", format!("{auth_service:#?}")),
            ("ClientBuilder", builder_text.0.clone()),
            ("ClientBuilder pretty", builder_text.1.clone()),
            ("Client", format!("{client:#?}")),
            ("Client of a keyed transport", format!("{header_client:#?}")),
            ("HttpTransportBuilder", format!("{by_header:#?}")),
            ("HttpTransport", format!("{header_transport:#?}")),
            (
                "HttpTransportBuilder, other headers",
                format!("{other_ways:?}"),
            ),
            (
                "HttpTransport, other headers",
                format!("{:?}", other_ways.build().unwrap()),
            ),
            ("HttpTransportBuilder, a header map", format!("{by_map:?}")),
            (
                "HttpTransport, a header map",
                format!("{:?}", by_map.build().unwrap()),
            ),
            ("the unary service", format!("{:?}", client.service())),
        ] {
            assert_no_key(what, &text);
        }
        // The fingerprint is what shows instead: the last four characters.
        assert!(format!("{key:?}").contains("...cdef"));

        // A request as the auth layer hands it on, with the key in its headers.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = {
            let seen = seen.clone();
            tower::service_fn(move |request: ChatRequest| {
                let value = request.meta.headers.get("authorization").cloned();
                seen.lock()
                    .unwrap()
                    .push((format!("{request:?}"), format!("{request:#?}")));
                async move {
                    let value = value.expect("the auth layer set the header");
                    assert_eq!(value.as_bytes(), format!("Bearer {KEY}").as_bytes());
                    assert!(value.is_sensitive());
                    Err::<chatstack::ChatResponse, _>(Error::new(ErrorKind::Cancelled, "stop"))
                }
            })
        };
        layer.layer(inner).oneshot(request(None)).await.unwrap_err();
        for (debug, pretty) in seen.lock().unwrap().iter() {
            assert_no_key("Debug of a request carrying the key", debug);
            assert_no_key("pretty Debug of a request carrying the key", pretty);
        }

        // Responses, unary and streamed, through both ways of giving the key: each 200 is
        // the mock accepting the key, so it was sent.
        for client in [&client, &header_client] {
            let response = client.send(request(None)).await.unwrap();
            assert_no_key("Debug of a response", &format!("{response:#?}"));
            assert_no_key("Debug of its meta", &format!("{:#?}", response.meta));
            let mut stream = client.stream(request(None)).await.unwrap();
            assert_no_key("Debug of a stream", &format!("{stream:#?}"));
            assert_no_key("Debug of a stream's meta", &format!("{:#?}", stream.meta()));
            let mut done = false;
            while let Some(event) = stream.next().await {
                let event = event.unwrap();
                done |= matches!(event, ChatEvent::Done(_));
                assert_no_key("Debug of a stream event", &format!("{event:#?}"));
            }
            assert!(done);
        }
        let response = header_transport.send(request(None)).await.unwrap();
        assert_no_key("Debug of a transport response", &format!("{response:#?}"));
        assert_eq!(mocks.good.counters().status(401), 0, "the key got through");
        assert_eq!(mocks.good.counters().status(200), 5);
        assert_eq!(mocks.good.counters().with_credentials(), 5);
        assert!(mocks.wire.with_key.load(Ordering::Relaxed) >= 5);
        mocks.wire.check();
    })
    .await
    .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_error_of_the_failure_matrix_shows_the_key_nor_does_its_panic() {
    capture();
    tokio::time::timeout(DEADLINE, async {
        let mocks = Mocks::start().await;
        for scenario in SCENARIOS {
            let error = failure(&mocks, scenario).await;
            assert!(
                expected_kind(scenario)(&error),
                "{scenario}: unexpected error {error:?}"
            );
            for (how, text) in renderings(&error) {
                assert_no_key(&format!("{scenario}: {how}"), &text);
            }
            let result = failed(error);
            let unwrapped = panic_text(move || result.unwrap());
            assert!(
                unwrapped.contains("called `Result::unwrap()` on an `Err` value"),
                "{unwrapped}"
            );
            assert_no_key(&format!("{scenario}: panic of unwrap"), &unwrapped);

            let result = failed(failure(&mocks, scenario).await);
            let expected = panic_text(move || result.expect("the call failed"));
            assert!(expected.contains("the call failed"), "{expected}");
            assert_no_key(&format!("{scenario}: panic of expect"), &expected);
        }
        // The 401 really was about this key: the mock saw it, masked it in its message.
        let error = failure(&mocks, SCENARIOS[0]).await;
        assert!(error.message().contains("cdef"), "{error}");
        assert!(mocks.other.counters().status(401) >= 3);
        // The redirects were not followed to the other host: the key stayed with its own.
        assert_eq!(mocks.good.counters().status(307), 2);
        assert_eq!(mocks.open.counters().status(307), 2);
        assert_eq!(mocks.open.counters().with_credentials(), 2);
        assert_eq!(mocks.elsewhere.counters().total(), 0);
        mocks.wire.check();
    })
    .await
    .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tracing_event_span_field_or_log_record_shows_the_key() {
    let buffer = capture();
    tokio::time::timeout(DEADLINE, async {
        let mocks = Mocks::start().await;
        // Successes over HTTP/1.1 and HTTP/2 (h2's own TRACE events), keyed by the auth layer
        // and by a transport header; unary and streamed.
        let clients = [
            mocks.client(mocks.good.url()).build().unwrap(),
            mocks
                .client(mocks.good.url())
                .transport(mocks.transport(true))
                .build()
                .unwrap(),
            Client::builder()
                .transport(
                    mocks
                        .transport(true)
                        .header("authorization", &format!("Bearer {KEY}")),
                )
                .base_url(mocks.good.url())
                .build()
                .unwrap(),
        ];
        for client in &clients {
            client.send(request(None)).await.unwrap();
            let mut stream = client.stream(request(None)).await.unwrap();
            while let Some(event) = stream.next().await {
                event.unwrap();
            }
            // And a 503 that is retried, so the retry layer logs.
            client.send(request(Some("503"))).await.unwrap_err();
        }
        // Every failure of the matrix, too.
        for scenario in SCENARIOS {
            failure(&mocks, scenario).await;
        }
        // Let the connections close and the servers log their ends.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let text = buffer.text();
        assert_no_key("the tracing and log output", &text);
        // It is not vacuous: the key got through, the trace layer's spans and the layers'
        // events are there, and so are the HTTP stacks' own.
        assert!(mocks.wire.with_key.load(Ordering::Relaxed) >= 9);
        assert_eq!(mocks.good.counters().status(401), 0);
        assert!(mocks.good.counters().http2_requests() >= 10);
        assert_eq!(mocks.elsewhere.counters().total(), 0);
        for expected in [
            "gen_ai.chat",
            "gen_ai.request.model",
            "retrying",
            "hyper_util",
            "h2::",
            "chatstack_mock",
            "log ",
            "...cdef",
        ] {
            assert!(
                text.contains(expected),
                "the capture has no `{expected}`: {} bytes",
                text.len()
            );
        }
        println!(
            "tracing and log capture: {} bytes, {} lines, no key",
            text.len(),
            text.lines().count()
        );
        mocks.wire.check();
    })
    .await
    .expect("the test finishes in time");
}

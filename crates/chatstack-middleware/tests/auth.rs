//! The auth layer: which header carries the key, where keys come from, rotation and
//! revocation, over `service_fn`s that inspect the request and over real loopback HTTP
//! through `HttpTransport` against chatstack-mock; and that the key shows up nowhere.
#![cfg(feature = "auth")]
#![forbid(unsafe_code)]

mod capture;
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chatstack_middleware::auth::{ApiKey, AuthLayer, AuthScheme, KeySource};
use chatstack_middleware::{ChatRequest, Error, ErrorKind, LlmRequest, Message};
use chatstack_mock::{MockConfig, MockServer};
use chatstack_transport::HttpTransport;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use secrecy::SecretString;
use support::{Answer, Ask, chat, stream};
use tower::{Layer, Service, ServiceExt};

use capture::Capture;

const KEY_A: &str = "sk-test-alpha-0123456789abcdefAAAA";
const KEY_B: &str = "sk-test-bravo-0123456789abcdefBBBB";
const KEY_C: &str = "sk-test-charlie-0123456789abcdCCCC";

fn key(text: &str) -> ApiKey {
    ApiKey::new(text).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini", [Message::user("Hello")])
}

/// A 401 as a provider sends it.
fn unauthorized() -> Error {
    Error::from_response(
        StatusCode::UNAUTHORIZED,
        &HeaderMap::new(),
        br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
    )
}

/// A 429 `insufficient_quota` as OpenAI sends it.
fn out_of_quota() -> Error {
    Error::from_response(
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
        br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
    )
}

/// An inner service that records the request headers it gets and answers with `answer`,
/// given the value of the header that carries the key.
#[derive(Clone)]
struct Inspect {
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Inspect {
    fn new() -> Self {
        Self {
            seen: Arc::default(),
        }
    }

    fn service(
        &self,
        answer: impl Fn(Option<&str>) -> Result<(), Error> + Clone + Send + 'static,
    ) -> impl Service<
        Ask,
        Response = Answer,
        Error = Error,
        Future = impl Future<Output = Result<Answer, Error>> + Send,
    > + Clone
    + Send {
        let seen = Arc::clone(&self.seen);
        tower::service_fn(move |request: Ask| {
            let headers = request.meta().headers.clone();
            let bearer = headers.get("authorization").map(|value| {
                value
                    .to_str()
                    .unwrap()
                    .trim_start_matches("Bearer ")
                    .to_owned()
            });
            let outcome = answer(bearer.as_deref());
            seen.lock().unwrap().push(headers);
            async move { outcome.map(|()| Answer::ok("done")) }
        })
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The key of each request, from its `Authorization: Bearer` header.
    fn bearer_keys(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|headers| {
                headers["authorization"]
                    .to_str()
                    .unwrap()
                    .strip_prefix("Bearer ")
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

fn always_ok(_: Option<&str>) -> Result<(), Error> {
    Ok(())
}

async fn send<S>(service: &mut S) -> Result<Answer, Error>
where
    S: Service<Ask, Response = Answer, Error = Error>,
{
    service.ready().await?.call(Ask::new("gpt-4o-mini")).await
}

async fn mock(config: MockConfig) -> (MockServer, HttpTransport) {
    let server = MockServer::start(config).await.unwrap();
    let transport = HttpTransport::builder()
        .base_url(server.url())
        .build()
        .unwrap();
    (server, transport)
}

fn with_header(mut request: ChatRequest, name: &'static str, value: &str) -> ChatRequest {
    request
        .meta
        .headers
        .insert(name, HeaderValue::from_str(value).unwrap());
    request
}

/// Set in the child process of [`in_child_with_env`].
const CHILD: &str = "CHATSTACK_AUTH_TEST_CHILD";

/// Runs the test named `test` again in a child process of this test binary with `vars` set
/// and fails if it fails there; returns `true` in the parent, which then has nothing left to
/// do. Environment variables belong to the whole process: setting them in a running,
/// multi-threaded test binary would take `unsafe`, which no crate of chatstack uses.
fn in_child_with_env(test: &str, vars: &[(&str, &str)]) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .envs(vars.iter().copied())
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{test} failed in its child process:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("chatstack-auth-{}-{name}", std::process::id()));
    std::fs::write(&path, content).unwrap();
    path
}

// --- Schemes ---------------------------------------------------------------------------

#[tokio::test]
async fn each_scheme_sets_its_header_marked_sensitive() {
    for (scheme, name, value) in [
        (
            AuthScheme::Bearer,
            "authorization",
            format!("Bearer {KEY_A}"),
        ),
        (AuthScheme::ApiKey, "api-key", KEY_A.to_owned()),
        (AuthScheme::XApiKey, "x-api-key", KEY_A.to_owned()),
    ] {
        assert_eq!(scheme.header_name(), name);
        let inspect = Inspect::new();
        let mut service = AuthLayer::new(key(KEY_A))
            .scheme(scheme)
            .layer(inspect.service(always_ok));
        send(&mut service).await.unwrap();
        let seen = inspect.seen.lock().unwrap();
        let headers = &seen[0];
        assert_eq!(headers.len(), 1, "{scheme:?}: only its own header");
        assert_eq!(headers[name], value.as_str(), "{scheme:?}");
        assert!(headers[name].is_sensitive(), "{scheme:?}");
        assert!(!format!("{headers:?}").contains(KEY_A), "{scheme:?}");
    }
}

#[tokio::test]
async fn bearer_over_the_wire_is_accepted_and_a_wrong_key_is_refused() {
    let (server, transport) = mock(MockConfig::default().api_key(KEY_A)).await;
    let mut right = AuthLayer::new(key(KEY_A)).layer(transport.clone());
    let response = chat(&mut right, request()).await.unwrap();
    assert_eq!(response.meta.status, StatusCode::OK);

    let mut wrong = AuthLayer::new(key(KEY_B)).layer(transport);
    let error = chat(&mut wrong, request()).await.unwrap_err();
    assert!(error.is_auth(), "{error}");
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(server.counters().status(200), 1);
    assert_eq!(server.counters().status(401), 1);
}

#[tokio::test]
async fn a_request_that_brings_its_own_key_keeps_it_and_never_revokes_a_pool_key() {
    let inspect = Inspect::new();
    let layer = AuthLayer::new(key(KEY_A));
    let mut service = layer.layer(inspect.service(|_| Err(unauthorized())));
    let mut ask = Ask::new("gpt-4o-mini");
    ask.meta
        .headers
        .insert("authorization", format!("Bearer {KEY_C}").parse().unwrap());
    let error = service.ready().await.unwrap().call(ask).await.unwrap_err();
    assert!(error.is_auth());
    assert_eq!(inspect.bearer_keys(), [KEY_C]);
    assert!(layer.revoked().is_empty(), "the pool's key was not used");
}

// --- Sources ---------------------------------------------------------------------------

#[tokio::test]
async fn env_var_is_trimmed_and_accepted_over_the_wire() {
    if in_child_with_env(
        "env_var_is_trimmed_and_accepted_over_the_wire",
        &[("CHATSTACK_TEST_TRIMMED_KEY", "sk-abc\n")],
    ) {
        return;
    }
    let (server, transport) = mock(MockConfig::default().api_key("sk-abc")).await;
    let mut service = AuthLayer::from_env("CHATSTACK_TEST_TRIMMED_KEY")
        .unwrap()
        .layer(transport);
    let response = chat(&mut service, request()).await.unwrap();
    assert_eq!(response.meta.status, StatusCode::OK);
    assert_eq!(server.counters().status(200), 1);
}

#[test]
fn env_var_errors_are_config_errors_that_name_the_variable_and_never_the_value() {
    if in_child_with_env(
        "env_var_errors_are_config_errors_that_name_the_variable_and_never_the_value",
        &[
            ("CHATSTACK_TEST_BLANK_KEY", " \r\n\t "),
            ("CHATSTACK_TEST_SPACED_KEY", "sk-two words-0123456789abcdef"),
        ],
    ) {
        return;
    }
    let blank = ApiKey::from_env("CHATSTACK_TEST_BLANK_KEY").unwrap_err();
    assert_eq!(blank.kind(), ErrorKind::Config);
    assert!(
        blank.to_string().contains("CHATSTACK_TEST_BLANK_KEY"),
        "{blank}"
    );
    assert!(blank.to_string().contains("empty"), "{blank}");

    let unset = AuthLayer::from_env("CHATSTACK_TEST_UNSET_KEY").unwrap_err();
    assert_eq!(unset.kind(), ErrorKind::Config);
    assert!(
        unset
            .to_string()
            .contains("CHATSTACK_TEST_UNSET_KEY is not set"),
        "{unset}"
    );

    let spaced = ApiKey::from_env("CHATSTACK_TEST_SPACED_KEY").unwrap_err();
    assert_eq!(spaced.kind(), ErrorKind::Config);
    let text = format!("{spaced} {spaced:?}");
    assert!(text.contains("CHATSTACK_TEST_SPACED_KEY"), "{text}");
    assert!(!text.contains("two words"), "{text}");

    // The classic slip: the key passed where the variable's name goes.
    let slip = ApiKey::from_env(KEY_A).unwrap_err();
    assert_eq!(slip.kind(), ErrorKind::Config);
    let text = format!("{slip} {slip:?}");
    assert!(!text.contains(KEY_A), "{text}");
    assert!(!text.contains(&KEY_A[..12]), "{text}");
}

#[tokio::test]
async fn file_source_is_trimmed_and_accepted_over_the_wire() {
    let path = temp_file("key", &format!("{KEY_B}\n"));
    let (server, transport) = mock(MockConfig::default().api_key(KEY_B)).await;
    let mut service = AuthLayer::new(ApiKey::from_file(&path).unwrap()).layer(transport);
    let response = chat(&mut service, request()).await.unwrap();
    assert_eq!(response.meta.status, StatusCode::OK);
    assert_eq!(server.counters().status(200), 1);
    std::fs::remove_file(&path).unwrap();

    let missing = ApiKey::from_file(&path).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Config);
    assert!(missing.to_string().contains("cannot be read"), "{missing}");
    let empty = temp_file("empty", "\n");
    let error = ApiKey::from_file(&empty).unwrap_err();
    assert!(error.to_string().contains("is empty"), "{error}");
    std::fs::remove_file(&empty).unwrap();
}

#[tokio::test]
async fn callback_is_called_per_request_and_its_keys_rotate() {
    let current = Arc::new(Mutex::new(KEY_A.to_owned()));
    let calls = Arc::new(AtomicU32::new(0));
    let source = KeySource::callback({
        let current = Arc::clone(&current);
        let calls = Arc::clone(&calls);
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(SecretString::from(format!("{}\n", current.lock().unwrap())))
        }
    });
    let inspect = Inspect::new();
    // The provider knows KEY_B only: KEY_A was rotated out of it.
    let mut service = AuthLayer::new(source).layer(inspect.service(|key| match key {
        Some(KEY_B) => Ok(()),
        _ => Err(unauthorized()),
    }));

    assert!(
        send(&mut service).await.unwrap_err().is_auth(),
        "KEY_A: 401"
    );
    // The callback still returns the refused key: the request is not sent.
    let error = send(&mut service).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Auth);
    assert_eq!(inspect.calls(), 1);
    // The vault rotates: the new key is used at once.
    *current.lock().unwrap() = KEY_B.to_owned();
    send(&mut service).await.unwrap();
    send(&mut service).await.unwrap();
    assert_eq!(inspect.bearer_keys(), [KEY_A, KEY_B, KEY_B]);
    assert_eq!(calls.load(Ordering::SeqCst), 4, "once per request");
}

#[tokio::test]
async fn callback_errors_fail_the_request_without_sending_it() {
    let inspect = Inspect::new();
    let source =
        KeySource::callback(|| Err(Error::new(ErrorKind::Connection, "the vault is down")));
    let mut service = AuthLayer::new(source).layer(inspect.service(always_ok));
    let error = send(&mut service).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connection);
    assert_eq!(error.message(), "the vault is down");

    let blank = KeySource::callback(|| Ok(SecretString::from(" \n")));
    let mut service = AuthLayer::new(blank).layer(inspect.service(always_ok));
    let error = send(&mut service).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("callback"), "{error}");
    assert_eq!(inspect.calls(), 0);
}

// --- Rotation and revocation -------------------------------------------------------------

#[tokio::test]
async fn a_pool_of_three_is_used_round_robin() {
    let inspect = Inspect::new();
    let mut service =
        AuthLayer::pool([key(KEY_A), key(KEY_B), key(KEY_C)]).layer(inspect.service(always_ok));
    for _ in 0..7 {
        send(&mut service).await.unwrap();
    }
    assert_eq!(
        inspect.bearer_keys(),
        [KEY_A, KEY_B, KEY_C, KEY_A, KEY_B, KEY_C, KEY_A]
    );
}

#[tokio::test]
async fn a_key_answered_401_leaves_the_rotation_and_the_others_share_the_load() {
    let inspect = Inspect::new();
    let layer = AuthLayer::pool([key(KEY_A), key(KEY_B), key(KEY_C)]);
    let mut service = layer.layer(inspect.service(|key| match key {
        Some(KEY_B) => Err(unauthorized()),
        _ => Ok(()),
    }));
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        outcomes.push(send(&mut service).await.is_ok());
    }
    assert_eq!(outcomes, [true, false, true, true, true, true, true]);
    assert_eq!(
        inspect.bearer_keys(),
        [KEY_A, KEY_B, KEY_C, KEY_A, KEY_C, KEY_A, KEY_C]
    );
    assert_eq!(layer.revoked(), [key(KEY_B).fingerprint()]);
}

#[tokio::test]
async fn insufficient_quota_leaves_the_rotation_too_but_a_403_or_a_429_does_not() {
    let inspect = Inspect::new();
    let layer = AuthLayer::pool([key(KEY_A), key(KEY_B), key(KEY_C)]);
    let mut service = layer.layer(inspect.service(|key| match key {
        Some(KEY_A) => Err(Error::from_response(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            b"",
        )),
        Some(KEY_B) => Err(out_of_quota()),
        _ => Err(Error::from_response(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            b"",
        )),
    }));
    for _ in 0..6 {
        let _ = send(&mut service).await;
    }
    assert_eq!(
        inspect.bearer_keys(),
        [KEY_A, KEY_B, KEY_C, KEY_A, KEY_C, KEY_A]
    );
    assert_eq!(layer.revoked(), [key(KEY_B).fingerprint()]);
}

#[tokio::test]
async fn revocation_over_the_wire_401_and_insufficient_quota_then_all_out_without_sending() {
    let (server, transport) = mock(MockConfig::default().api_key(KEY_B)).await;
    let layer = AuthLayer::pool([key(KEY_A), key(KEY_B), key(KEY_C)]);
    let mut service = layer.layer(transport);
    let capture = Capture::default();
    let _installed = capture.install();

    // KEY_A: a wrong key, 401.
    let first = chat(&mut service, request()).await.unwrap_err();
    assert!(first.is_auth(), "{first}");
    // KEY_B: the right key, but its account is out of credit.
    let second = chat(
        &mut service,
        with_header(request(), "x-mock-fault", "insufficient_quota"),
    )
    .await
    .unwrap_err();
    assert!(second.is_insufficient_quota(), "{second}");
    // KEY_C: a wrong key, 401.
    let third = chat(&mut service, request()).await.unwrap_err();
    assert!(third.is_auth(), "{third}");
    assert_eq!(server.counters().total(), 3);
    assert_eq!(server.counters().status(401), 2);
    assert_eq!(server.counters().status(429), 1);

    for _ in 0..3 {
        let error = chat(&mut service, request()).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Auth);
        assert_eq!(error.status(), None, "refused here, not by the provider");
        assert!(error.to_string().contains("not sent"), "{error}");
        // A stream is refused alike.
        let stream_error = stream(&mut service, request()).await.unwrap_err();
        assert_eq!(stream_error.kind(), ErrorKind::Auth);
    }
    assert_eq!(
        server.counters().total(),
        3,
        "nothing more reached the mock"
    );
    let events = capture.events();
    let revoked: Vec<_> = events
        .iter()
        .filter(|event| event.level == tracing::Level::WARN)
        .map(|event| {
            (
                event.field("key").unwrap(),
                event.field("error.kind").unwrap(),
                event.field("keys_in_rotation").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        revoked,
        [
            ("...AAAA", "Auth", "2"),
            ("...BBBB", "InsufficientQuota", "1"),
            ("...CCCC", "Auth", "0"),
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last.level, tracing::Level::ERROR);
    assert!(
        last.field("message")
            .unwrap()
            .contains("no API key is left")
    );

    // The account is topped up and the keys are fixed: everything is back.
    layer.reinstate_all();
    assert!(layer.revoked().is_empty());
    assert!(chat(&mut service, request()).await.unwrap_err().is_auth()); // KEY_A
    let response = chat(&mut service, request()).await.unwrap(); // KEY_B
    assert_eq!(response.meta.status, StatusCode::OK);
}

#[tokio::test]
async fn clones_of_the_layer_and_of_the_service_share_the_pool() {
    let inspect = Inspect::new();
    let layer = AuthLayer::pool([key(KEY_A), key(KEY_B)]);
    let refuse_a = |key: Option<&str>| match key {
        Some(KEY_A) => Err(unauthorized()),
        _ => Ok(()),
    };
    let mut first = layer.layer(inspect.service(refuse_a));
    let mut second = first.clone();
    let mut third = layer.clone().layer(inspect.service(refuse_a));
    assert!(send(&mut first).await.is_err()); // KEY_A, revoked for all
    for service in [&mut second, &mut third, &mut first] {
        send(service).await.unwrap();
    }
    assert_eq!(inspect.bearer_keys(), [KEY_A, KEY_B, KEY_B, KEY_B]);
    assert_eq!(layer.clone().revoked(), [key(KEY_A).fingerprint()]);
}

#[tokio::test]
async fn an_empty_pool_is_a_config_error_and_sends_nothing() {
    let inspect = Inspect::new();
    let mut service = AuthLayer::pool(Vec::<ApiKey>::new()).layer(inspect.service(always_ok));
    let error = send(&mut service).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert_eq!(inspect.calls(), 0);
}

#[tokio::test]
async fn builder_methods_start_a_fresh_pool() {
    let inspect = Inspect::new();
    let layer = AuthLayer::pool([key(KEY_A)]).revoke_if(|error| error.is_server());
    let mut service = layer.layer(inspect.service(|_| Err(unauthorized())));
    assert!(send(&mut service).await.unwrap_err().is_auth());
    assert!(layer.revoked().is_empty(), "a 401 no longer revokes");
    let layer = layer.revoke_if(|error| error.is_auth());
    let mut service = layer.layer(inspect.service(|_| Err(unauthorized())));
    assert!(send(&mut service).await.unwrap_err().is_auth());
    assert_eq!(layer.revoked().len(), 1);
    let fresh = layer.scheme(AuthScheme::XApiKey);
    assert!(fresh.revoked().is_empty());
}

// --- The key shows up nowhere ------------------------------------------------------------

/// Every text the test could see: Debug and Display output, error messages, and the capture.
struct Texts(Vec<String>);

impl Texts {
    fn add(&mut self, text: impl Into<String>) {
        self.0.push(text.into());
    }

    fn add_error(&mut self, error: &Error) {
        self.add(format!("{error}"));
        self.add(format!("{error:?}"));
        self.add(format!("{error:#?}"));
        self.add(error.message());
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            self.add(format!("{cause} {cause:?}"));
            source = cause.source();
        }
    }

    fn assert_no_key(&self, keys: &[&str]) {
        for text in &self.0 {
            for key in keys {
                // Neither the key, nor the part of it that a fingerprint does not show.
                assert!(!text.contains(key), "the key leaked into: {text}");
                let secret_part = &key[..key.len() - 4];
                assert!(
                    !text.contains(secret_part),
                    "part of a key leaked into: {text}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_key_appears_in_no_debug_display_error_or_trace_output() {
    let env_value = format!("{KEY_A}\n");
    if in_child_with_env(
        "the_key_appears_in_no_debug_display_error_or_trace_output",
        &[
            ("CHATSTACK_TEST_LEAK_KEY", env_value.as_str()),
            ("CHATSTACK_TEST_LEAK_BLANK", "\n"),
        ],
    ) {
        return;
    }
    let capture = Capture::default();
    let _installed = capture.install();
    let mut texts = Texts(Vec::new());

    let env_key = ApiKey::from_env("CHATSTACK_TEST_LEAK_KEY").unwrap();
    let blank = ApiKey::from_env("CHATSTACK_TEST_LEAK_BLANK").unwrap_err();
    texts.add_error(&blank);
    let spaced = ApiKey::new(format!("{KEY_C} {KEY_C}")).unwrap_err();
    texts.add_error(&spaced);

    let (server, transport) = mock(MockConfig::default().api_key(KEY_A)).await;
    let callback = KeySource::callback(|| Ok(SecretString::from(KEY_C)));
    let layer = AuthLayer::pool([
        KeySource::from(env_key.clone()),
        KeySource::from(key(KEY_B)),
        callback.clone(),
    ]);
    let mut service = layer.layer(transport.clone());
    for item in [
        format!("{env_key:?} {env_key} {env_key:#?}"),
        format!("{:?} {}", env_key.fingerprint(), env_key.fingerprint()),
        format!("{callback:?} {:?}", KeySource::from(key(KEY_B))),
        format!("{layer:?} {layer:#?}"),
        format!("{service:?} {service:#?}"),
    ] {
        texts.add(item);
    }

    // Success (KEY_A), a stream too; a wrong key's 401 (KEY_B); insufficient_quota (the
    // callback's KEY_C is wrong too: a 401 before the fault); then all out.
    let ok = chat(&mut service, request()).await.unwrap();
    texts.add(format!("{ok:?}"));
    let wrong = chat(&mut service, request()).await.unwrap_err();
    assert!(wrong.is_auth());
    texts.add_error(&wrong);
    let quota = chat(
        &mut service,
        with_header(request(), "x-mock-fault", "insufficient_quota"),
    )
    .await
    .unwrap_err();
    texts.add_error(&quota);
    let mut chunks = stream(&mut service, request()).await.unwrap();
    texts.add(format!("{chunks:?}"));
    while let Some(chunk) = chunks.next().await {
        chunk.unwrap();
    }
    drop(chunks);

    // KEY_A out of credit: now nothing is left.
    let quota = chat(
        &mut service,
        with_header(request(), "x-mock-fault", "insufficient_quota"),
    )
    .await
    .unwrap_err();
    assert!(quota.is_insufficient_quota(), "{quota}");
    texts.add_error(&quota);
    let all_out = chat(&mut service, request()).await.unwrap_err();
    assert_eq!(all_out.kind(), ErrorKind::Auth);
    texts.add_error(&all_out);
    texts.add(format!("{layer:?} {service:?}"));
    assert_eq!(server.counters().total(), 5);

    let captured = capture.text();
    // The capture saw the revocations, named by fingerprint.
    let revoked: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|event| event.field("message") == Some("API key taken out of rotation"))
        .map(|event| event.field("key").unwrap().to_owned())
        .collect();
    assert_eq!(revoked, ["...BBBB", "...CCCC", "...AAAA"], "{captured}");
    texts.add(captured);
    texts.assert_no_key(&[KEY_A, KEY_B, KEY_C]);
}

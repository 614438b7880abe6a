//! Keys stay where they belong: redirects to another origin are not followed (whatever the
//! key header), redirects within the origin are, and a key bound for another machine over
//! plain http is warned about (naming the host, never the key) or, with `https_only`, refused.

mod capture;
mod common;

use std::time::Duration;

use chatstack_mock::MockServer;
use chatstack_proto::{ErrorKind, StreamRequest};
use chatstack_transport::HttpTransport;
use common::*;
use tracing::Level;

const KEY: &str = "sk-secret-key-123";

/// A transport on `mock` that sends `header: value` with every request.
fn keyed(mock: &MockServer, header: &str, value: &str) -> HttpTransport {
    HttpTransport::builder()
        .base_url(mock.url())
        .header(header, value)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed_whatever_the_key_header() {
    let origin = mock().await;
    let other = mock().await;
    // `localhost` is another host than `127.0.0.1` to a client, though the same machine.
    let target = format!(
        "http://localhost:{}/v1/chat/completions?token=abc",
        other.addr().port()
    );
    let fault = format!("redirect:{target}");
    let bearer = format!("Bearer {KEY}");
    for (header, value) in [
        ("authorization", bearer.as_str()),
        ("api-key", KEY),
        ("x-api-key", KEY),
    ] {
        let transport = keyed(&origin, header, value);
        for streaming in [false, true] {
            let error = if streaming {
                transport
                    .stream(StreamRequest(with_fault(&fault)))
                    .await
                    .unwrap_err()
            } else {
                transport.send(with_fault(&fault)).await.unwrap_err()
            };
            assert_eq!(error.kind(), ErrorKind::Status, "{header}: {error:?}");
            assert_eq!(error.status().map(|s| s.as_u16()), Some(307));
            assert!(!error.is_retryable());
            let text = error.to_string();
            assert!(text.contains("not followed"), "{text}");
            assert!(
                text.contains(&format!("http://localhost:{}", other.addr().port())),
                "names the origin it pointed to: {text}"
            );
            assert!(
                !text.contains("token=abc"),
                "but not its path or query: {text}"
            );
            assert!(!format!("{text} {error:?}").contains(KEY));
        }
    }
    // Nothing reached the other server; the origin saw every key.
    assert_eq!(other.counters().total(), 0);
    assert_eq!(other.counters().with_credentials(), 0);
    assert_eq!(origin.counters().status(307), 6);
    assert_eq!(origin.counters().with_credentials(), 6);
}

#[tokio::test]
async fn a_redirect_within_the_origin_is_followed_with_the_key() {
    let mock = mock().await;
    let transport = keyed(&mock, "api-key", KEY);
    let fault = format!("redirect:{}?hop=1", mock.chat_completions_url());
    let unary = transport.send(with_fault(&fault)).await.unwrap();
    assert!(unary.text().is_some());
    let stream = transport
        .stream(StreamRequest(with_fault(
            "redirect:/v1/chat/completions?hop=1",
        )))
        .await
        .unwrap();
    let (text, _, error) = drain(stream).await;
    assert!(error.is_none() && !text.is_empty(), "{error:?}");
    let counters = mock.counters();
    assert_eq!(counters.status(307), 2);
    assert_eq!(counters.status(200), 2);
    assert_eq!(
        counters.with_credentials(),
        4,
        "the key followed, to the same host"
    );
}

#[tokio::test]
async fn a_redirect_loop_stops_after_five_hops() {
    let mock = mock().await;
    // Two redirects that point at each other: at `?a` the first is where it points, so the
    // second applies, and the other way round.
    let faults = "redirect:/v1/chat/completions?a, redirect:/v1/chat/completions?b";
    let error = transport(&mock).send(with_fault(faults)).await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(307), "{error:?}");
    assert!(error.to_string().contains("at most 5"), "{error}");
    // The request, five redirects followed, and the sixth returned.
    assert_eq!(mock.counters().status(307), 6);
    assert_eq!(mock.counters().total(), 6);
}

#[test]
fn https_only_refuses_plain_http_even_to_loopback() {
    let error = HttpTransport::builder()
        .base_url("http://127.0.0.1:8080/v1")
        .https_only(true)
        .build()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("https_only"), "{error}");
}

/// The warnings `build` logs for a base URL and a header.
fn build_warnings(base_url: &str, header: &str) -> Vec<capture::Captured> {
    let (result, events) = capture::capture(|| {
        HttpTransport::builder()
            .base_url(base_url)
            .header(header, KEY)
            .build()
    });
    result.unwrap();
    events
        .into_iter()
        .filter(|event| event.level == Level::WARN && event.target.starts_with("chatstack"))
        .collect()
}

#[test]
fn a_key_over_plain_http_to_another_machine_is_warned_about() {
    for header in ["authorization", "api-key", "x-api-key"] {
        let warnings = build_warnings("http://api.example.com:8080/v1", header);
        assert_eq!(warnings.len(), 1, "{header}: {warnings:?}");
        let text = &warnings[0].text;
        assert!(text.contains("api.example.com"), "names the host: {text}");
        assert!(text.contains("plain http"), "{text}");
        assert!(!text.contains(KEY), "never the key: {text}");
    }
    // Loopback, https, or no key: nothing to warn about.
    for (base, header) in [
        ("http://127.0.0.1:8080/v1", "authorization"),
        ("http://127.3.2.1/v1", "api-key"),
        ("http://localhost:11434/v1", "authorization"),
        ("http://[::1]:8000/v1", "x-api-key"),
        ("https://api.example.com/v1", "authorization"),
        ("http://api.example.com/v1", "x-team"),
    ] {
        assert!(build_warnings(base, header).is_empty(), "{base} {header}");
    }
}

#[test]
fn a_key_added_per_request_is_warned_about_once() {
    let (_, events) = capture::capture(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // TEST-NET-1: never answers; the warning comes before any I/O.
            let transport = HttpTransport::builder()
                .base_url("http://192.0.2.1/v1")
                .timeout(Duration::from_millis(1))
                .build()
                .unwrap();
            for _ in 0..3 {
                let mut request = request();
                request
                    .meta
                    .headers
                    .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
                assert!(transport.send(request).await.is_err());
            }
            assert!(transport.send(self::request()).await.is_err());
        });
    });
    let warnings: Vec<_> = events
        .iter()
        .filter(|event| event.level == Level::WARN && event.target.starts_with("chatstack"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].text.contains("192.0.2.1"));
    assert!(!warnings[0].text.contains(KEY));
}

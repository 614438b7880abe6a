//! The transport against the mock's faults of a response that is not what it claims to be:
//! no answer at all, the wrong content type, invalid UTF-8, an error inside a 200, a corrupt
//! compressed body, an endless drip, and bodies past the size cap. Each one ends in a typed
//! error (or, for a drip stream, in chunks as they come), never in a panic or a hang.

mod common;

use std::time::{Duration, Instant};

use chatstack_mock::{MockConfig, MockServer};
use chatstack_proto::{ErrorKind, StreamRequest, TimeoutKind};
use chatstack_transport::HttpTransport;
use common::*;
use futures_util::StreamExt;

/// A transport on `mock` with a total timeout.
fn with_timeout(mock: &MockServer, timeout: Duration) -> HttpTransport {
    HttpTransport::builder()
        .base_url(mock.url())
        .timeout(timeout)
        .build()
        .unwrap()
}

#[tokio::test]
async fn no_answer_ends_with_the_total_timeout_within_its_limit() {
    // The mock would hold on for a minute: the client's timeout is what ends it.
    let mock = MockServer::start(MockConfig::default().stall_cap(Duration::from_secs(60)))
        .await
        .unwrap();
    let limit = Duration::from_millis(300);
    let transport = with_timeout(&mock, limit);
    for streaming in [false, true] {
        let started = Instant::now();
        let error = if streaming {
            transport
                .stream(StreamRequest(with_fault("no_answer")))
                .await
                .unwrap_err()
        } else {
            transport.send(with_fault("no_answer")).await.unwrap_err()
        };
        let elapsed = started.elapsed();
        assert_eq!(
            error.kind(),
            ErrorKind::Timeout(TimeoutKind::Total),
            "streaming={streaming}: {error:?}"
        );
        assert!(error.is_retryable());
        assert!(elapsed >= limit, "{elapsed:?}");
        assert!(elapsed < limit + Duration::from_secs(3), "{elapsed:?}");
    }
    assert_eq!(mock.counters().snapshot().fault("no_answer"), 2);
}

#[tokio::test]
async fn an_html_page_is_a_decode_error_that_names_the_content_type() {
    let mock = mock().await;
    let transport = transport(&mock);
    let unary = transport
        .send(with_fault("wrong_content_type"))
        .await
        .unwrap_err();
    assert_eq!(unary.kind(), ErrorKind::Decode, "{unary:?}");
    assert!(unary.to_string().contains("`text/html`"), "{unary}");
    assert!(unary.body().unwrap().starts_with("<!DOCTYPE html>"));
    assert_eq!(unary.status().map(|s| s.as_u16()), Some(200));
    assert!(unary.request_id().is_some());
    assert!(!unary.is_retryable());

    // A stream request gets the error at once, not a stream that ends without a chunk.
    let stream = transport
        .stream(StreamRequest(with_fault("wrong_content_type")))
        .await
        .unwrap_err();
    assert_eq!(stream.kind(), ErrorKind::Decode, "{stream:?}");
    assert!(stream.to_string().contains("`text/html`"), "{stream}");
    assert!(stream.body().unwrap().contains("Sign in"));
    assert!(stream.request_id().is_some());
}

#[tokio::test]
async fn invalid_utf8_is_a_decode_error_after_the_chunks_before_it() {
    let mock = mock().await;
    let transport = transport(&mock);
    let unary = transport
        .send(with_fault("invalid_utf8"))
        .await
        .unwrap_err();
    assert_eq!(unary.kind(), ErrorKind::Decode, "{unary:?}");
    assert!(!unary.is_retryable());

    let whole = transport.send(request()).await.unwrap();
    let whole = whole.text().unwrap();
    for nth in [1usize, 3] {
        let stream = transport
            .stream(StreamRequest(with_fault(&format!("invalid_utf8:{nth}"))))
            .await
            .unwrap();
        let (text, chunks, error) = drain(stream).await;
        let error = error.expect("the bad chunk ends the stream");
        assert_eq!(error.kind(), ErrorKind::Decode, "{error:?}");
        assert!(error.to_string().contains("UTF-8"), "{error}");
        // The role chunk and the content chunks before the bad one, and their text.
        assert_eq!(chunks, nth, "invalid_utf8:{nth}");
        let words: Vec<&str> = whole.split(' ').take(nth - 1).collect();
        assert_eq!(text, words.join(" "));
    }
}

#[tokio::test]
async fn an_error_in_a_200_is_the_providers_error() {
    let mock = mock().await;
    let transport = transport(&mock);
    let unary = transport
        .send(with_fault("error_in_200"))
        .await
        .unwrap_err();
    assert_eq!(unary.kind(), ErrorKind::Server, "{unary:?}");
    assert_eq!(unary.status().map(|s| s.as_u16()), Some(200));
    let provider = unary.provider().expect("the envelope is kept");
    assert_eq!(provider.kind.as_deref(), Some("server_error"));
    assert_eq!(provider.code.as_deref(), Some("internal_error"));
    assert!(unary.is_retryable());

    let stream = transport
        .stream(StreamRequest(with_fault("error_in_200")))
        .await
        .unwrap();
    let (_, chunks, error) = drain(stream).await;
    assert_eq!(chunks, 0);
    let error = error.expect("the error event is the stream's first item");
    assert_eq!(error.kind(), ErrorKind::Server, "{error:?}");
    assert_eq!(
        error.provider().and_then(|p| p.code.as_deref()),
        Some("internal_error")
    );
}

#[tokio::test]
async fn a_compressed_body_is_a_decode_error() {
    let mock = mock().await;
    let transport = transport(&mock);
    let unary = transport
        .send(with_fault("corrupt_gzip"))
        .await
        .unwrap_err();
    let stream = transport
        .stream(StreamRequest(with_fault("corrupt_gzip")))
        .await
        .unwrap_err();
    for error in [unary, stream] {
        assert_eq!(error.kind(), ErrorKind::Decode, "{error:?}");
        assert!(error.to_string().contains("`gzip`-encoded"), "{error}");
        assert!(!error.is_retryable());
        assert!(error.request_id().is_some());
    }
    // The transport never asked for compression.
    assert_eq!(mock.counters().status(200), 2);
}

#[tokio::test]
async fn a_unary_drip_ends_with_the_total_timeout() {
    let mock = MockServer::start(MockConfig::default().stall_cap(Duration::from_secs(60)))
        .await
        .unwrap();
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let error = with_timeout(&mock, limit)
        .send(with_fault("drip:10"))
        .await
        .unwrap_err();
    assert_eq!(error.timeout_kind(), Some(TimeoutKind::Total), "{error:?}");
    assert!(started.elapsed() < limit + Duration::from_secs(3));
}

#[tokio::test]
async fn a_drip_stream_yields_its_empty_chunks_as_they_come() {
    let mock = MockServer::start(MockConfig::default().stall_cap(Duration::from_secs(60)))
        .await
        .unwrap();
    // The total timeout covers a stream until its headers; the body is the timeout layer's.
    let limit = Duration::from_millis(100);
    let started = Instant::now();
    let mut stream = with_timeout(&mock, limit)
        .stream(StreamRequest(with_fault("drip:20")))
        .await
        .unwrap();
    let role = stream.next().await.unwrap().unwrap();
    assert_eq!(role.text().collect::<String>(), "");
    // An empty chunk every 40 ms (a comment in between): each one comes as it is sent, long
    // before the one-minute drip would end.
    for _ in 0..6 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a chunk comes as soon as it is sent")
            .unwrap()
            .unwrap();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some(""));
    }
    assert!(
        started.elapsed() > limit,
        "past the total timeout, still flowing"
    );
    assert_eq!(mock.counters().in_flight_streams(), 1);
    drop(stream);
}

#[tokio::test]
async fn bodies_past_the_cap_are_refused_without_being_read_whole() {
    const CAP: usize = 256 * 1024;
    // 64 MiB offered; the client must stop long before. The socket buffers hold a few MiB.
    const OFFERED: &str = "oversized:67108864";
    const EARLY: u64 = 32 * 1024 * 1024;
    let mock = mock().await;
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .max_response_bytes(CAP)
        .build()
        .unwrap();

    // Unary with a Content-Length: refused from the headers.
    let error = transport.send(with_fault(OFFERED)).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BodyTooLarge, "{error:?}");
    let after_unary = settled_bytes_written(&mock).await;
    assert!(after_unary < EARLY, "{after_unary}");

    // Unary without a length (an endless fast body): refused as the count passes the cap.
    let error = transport.send(with_fault("drip:0")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BodyTooLarge, "{error:?}");
    assert!(error.to_string().contains(&CAP.to_string()), "{error}");
    let after_drip = settled_bytes_written(&mock).await;
    assert!(
        after_drip - after_unary < EARLY,
        "{}",
        after_drip - after_unary
    );

    // A stream whose one event outgrows the cap.
    let stream = transport
        .stream(StreamRequest(with_fault(OFFERED)))
        .await
        .unwrap();
    let (_, _, error) = drain(stream).await;
    let error = error.expect("the event is too large");
    assert_eq!(error.kind(), ErrorKind::BodyTooLarge, "{error:?}");
    let after_stream = settled_bytes_written(&mock).await;
    assert!(
        after_stream - after_drip < EARLY,
        "{}",
        after_stream - after_drip
    );
}

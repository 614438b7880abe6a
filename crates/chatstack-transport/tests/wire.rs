//! The transport over real loopback HTTP against chatstack-mock: successes, HTTP/2, the
//! status and connection faults, and the typed error each one maps to. The faults of a body
//! that is not what it claims are in `faults.rs`; redirects and cleartext keys in
//! `security.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatstack_mock::{MockConfig, MockServer};
use chatstack_proto::{ErrorKind, LlmResponse, StreamRequest, TimeoutKind, Usage};
use chatstack_transport::HttpTransport;
use common::*;
use futures_util::StreamExt;
use tower::ServiceExt;

#[tokio::test]
async fn unary_success_carries_body_and_metadata() {
    let mock = mock().await;
    let response = transport(&mock).send(request()).await.unwrap();
    assert!(!response.text().unwrap().is_empty());
    let usage = response.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(response.meta.status, 200);
    assert_eq!(response.meta.attempts, 1);
    assert!(response.meta.request_id.is_some());
    assert!(response.meta.rate_limit.is_present());
    assert_eq!(mock.counters().status(200), 1);
}

#[tokio::test]
async fn a_stream_yields_the_same_text_and_usage_as_the_unary_call() {
    let mock = mock().await;
    let transport = transport(&mock);
    let unary = transport.send(request()).await.unwrap();

    let usage_seen = Arc::new(Mutex::new(None::<Usage>));
    let seen = Arc::clone(&usage_seen);
    let stream = transport
        .stream(StreamRequest(request().include_usage()))
        .await
        .unwrap()
        .on_complete(move |completion| {
            *seen.lock().unwrap() = completion.usage.copied();
        });
    assert_eq!(stream.meta().status, 200);
    let streamed = stream.collect_response().await.unwrap();
    assert_eq!(streamed.text(), unary.text());
    assert_eq!(streamed.usage, unary.usage);
    assert_eq!(*usage_seen.lock().unwrap(), unary.usage);
    assert_eq!(streamed.finish_reasons(), unary.finish_reasons());
}

#[tokio::test]
async fn the_transport_is_a_tower_service_for_both_kinds_of_request() {
    let mock = mock().await;
    let transport = transport(&mock);
    let unary = transport.clone().oneshot(request()).await.unwrap();
    let stream = transport.oneshot(StreamRequest(request())).await.unwrap();
    let (text, chunks, error) = drain(stream).await;
    assert!(error.is_none());
    assert!(chunks > 1);
    assert_eq!(Some(text.as_str()), unary.text());
}

#[tokio::test]
async fn a_request_marked_unary_is_never_streamed_and_vice_versa() {
    let mock = mock().await;
    let transport = transport(&mock);
    let mut unary = request();
    unary.stream = Some(true);
    assert!(transport.send(unary).await.is_ok());
    let mut streamed = request();
    streamed.stream = Some(false);
    let (_, chunks, error) = drain(transport.stream(StreamRequest(streamed)).await.unwrap()).await;
    assert!(error.is_none() && chunks > 1);
}

#[tokio::test]
async fn every_status_fault_maps_to_its_kind() {
    let mock = mock().await;
    let transport = transport(&mock);
    let cases: &[(&str, u16, ErrorKind, bool)] = &[
        ("rate_limit:3", 429, ErrorKind::RateLimited, true),
        (
            "insufficient_quota",
            429,
            ErrorKind::InsufficientQuota,
            false,
        ),
        ("500", 500, ErrorKind::Server, true),
        ("502", 502, ErrorKind::Server, true),
        ("503", 503, ErrorKind::Server, true),
        ("529", 529, ErrorKind::Overloaded, true),
        ("401", 401, ErrorKind::Auth, false),
        (
            "context_length_exceeded",
            400,
            ErrorKind::ContextLengthExceeded,
            false,
        ),
    ];
    for &(fault, status, kind, retryable) in cases {
        for streaming in [false, true] {
            let error = if streaming {
                transport
                    .stream(StreamRequest(with_fault(fault)))
                    .await
                    .unwrap_err()
            } else {
                transport.send(with_fault(fault)).await.unwrap_err()
            };
            assert_eq!(error.kind(), kind, "{fault} streaming={streaming}: {error}");
            assert_eq!(error.status().map(|s| s.as_u16()), Some(status), "{fault}");
            assert_eq!(error.is_retryable(), retryable, "{fault}");
            assert!(error.request_id().is_some(), "{fault}: request id kept");
            assert_eq!(error.attempts(), 1);
        }
    }
    // 16 requests, all counted at the mock.
    assert_eq!(mock.counters().total(), 16);
}

#[tokio::test]
async fn retry_after_in_every_form_is_kept() {
    let mock = mock().await;
    let transport = transport(&mock);
    let seconds = transport
        .send(with_fault("rate_limit:3"))
        .await
        .unwrap_err();
    assert_eq!(seconds.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(seconds.rate_limit().remaining_requests, Some(0));
    let millis = transport
        .send(with_fault("rate_limit_ms:250"))
        .await
        .unwrap_err();
    assert_eq!(millis.retry_after(), Some(Duration::from_millis(250)));
    let date = transport
        .send(with_fault("rate_limit_date:5"))
        .await
        .unwrap_err();
    let wait = date.retry_after().unwrap();
    // An HTTP date has one-second resolution.
    assert!(
        wait <= Duration::from_secs(5) && wait >= Duration::from_secs(3),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_reset_connection_is_a_retryable_connection_error() {
    let mock = mock().await;
    let transport = transport(&mock);
    for streaming in [false, true] {
        let error = if streaming {
            transport
                .stream(StreamRequest(with_fault("reset")))
                .await
                .unwrap_err()
        } else {
            transport.send(with_fault("reset")).await.unwrap_err()
        };
        assert!(
            matches!(error.kind(), ErrorKind::Connection | ErrorKind::Incomplete),
            "{error:?}"
        );
        assert!(error.is_retryable());
    }
    // The pool recovers: the next request on the same transport succeeds.
    assert!(transport.send(request()).await.is_ok());
}

#[tokio::test]
async fn a_truncated_body_is_incomplete_not_a_decode_error() {
    let mock = mock().await;
    let transport = transport(&mock);
    let unary = transport.send(with_fault("truncated")).await.unwrap_err();
    assert_eq!(unary.kind(), ErrorKind::Incomplete, "{unary:?}");
    assert!(unary.is_retryable());

    let stream = transport
        .stream(StreamRequest(with_fault("truncated")))
        .await
        .unwrap();
    let (text, chunks, error) = drain(stream).await;
    let error = error.expect("a cut stream ends with an error, not quietly");
    assert_eq!(error.kind(), ErrorKind::Incomplete, "{error:?}");
    assert!(
        chunks >= 1 && !text.is_empty(),
        "chunks before the cut arrive"
    );
}

#[tokio::test]
async fn a_completed_stream_ends_quietly_after_done() {
    let mock = mock().await;
    let stream = transport(&mock)
        .stream(StreamRequest(request()))
        .await
        .unwrap();
    let (_, _, error) = drain(stream).await;
    assert!(error.is_none());
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_with_the_body() {
    let mock = mock().await;
    let transport = transport(&mock);
    let unary = transport
        .send(with_fault("malformed_json"))
        .await
        .unwrap_err();
    assert!(unary.is_decode(), "{unary:?}");
    assert!(unary.body().is_some_and(|b| !b.is_empty()));
    assert_eq!(unary.status().map(|s| s.as_u16()), Some(200));

    let stream = transport
        .stream(StreamRequest(with_fault("malformed_json")))
        .await
        .unwrap();
    let (_, _, error) = drain(stream).await;
    assert!(error.expect("a broken chunk is an error").is_decode());
}

#[tokio::test]
async fn an_oversized_body_is_refused_at_the_cap() {
    let mock = mock().await;
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .max_response_bytes(1024 * 1024)
        .build()
        .unwrap();
    let unary = transport
        .send(with_fault("oversized:4000000"))
        .await
        .unwrap_err();
    assert_eq!(unary.kind(), ErrorKind::BodyTooLarge, "{unary:?}");

    let stream = transport
        .stream(StreamRequest(with_fault("oversized:4000000")))
        .await
        .unwrap();
    let (_, _, error) = drain(stream).await;
    assert_eq!(error.unwrap().kind(), ErrorKind::BodyTooLarge);
    // Under the cap, the same fault is an ordinary success.
    let small = transport.send(with_fault("oversized:100000")).await;
    assert!(small.is_ok(), "{small:?}");
}

#[tokio::test]
async fn a_mid_stream_error_event_ends_the_stream_with_the_provider_error() {
    let mock = mock().await;
    let transport = transport(&mock);
    let stream = transport
        .stream(StreamRequest(with_fault("mid_stream_error:3")))
        .await
        .unwrap();
    let (text, chunks, error) = drain(stream).await;
    let error = error.expect("the error event surfaces");
    assert!(error.provider().is_some(), "{error:?}");
    assert_ne!(error.kind(), ErrorKind::Incomplete);
    assert!(chunks >= 3 && !text.is_empty());

    // Unary: a 200 whose body is an error envelope is an error, not an empty success.
    let unary = transport
        .send(with_fault("mid_stream_error"))
        .await
        .unwrap_err();
    assert!(unary.provider().is_some(), "{unary:?}");
    assert_eq!(unary.status().map(|s| s.as_u16()), Some(200));
}

#[tokio::test]
async fn a_stalled_unary_response_hits_the_total_timeout() {
    let mock = MockServer::start(MockConfig::default().stall_cap(Duration::from_secs(5)))
        .await
        .unwrap();
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = transport.send(with_fault("stall")).await.unwrap_err();
    assert_eq!(error.timeout_kind(), Some(TimeoutKind::Total), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn nothing_listening_is_a_connection_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let transport = HttpTransport::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let error = transport.send(request()).await.unwrap_err();
    assert!(error.is_connection(), "{error:?}");
    assert!(error.is_retryable());
    assert!(!error.to_string().contains("127.0.0.1"), "no URL in errors");
}

#[tokio::test]
async fn per_request_headers_reach_the_server_and_keys_stay_out_of_errors() {
    let mock = MockServer::start(MockConfig::default().api_key("sk-mock-right"))
        .await
        .unwrap();
    let transport = transport(&mock);
    let mut authorized = request();
    authorized
        .meta
        .headers
        .insert("authorization", "Bearer sk-mock-right".parse().unwrap());
    assert!(transport.send(authorized).await.is_ok());

    let mut wrong = request();
    wrong
        .meta
        .headers
        .insert("authorization", "Bearer sk-mock-wrong".parse().unwrap());
    let error = transport.send(wrong).await.unwrap_err();
    assert!(error.is_auth());
    let text = format!("{error} {error:?}");
    assert!(
        !text.contains("sk-mock-wrong") && !text.contains("sk-mock-right"),
        "{text}"
    );
}

#[tokio::test]
async fn dropping_a_stream_early_reports_it_as_cancelled() {
    let mock = mock().await;
    let cancelled = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&cancelled);
    let mut request = request();
    request
        .meta
        .headers
        .insert("x-mock-reply-tokens", "50".parse().unwrap());
    let mut stream = transport(&mock)
        .stream(StreamRequest(request))
        .await
        .unwrap()
        .on_complete(move |completion| {
            *seen.lock().unwrap() = Some(completion.cancelled);
        });
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(*cancelled.lock().unwrap(), None, "not complete yet");
    drop(stream);
    assert_eq!(*cancelled.lock().unwrap(), Some(true));
}

#[tokio::test]
async fn http2_with_prior_knowledge_serves_unary_and_streams() {
    let mock = mock().await;
    let transport = HttpTransport::builder()
        .base_url(mock.url())
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let unary = transport.send(request()).await.unwrap();
    let streamed = transport
        .stream(StreamRequest(request().include_usage()))
        .await
        .unwrap()
        .collect_response()
        .await
        .unwrap();
    assert_eq!(streamed.text(), unary.text());
    assert_eq!(streamed.usage, unary.usage);
    assert_eq!(mock.counters().http2_requests(), 2, "both over HTTP/2");
    // A fault still maps to its kind.
    let error = transport.send(with_fault("503")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Server);
    assert_eq!(mock.counters().http2_requests(), 3);

    // Off (the default), the transport speaks HTTP/1.1 to a plain-http server.
    common::transport(&mock).send(request()).await.unwrap();
    assert_eq!(mock.counters().http2_requests(), 3);
    assert_eq!(mock.counters().total(), 4);
}

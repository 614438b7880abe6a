//! Every fault does what it says, over real loopback HTTP (raw TCP for the broken ones).

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant, SystemTime};

use chatstack_mock::{Fault, MockConfig, MockServer};
use chatstack_proto::{Error, ErrorKind as ProtoKind, RateLimitSnapshot};
use common::*;
use serde_json::{Value, json};

/// Posts with `x-mock-fault: fault` and classifies the answer as chatstack-proto would.
async fn error_for(server: &MockServer, fault: &str) -> (reqwest::Response, Error) {
    let response = post(server, &body("fault"), &[("x-mock-fault", fault)]).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let error = Error::from_response(status, &headers, &bytes);
    let again = post(server, &body("fault"), &[("x-mock-fault", fault)]).await;
    (again, error)
}

#[tokio::test]
async fn rate_limit_faults_carry_retry_headers() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();

    let (response, error) = error_for(&server, "rate_limit:3").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert!(response.headers().get("retry-after-ms").is_none());
    let snapshot = RateLimitSnapshot::from_headers(response.headers());
    assert_eq!(snapshot.remaining_requests, Some(0));
    assert_eq!(snapshot.remaining_tokens, Some(0));
    assert_eq!(snapshot.reset_requests, Some(Duration::from_secs(3)));
    assert!(response.headers().contains_key("x-request-id"));
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "rate_limit_exceeded");
    assert!(envelope["error"]["param"].is_null());
    assert!(error.is_rate_limited() && !error.is_insufficient_quota() && error.is_retryable());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    assert!(error.request_id().is_some());

    let (response, error) = error_for(&server, "rate_limit_date:5").await;
    assert_eq!(response.status(), 429);
    let date = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();
    let when = httpdate::parse_http_date(&date).unwrap();
    let wait = when.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        wait <= Duration::from_secs(6) && wait >= Duration::from_secs(3),
        "{date}"
    );
    assert!(error.retry_after().unwrap() >= Duration::from_secs(3));

    let (response, error) = error_for(&server, "rate_limit_ms:250").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after-ms"], "250");
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(error.retry_after(), Some(Duration::from_millis(250)));

    let (response, error) = error_for(&server, "insufficient_quota").await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none());
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["error"]["type"], "insufficient_quota");
    assert_eq!(envelope["error"]["code"], "insufficient_quota");
    assert!(error.is_insufficient_quota() && !error.is_retryable());
}

#[tokio::test]
async fn status_faults_send_their_status_and_envelope() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for (fault, status, kind) in [
        ("server_error", 500, ProtoKind::Server),
        ("500", 500, ProtoKind::Server),
        ("unavailable", 503, ProtoKind::Server),
        ("overloaded", 529, ProtoKind::Overloaded),
        ("unauthorized", 401, ProtoKind::Auth),
        (
            "context_length_exceeded",
            400,
            ProtoKind::ContextLengthExceeded,
        ),
    ] {
        let (response, error) = error_for(&server, fault).await;
        assert_eq!(response.status().as_u16(), status, "{fault}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let envelope: Value = response.json().await.unwrap();
        let inner = envelope["error"].as_object().unwrap();
        for field in ["message", "type", "param", "code"] {
            assert!(inner.contains_key(field), "{fault}: {field}");
        }
        assert_eq!(error.kind(), kind, "{fault}");
    }
    let (response, error) = error_for(&server, "bad_gateway").await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert!(response.text().await.unwrap().contains("502 Bad Gateway"));
    assert!(error.is_server() && error.is_retryable());
    let (response, _) = error_for(&server, "401").await;
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "invalid_api_key");
}

#[tokio::test]
async fn status_529_has_an_empty_reason_phrase() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let request = raw_post(
        &body("x"),
        &[("x-mock-fault", "529"), ("connection", "close")],
    );
    let (raw, error) = raw_exchange(server.addr(), &request).await;
    assert!(error.is_none());
    let (head, _) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 529 \r\n"), "{head:?}");
    // Known statuses keep theirs.
    let request = raw_post(
        &body("x"),
        &[("x-mock-fault", "503"), ("connection", "close")],
    );
    let (raw, _) = raw_exchange(server.addr(), &request).await;
    assert!(
        split_head(&raw)
            .0
            .starts_with("HTTP/1.1 503 Service Unavailable\r\n")
    );
}

#[tokio::test]
async fn extreme_fault_arguments_do_not_panic() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let max = u64::MAX.to_string();
    for fault in ["rate_limit", "rate_limit_date", "rate_limit_ms"] {
        let header = format!("{fault}:{max}");
        let response = post(&server, &body("x"), &[("x-mock-fault", &header)]).await;
        assert_eq!(response.status(), 429, "{header}");
    }
    let big_tokens = format!("{}", u32::MAX);
    let mut request = body("x");
    request["max_tokens"] = json!(2);
    let response = post(&server, &request, &[("x-mock-reply-tokens", &big_tokens)]).await;
    assert_eq!(response.status(), 200);
    let usage =
        format!(r#"{{"prompt_tokens":{max},"completion_tokens":{max},"reasoning_tokens":{max}}}"#);
    let (status, reply) = post_json(&server, &body("x"), &[("x-mock-usage", &usage)]).await;
    assert_eq!(status, 200);
    assert_eq!(reply["usage"]["total_tokens"], json!(u64::MAX));
    assert_eq!(post(&server, &body("x"), &[]).await.status(), 200);
}

#[tokio::test]
async fn unknown_fault_names_are_a_400() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (status, error) = post_json(&server, &body("x"), &[("x-mock-fault", "reset, bogus")]).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "x-mock-fault");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bogus")
    );
    assert_eq!(server.counters().resets(), 0);
}

#[tokio::test]
async fn latency_header_fault_and_config() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let started = Instant::now();
    let (status, _) = post_json(&server, &body("x"), &[("x-mock-latency-ms", "200")]).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let started = Instant::now();
    let response = post(
        &server,
        &body("x"),
        &[("x-mock-fault", "latency:150, server_error")],
    )
    .await;
    assert_eq!(response.status(), 500);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let processing: u64 = response.headers()["openai-processing-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(processing >= 150);

    let server = MockServer::start(
        MockConfig::default()
            .latency(Duration::from_millis(50))
            .jitter(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let mut elapsed = Vec::new();
    for _ in 0..8 {
        let started = Instant::now();
        post(&server, &body("x"), &[]).await.bytes().await.unwrap();
        elapsed.push(started.elapsed());
    }
    assert!(elapsed.iter().all(|e| *e >= Duration::from_millis(50)));
    assert!(elapsed.iter().all(|e| *e < Duration::from_millis(1000)));
    let spread = *elapsed.iter().max().unwrap() - *elapsed.iter().min().unwrap();
    assert!(
        spread > Duration::from_millis(5),
        "jitter varies the delay: {elapsed:?}"
    );
    // The header replaces the configured latency.
    let server = MockServer::start(MockConfig::default().latency(Duration::from_secs(3)))
        .await
        .unwrap();
    let started = Instant::now();
    post(&server, &body("x"), &[("x-mock-latency-ms", "0")])
        .await
        .bytes()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn waits_run_on_tokios_clock() {
    let server = MockServer::start(MockConfig::default().latency(Duration::from_secs(30)))
        .await
        .unwrap();
    let wall = Instant::now();
    let clock = tokio::time::Instant::now();
    let response = post(&server, &body("x"), &[("x-mock-fault", "latency:60000")]).await;
    assert_eq!(response.status(), 200);
    assert!(clock.elapsed() >= Duration::from_secs(90));
    assert!(
        wall.elapsed() < Duration::from_secs(10),
        "the paused clock skipped the wait"
    );
}

#[tokio::test]
async fn slow_first_chunk_delays_the_first_event_not_the_headers() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let started = Instant::now();
    let mut response = post(
        &server,
        &stream_body("x"),
        &[("x-mock-fault", "slow_first_chunk:400")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "headers come at once"
    );
    let first = response.chunk().await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(first.starts_with(b"data: "));
    // Unary: the whole reply waits.
    let started = Instant::now();
    post(
        &server,
        &body("x"),
        &[("x-mock-fault", "slow_first_chunk:200")],
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn token_interval_paces_content_chunks() {
    let server = MockServer::start(MockConfig::default().token_interval(Duration::from_millis(30)))
        .await
        .unwrap();
    let started = Instant::now();
    let streamed =
        read_stream(post(&server, &stream_body("x"), &[("x-mock-reply-tokens", "5")]).await).await;
    assert!(streamed.done);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn stall_sends_n_chunks_then_nothing() {
    let server = MockServer::start(MockConfig::default().stall_cap(Duration::from_millis(700)))
        .await
        .unwrap();
    let mut response = post(&server, &stream_body("x"), &[("x-mock-fault", "stall:3")]).await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), response.chunk()).await {
            Ok(Ok(Some(bytes))) => received.extend_from_slice(&bytes),
            Ok(other) => panic!("the stream ended before the client gave up: {other:?}"),
            Err(_) => break,
        }
    }
    let text = String::from_utf8(received).unwrap();
    assert_eq!(text.matches("data: ").count(), 1 + 3, "{text}");
    assert!(!text.contains("[DONE]"));
    // After the cap the server drops the connection: an error, not a clean end.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the stall cap ends the stream");
    assert!(end.is_err(), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Unary: the head arrives, the body never does.
    let mut response = post(&server, &body("x"), &[("x-mock-fault", "stall")]).await;
    assert_eq!(response.status(), 200);
    assert!(response.content_length().unwrap() > 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), response.chunk())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_ends_stalled_streams() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let mut response = post(&server, &stream_body("x"), &[("x-mock-fault", "stall:1")]).await;
    response.chunk().await.unwrap().unwrap();
    let counters = server.counters();
    assert_eq!(counters.in_flight_streams(), 1);
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown does not wait for the stall cap");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(rest.is_err());
    assert_eq!(counters.in_flight_streams(), 0);
}

#[tokio::test]
async fn mid_stream_error_event_and_no_done() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let response = post(
        &server,
        &stream_body("x"),
        &[("x-mock-fault", "mid_stream_error:4")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 1 + 4 + 1, "{text}");
    let last: Value = serde_json::from_str(events[5].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(!text.contains("[DONE]"));

    let streamed = read_stream(
        post(
            &server,
            &stream_body("x"),
            &[("x-mock-fault", "mid_stream_error:2")],
        )
        .await,
    )
    .await;
    assert_eq!(streamed.content_chunks(), 2);
    assert!(!streamed.done && !streamed.transport_error);
    assert!(streamed.error.unwrap().is_server());

    // Unary: a 200 whose body is the error envelope.
    let (status, reply) =
        post_json(&server, &body("x"), &[("x-mock-fault", "mid_stream_error")]).await;
    assert_eq!(status, 200);
    assert_eq!(reply["error"]["type"], "server_error");
}

#[tokio::test]
async fn reset_is_a_tcp_rst_before_any_byte() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let request = raw_post(&body("x"), &[("x-mock-fault", "reset")]);
    let (raw, error) = raw_exchange(server.addr(), &request).await;
    assert!(
        raw.is_empty(),
        "no response byte: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let error = error.expect("the read fails");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");

    // reqwest sees a failed request, and the counters a reset without a status.
    let result = client()
        .post(server.chat_completions_url())
        .header("x-mock-fault", "reset")
        .json(&body("x"))
        .send()
        .await;
    assert!(result.is_err());
    let counters = server.counters().snapshot();
    assert_eq!(counters.resets, 2);
    assert!(counters.by_status.is_empty(), "{counters:?}");
    assert_eq!(counters.total, 2);
    assert_eq!(counters.fault("reset"), 2);

    // The server keeps serving.
    assert_eq!(post(&server, &body("x"), &[]).await.status(), 200);
}

#[tokio::test]
async fn truncated_bodies_fall_short() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let request = raw_post(&body("x"), &[("x-mock-fault", "truncated")]);
    let (raw, _) = raw_exchange(server.addr(), &request).await;
    let (head, received) = split_head(&raw);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let promised: usize = head_header(&head, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !received.is_empty() && received.len() < promised,
        "{} of {promised}",
        received.len()
    );
    assert_eq!(received.len(), promised / 2);
    assert!(serde_json::from_slice::<Value>(received).is_err());

    // A truncated stream: half the content chunks, then the connection drops.
    let streamed = read_stream(
        post(
            &server,
            &stream_body("x"),
            &[("x-mock-fault", "truncated"), ("x-mock-reply-tokens", "10")],
        )
        .await,
    )
    .await;
    assert!(streamed.transport_error);
    assert!(!streamed.done);
    assert_eq!(streamed.content_chunks(), 5);
    assert!(streamed.error.unwrap().is_incomplete());
}

#[tokio::test]
async fn malformed_json_is_a_200_that_does_not_parse() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let response = post(&server, &body("x"), &[("x-mock-fault", "malformed_json")]).await;
    assert_eq!(response.status(), 200);
    let length = response.content_length().unwrap();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(
        bytes.len() as u64,
        length,
        "the body is complete, just broken"
    );
    assert!(bytes.starts_with(b"{"));
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    let streamed = read_stream(
        post(
            &server,
            &stream_body("x"),
            &[("x-mock-fault", "malformed_json")],
        )
        .await,
    )
    .await;
    assert_eq!(streamed.chunks.len(), 1, "the role chunk decodes");
    assert!(streamed.error.unwrap().is_decode());
}

#[tokio::test]
async fn oversized_bodies_have_the_configured_size() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    // The default, 32 MiB, counted as it streams.
    let mut response = post(&server, &body("x"), &[("x-mock-fault", "oversized")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(32 * 1024 * 1024));
    let mut total = 0usize;
    let mut largest = 0usize;
    while let Some(chunk) = response.chunk().await.unwrap() {
        total += chunk.len();
        largest = largest.max(chunk.len());
    }
    assert_eq!(total, 32 * 1024 * 1024);
    assert!(largest <= 1024 * 1024, "streamed in pieces, not one buffer");

    // A smaller one is valid JSON.
    let (status, reply) =
        post_json(&server, &body("x"), &[("x-mock-fault", "oversized:200000")]).await;
    assert_eq!(status, 200);
    assert_eq!(reply.to_string().len(), 200_000);
    assert_eq!(reply["object"], "chat.completion");
    assert!(
        reply["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 199_000
    );

    // Streamed: one huge event, then [DONE].
    let response = post(
        &server,
        &stream_body("x"),
        &[("x-mock-fault", "oversized:300000")],
    )
    .await;
    let text = response.text().await.unwrap();
    assert_eq!(text.len(), 300_000);
    assert!(text.ends_with("data: [DONE]\n\n"));
    let event = text
        .split("\n\n")
        .next()
        .unwrap()
        .strip_prefix("data: ")
        .unwrap();
    let chunk: Value = serde_json::from_str(event).unwrap();
    assert_eq!(chunk["object"], "chat.completion.chunk");
}

/// The statuses of `count` sequential requests to a server with a 20% 503 rule.
async fn fault_sequence(seed: u64, count: usize) -> Vec<u16> {
    let server = MockServer::start(
        MockConfig::default()
            .fault(Fault::ServiceUnavailable, 0.2)
            .seed(seed),
    )
    .await
    .unwrap();
    let client = client();
    let mut statuses = Vec::with_capacity(count);
    for i in 0..count {
        let response = post_with(&client, &server, &body(&format!("req {i}")), &[]).await;
        statuses.push(response.status().as_u16());
        response.bytes().await.unwrap();
    }
    let counters = server.counters();
    assert_eq!(counters.total(), count as u64);
    assert_eq!(
        counters.status(503),
        statuses.iter().filter(|s| **s == 503).count() as u64
    );
    assert_eq!(
        counters.fault(Fault::ServiceUnavailable),
        counters.status(503)
    );
    statuses
}

#[tokio::test]
async fn seeded_fault_rate_is_reproducible_and_near_its_probability() {
    let first = fault_sequence(42, 1000).await;
    let failures = first.iter().filter(|s| **s == 503).count();
    // 20% of 1000: mean 200, sd ≈ 12.6; ±60 is beyond 4.5 sd.
    assert!((140..=260).contains(&failures), "{failures} of 1000");
    assert!(first.iter().all(|s| *s == 200 || *s == 503));
    let second = fault_sequence(42, 1000).await;
    assert_eq!(first, second, "same seed, same faults");
    let other = fault_sequence(43, 1000).await;
    assert_ne!(first, other, "another seed, other faults");
}

#[tokio::test]
async fn configured_and_header_faults_combine() {
    let server = MockServer::start(
        MockConfig::default()
            .fault(Fault::Latency(Duration::from_millis(100)), 1.0)
            .fault(Fault::ServerError, 1.0),
    )
    .await
    .unwrap();
    // The header's fault comes first and wins; the configured latency still applies.
    let started = Instant::now();
    let response = post(
        &server,
        &body("x"),
        &[("x-mock-fault", "insufficient_quota")],
    )
    .await;
    assert_eq!(response.status(), 429);
    assert!(started.elapsed() >= Duration::from_millis(100));
    let response = post(&server, &body("x"), &[]).await;
    assert_eq!(response.status(), 500);
    let snapshot = server.counters().snapshot();
    assert_eq!(snapshot.fault("latency"), 2);
    assert_eq!(snapshot.fault("server_error"), 2);
    assert_eq!(snapshot.fault("insufficient_quota"), 1);
    // A request that never parses draws no fault.
    let response = client()
        .post(server.chat_completions_url())
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(server.counters().snapshot().fault("latency"), 2);
}

#[tokio::test]
async fn faults_from_the_header_apply_to_streams_too() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let response = post(
        &server,
        &stream_body("x"),
        &[("x-mock-fault", "rate_limit")],
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {
            "message": body["error"]["message"],
            "type": "requests",
            "param": null,
            "code": "rate_limit_exceeded"
        }})
    );
}

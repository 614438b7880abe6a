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
    // Counted where it was injected: the first request drew it too, but answered 429.
    assert_eq!(snapshot.fault("server_error"), 1);
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

#[tokio::test(start_paused = true)]
async fn no_answer_sends_nothing_and_closes_after_the_stall_cap() {
    let server = MockServer::start(MockConfig::default().stall_cap(Duration::from_secs(5)))
        .await
        .unwrap();
    let clock = tokio::time::Instant::now();
    let wall = Instant::now();
    let request = raw_post(&body("x"), &[("x-mock-fault", "no_answer")]);
    let (raw, error) = raw_exchange(server.addr(), &request).await;
    assert!(
        raw.is_empty(),
        "not even a status line: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(error.is_none(), "a plain close, not a reset: {error:?}");
    assert!(
        clock.elapsed() >= Duration::from_secs(5),
        "held for the cap"
    );
    assert!(wall.elapsed() < Duration::from_secs(5), "on tokio's clock");
    let counters = server.counters().snapshot();
    assert_eq!(counters.fault("no_answer"), 1);
    assert!(counters.by_status.is_empty(), "{counters:?}");
    assert_eq!(counters.resets, 0);
}

#[tokio::test]
async fn no_answer_is_ended_by_the_clients_timeout() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client
        .post(server.chat_completions_url())
        .header("x-mock-fault", "no_answer")
        .json(&body("x"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server is still there for others.
    assert_eq!(post(&server, &body("x"), &[]).await.status(), 200);
}

#[tokio::test]
async fn wrong_content_type_is_an_html_page() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for request in [body("x"), stream_body("x")] {
        let response = post(&server, &request, &[("x-mock-fault", "wrong_content_type")]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/html");
        let text = response.text().await.unwrap();
        assert!(text.starts_with("<!DOCTYPE html>"), "{text}");
        assert!(serde_json::from_str::<Value>(&text).is_err());
    }
    assert_eq!(server.counters().fault(Fault::WrongContentType), 2);
}

/// The events of a raw SSE body, as bytes.
fn raw_events(body: &[u8]) -> Vec<&[u8]> {
    let mut events = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.windows(2).position(|w| w == b"\n\n") {
        events.push(&rest[..end]);
        rest = &rest[end + 2..];
    }
    assert!(rest.is_empty(), "a trailing partial event");
    events
}

#[tokio::test]
async fn invalid_utf8_sits_in_the_nth_content_chunk() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for (fault, nth) in [
        ("invalid_utf8", 2),
        ("invalid_utf8:1", 1),
        ("invalid_utf8:4", 4),
    ] {
        let response = post(&server, &stream_body("x"), &[("x-mock-fault", fault)]).await;
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        let events = raw_events(&bytes);
        let invalid: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, event)| std::str::from_utf8(event).is_err())
            .map(|(index, _)| index)
            .collect();
        // Event 0 is the role chunk, so content chunk N is event N.
        assert_eq!(invalid, [nth], "{fault}");
        let bad = events[nth];
        assert!(bad.starts_with(b"data: {"));
        assert!(
            bad.windows(13).any(|w| w == b"\"content\":\"\xff\xfe"),
            "inside the JSON string: {}",
            String::from_utf8_lossy(bad)
        );
        // The rest of the stream is normal, [DONE] included.
        assert_eq!(events.last().unwrap(), b"data: [DONE]");
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(
            text.matches("\"content\":\"").count(),
            1 + 16 + 1,
            "{fault}"
        );
    }
    // Unary: the body has the bytes inside its content string.
    let response = post(&server, &body("x"), &[("x-mock-fault", "invalid_utf8")]).await;
    assert_eq!(response.status(), 200);
    let length = response.content_length().unwrap();
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, length);
    let error = std::str::from_utf8(&bytes).unwrap_err();
    assert!(bytes[..error.valid_up_to()].ends_with(b"\"content\":\""));
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());
}

#[tokio::test]
async fn error_in_200_is_an_envelope_with_a_success_status() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let response = post(&server, &body("x"), &[("x-mock-fault", "error_in_200")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let envelope: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(envelope["error"]["type"], "server_error");
    assert!(envelope["error"]["code"].is_string());
    let error = Error::from_response(reqwest::StatusCode::OK, &headers, &bytes);
    assert!(error.is_server() && error.is_retryable(), "{error:?}");

    let response = post(
        &server,
        &stream_body("x"),
        &[("x-mock-fault", "error_in_200")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let streamed = read_stream(response).await;
    assert!(streamed.chunks.is_empty(), "the error is the first event");
    assert!(!streamed.done && !streamed.transport_error);
    assert!(streamed.error.unwrap().is_server());
}

#[tokio::test]
async fn corrupt_gzip_has_a_gzip_header_and_no_deflate_data() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for (request, content_type) in [
        (body("x"), "application/json"),
        (stream_body("x"), "text/event-stream"),
    ] {
        let response = post(&server, &request, &[("x-mock-fault", "corrupt_gzip")]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-encoding"], "gzip");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        let bytes = response.bytes().await.unwrap();
        // Magic, method deflate, no flags.
        assert_eq!(bytes[..4], [0x1f, 0x8b, 0x08, 0x00]);
        // The first deflate block header has the reserved block type 0b11: no inflater
        // accepts it.
        assert_eq!(bytes[10] & 0b110, 0b110);
    }
}

#[tokio::test(start_paused = true)]
async fn a_drip_stream_alternates_comments_and_empty_chunks_until_the_cap() {
    let server = MockServer::start(MockConfig::default().stall_cap(Duration::from_secs(1)))
        .await
        .unwrap();
    let clock = tokio::time::Instant::now();
    let mut response = post(&server, &stream_body("x"), &[("x-mock-fault", "drip")]).await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let end = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            other => break other,
        }
    };
    assert!(end.is_err(), "the cap drops the connection: {end:?}");
    assert!(clock.elapsed() >= Duration::from_secs(1));
    let events = raw_events(&received);
    let role: Value = serde_json::from_slice(&events[0][6..]).unwrap();
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    // 10 ms apart for one second: about a hundred tiny events, in turn.
    assert!((90..=101).contains(&(events.len() - 1)), "{}", events.len());
    for (index, event) in events[1..].iter().enumerate() {
        if index % 2 == 0 {
            assert_eq!(*event, b": keep-alive");
        } else {
            let chunk: Value = serde_json::from_slice(&event[6..]).unwrap();
            assert_eq!(chunk["choices"][0]["delta"]["content"], "");
        }
    }
    assert!(!String::from_utf8_lossy(&received).contains("[DONE]"));
}

#[tokio::test(start_paused = true)]
async fn a_unary_drip_trickles_spaces_until_the_cap() {
    let server = MockServer::start(MockConfig::default().stall_cap(Duration::from_secs(2)))
        .await
        .unwrap();
    let mut response = post(&server, &body("x"), &[("x-mock-fault", "drip:100")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), None, "no end is announced");
    let mut received = Vec::new();
    let end = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                assert_eq!(bytes.len(), 1, "one space at a time");
                received.extend_from_slice(&bytes);
            }
            other => break other,
        }
    };
    assert!(end.is_err(), "{end:?}");
    assert!(received.iter().all(|b| *b == b' '));
    assert!((15..=21).contains(&received.len()), "{}", received.len());
}

#[tokio::test]
async fn a_drip_without_interval_is_a_fast_endless_body() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let mut response = post(&server, &body("x"), &[("x-mock-fault", "drip:0")]).await;
    let mut received = 0usize;
    let mut frames = 0usize;
    while received < 1024 * 1024 {
        let bytes = response.chunk().await.unwrap().unwrap();
        assert!(bytes.iter().all(|b| *b == b' '));
        received += bytes.len();
        frames += 1;
    }
    assert!(received / frames > 1024, "spaces go out in large frames");
}

#[tokio::test]
async fn redirect_sends_a_307_to_the_whole_url() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let target = "http://localhost:9/v1/chat/completions?model=a:b";
    let fault = format!("redirect:{target}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = post_with(&client, &server, &body("x"), &[("x-mock-fault", &fault)]).await;
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], target);
    assert_eq!(
        server.counters().fault(Fault::Redirect {
            location: String::new()
        }),
        1
    );

    // Followed on the same server, the redirect ends where it points.
    let here = format!("{}?hop=2", server.chat_completions_url());
    for fault in [
        format!("redirect:{here}"),
        "redirect:/v1/chat/completions?hop=2".to_owned(),
    ] {
        let response = post(&server, &body("x"), &[("x-mock-fault", &fault)]).await;
        assert_eq!(response.status(), 200, "{fault}");
        assert_eq!(response.url().as_str(), here);
    }
    let counters = server.counters().snapshot();
    assert_eq!(counters.status(307), 3);
    assert_eq!(counters.fault("redirect"), 3, "not counted where it ends");

    // A fault built by hand, not parsed, may hold a location no header can carry.
    let bad = Fault::Redirect {
        location: "http://h/\n".to_owned(),
    };
    let server = MockServer::start(MockConfig::default().fault(bad, 1.0))
        .await
        .unwrap();
    let (status, error) = post_json(&server, &body("x"), &[]).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "x-mock-fault");
}

#[tokio::test]
async fn credentials_are_counted_without_being_kept() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for header in ["authorization", "api-key", "x-api-key", "x-team"] {
        post(&server, &body("x"), &[(header, "secret-value")]).await;
    }
    post(&server, &body("x"), &[]).await;
    let counters = server.counters();
    assert_eq!(counters.total(), 5);
    assert_eq!(counters.with_credentials(), 3);
    assert!(!format!("{counters:?}").contains("secret-value"));
}

/// Follows the mock's redirect with reqwest's default policy and reports whether the key
/// reached the other server: the hazard chatstack's transport guards against.
async fn key_arrives_after_a_cross_host_redirect(header: &str) -> bool {
    let origin = MockServer::start(MockConfig::default()).await.unwrap();
    let other = MockServer::start(MockConfig::default()).await.unwrap();
    // Another host name for the same loopback address: another host to reqwest.
    let fault = format!(
        "redirect:http://localhost:{}/v1/chat/completions",
        other.addr().port()
    );
    let response = post(
        &origin,
        &body("x"),
        &[("x-mock-fault", &fault), (header, "sk-secret")],
    )
    .await;
    assert_eq!(response.status(), 200, "followed to the other server");
    assert_eq!(other.counters().total(), 1);
    other.counters().with_credentials() == 1
}

#[tokio::test]
async fn reqwest_strips_authorization_across_hosts_but_not_api_key() {
    assert!(!key_arrives_after_a_cross_host_redirect("authorization").await);
    assert!(key_arrives_after_a_cross_host_redirect("api-key").await);
    assert!(key_arrives_after_a_cross_host_redirect("x-api-key").await);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = post_with(&h2, &server, &body("x"), &[]).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["object"], "chat.completion");

    let response = post_with(&h2, &server, &stream_body("x"), &[]).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let streamed = read_stream(response).await;
    assert!(streamed.done && streamed.error.is_none());
    assert_eq!(streamed.content_chunks(), 16);
    assert!(streamed.chunks.last().unwrap().usage.is_some());

    // A fault over HTTP/2.
    let response = post_with(&h2, &server, &body("x"), &[("x-mock-fault", "503")]).await;
    assert_eq!(response.status(), 503);
    // HTTP/1.1 clients still work beside it.
    let response = post(&server, &body("x"), &[]).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(server.counters().http2_requests(), 3);
    assert_eq!(server.counters().total(), 4);
}

#[tokio::test]
async fn bytes_written_show_how_much_a_client_read() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let counters = server.counters();
    let response = post(
        &server,
        &body("x"),
        &[("x-mock-fault", "oversized:1000000")],
    )
    .await;
    assert_eq!(response.bytes().await.unwrap().len(), 1_000_000);
    let full = counters.bytes_written();
    assert!((1_000_000..1_010_000).contains(&full), "{full}");

    // A client that reads 64 KiB of 64 MiB and hangs up.
    let mut response = post(
        &server,
        &body("x"),
        &[("x-mock-fault", "oversized:67108864")],
    )
    .await;
    let mut read = 0;
    while read < 64 * 1024 {
        read += response.chunk().await.unwrap().unwrap().len();
    }
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.in_flight_requests() > 0 {
        assert!(Instant::now() < deadline, "the server noticed the hang-up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let partial = counters.bytes_written() - full;
    // The socket buffers hold a few MiB at most.
    assert!(partial < 32 * 1024 * 1024, "{partial}");
}

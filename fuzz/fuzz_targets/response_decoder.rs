//! Fuzzes the unary decoding paths of `chatstack-proto` with hostile response bodies.
//!
//! The input is a response body, used whole. It is decoded as a [`ChatResponse`] and as a
//! [`ChatChunk`] (`serde_json::from_slice`, as the transport does), as a [`ProviderError`]
//! (serde, and the shape-guessing [`ProviderError::from_body`]), and classified with
//! [`Error::from_response`] under several statuses. If the input has a blank line
//! (`\n\n`), the lines before it are also read as `name: value` response headers and the
//! rest as the body, so `retry-after(-ms)`, `x-should-retry`, `x-request-id` and the
//! `x-ratelimit-*` headers are parsed too.
//!
//! It checks that:
//! - nothing panics, Display and Debug included;
//! - a decoded value re-serializes, and decoding that gives the same value again: compared
//!   with `==` for `ChatChunk` and `ProviderError` (which implement `PartialEq`), and for
//!   `ChatResponse` (which does not: its metadata is not body) by its parts that do, and by
//!   the serialized bytes of both rounds;
//! - a chunk made from a decoded response ([`ChatChunk::from_response`]) and a response
//!   accumulated from a decoded chunk serialize;
//! - `Error::from_response` keeps the status, classifies it as documented (401/403 auth,
//!   429 rate limited or out of quota, 5xx server or overloaded), follows `x-should-retry`
//!   when it is sent, and keeps at most [`MAX_ERROR_BODY`] bytes of a body it could not
//!   read (at most three times that once invalid UTF-8 is replaced), and a plain-text message
//!   capped to as many.
#![no_main]

use chatstack_proto::{ChatAccumulator, ChatChunk, ChatResponse, Error, ErrorKind, ProviderError};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

/// The most bytes of a raw body an error keeps (`chatstack_proto`'s `MAX_ERROR_BODY`, which
/// the crate does not re-export).
const MAX_ERROR_BODY: usize = 8 * 1024;

/// Statuses every body is classified under, plus one picked by the last byte.
const STATUSES: [u16; 14] = [
    200, 400, 401, 403, 404, 408, 413, 422, 429, 500, 503, 529, 418, 599,
];

fn check_response(data: &[u8]) {
    let Ok(first) = serde_json::from_slice::<ChatResponse>(data) else {
        return;
    };
    let _ = first.text();
    let _ = first.tool_calls();
    let _ = first.finish_reasons();
    let encoded = serde_json::to_vec(&first).expect("a decoded response serializes");
    let second: ChatResponse = serde_json::from_slice(&encoded).unwrap_or_else(|error| {
        panic!(
            "a re-serialized response does not decode: {error}\n{}",
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(second.id, first.id);
    assert_eq!(second.object, first.object);
    assert_eq!(second.created, first.created);
    assert_eq!(second.model, first.model);
    assert_eq!(second.choices, first.choices);
    assert_eq!(second.usage, first.usage);
    assert_eq!(second.system_fingerprint, first.system_fingerprint);
    assert_eq!(second.service_tier, first.service_tier);
    let reencoded = serde_json::to_vec(&second).expect("serializes");
    assert_eq!(
        String::from_utf8_lossy(&reencoded),
        String::from_utf8_lossy(&encoded)
    );

    // What the stream decoder does with a server that ignored `stream: true`.
    let chunk = ChatChunk::from_response(first);
    serde_json::to_vec(&chunk).expect("a chunk made from a response serializes");
}

fn check_chunk(data: &[u8]) {
    let Ok(first) = serde_json::from_slice::<ChatChunk>(data) else {
        return;
    };
    let _ = first.text().count();
    let encoded = serde_json::to_vec(&first).expect("a decoded chunk serializes");
    let second: ChatChunk = serde_json::from_slice(&encoded).unwrap_or_else(|error| {
        panic!(
            "a re-serialized chunk does not decode: {error}\n{}",
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(second, first, "{}", String::from_utf8_lossy(&encoded));

    let mut accumulator = ChatAccumulator::new();
    accumulator.push(&first);
    accumulator.push(&second);
    let response = accumulator.finish();
    serde_json::to_vec(&response).expect("an accumulated response serializes");
}

fn check_provider_error(data: &[u8]) {
    if let Ok(first) = serde_json::from_slice::<ProviderError>(data) {
        let encoded = serde_json::to_vec(&first).expect("a provider error serializes");
        let second: ProviderError =
            serde_json::from_slice(&encoded).expect("a re-serialized provider error decodes");
        assert_eq!(second, first);
    }
    if let Some(provider) = ProviderError::from_body(data) {
        let _ = provider.is_insufficient_quota();
        let _ = provider.is_context_length_exceeded();
        let _ = provider.is_content_filter();
        let error = Error::from_provider(provider);
        let _ = error.is_retryable();
        let _ = error.to_string();
        let _ = format!("{error:?}");
    }
}

/// Splits `data` at its first blank line into headers and a body, if it has one.
fn headers_and_body(data: &[u8]) -> Option<(HeaderMap, &[u8])> {
    let blank = data.windows(2).position(|w| w == b"\n\n")?;
    let (head, body) = (&data[..blank], &data[blank + 2..]);
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii());
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    Some((headers, body))
}

fn check_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) {
    let error = Error::from_response(status, headers, body);
    assert_eq!(error.status(), Some(status));
    match status.as_u16() {
        401 | 403 => assert_eq!(error.kind(), ErrorKind::Auth),
        429 => assert!(matches!(
            error.kind(),
            ErrorKind::RateLimited | ErrorKind::InsufficientQuota
        )),
        529 => assert_eq!(error.kind(), ErrorKind::Overloaded),
        500..=599 => assert!(error.is_server(), "{:?}", error.kind()),
        _ => {}
    }
    let should_retry = headers
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match should_retry {
        Some("true") => assert!(error.is_retryable()),
        Some("false") => assert!(!error.is_retryable()),
        _ => {}
    }
    if let Some(kept) = error.body() {
        assert!(
            kept.len() <= 3 * MAX_ERROR_BODY,
            "kept {} bytes",
            kept.len()
        );
        assert!(error.provider().is_none());
    }
    if let Some(provider) = error.provider() {
        // As `ProviderError::from_body` reads it.
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if !text.starts_with("data:")
            && !text.starts_with("event:")
            && serde_json::from_str::<serde_json::Value>(text).is_err()
        {
            // Plain text: the message is the text, capped.
            assert!(provider.message.len() <= MAX_ERROR_BODY);
        }
    }
    let _ = error.retry_after();
    let _ = error.rate_limit().is_present();
    let _ = error.request_id();
    let _ = (error.is_provider_fault(), error.is_invalid_request());
    assert!(!error.to_string().is_empty());
    let _ = format!("{error:?}");
}

fuzz_target!(|data: &[u8]| {
    check_response(data);
    check_chunk(data);
    check_provider_error(data);

    let picked = data.last().map_or(200, |&b| 100 + u16::from(b) * 3);
    let picked = StatusCode::from_u16(picked).expect("100..=865 is a valid status");
    let none = HeaderMap::new();
    for status in [200, 429, 503] {
        check_error(StatusCode::from_u16(status).unwrap(), &none, data);
    }
    check_error(picked, &none, data);
    if let Some((headers, body)) = headers_and_body(data) {
        for &code in &STATUSES {
            check_error(StatusCode::from_u16(code).unwrap(), &headers, body);
        }
        check_error(picked, &headers, body);
    }
});

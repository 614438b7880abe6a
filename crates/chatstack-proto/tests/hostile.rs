//! Hostile input: property tests that mirror the cargo-fuzz targets in `fuzz/` on structured
//! random input, so the normal suite keeps the invariants the fuzzers check.
//!
//! - (a) SSE bodies built from random events — data lines of JSON-ish text with non-ASCII
//!   and invalid UTF-8, comments, ids, retries, LF/CRLF/CR line ends, a BOM — decode to the
//!   events a reference reading of the same events gives, in one read, split at random
//!   points, or a byte at a time.
//! - (b) Arbitrary bytes never panic [`SseDecoder`], [`StreamDecoder`], the [`ChatChunk`] and
//!   [`ChatResponse`] decoders, [`ProviderError::from_body`] or [`Error::from_response`];
//!   both decoders decode them the same in any split, with bounded buffers, and the stream
//!   decoder ends with exactly one terminal event.
//! - (c) An endless line without a newline stops growing at the event size limit, with one
//!   typed error ([`SseError::EventTooLarge`], [`ErrorKind::BodyTooLarge`] from the stream
//!   decoder), and decoding recovers after it.
//! - (d) JSON-ish bodies with junk where the protocol expects other types decode tolerantly,
//!   and what decodes re-serializes and decodes to the same value.
//! - (e) Error bodies of any shape are classified as their status says, with the headers a
//!   retry needs, and a raw body kept only up to its cap.

use chatstack_proto::sse::{SseDecoder, SseError, SseEvent};
use chatstack_proto::{
    ChatAccumulator, ChatChunk, ChatResponse, Error, ErrorKind, ProviderError, StreamDecoder,
    StreamEvent,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use serde_json::Value;

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The most bytes of a raw body an error keeps (`MAX_ERROR_BODY` in `error.rs`).
const MAX_ERROR_BODY: usize = 8 * 1024;

// ---------------------------------------------------------------------------------------------
// Decoding helpers, with the decoders' own invariants checked on the way
// ---------------------------------------------------------------------------------------------

/// Feeds `reads` one by one, draining after each, then finishes; checks the buffer bounds
/// and that nothing is left at the end.
fn decode_sse<'a>(
    limit: usize,
    reads: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Result<SseEvent, SseError>> {
    let mut decoder = SseDecoder::with_max_event_size(limit);
    // Up to two bytes may be held back to see whether they start a BOM.
    let held = limit.max(BOM.len() - 1);
    let mut events = Vec::new();
    for read in reads {
        decoder.feed(read);
        assert!(decoder.buffered_len() <= held + read.len());
        while let Some(result) = decoder.next_event() {
            if let Ok(event) = &result {
                assert!(event.data.len() <= limit, "event over the limit");
            }
            events.push(result);
        }
        assert!(
            decoder.buffered_len() <= held,
            "drained buffer over the limit"
        );
    }
    while let Some(event) = decoder.finish() {
        assert!(event.data.len() <= limit, "event over the limit");
        events.push(Ok(event));
    }
    assert_eq!(decoder.buffered_len(), 0);
    assert_eq!(decoder.finish(), None);
    let returned = events.iter().filter(|e| e.is_ok()).count() as u64;
    assert_eq!(decoder.events_dispatched(), returned);
    events
}

/// A [`StreamEvent`], comparable.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Chunk(Box<ChatChunk>),
    Done,
    Error(ErrorKind, String),
}

/// Feeds `reads` to a stream decoder, finishes, and checks that it ended with exactly one
/// terminal event, the last, and says nothing more whatever is fed after.
fn decode_stream<'a>(
    decoder: StreamDecoder,
    reads: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Seen> {
    let mut decoder = decoder;
    let mut seen = Vec::new();
    let drain = |decoder: &mut StreamDecoder, seen: &mut Vec<Seen>| {
        while let Some(event) = decoder.next_event() {
            seen.push(match event {
                StreamEvent::Chunk(chunk) => Seen::Chunk(Box::new(chunk)),
                StreamEvent::Done => Seen::Done,
                StreamEvent::Error(error) => Seen::Error(error.kind(), error.to_string()),
            });
        }
    };
    for read in reads {
        decoder.feed(read);
        drain(&mut decoder, &mut seen);
    }
    decoder.finish();
    drain(&mut decoder, &mut seen);
    assert!(decoder.is_terminated());
    let terminals = seen
        .iter()
        .filter(|e| matches!(e, Seen::Done | Seen::Error(..)))
        .count();
    assert_eq!(terminals, 1, "one terminal event: {seen:?}");
    assert!(matches!(seen.last(), Some(Seen::Done | Seen::Error(..))));
    assert_eq!(decoder.is_done(), seen.last() == Some(&Seen::Done));
    decoder.feed(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
    decoder.finish();
    assert!(decoder.next_event().is_none(), "an event after the end");
    seen
}

/// Cuts `bytes` at the given points (any order).
fn split<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut reads = Vec::new();
    let mut from = 0;
    for point in points {
        reads.push(&bytes[from..point]);
        from = point;
    }
    reads.push(&bytes[from..]);
    reads
}

// ---------------------------------------------------------------------------------------------
// (a) SSE bodies from random events, and what a conforming decoder makes of them
// ---------------------------------------------------------------------------------------------

/// Bytes of a field value: JSON-ish text, non-ASCII, invalid UTF-8, never CR or LF.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => "[ -~]{0,10}".prop_map(String::into_bytes),
        2 => Just(br#"{"choices":[{"index":0,"delta":{"content":"#.to_vec()),
        1 => Just(br#""}}]}"#.to_vec()),
        1 => Just("é€😀世界 \u{2028}".as_bytes().to_vec()),
        1 => Just(b"\xFF\xC3(\x80\xE2\x82".to_vec()),
        1 => Just(BOM.to_vec()),
        1 => Just(b"\0\t: data: [DONE]".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| b.into_iter().filter(|&c| c != b'\r' && c != b'\n').collect()),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|pieces| pieces.concat())
}

/// One event of a generated stream.
#[derive(Debug, Clone)]
struct GenEvent {
    comments: Vec<Vec<u8>>,
    event: Option<String>,
    id: Option<Vec<u8>>,
    retry: Option<u64>,
    data: Vec<Vec<u8>>,
}

fn gen_event() -> impl Strategy<Value = GenEvent> {
    (
        prop::collection::vec(value_bytes(), 0..2),
        prop::option::of(prop_oneof!["[a-z]{1,6}", Just("error".to_owned())]),
        prop::option::of(value_bytes().prop_map(|id| id.into_iter().filter(|&b| b != 0).collect())),
        prop::option::of(0..u64::MAX),
        prop::collection::vec(value_bytes(), 0..4),
    )
        .prop_map(|(comments, event, id, retry, data)| GenEvent {
            comments,
            event,
            id,
            retry,
            data,
        })
}

/// A field line: `name: value`, or `name:value` when the value does not start with a space
/// (the decoder strips one space after the colon).
fn field(name: &str, value: &[u8], space: bool) -> Vec<u8> {
    let mut line = name.as_bytes().to_vec();
    line.push(b':');
    if space || value.first() == Some(&b' ') {
        line.push(b' ');
    }
    line.extend_from_slice(value);
    line
}

/// Writes `events` as an SSE body; returns it with the events the WHATWG rules give.
fn render(
    events: &[GenEvent],
    bom: bool,
    endings: &[u8],
    omit_final_blank: bool,
) -> (Vec<u8>, Vec<SseEvent>) {
    let lossy = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut expected = Vec::new();
    let mut last_id: Option<String> = None;
    for (n, e) in events.iter().enumerate() {
        let space = n % 2 == 0;
        for comment in &e.comments {
            lines.push([b":".as_slice(), comment].concat());
        }
        if let Some(kind) = &e.event {
            lines.push(field("event", kind.as_bytes(), space));
        }
        if let Some(id) = &e.id {
            lines.push(field("id", id, space));
            last_id = Some(lossy(id)).filter(|id| !id.is_empty());
        }
        if let Some(retry) = e.retry {
            lines.push(field("retry", retry.to_string().as_bytes(), space));
        }
        for data in &e.data {
            lines.push(field("data", data, space));
        }
        lines.push(Vec::new());
        if !e.data.is_empty() {
            let data: Vec<String> = e.data.iter().map(|d| lossy(d)).collect();
            expected.push(SseEvent {
                event: e.event.clone(),
                data: data.join("\n"),
                id: last_id.clone(),
                retry: e.retry,
            });
        }
    }
    if omit_final_blank && lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    let mut body = Vec::new();
    if bom {
        body.extend_from_slice(BOM);
    }
    let mut previous_cr = false;
    for (i, line) in lines.iter().enumerate() {
        body.extend_from_slice(line);
        let ending: &[u8] = match endings[i % endings.len()] % 3 {
            // A blank line ended by LF right after a lone CR would merge with it into one
            // CRLF line end.
            0 if previous_cr && line.is_empty() => b"\r\n",
            0 => b"\n",
            1 => b"\r\n",
            _ => b"\r",
        };
        previous_cr = ending == b"\r";
        body.extend_from_slice(ending);
    }
    (body, expected)
}

// ---------------------------------------------------------------------------------------------
// (b) Hostile bytes
// ---------------------------------------------------------------------------------------------

/// Bytes that are mostly SSE and JSON syntax, with junk between, to reach deep states.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: error\n".to_vec()),
        Just(b"id: 1\n".to_vec()),
        Just(b"retry: 99999999999999999999\n".to_vec()),
        Just(b": ping\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(BOM.to_vec()),
        Just(br#"{"error":{"message":"m","type":"server_error","code":503}}"#.to_vec()),
        Just(br#"{"error":"Bad","message":7}"#.to_vec()),
        Just(br#"{"type":"error","error":{"type":"overloaded_error"}}"#.to_vec()),
        Just(br#"{"id":"c","choices":[{"index":4294967295,"delta":{"content":"hi","tool_calls":[{"index":4294967295,"function":{"arguments":"{"}}]}}]}"#.to_vec()),
        Just(br#"{"choices":null,"usage":{"prompt_tokens":1e999,"completion_tokens":-1}}"#.to_vec()),
        Just(br#"{"choices":[{"message":{"content":"x"},"logprobs":{"content":[{"token":"t","logprob":-1e308,"bytes":[256]}]}}]}"#.to_vec()),
        Just(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec()),
        Just("\"é\\u00e9\\ud800\"".as_bytes().to_vec()),
        Just(b"\xFF\xFE\xC3".to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![hostile_bytes(), prop::collection::vec(any::<u8>(), 0..512)]
}

/// Checks [`Error::from_response`] on a body under a status and headers.
fn check_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let error = Error::from_response(status, headers, body);
    assert_eq!(error.status(), Some(status));
    match status.as_u16() {
        401 | 403 => assert_eq!(error.kind(), ErrorKind::Auth),
        429 => assert!(error.is_rate_limited() || error.is_insufficient_quota()),
        529 => assert_eq!(error.kind(), ErrorKind::Overloaded),
        500..=599 => assert!(error.is_server(), "{:?}", error.kind()),
        _ => {}
    }
    if let Some(kept) = error.body() {
        assert!(kept.len() <= 3 * MAX_ERROR_BODY);
        assert!(
            error.provider().is_none(),
            "a body is kept only without an envelope"
        );
    }
    assert!(!error.to_string().is_empty());
    let _ = format!("{error:?}");
    error
}

// ---------------------------------------------------------------------------------------------
// (d) JSON-ish bodies with junk in place of the expected types
// ---------------------------------------------------------------------------------------------

/// A JSON value of any type, small.
fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(-0.0),
            Just(1e300),
            Just(-1e-300),
            Just(0.5),
            Just(18_446_744_073_709_551_616.0),
            -1e6..1e6
        ]
        .prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
        Just(Value::from("")),
        Just(Value::from("None")),
        Just(Value::from("stop")),
        Just(Value::from("assistant")),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// An object with some of `fields`, each a well-typed `good` value or junk.
fn object_of(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let entries: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = fields
        .into_iter()
        .map(|(name, good)| {
            prop::option::of(prop_oneof![3 => good, 1 => junk()].prop_map(move |v| (name, v)))
                .boxed()
        })
        .collect();
    entries
        .prop_map(|entries| {
            Value::Object(
                entries
                    .into_iter()
                    .flatten()
                    .map(|(name, value)| (name.to_owned(), value))
                    .collect(),
            )
        })
        .boxed()
}

fn text() -> BoxedStrategy<Value> {
    "\\PC{0,8}".prop_map(Value::from).boxed()
}

fn count() -> BoxedStrategy<Value> {
    prop_oneof![
        (0u64..100_000).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(1.5)),
        Just(Value::from(-3)),
    ]
    .boxed()
}

fn usage() -> BoxedStrategy<Value> {
    let details =
        |names: [&'static str; 2]| object_of(names.into_iter().map(|n| (n, count())).collect());
    object_of(vec![
        ("prompt_tokens", count()),
        ("completion_tokens", count()),
        ("total_tokens", count()),
        (
            "prompt_tokens_details",
            details(["cached_tokens", "cache_write_tokens"]),
        ),
        (
            "completion_tokens_details",
            details(["reasoning_tokens", "audio_tokens"]),
        ),
    ])
}

fn logprobs() -> BoxedStrategy<Value> {
    let token = object_of(vec![
        ("token", text()),
        (
            "logprob",
            prop_oneof![Just(Value::from(-0.25)), Just(Value::from(-1e-300))].boxed(),
        ),
        (
            "bytes",
            prop::collection::vec(any::<u8>(), 0..4)
                .prop_map(Value::from)
                .boxed(),
        ),
        ("top_logprobs", Just(Value::Array(Vec::new())).boxed()),
    ]);
    object_of(vec![(
        "content",
        prop::collection::vec(token, 0..2)
            .prop_map(Value::Array)
            .boxed(),
    )])
}

fn tool_call() -> BoxedStrategy<Value> {
    let function = object_of(vec![("name", text()), ("arguments", text())]);
    object_of(vec![
        ("index", count()),
        ("id", text()),
        ("type", Just(Value::from("function")).boxed()),
        ("function", function),
    ])
}

fn finish_reason() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::from("stop")),
        Just(Value::from("length")),
        Just(Value::from("")),
        Just(Value::Null),
        text(),
    ]
    .boxed()
}

/// A `chat.completion.chunk`-like object.
fn chunk_json() -> BoxedStrategy<Value> {
    completion_json("chat.completion.chunk", "delta")
}

/// A `chat.completion`-like object.
fn response_json() -> BoxedStrategy<Value> {
    completion_json("chat.completion", "message")
}

/// A completion of type `object` whose choices carry their message under `message_key`
/// (`delta` in a chunk, `message` in a response).
fn completion_json(object: &'static str, message_key: &'static str) -> BoxedStrategy<Value> {
    let message = object_of(vec![
        (
            "role",
            prop_oneof![Just(Value::from("assistant")), text()].boxed(),
        ),
        ("content", text()),
        ("refusal", text()),
        ("reasoning_content", text()),
        (
            "tool_calls",
            prop::collection::vec(tool_call(), 0..3)
                .prop_map(Value::Array)
                .boxed(),
        ),
    ]);
    let choice = object_of(vec![
        ("index", count()),
        (message_key, message),
        ("finish_reason", finish_reason()),
        ("logprobs", logprobs()),
    ]);
    object_of(vec![
        ("id", text()),
        ("object", Just(Value::from(object)).boxed()),
        ("created", count()),
        ("model", text()),
        (
            "choices",
            prop::collection::vec(choice, 0..3)
                .prop_map(Value::Array)
                .boxed(),
        ),
        ("usage", usage()),
        ("system_fingerprint", text()),
        (
            "service_tier",
            prop_oneof![Just(Value::from("default")), text()].boxed(),
        ),
    ])
}

/// An error body of one of the shapes providers send, or junk.
fn error_body() -> BoxedStrategy<Vec<u8>> {
    let kind = prop_oneof![
        Just(Value::from("insufficient_quota")),
        Just(Value::from("context_length_exceeded")),
        Just(Value::from("overloaded_error")),
        Just(Value::from("rate_limit_exceeded")),
        Just(Value::from(503)),
        Just(Value::from("None")),
        text(),
    ]
    .boxed();
    let envelope = object_of(vec![
        ("message", text()),
        ("type", kind.clone()),
        ("param", text()),
        ("code", kind.clone()),
    ]);
    let json = prop_oneof![
        envelope
            .clone()
            .prop_map(|e| serde_json::json!({ "error": e })),
        envelope.prop_map(|e| serde_json::json!({ "type": "error", "error": e })),
        (kind, text()).prop_map(|(k, m)| serde_json::json!({ "error": k, "message": m })),
        text().prop_map(|d| serde_json::json!({ "detail": d })),
        junk(),
    ];
    prop_oneof![
        3 => json.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => json_sse_error(),
        1 => any_bytes(),
    ]
    .boxed()
}

/// An error sent as a stream (LiteLLM's mid-stream 503).
fn json_sse_error() -> BoxedStrategy<Vec<u8>> {
    text()
        .prop_map(|m| {
            let body = serde_json::json!({ "error": { "message": m, "code": "503" } });
            format!("data: {body}\n\n").into_bytes()
        })
        .boxed()
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("20".to_owned()),
        Just("1500.5".to_owned()),
        Just("-1".to_owned()),
        Just("1e309".to_owned()),
        Just("NaN".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
        Just("1h2m3.5s".to_owned()),
        Just("99999999999999999999h".to_owned()),
        "[ -~]{0,12}",
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    let name = prop_oneof![
        Just("retry-after"),
        Just("retry-after-ms"),
        Just("x-should-retry"),
        Just("x-request-id"),
        Just("x-ratelimit-remaining-tokens"),
        Just("x-ratelimit-reset-requests"),
        Just("x-ratelimit-reset-tokens"),
    ];
    prop::collection::vec((name, header_value()), 0..5).prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(name, value);
            }
        }
        headers
    })
}

fn status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![
        3 => prop::sample::select(vec![
            200u16, 400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 529,
        ]),
        1 => 100u16..1000,
    ]
    .prop_map(|code| StatusCode::from_u16(code).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// (a) Random events written as SSE decode to the events the spec gives, whole, split
    /// at random points, and byte by byte.
    #[test]
    fn sse_events_decode_the_same_in_any_split(
        events in prop::collection::vec(gen_event(), 0..6),
        bom in any::<bool>(),
        endings in prop::collection::vec(any::<u8>(), 1..6),
        omit_final_blank in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let (body, expected) = render(&events, bom, &endings, omit_final_blank);
        let expected: Vec<Result<SseEvent, SseError>> = expected.into_iter().map(Ok).collect();
        let limit = SseDecoder::DEFAULT_MAX_EVENT_SIZE;
        prop_assert_eq!(&decode_sse(limit, [&body[..]]), &expected);
        prop_assert_eq!(&decode_sse(limit, split(&body, &cuts)), &expected);
        prop_assert_eq!(&decode_sse(limit, body.chunks(1)), &expected);
    }

    /// (b) Arbitrary bytes never panic any decoder; both stream decoders decode them the
    /// same whatever the split, within their buffer bounds, and the stream decoder ends
    /// with exactly one terminal event.
    #[test]
    fn arbitrary_bytes_never_panic_and_decode_the_same_in_any_split(
        body in any_bytes(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        limit in prop_oneof![0usize..48, Just(SseDecoder::DEFAULT_MAX_EVENT_SIZE)],
    ) {
        let reads = split(&body, &cuts);
        let whole = decode_sse(limit, [&body[..]]);
        prop_assert_eq!(&decode_sse(limit, reads.iter().copied()), &whole);

        let stream = || if limit == SseDecoder::DEFAULT_MAX_EVENT_SIZE {
            StreamDecoder::new()
        } else {
            StreamDecoder::with_max_event_size(limit)
        };
        let whole = decode_stream(stream(), [&body[..]]);
        prop_assert_eq!(&decode_stream(stream(), reads.iter().copied()), &whole);
        let mut accumulator = ChatAccumulator::new();
        for event in &whole {
            if let Seen::Chunk(chunk) = event {
                accumulator.push(chunk);
            }
        }
        let _ = accumulator.finish();

        let _ = serde_json::from_slice::<ChatChunk>(&body);
        let _ = serde_json::from_slice::<ChatResponse>(&body);
        if let Some(provider) = ProviderError::from_body(&body) {
            let _ = Error::from_provider(provider).is_retryable();
        }
        check_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), &body);
    }

    /// (c) A line that never ends stops growing at the limit: one typed error once it is
    /// over, none before; then the rest of the event is skipped and decoding recovers.
    #[test]
    fn an_endless_line_stops_at_the_limit_with_a_typed_error(
        limit in 0usize..600,
        start in prop_oneof![Just(&b"data: "[..]), Just(&b":"[..]), Just(&b"x"[..])],
        reads in prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..64)
                .prop_map(|b| b.into_iter().filter(|&c| c != b'\r' && c != b'\n').collect::<Vec<u8>>()),
            1..40,
        ),
    ) {
        let mut decoder = SseDecoder::with_max_event_size(limit);
        let held = limit.max(BOM.len() - 1);
        let mut fed = 0;
        let mut errors = Vec::new();
        for read in std::iter::once(start).chain(reads.iter().map(Vec::as_slice)) {
            decoder.feed(read);
            fed += read.len();
            prop_assert!(decoder.buffered_len() <= held + read.len());
            while let Some(result) = decoder.next_event() {
                errors.push(result);
            }
            prop_assert!(decoder.buffered_len() <= held);
            prop_assert_eq!(errors.len(), usize::from(fed > limit), "fed {} bytes", fed);
        }
        for error in &errors {
            prop_assert_eq!(error, &Err(SseError::EventTooLarge { limit }));
        }
        decoder.feed(b"\ndata: skipped\n\ndata: ok\n\n");
        let mut after = Vec::new();
        while let Some(result) = decoder.next_event() {
            after.push(result);
        }
        let ok = SseEvent { data: "ok".into(), ..SseEvent::default() };
        // The limit counts the raw line, field name included.
        if limit >= b"data: ok".len() {
            prop_assert_eq!(after.last(), Some(&Ok(ok)));
        }
        prop_assert_eq!(decoder.buffered_len(), 0);

        // The stream decoder turns it into one body-too-large error, and stops.
        let mut stream = StreamDecoder::with_max_event_size(limit);
        let mut seen = Vec::new();
        for read in std::iter::once(start).chain(reads.iter().map(Vec::as_slice)) {
            stream.feed(read);
            while let Some(event) = stream.next_event() {
                seen.push(event);
            }
        }
        if fed > limit {
            prop_assert_eq!(seen.len(), 1);
            prop_assert!(matches!(&seen[0], StreamEvent::Error(e) if e.kind() == ErrorKind::BodyTooLarge));
            prop_assert!(stream.is_terminated());
        } else {
            prop_assert!(seen.is_empty());
        }
    }

    /// (d) Chunk- and response-like JSON with junk values decodes or fails without
    /// panicking, and whatever decodes re-serializes and decodes to the same value.
    #[test]
    fn decoded_chunks_and_responses_round_trip(
        chunk in chunk_json(),
        response in response_json(),
    ) {
        let bytes = serde_json::to_vec(&chunk).unwrap();
        if let Ok(first) = serde_json::from_slice::<ChatChunk>(&bytes) {
            let encoded = serde_json::to_vec(&first).unwrap();
            let second: ChatChunk = serde_json::from_slice(&encoded).unwrap();
            prop_assert_eq!(&second, &first);
            let mut accumulator = ChatAccumulator::new();
            accumulator.push(&first);
            serde_json::to_vec(&accumulator.finish()).unwrap();
        }
        let bytes = serde_json::to_vec(&response).unwrap();
        if let Ok(first) = serde_json::from_slice::<ChatResponse>(&bytes) {
            let encoded = serde_json::to_vec(&first).unwrap();
            let second: ChatResponse = serde_json::from_slice(&encoded).unwrap();
            prop_assert_eq!(&second.choices, &first.choices);
            prop_assert_eq!(second.usage, first.usage);
            prop_assert_eq!(&second.service_tier, &first.service_tier);
            prop_assert_eq!(serde_json::to_vec(&second).unwrap(), encoded);
            serde_json::to_vec(&ChatChunk::from_response(first)).unwrap();
        }
    }

    /// (e) Error bodies of any shape, under any status and retry headers, classify as the
    /// status says, follow `x-should-retry`, and keep a raw body only up to its cap.
    #[test]
    fn error_bodies_classify_by_status(
        status in status(),
        headers in headers(),
        body in error_body(),
    ) {
        let error = check_error(status, &headers, &body);
        match headers.get("x-should-retry").and_then(|v| v.to_str().ok()).map(str::trim) {
            Some("true") => prop_assert!(error.is_retryable()),
            Some("false") => prop_assert!(!error.is_retryable()),
            _ => {}
        }
        let _ = (error.retry_after(), error.rate_limit().is_present(), error.request_id());
        if let Ok(first) = serde_json::from_slice::<ProviderError>(&body) {
            let encoded = serde_json::to_vec(&first).unwrap();
            prop_assert_eq!(serde_json::from_slice::<ProviderError>(&encoded).unwrap(), first);
        }
    }
}

/// A crash found while writing the fuzz targets (and reproduced with `response_decoder`):
/// `ProviderError::from_body` read a body that starts with `data:` as an SSE event and
/// recursed on the event's data, once per nesting level and with a copy of the rest each
/// time: `data:` repeated ~4,000 times (20 KB) overflowed a 2 MiB stack (a tokio worker's)
/// and aborted the process. Such a body arrives as an HTTP error body (the transport reads
/// up to 64 KiB) or as the data of an `event: error` in a stream. It now unwraps one event.
#[test]
fn nested_data_prefixes_do_not_overflow_the_stack() {
    let body = [b"data:".repeat(20_000), b"x".to_vec()].concat();
    let worker = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let _ = ProviderError::from_body(&body);
            let mut stream = StreamDecoder::new();
            stream.feed(b"event: error\ndata: ");
            stream.feed(&body);
            stream.feed(b"\n\n");
            assert!(matches!(stream.next_event(), Some(StreamEvent::Error(_))));
        })
        .unwrap();
    worker.join().unwrap();
}

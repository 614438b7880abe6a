//! Codec throughput: request serialization, unary response decoding, and the streaming path
//! (SSE framing alone, framing + chunk decoding, + accumulation) on the recorded gpt-4o
//! streams of `tests/fixtures/` and on a synthetic 10,000-chunk stream fed in 4 KiB reads.
//!
//! Each streaming benchmark runs twice: once in a `…/bytes` group (MB/s) and once in a
//! `…/chunks` group (chunks/s). Issue 7's targets: framing ≥ 1 GB/s, framing + chunk
//! decoding ≥ 250 MB/s.
//!
//! ```text
//! cargo bench -p chatstack-proto --bench codec -- --warm-up-time 1 --measurement-time 2
//! ```

use std::hint::black_box;

use chatstack_proto::sse::SseDecoder;
use chatstack_proto::{
    ChatAccumulator, ChatRequest, ChatResponse, Message, ResponseFormat, StreamDecoder,
    StreamEvent, Tool, ToolChoice,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

/// The size of one read from the socket in the synthetic-stream benchmarks.
const READ_SIZE: usize = 4 * 1024;

/// How many chunks the synthetic stream has (role chunk, content chunks, finish chunk,
/// usage chunk).
const SYNTHETIC_CHUNKS: usize = 10_000;

const FIXTURES: [&[u8]; 12] = [
    include_bytes!("../tests/fixtures/test_allows_non_strict_tools_but_no_parsing.sse"),
    include_bytes!("../tests/fixtures/test_content_logprobs_events.sse"),
    include_bytes!("../tests/fixtures/test_non_pydantic_response_format.sse"),
    include_bytes!("../tests/fixtures/test_parse_max_tokens_reached.sse"),
    include_bytes!("../tests/fixtures/test_parse_multiple_pydantic_tools.sse"),
    include_bytes!("../tests/fixtures/test_parse_nothing.sse"),
    include_bytes!("../tests/fixtures/test_parse_pydantic_model.sse"),
    include_bytes!("../tests/fixtures/test_parse_pydantic_model_multiple_choices.sse"),
    include_bytes!("../tests/fixtures/test_parse_pydantic_model_refusal.sse"),
    include_bytes!("../tests/fixtures/test_parse_pydantic_tool.sse"),
    include_bytes!("../tests/fixtures/test_parse_strict_tools.sse"),
    include_bytes!("../tests/fixtures/test_refusal_logprobs_events.sse"),
];

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// A typical structured-output request: system + user messages, two tools, a JSON schema.
fn typical_request() -> ChatRequest {
    let weather = Tool::function(
        "get_weather",
        "Get the current weather for a city.",
        json!({
            "type": "object",
            "properties": {
                "city": { "type": "string", "description": "The city name, e.g. San Francisco" },
                "country": { "type": "string", "description": "ISO 3166-1 alpha-2 code" },
                "units": { "type": "string", "enum": ["c", "f"] }
            },
            "required": ["city", "country", "units"],
            "additionalProperties": false
        }),
    );
    let search = Tool::function(
        "search_docs",
        "Search the product documentation and return the best matching passages.",
        json!({
            "type": "object",
            "properties": {
                "query": { "type": "string" },
                "top_k": { "type": "integer", "minimum": 1, "maximum": 20 }
            },
            "required": ["query", "top_k"],
            "additionalProperties": false
        }),
    );
    let schema = json!({
        "type": "object",
        "properties": {
            "city": { "type": "string" },
            "temperature": { "type": "number" },
            "units": { "type": "string", "enum": ["c", "f"] },
            "conditions": { "type": "array", "items": { "type": "string" } },
            "summary": { "type": "string" }
        },
        "required": ["city", "temperature", "units", "conditions", "summary"],
        "additionalProperties": false
    });
    ChatRequest::new(
        "gpt-4o-2024-08-06",
        [
            Message::system(
                "You are a helpful assistant for a travel company. Answer concisely, use the \
                 tools when the user asks about weather or about our products, and always \
                 reply in the requested JSON format.",
            ),
            Message::user(
                "What's the weather like in San Francisco today, and should I bring a jacket \
                 for an evening walk along the Embarcadero?",
            ),
        ],
    )
    .tool(weather)
    .tool(search)
    .tool_choice(ToolChoice::Auto)
    .response_format(ResponseFormat::json_schema("weather_report", schema))
    .temperature(0.2)
    .max_completion_tokens(512)
    .user("user-1234")
}

/// A realistic unary response: one choice with a few hundred bytes of text, usage with details.
const RESPONSE_JSON: &str = r#"{
  "id": "chatcmpl-ABfw1e5abtU8OwGr15vOreYVb2MiF",
  "object": "chat.completion",
  "created": 1727346169,
  "model": "gpt-4o-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "{\"city\":\"San Francisco\",\"temperature\":17.5,\"units\":\"c\",\"conditions\":[\"fog in the morning\",\"clearing by noon\",\"breezy\"],\"summary\":\"A typical San Francisco day: fog burns off by midday, then sunny and breezy. Evenings cool quickly near the water, so bring a light jacket for a walk along the Embarcadero.\"}",
        "refusal": null
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 212,
    "completion_tokens": 71,
    "total_tokens": 283,
    "prompt_tokens_details": { "cached_tokens": 128, "audio_tokens": 0 },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_5050236cbd"
}"#;

/// A gpt-4o-style stream of `SYNTHETIC_CHUNKS` chunks: a role chunk, small content deltas
/// (with the odd escape), a finish chunk, a usage chunk, then `[DONE]`.
fn synthetic_stream() -> Vec<u8> {
    const WORDS: [&str; 16] = [
        " the",
        " quick",
        " brown",
        " fox",
        " jumps",
        " over",
        " a",
        " lazy",
        " dog",
        ",",
        " and",
        "\\n\\n",
        " \\\"quoted\\\"",
        " é",
        "s",
        ".",
    ];
    let head = r#"data: {"id":"chatcmpl-AZbq6XfB1cZ2a9mG4WnKpL0sT7vYe","object":"chat.completion.chunk","created":1733150610,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_7f6be3efb0","choices":[{"index":0,"delta":"#;
    let mut out = Vec::with_capacity(SYNTHETIC_CHUNKS * 300);
    let mut push = |delta: &str, finish: &str| {
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(delta.as_bytes());
        out.extend_from_slice(br#","logprobs":null,"finish_reason":"#);
        out.extend_from_slice(finish.as_bytes());
        out.extend_from_slice(b"}],\"usage\":null}\n\n");
    };
    push(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
    );
    for i in 0..SYNTHETIC_CHUNKS - 3 {
        push(
            &format!(r#"{{"content":"{}"}}"#, WORDS[i % WORDS.len()]),
            "null",
        );
    }
    push("{}", r#""stop""#);
    out.extend_from_slice(
        br#"data: {"id":"chatcmpl-AZbq6XfB1cZ2a9mG4WnKpL0sT7vYe","object":"chat.completion.chunk","created":1733150610,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_7f6be3efb0","choices":[],"usage":{"prompt_tokens":212,"completion_tokens":9998,"total_tokens":10210,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
    );
    out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    out
}

// ---------------------------------------------------------------------------------------------
// The three streaming stages, each over a list of bodies, each body fed in `read`-byte pieces
// ---------------------------------------------------------------------------------------------

/// SSE framing alone: feed, drain events. Returns the number of events.
fn frame(bodies: &[&[u8]], read: usize) -> usize {
    let mut events = 0;
    for body in bodies {
        let mut decoder = SseDecoder::new();
        for piece in body.chunks(read) {
            decoder.feed(piece);
            while let Some(event) = decoder.next_event() {
                black_box(event.ok());
                events += 1;
            }
        }
        while let Some(event) = decoder.finish() {
            black_box(event);
            events += 1;
        }
    }
    events
}

/// Framing + chunk decoding. Returns the number of chunks; panics on an error or a missing
/// `[DONE]`.
fn decode(bodies: &[&[u8]], read: usize) -> usize {
    let mut chunks = 0;
    for body in bodies {
        let mut decoder = StreamDecoder::new();
        let mut drain = |decoder: &mut StreamDecoder| {
            while let Some(event) = decoder.next_event() {
                match event {
                    StreamEvent::Chunk(chunk) => {
                        black_box(chunk);
                        chunks += 1;
                    }
                    StreamEvent::Done => {}
                    StreamEvent::Error(error) => panic!("{error}"),
                }
            }
        };
        for piece in body.chunks(read) {
            decoder.feed(piece);
            drain(&mut decoder);
        }
        decoder.finish();
        drain(&mut decoder);
        assert!(decoder.is_done());
    }
    chunks
}

/// Framing + chunk decoding + accumulation into a `ChatResponse` per body. Returns the number
/// of chunks.
fn accumulate(bodies: &[&[u8]], read: usize) -> usize {
    let mut chunks = 0;
    for body in bodies {
        let mut decoder = StreamDecoder::new();
        let mut accumulator = ChatAccumulator::new();
        let mut drain = |decoder: &mut StreamDecoder, accumulator: &mut ChatAccumulator| {
            while let Some(event) = decoder.next_event() {
                match event {
                    StreamEvent::Chunk(chunk) => {
                        accumulator.push(&chunk);
                        chunks += 1;
                    }
                    StreamEvent::Done => {}
                    StreamEvent::Error(error) => panic!("{error}"),
                }
            }
        };
        for piece in body.chunks(read) {
            decoder.feed(piece);
            drain(&mut decoder, &mut accumulator);
        }
        decoder.finish();
        drain(&mut decoder, &mut accumulator);
        black_box(accumulator.finish());
    }
    chunks
}

/// Registers the three stages on `bodies` in `group`.
fn stages(group: &mut BenchmarkGroup<'_, WallTime>, bodies: &[&[u8]], read: usize) {
    group.bench_function("sse_framing", |b| b.iter(|| frame(black_box(bodies), read)));
    group.bench_function("framing+chunk_decode", |b| {
        b.iter(|| decode(black_box(bodies), read))
    });
    group.bench_function("framing+decode+accumulate", |b| {
        b.iter(|| accumulate(black_box(bodies), read))
    });
}

/// Both throughput groups (bytes and chunks) for one input.
/// `read` is the size of the pieces each body is fed in.
fn stream_groups(c: &mut Criterion, name: &str, bodies: &[&[u8]], read: usize) {
    let bytes: usize = bodies.iter().map(|body| body.len()).sum();
    // Check every stage on the input once, and count its chunks.
    let chunks = decode(bodies, read);
    assert_eq!(accumulate(bodies, read), chunks);
    assert_eq!(
        frame(bodies, read),
        chunks + bodies.len(),
        "chunks + one [DONE] each"
    );
    eprintln!(
        "{name}: {} bodies, {bytes} bytes, {chunks} chunks",
        bodies.len()
    );

    let mut group = c.benchmark_group(format!("{name}/bytes"));
    group.throughput(Throughput::Bytes(bytes as u64));
    stages(&mut group, bodies, read);
    group.finish();

    let mut group = c.benchmark_group(format!("{name}/chunks"));
    group.throughput(Throughput::Elements(chunks as u64));
    stages(&mut group, bodies, read);
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

fn unary(c: &mut Criterion) {
    let request = typical_request();
    let body = serde_json::to_vec(&request).expect("the request serializes");
    let mut group = c.benchmark_group("request_serialize");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&request)).unwrap())
    });
    group.finish();

    let response: ChatResponse = serde_json::from_str(RESPONSE_JSON).expect("the response decodes");
    assert!(response.usage.is_some() && response.text().is_some());
    let mut group = c.benchmark_group("response_decode");
    group.throughput(Throughput::Bytes(RESPONSE_JSON.len() as u64));
    group.bench_function("from_slice", |b| {
        b.iter(|| serde_json::from_slice::<ChatResponse>(black_box(RESPONSE_JSON.as_bytes())))
    });
    group.finish();
}

fn fixtures(c: &mut Criterion) {
    // Each recorded stream is fed whole, one after the other, each to a fresh decoder (a
    // `StreamDecoder` stops at its first `[DONE]`).
    stream_groups(c, "fixtures", &FIXTURES, usize::MAX);
}

fn synthetic(c: &mut Criterion) {
    let body = synthetic_stream();
    stream_groups(c, "synthetic_10k", &[body.as_slice()], READ_SIZE);
}

criterion_group!(benches, unary, fixtures, synthetic);
criterion_main!(benches);

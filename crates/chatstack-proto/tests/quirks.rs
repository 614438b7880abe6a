//! One test per quirk of real OpenAI-compatible servers listed in the shared fixtures README
//! (LiteLLM, llama.cpp, llama-cpp-python, Azure, DeepSeek, Anthropic, and others): each
//! reproduces the quirk with a hand-written SSE or JSON body and asserts what chatstack makes
//! of it — the chunks and terminal event of [`StreamDecoder`], the response of
//! [`ChatAccumulator`], or the kind, message and retryability of [`Error::from_response`].

use chatstack_proto::{
    ChatAccumulator, ChatChunk, ChatResponse, Error, ErrorKind, FinishReason, ServiceTier,
    StreamDecoder, StreamEvent,
};
use http::{HeaderMap, HeaderValue, StatusCode};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// How a decoded stream ended.
#[derive(Debug)]
enum End {
    Done,
    Error(Error),
    /// No terminal event at all (must never happen after `finish`).
    Nothing,
}

/// What the decoder made of a body.
#[derive(Debug)]
struct Decoded {
    chunks: Vec<ChatChunk>,
    end: End,
}

impl Decoded {
    fn error(&self) -> &Error {
        match &self.end {
            End::Error(error) => error,
            other => panic!("expected the stream to fail, it ended with {other:?}"),
        }
    }

    fn assert_done(&self) {
        assert!(
            matches!(self.end, End::Done),
            "expected Done, got {:?}",
            self.end
        );
    }

    fn response(&self) -> ChatResponse {
        let mut accumulator = ChatAccumulator::new();
        for chunk in &self.chunks {
            accumulator.push(chunk);
        }
        accumulator.finish()
    }
}

/// Feeds `body` in pieces of `size` bytes, then finishes; checks that exactly one terminal
/// event comes, last.
fn decode_in(body: &str, size: usize) -> Decoded {
    let mut decoder = StreamDecoder::new();
    let mut events = Vec::new();
    for piece in body.as_bytes().chunks(size.max(1)) {
        decoder.feed(piece);
        while let Some(event) = decoder.next_event() {
            events.push(event);
        }
    }
    decoder.finish();
    while let Some(event) = decoder.next_event() {
        events.push(event);
    }
    assert!(decoder.is_terminated());
    let mut chunks = Vec::new();
    let mut end = End::Nothing;
    for event in events {
        assert!(
            matches!(end, End::Nothing),
            "an event after the terminal one: {event:?}"
        );
        match event {
            StreamEvent::Chunk(chunk) => chunks.push(chunk),
            StreamEvent::Done => end = End::Done,
            StreamEvent::Error(error) => end = End::Error(error),
        }
    }
    assert!(
        !matches!(end, End::Nothing),
        "finish() must leave a terminal event"
    );
    Decoded { chunks, end }
}

/// Decodes `body` whole and byte by byte; both must give the same chunks and the same kind
/// of end.
fn decode(body: &str) -> Decoded {
    let whole = decode_in(body, body.len());
    let bytewise = decode_in(body, 1);
    assert_eq!(whole.chunks, bytewise.chunks, "split reads change nothing");
    match (&whole.end, &bytewise.end) {
        (End::Done, End::Done) => {}
        (End::Error(a), End::Error(b)) => assert_eq!(a.kind(), b.kind()),
        (a, b) => panic!("whole ended with {a:?}, byte by byte with {b:?}"),
    }
    whole
}

/// An SSE body of `data:` events, one per JSON payload, ending with `[DONE]`.
fn sse(payloads: &[&str]) -> String {
    let mut body = sse_without_done(payloads);
    body.push_str("data: [DONE]\n\n");
    body
}

/// An SSE body of `data:` events without the final `[DONE]`.
fn sse_without_done(payloads: &[&str]) -> String {
    payloads.iter().map(|p| format!("data: {p}\n\n")).collect()
}

fn classify(status: u16, body: &str) -> Error {
    Error::from_response(
        StatusCode::from_u16(status).unwrap(),
        &HeaderMap::new(),
        body.as_bytes(),
    )
}

fn text(response: &ChatResponse, index: usize) -> Option<&str> {
    response.choices[index].message.content.as_deref()
}

// ---------------------------------------------------------------------------------------------
// LiteLLM proxy
// ---------------------------------------------------------------------------------------------

#[test]
fn litellm_usage_chunk_with_empty_delta_choice() {
    let decoded = decode(&sse(&[
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}}"#,
    ]));
    decoded.assert_done();
    assert_eq!(decoded.chunks[2].choices.len(), 1);
    let response = decoded.response();
    assert_eq!(response.choices.len(), 1, "the usage chunk adds no choice");
    assert_eq!(text(&response, 0), Some("Hi"));
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::Stop),
        "the usage chunk's empty choice must not clear the finish reason"
    );
    assert_eq!(response.usage.unwrap().total_tokens, 8);
}

#[test]
fn litellm_chunks_omit_usage() {
    let decoded = decode(&sse(&[
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
        r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c1","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
    ]));
    decoded.assert_done();
    assert_eq!(decoded.chunks[0].usage, None);
    assert_eq!(decoded.chunks[1].usage, None);
    let response = decoded.response();
    assert_eq!(text(&response, 0), Some("ab"));
    let usage = response.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (3, 2, 5)
    );
}

#[test]
fn litellm_error_code_string_and_type_param_none() {
    let body = r#"{"error":{"message":"litellm.RateLimitError: rate limited","type":"None","param":"None","code":"429"}}"#;
    let error = classify(429, body);
    assert_eq!(error.kind(), ErrorKind::RateLimited);
    assert!(error.is_retryable());
    assert_eq!(error.message(), "litellm.RateLimitError: rate limited");
    let provider = error.provider().expect("the envelope is kept");
    assert_eq!(provider.code.as_deref(), Some("429"));
    assert_eq!(provider.kind, None, "the string \"None\" means no type");
    assert_eq!(provider.param, None, "the string \"None\" means no param");

    // The same envelope as an event of a 200 stream: the string code still says rate limit.
    let decoded = decode(&sse_without_done(&[body]));
    assert_eq!(decoded.error().kind(), ErrorKind::RateLimited);
    assert!(decoded.error().is_retryable());
}

#[test]
fn litellm_mid_stream_503_event_stream_body() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    let body = "data: {\"error\":{\"message\":\"litellm.ServiceUnavailableError: upstream connection reset\",\"type\":\"None\",\"param\":\"None\",\"code\":\"503\"}}\n\n";
    let error = Error::from_response(StatusCode::SERVICE_UNAVAILABLE, &headers, body.as_bytes());
    assert_eq!(error.kind(), ErrorKind::Server);
    assert!(error.is_retryable());
    assert_eq!(
        error.message(),
        "litellm.ServiceUnavailableError: upstream connection reset",
        "the message comes from the envelope inside the event, not the raw body"
    );
    let provider = error
        .provider()
        .expect("the envelope is read from the event");
    assert_eq!(provider.code.as_deref(), Some("503"));
    assert_eq!(error.body(), None, "the body was understood");
    // Also when the body stops without the event's closing blank line.
    let unterminated = Error::from_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &headers,
        body.trim_end().as_bytes(),
    );
    assert_eq!(unterminated.message(), error.message());

    // When the failure comes after the 200 head was sent, the same event arrives inside the
    // stream: its code, an HTTP status as a string, must classify it the same way.
    let decoded = decode(&format!(
        "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"Hi\"}}}}]}}\n\n{body}"
    ));
    assert_eq!(decoded.chunks.len(), 1);
    let error = decoded.error();
    assert_eq!(error.kind(), ErrorKind::Server);
    assert!(error.is_retryable());
    assert_eq!(
        error.message(),
        "litellm.ServiceUnavailableError: upstream connection reset"
    );
}

#[test]
fn litellm_429_without_retry_after() {
    let error = classify(
        429,
        r#"{"error":{"message":"Rate limit reached","type":"None","param":"None","code":"429"}}"#,
    );
    assert!(error.is_rate_limited());
    assert!(error.is_retryable());
    assert_eq!(error.retry_after(), None, "no header, no invented wait");
    assert_eq!(error.should_retry_header(), None);
}

// ---------------------------------------------------------------------------------------------
// llama.cpp server
// ---------------------------------------------------------------------------------------------

#[test]
fn llama_cpp_integer_error_code() {
    let error = classify(
        401,
        r#"{"error":{"code":401,"message":"Invalid API Key","type":"authentication_error"}}"#,
    );
    assert_eq!(error.kind(), ErrorKind::Auth);
    assert!(!error.is_retryable());
    assert_eq!(error.message(), "Invalid API Key");
    let provider = error.provider().unwrap();
    assert_eq!(provider.code.as_deref(), Some("401"));
    assert_eq!(provider.kind.as_deref(), Some("authentication_error"));
}

#[test]
fn llama_cpp_extra_timings_object() {
    let decoded = decode(&sse(&[
        r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"Hello"}}],"created":1727000000,"id":"chatcmpl-x","model":"llama","system_fingerprint":"b4000-abc","object":"chat.completion.chunk"}"#,
        r#"{"choices":[{"finish_reason":"stop","index":0,"delta":{}}],"created":1727000000,"id":"chatcmpl-x","model":"llama","system_fingerprint":"b4000-abc","object":"chat.completion.chunk","usage":{"completion_tokens":1,"prompt_tokens":4,"total_tokens":5},"timings":{"prompt_n":4,"prompt_ms":12.5,"prompt_per_token_ms":3.1,"predicted_n":1,"predicted_ms":20.0,"predicted_per_second":50.0}}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    assert_eq!(text(&response, 0), Some("Hello"));
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(response.usage.unwrap().total_tokens, 5);
    assert_eq!(response.system_fingerprint.as_deref(), Some("b4000-abc"));
}

#[test]
fn llama_cpp_first_chunk_role_and_null_content() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","model":"llama","choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]}"#,
        r#"{"id":"c","model":"llama","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
        r#"{"id":"c","model":"llama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ]));
    decoded.assert_done();
    let first = &decoded.chunks[0].choices[0].delta;
    assert_eq!(first.role.as_ref().map(|r| r.as_str()), Some("assistant"));
    assert_eq!(first.content, None);
    let response = decoded.response();
    assert_eq!(text(&response, 0), Some("Hi"));
    assert_eq!(response.choices[0].message.role.as_str(), "assistant");
}

#[test]
fn llama_cpp_exceed_context_size_error() {
    let error = classify(
        400,
        r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":4096}}"#,
    );
    assert_eq!(error.kind(), ErrorKind::ContextLengthExceeded);
    assert!(error.is_context_length_exceeded());
    assert!(error.is_invalid_request());
    assert!(!error.is_retryable());
    assert_eq!(
        error.message(),
        "the request exceeds the available context size, try increasing it"
    );
}

#[test]
fn llama_cpp_503_loading_model() {
    let error = classify(
        503,
        r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#,
    );
    assert_eq!(error.kind(), ErrorKind::Server);
    assert!(error.is_retryable(), "the model will be loaded soon");
    assert_eq!(error.message(), "Loading model");
    assert_eq!(error.provider().unwrap().code.as_deref(), Some("503"));
}

// ---------------------------------------------------------------------------------------------
// llama-cpp-python server
// ---------------------------------------------------------------------------------------------

#[test]
fn llama_cpp_python_no_usage_chunk() {
    // Asked with include_usage, answered without any usage.
    let decoded = decode(&sse(&[
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"local","choices":[{"index":0,"delta":{"role":"assistant"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"local","choices":[{"index":0,"delta":{"content":"Yes"},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"local","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    assert_eq!(text(&response, 0), Some("Yes"));
    assert_eq!(response.usage, None, "no usage is not zero usage");
}

#[test]
fn llama_cpp_python_401_detail_body() {
    let error = classify(401, r#"{"detail":"Invalid API key"}"#);
    assert_eq!(error.kind(), ErrorKind::Auth);
    assert!(error.is_auth());
    assert!(!error.is_retryable());
    assert_eq!(error.message(), "Invalid API key");
}

#[test]
fn llama_cpp_python_tool_calls_repeat_id_and_name_with_nulls() {
    let piece = |arguments: &str, finish: &str| {
        format!(
            r#"{{"id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"local","choices":[{{"index":0,"delta":{{"role":null,"content":null,"function_call":null,"tool_calls":[{{"index":0,"id":"call__0_get_weather_cmpl-2","type":"function","function":{{"name":"get_weather","arguments":{arguments}}}}}]}},"logprobs":null,"finish_reason":{finish}}}]}}"#
        )
    };
    let payloads = [
        piece(r#""{\"location\": ""#, "null"),
        piece(r#""\"Paris\"""#, "null"),
        piece(r#""}""#, "null"),
        r#"{"id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"local","choices":[{"index":0,"delta":{"role":null,"content":null,"function_call":null,"tool_calls":null},"logprobs":null,"finish_reason":"tool_calls"}]}"#.to_owned(),
    ];
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let decoded = decode(&sse(&payloads));
    decoded.assert_done();
    let response = decoded.response();
    let calls = response.tool_calls();
    assert_eq!(calls.len(), 1, "a repeated id is the same call");
    assert_eq!(calls[0].id, "call__0_get_weather_cmpl-2");
    assert_eq!(
        calls[0].function.name, "get_weather",
        "a repeated name is not appended"
    );
    assert_eq!(calls[0].function.arguments, r#"{"location": "Paris"}"#);
    assert_eq!(response.text(), None);
    assert_eq!(response.finish_reasons(), [&FinishReason::ToolCalls]);
}

// ---------------------------------------------------------------------------------------------
// Other providers
// ---------------------------------------------------------------------------------------------

#[test]
fn finish_reason_empty_string() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":""}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":""}]}"#,
    ]));
    decoded.assert_done();
    assert_eq!(
        decoded.chunks[0].choices[0].finish_reason, None,
        "\"\" means not finished"
    );
    let response = decoded.response();
    assert_eq!(text(&response, 0), Some("ab"));
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::Stop),
        "a later \"\" does not erase the finish reason"
    );
}

#[test]
fn finish_reason_eos() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"done"},"finish_reason":null}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"eos"}]}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::Other("eos".to_owned()))
    );
    assert_eq!(
        response.choices[0].finish_reason.as_ref().unwrap().as_str(),
        "eos"
    );
}

#[test]
fn service_tier_on_demand() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","model":"llama-3.3-70b","service_tier":"on_demand","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}"#,
    ]));
    decoded.assert_done();
    let tier = ServiceTier::Other("on_demand".to_owned());
    assert_eq!(decoded.chunks[0].service_tier, Some(tier.clone()));
    assert_eq!(decoded.response().service_tier, Some(tier.clone()));
    let unary: ChatResponse = serde_json::from_str(
        r#"{"id":"c","object":"chat.completion","model":"m","service_tier":"on_demand","choices":[]}"#,
    )
    .unwrap();
    assert_eq!(unary.service_tier, Some(tier));
    assert_eq!(
        serde_json::to_value(&unary).unwrap()["service_tier"],
        "on_demand",
        "an unknown tier is kept as sent"
    );
}

#[test]
fn chunks_without_delta() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hey"}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"finish_reason":"stop"}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":null}]}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    assert_eq!(text(&response, 0), Some("hey"));
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
}

#[test]
fn usage_empty_object() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"}}],"usage":{}}"#,
        r#"{"id":"c","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{}}"#,
    ]));
    decoded.assert_done();
    assert_eq!(decoded.chunks[0].usage, None, "usage: {{}} is no usage");
    let response = decoded.response();
    assert_eq!(
        response.usage.unwrap().total_tokens,
        3,
        "a later usage: {{}} does not erase the real one"
    );
    let unary: ChatResponse =
        serde_json::from_str(r#"{"id":"c","choices":[],"usage":{}}"#).unwrap();
    assert_eq!(unary.usage, None);
}

#[test]
fn usage_in_every_chunk_cumulative() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"}}],"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"b"}}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"c"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    assert_eq!(text(&response, 0), Some("abc"));
    let usage = response.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (10, 3, 13),
        "cumulative: the last wins, nothing is summed"
    );
}

#[test]
fn azure_content_filter_chunks_with_empty_choices() {
    let decoded = decode(&sse(&[
        // The first chunk: prompt filter results, no choices, and blank id/model/created.
        r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}"#,
        r#"{"choices":[{"content_filter_results":{},"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1727000000,"id":"chatcmpl-az","model":"gpt-4o-2024-05-13","object":"chat.completion.chunk","system_fingerprint":"fp_az"}"#,
        r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"Safe text"},"finish_reason":null,"index":0,"logprobs":null}],"created":1727000000,"id":"chatcmpl-az","model":"gpt-4o-2024-05-13","object":"chat.completion.chunk","system_fingerprint":"fp_az"}"#,
        r#"{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1727000000,"id":"chatcmpl-az","model":"gpt-4o-2024-05-13","object":"chat.completion.chunk","system_fingerprint":"fp_az"}"#,
        // Asynchronous filter: a trailing annotation chunk without delta or finish reason.
        r#"{"choices":[{"content_filter_offsets":{"check_offset":0,"start_offset":0,"end_offset":9},"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"finish_reason":null,"index":0}],"created":0,"id":"","model":"","object":""}"#,
    ]));
    decoded.assert_done();
    assert!(decoded.chunks[0].choices.is_empty());
    let response = decoded.response();
    assert_eq!(response.id, "chatcmpl-az", "a blank id is not the id");
    assert_eq!(response.model, "gpt-4o-2024-05-13");
    assert_eq!(response.created, 1727000000);
    assert_eq!(response.choices.len(), 1);
    assert_eq!(text(&response, 0), Some("Safe text"));
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
}

#[test]
fn deepseek_reasoning_content_deltas() {
    let decoded = decode(&sse(&[
        r#"{"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Let me "},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"think."},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"42","reasoning_content":null},"logprobs":null,"finish_reason":null}]}"#,
        r#"{"id":"d","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"","reasoning_content":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":7},"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":5}}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    let message = &response.choices[0].message;
    assert_eq!(message.reasoning_content.as_deref(), Some("Let me think."));
    assert_eq!(
        message.content.as_deref(),
        Some("42"),
        "reasoning is kept apart"
    );
    assert_eq!(
        response
            .usage
            .unwrap()
            .completion_tokens_details
            .reasoning_tokens,
        7
    );
}

#[test]
fn anthropic_overloaded_error_event_in_200_stream() {
    let body = concat!(
        "data: {\"id\":\"msg_1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\"}}]}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let decoded = decode(body);
    assert_eq!(decoded.chunks.len(), 1);
    let error = decoded.error();
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert!(error.is_retryable());
    assert!(error.is_server());
    assert_eq!(error.message(), "Overloaded");

    // The same error without the `event: error` line.
    let decoded = decode(
        "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    assert!(decoded.chunks.is_empty());
    assert_eq!(decoded.error().kind(), ErrorKind::Overloaded);
    assert!(decoded.error().is_retryable());
}

// ---------------------------------------------------------------------------------------------
// Error bodies in other shapes
// ---------------------------------------------------------------------------------------------

#[test]
fn error_body_detail() {
    let error = classify(404, r#"{"detail":"Model 'gpt-5-mega' not found"}"#);
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert_eq!(error.message(), "Model 'gpt-5-mega' not found");
    assert!(!error.is_retryable());
    let error = classify(500, r#"{"detail":"Internal error"}"#);
    assert_eq!(error.kind(), ErrorKind::Server);
    assert_eq!(error.message(), "Internal error");
}

#[test]
fn error_body_error_as_string() {
    let error = classify(
        400,
        r#"{"error":"SyntaxError","message":"Unexpected token } in JSON at position 12"}"#,
    );
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert_eq!(error.message(), "Unexpected token } in JSON at position 12");
    assert_eq!(
        error.provider().unwrap().kind.as_deref(),
        Some("SyntaxError")
    );
    assert!(!error.is_retryable());
}

#[test]
fn error_body_text_plain_500() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let error = Error::from_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &headers,
        b"Internal Server Error\n",
    );
    assert_eq!(error.kind(), ErrorKind::Server);
    assert!(error.is_retryable());
    assert_eq!(error.message(), "Internal Server Error");
    assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
}

#[test]
fn event_stream_body_that_is_plain_json_error_envelope() {
    let decoded = decode(
        "{\n  \"error\": {\n    \"message\": \"Invalid value for 'temperature'\",\n    \"type\": \"invalid_request_error\",\n    \"param\": \"temperature\",\n    \"code\": null\n  }\n}\n",
    );
    assert!(decoded.chunks.is_empty());
    let error = decoded.error();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert_eq!(error.message(), "Invalid value for 'temperature'");
    assert_eq!(
        error.provider().unwrap().param.as_deref(),
        Some("temperature")
    );
    assert!(!error.is_retryable());
}

#[test]
fn event_stream_body_that_is_plain_json_whole_completion() {
    let decoded = decode(
        r#"{"id":"chatcmpl-9","object":"chat.completion","created":5,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Plain answer","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#,
    );
    decoded.assert_done();
    assert_eq!(decoded.chunks.len(), 1, "a Chunk, then Done");
    let response = decoded.response();
    assert_eq!(response.id, "chatcmpl-9");
    assert_eq!(response.text(), Some("Plain answer"));
    assert_eq!(response.tool_calls().len(), 1);
    assert_eq!(response.tool_calls()[0].function.name, "f");
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(response.usage.unwrap().total_tokens, 6);
}

#[test]
fn status_529_empty_reason_phrase() {
    let error = classify(529, "");
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert!(error.is_retryable());
    assert!(error.is_provider_fault());
    assert_eq!(
        error.message(),
        "HTTP 529",
        "no reason phrase, no dangling space"
    );
    let error = classify(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(error.kind(), ErrorKind::Overloaded);
    assert_eq!(error.message(), "Overloaded");
}

#[test]
fn status_422_missing_field() {
    let error = classify(
        422,
        r#"{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required","input":{"model":"m"}}]}"#,
    );
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert!(error.is_invalid_request());
    assert!(!error.is_retryable());
    assert!(
        error.message().contains("Field required"),
        "the detail is kept: {}",
        error.message()
    );
}

// ---------------------------------------------------------------------------------------------
// Streams that end badly
// ---------------------------------------------------------------------------------------------

#[test]
fn stream_content_then_error_event_without_done() {
    let decoded = decode(&sse_without_done(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Once upon"}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":" a time"}}]}"#,
        r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#,
    ]));
    assert_eq!(
        decoded.chunks.len(),
        2,
        "the content before the error is kept"
    );
    let error = decoded.error();
    assert_eq!(error.kind(), ErrorKind::Server, "the error, not Incomplete");
    assert!(!error.is_incomplete());
    assert_eq!(
        error.message(),
        "The server had an error while processing your request."
    );
}

#[test]
fn stream_200_with_no_events() {
    let decoded = decode("");
    assert!(decoded.chunks.is_empty());
    assert_eq!(decoded.error().kind(), ErrorKind::Incomplete);
    assert!(decoded.error().is_retryable());

    // Only keep-alive comments and blank lines: still no events.
    let decoded = decode(": keep-alive\n\n: ping\n\n\n");
    assert!(decoded.chunks.is_empty());
    assert_eq!(decoded.error().kind(), ErrorKind::Incomplete);
}

#[test]
fn stream_dropped_before_done() {
    let chunks = [
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
    ];
    // Dropped between events.
    let decoded = decode(&sse_without_done(&chunks));
    assert_eq!(decoded.chunks.len(), 2);
    assert_eq!(decoded.error().kind(), ErrorKind::Incomplete);
    assert_eq!(text(&decoded.response(), 0), Some("Hello"));

    // Dropped in the middle of an event: the torn event is a sign of the drop, not a
    // malformed chunk.
    let mut torn = sse_without_done(&chunks);
    torn.push_str(r#"data: {"id":"c","choices":[{"index":0,"delta":{"cont"#);
    let decoded = decode(&torn);
    assert_eq!(decoded.chunks.len(), 2);
    assert_eq!(decoded.error().kind(), ErrorKind::Incomplete);
    assert!(decoded.error().is_retryable());
}

// ---------------------------------------------------------------------------------------------
// Several choices (n=2)
// ---------------------------------------------------------------------------------------------

#[test]
fn n2_interleaved_by_index() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{"content":"B1"}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"A1"}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"A2"}},{"index":1,"delta":{"content":"B2"}}]}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{},"finish_reason":"length"}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    assert_eq!(response.choices.len(), 2);
    assert_eq!(response.choices[0].index, 0);
    assert_eq!(text(&response, 0), Some("A1A2"));
    assert_eq!(text(&response, 1), Some("B1B2"));
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        response.choices[1].finish_reason,
        Some(FinishReason::Length)
    );
}

#[test]
fn n2_one_after_the_other() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":1,"delta":{"content":"second "}}]}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{"content":"answer"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"first "}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"answer"},"finish_reason":"stop"}]}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    let indices: Vec<u32> = response.choices.iter().map(|c| c.index).collect();
    assert_eq!(indices, [0, 1], "choices come out in index order");
    assert_eq!(text(&response, 0), Some("first answer"));
    assert_eq!(text(&response, 1), Some("second answer"));
}

#[test]
fn usage_chunk_per_choice_mid_stream() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"zero"},"finish_reason":"stop"}]}"#,
        r#"{"id":"c","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{"content":"one"}}]}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"id":"c","choices":[{"index":1,"delta":{}}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}"#,
    ]));
    decoded.assert_done();
    assert_eq!(
        decoded.chunks.len(),
        5,
        "a usage chunk does not end the stream"
    );
    let response = decoded.response();
    assert_eq!(response.choices.len(), 2);
    assert_eq!(text(&response, 0), Some("zero"));
    assert_eq!(text(&response, 1), Some("one"));
    assert_eq!(response.choices[1].finish_reason, Some(FinishReason::Stop));
    assert_eq!(
        response.usage.unwrap().total_tokens,
        12,
        "usage is the last one reported (usage reports are cumulative)"
    );
}

#[test]
fn choice_never_gets_finish_reason() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(response.choices[1].finish_reason, None);
    assert_eq!(text(&response, 1), Some("b"));
    assert_eq!(response.finish_reasons(), [&FinishReason::Stop]);
}

// ---------------------------------------------------------------------------------------------
// Tool calls
// ---------------------------------------------------------------------------------------------

/// A tool-call stream whose first delta carries `content` as given (`None`: no key at all).
fn tool_call_stream(content: Option<&str>) -> Decoded {
    let content = content.map_or(String::new(), |c| format!(r#""content":{c},"#));
    let first = format!(
        r#"{{"id":"c","choices":[{{"index":0,"delta":{{"role":"assistant",{content}"tool_calls":[{{"index":0,"id":"call_1","type":"function","function":{{"name":"lookup","arguments":""}}}}]}}}}]}}"#
    );
    decode(&sse(&[
        &first,
        r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
    ]))
}

fn assert_lookup_call(response: &ChatResponse) {
    let calls = response.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "call_1");
    assert_eq!(calls[0].function.name, "lookup");
    assert_eq!(calls[0].function.arguments, r#"{"q":1}"#);
    assert_eq!(response.finish_reasons(), [&FinishReason::ToolCalls]);
}

#[test]
fn tool_calls_with_content_empty_string() {
    let decoded = tool_call_stream(Some(r#""""#));
    decoded.assert_done();
    let response = decoded.response();
    assert_lookup_call(&response);
    assert_eq!(response.text(), None, "\"\" beside tool calls is no text");
}

#[test]
fn tool_calls_with_content_null() {
    let decoded = tool_call_stream(Some("null"));
    decoded.assert_done();
    let response = decoded.response();
    assert_lookup_call(&response);
    assert_eq!(response.text(), None);
}

#[test]
fn tool_calls_with_content_missing() {
    let decoded = tool_call_stream(None);
    decoded.assert_done();
    let response = decoded.response();
    assert_lookup_call(&response);
    assert_eq!(response.text(), None);
}

#[test]
fn tool_call_ids_in_any_format() {
    let ids = [
        "call_abc123",
        "toolu_01A09q90qw90lq917835lq9",
        "D681PevKs",
        "0",
        "functions.get_weather:0",
        "3f2a9c1e-7b4d-4e8a-9f0b-1c2d3e4f5a6b",
    ];
    let payloads: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                r#"{{"id":"c","choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{i},"id":"{id}","type":"function","function":{{"name":"f{i}","arguments":"{{}}"}}}}]}}}}]}}"#
            )
        })
        .collect();
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let decoded = decode(&sse(&payloads));
    decoded.assert_done();
    let response = decoded.response();
    let got: Vec<&str> = response
        .tool_calls()
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(got, ids, "ids are opaque strings, kept as sent");
    for (i, call) in response.tool_calls().iter().enumerate() {
        assert_eq!(call.function.name, format!("f{i}"));
        assert_eq!(call.function.arguments, "{}");
    }
}

#[test]
fn tool_call_id_and_name_repeated_in_every_delta() {
    // Two parallel calls, each piece repeating id, type and name.
    let piece = |index: u32, id: &str, name: &str, arguments: &str| {
        format!(
            r#"{{"id":"c","choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{index},"id":"{id}","type":"function","function":{{"name":"{name}","arguments":{arguments}}}}}]}}}}]}}"#
        )
    };
    let payloads = [
        piece(0, "call_a", "get_weather", r#""{\"city\":""#),
        piece(1, "call_b", "get_time", r#""{\"tz\":""#),
        piece(0, "call_a", "get_weather", r#""\"Oslo\"}""#),
        piece(1, "call_b", "get_time", r#""\"UTC\"}""#),
    ];
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let decoded = decode(&sse(&payloads));
    decoded.assert_done();
    let response = decoded.response();
    let calls = response.tool_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].id.as_str(), calls[0].function.name.as_str()),
        ("call_a", "get_weather")
    );
    assert_eq!(calls[0].function.arguments, r#"{"city":"Oslo"}"#);
    assert_eq!(
        (calls[1].id.as_str(), calls[1].function.name.as_str()),
        ("call_b", "get_time")
    );
    assert_eq!(calls[1].function.arguments, r#"{"tz":"UTC"}"#);
}

#[test]
fn tool_calls_finish_reason_stop_instead_of_tool_calls() {
    let decoded = decode(&sse(&[
        r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"search","arguments":"{\"q\":\"rust\"}"}}]}}]}"#,
        r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    ]));
    decoded.assert_done();
    let response = decoded.response();
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::Stop),
        "the finish reason is reported as sent"
    );
    let calls = response.tool_calls();
    assert_eq!(calls.len(), 1, "the tool call is kept despite \"stop\"");
    assert_eq!(calls[0].function.name, "search");
    assert_eq!(calls[0].function.arguments, r#"{"q":"rust"}"#);
}

//! The twelve recorded gpt-4o streams of `tests/fixtures/` (from openai/openai-python, see
//! its README) decoded end to end: each goes through [`StreamDecoder`] whole and in small
//! pieces, must end with `Done` and no error, and the [`ChatAccumulator`]'s response must
//! match an independent reading of the raw `data:` lines with `serde_json::Value` (text,
//! tool calls, finish reasons, usage, refusals, logprob counts). Each fixture also gets a few
//! facts asserted by hand, so a decoder and a reader that are wrong the same way still fail.

use std::collections::BTreeMap;

use chatstack_proto::{
    ChatAccumulator, ChatChunk, ChatResponse, FinishReason, StreamDecoder, StreamEvent,
};
use serde_json::Value;

/// What the decoder made of a body: the chunks, and the terminal events in order.
struct Decoded {
    chunks: Vec<ChatChunk>,
    dones: usize,
    errors: Vec<String>,
    /// Whether anything came after the first terminal event.
    events_after_terminal: usize,
}

/// Feeds `body` to a fresh decoder in pieces whose sizes cycle through `sizes`.
fn decode(body: &[u8], sizes: &[usize]) -> Decoded {
    let mut decoder = StreamDecoder::new();
    let mut decoded = Decoded {
        chunks: Vec::new(),
        dones: 0,
        errors: Vec::new(),
        events_after_terminal: 0,
    };
    let drain = |decoder: &mut StreamDecoder, decoded: &mut Decoded| {
        while let Some(event) = decoder.next_event() {
            if decoded.dones + decoded.errors.len() > 0 {
                decoded.events_after_terminal += 1;
            }
            match event {
                StreamEvent::Chunk(chunk) => decoded.chunks.push(chunk),
                StreamEvent::Done => decoded.dones += 1,
                StreamEvent::Error(error) => decoded.errors.push(error.to_string()),
            }
        }
    };
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes[i % sizes.len()].clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        decoder.feed(piece);
        drain(&mut decoder, &mut decoded);
        rest = tail;
        i += 1;
    }
    decoder.finish();
    drain(&mut decoder, &mut decoded);
    assert!(decoder.is_terminated());
    decoded
}

/// One choice as read straight from the raw JSON.
#[derive(Debug, Default)]
struct RawChoice {
    text: String,
    saw_text: bool,
    refusal: Option<String>,
    /// By tool-call index: id, name, concatenated arguments.
    tool_calls: BTreeMap<u64, (Option<String>, Option<String>, String)>,
    finish_reason: Option<String>,
    content_logprobs: Option<usize>,
    refusal_logprobs: Option<usize>,
}

/// The stream as read straight from the raw JSON lines, without chatstack's types.
#[derive(Debug, Default)]
struct RawStream {
    chunks: usize,
    first: Option<Value>,
    choices: BTreeMap<u64, RawChoice>,
    usage: Option<Value>,
    saw_done: bool,
}

fn read_raw(body: &[u8]) -> RawStream {
    let text = std::str::from_utf8(body).expect("fixtures are UTF-8");
    let mut raw = RawStream::default();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            assert!(line.trim().is_empty(), "unexpected line {line:?}");
            continue;
        };
        assert!(!raw.saw_done, "data after [DONE]");
        if data == "[DONE]" {
            raw.saw_done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).expect("each data line is JSON");
        raw.chunks += 1;
        if raw.first.is_none() {
            raw.first = Some(chunk.clone());
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            raw.usage = Some(usage.clone());
        }
        for choice in chunk["choices"].as_array().expect("choices is an array") {
            let index = choice["index"].as_u64().expect("choice index");
            let state = raw.choices.entry(index).or_default();
            let delta = &choice["delta"];
            if let Some(content) = delta["content"].as_str() {
                state.text.push_str(content);
                state.saw_text = true;
            }
            if let Some(refusal) = delta["refusal"].as_str() {
                state
                    .refusal
                    .get_or_insert_with(String::new)
                    .push_str(refusal);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let entry = state
                    .tool_calls
                    .entry(call["index"].as_u64().expect("tool call index"))
                    .or_default();
                if let Some(id) = call["id"].as_str() {
                    entry.0.get_or_insert_with(|| id.to_owned());
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    entry.1.get_or_insert_with(|| name.to_owned());
                }
                if let Some(arguments) = call["function"]["arguments"].as_str() {
                    entry.2.push_str(arguments);
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                state.finish_reason = Some(reason.to_owned());
            }
            if let Some(tokens) = choice["logprobs"]["content"].as_array() {
                *state.content_logprobs.get_or_insert(0) += tokens.len();
            }
            if let Some(tokens) = choice["logprobs"]["refusal"].as_array() {
                *state.refusal_logprobs.get_or_insert(0) += tokens.len();
            }
        }
    }
    raw
}

/// Decodes a fixture every way, checks the decoder's events, and compares the accumulated
/// response with the raw reading. Returns the response for fixture-specific checks.
fn check_fixture(name: &str, body: &[u8]) -> ChatResponse {
    let whole = decode(body, &[body.len()]);
    assert!(
        whole.errors.is_empty(),
        "{name}: errors fed whole: {:?}",
        whole.errors
    );
    assert_eq!(whole.dones, 1, "{name}: exactly one Done fed whole");
    assert_eq!(
        whole.events_after_terminal, 0,
        "{name}: nothing may follow Done"
    );

    for sizes in [&[1][..], &[3, 1, 7, 2, 13], &[64, 5, 1000]] {
        let pieces = decode(body, sizes);
        assert!(
            pieces.errors.is_empty(),
            "{name}: errors fed in pieces {sizes:?}: {:?}",
            pieces.errors
        );
        assert_eq!(pieces.dones, 1, "{name}: one Done fed in pieces {sizes:?}");
        assert_eq!(pieces.events_after_terminal, 0);
        assert_eq!(
            pieces.chunks, whole.chunks,
            "{name}: pieces {sizes:?} must decode to the same chunks as the whole body"
        );
    }

    let raw = read_raw(body);
    assert!(raw.saw_done, "{name}: the fixture ends with [DONE]");
    assert_eq!(
        whole.chunks.len(),
        raw.chunks,
        "{name}: one chunk per data line"
    );

    let mut accumulator = ChatAccumulator::new();
    for chunk in &whole.chunks {
        accumulator.push(chunk);
    }
    let response = accumulator.finish();
    compare(name, &response, &raw);
    response
}

fn compare(name: &str, response: &ChatResponse, raw: &RawStream) {
    let first = raw.first.as_ref().expect("at least one chunk");
    assert_eq!(response.id, first["id"].as_str().unwrap(), "{name}: id");
    assert_eq!(
        response.model,
        first["model"].as_str().unwrap(),
        "{name}: model"
    );
    assert_eq!(
        response.created,
        first["created"].as_u64().unwrap(),
        "{name}: created"
    );
    assert_eq!(
        response.system_fingerprint.as_deref(),
        first["system_fingerprint"].as_str(),
        "{name}: system_fingerprint"
    );
    assert_eq!(response.object, "chat.completion");

    let indices: Vec<u64> = response
        .choices
        .iter()
        .map(|c| u64::from(c.index))
        .collect();
    let raw_indices: Vec<u64> = raw.choices.keys().copied().collect();
    assert_eq!(indices, raw_indices, "{name}: choice indices, in order");

    for (choice, (index, expected)) in response.choices.iter().zip(&raw.choices) {
        let message = &choice.message;
        assert_eq!(
            message.content.as_deref().unwrap_or(""),
            expected.text,
            "{name}: text of choice {index}"
        );
        if !expected.text.is_empty() {
            assert!(message.content.is_some(), "{name}: choice {index} has text");
        }
        if !expected.saw_text {
            assert_eq!(
                message.content, None,
                "{name}: choice {index} never had content"
            );
        }
        assert_eq!(
            message.refusal, expected.refusal,
            "{name}: refusal of choice {index}"
        );
        assert_eq!(
            message.tool_calls.len(),
            expected.tool_calls.len(),
            "{name}: tool call count of choice {index}"
        );
        for (call, (call_index, (id, fn_name, arguments))) in
            message.tool_calls.iter().zip(&expected.tool_calls)
        {
            let context = format!("{name}: choice {index} tool call {call_index}");
            assert_eq!(Some(call.id.as_str()), id.as_deref(), "{context}: id");
            assert_eq!(
                Some(call.function.name.as_str()),
                fn_name.as_deref(),
                "{context}: name"
            );
            assert_eq!(&call.function.arguments, arguments, "{context}: arguments");
            assert_eq!(call.kind, "function", "{context}: type");
            let parsed: Value = serde_json::from_str(&call.function.arguments)
                .unwrap_or_else(|e| panic!("{context}: arguments are not JSON: {e}"));
            assert!(parsed.is_object(), "{context}: arguments are an object");
        }
        assert_eq!(
            choice.finish_reason.as_ref().map(FinishReason::as_str),
            expected.finish_reason.as_deref(),
            "{name}: finish_reason of choice {index}"
        );
        let logprobs = choice.logprobs.as_ref();
        assert_eq!(
            logprobs.and_then(|l| l.content.as_ref()).map(Vec::len),
            expected.content_logprobs,
            "{name}: content logprob tokens of choice {index}"
        );
        assert_eq!(
            logprobs.and_then(|l| l.refusal.as_ref()).map(Vec::len),
            expected.refusal_logprobs,
            "{name}: refusal logprob tokens of choice {index}"
        );
    }

    let usage = response.usage.expect("every fixture ends with usage");
    let raw_usage = raw.usage.as_ref().expect("raw usage");
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    assert_eq!(usage.prompt_tokens, count(&raw_usage["prompt_tokens"]));
    assert_eq!(
        usage.completion_tokens,
        count(&raw_usage["completion_tokens"])
    );
    assert_eq!(usage.total_tokens, count(&raw_usage["total_tokens"]));
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(
        usage.completion_tokens_details.reasoning_tokens,
        count(&raw_usage["completion_tokens_details"]["reasoning_tokens"])
    );
    assert_eq!(
        usage.prompt_tokens_details.cached_tokens,
        count(&raw_usage["prompt_tokens_details"]["cached_tokens"])
    );
}

/// The text of choice `index`, which must exist.
fn text(response: &ChatResponse, index: usize) -> &str {
    response.choices[index]
        .message
        .content
        .as_deref()
        .expect("choice has text")
}

macro_rules! fixture {
    ($name:ident, |$response:ident| $facts:block) => {
        #[test]
        fn $name() {
            let body = include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/",
                stringify!($name),
                ".sse"
            ));
            let $response = check_fixture(stringify!($name), body);
            $facts
        }
    };
}

fixture!(test_allows_non_strict_tools_but_no_parsing, |response| {
    let calls = response.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "call_4XzlGBLtUe9dy3GVNV4jhq7h");
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap(),
        serde_json::json!({"city": "New York City"})
    );
    assert_eq!(response.finish_reasons(), [&FinishReason::ToolCalls]);
    assert_eq!(
        response.text(),
        None,
        "content was null beside the tool call"
    );
});

fixture!(test_content_logprobs_events, |response| {
    assert_eq!(response.text(), Some("Foo!"));
    let logprobs = response.choices[0].logprobs.as_ref().unwrap();
    let tokens: Vec<&str> = logprobs
        .content
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t.token.as_str())
        .collect();
    assert_eq!(tokens, ["Foo", "!"]);
    assert_eq!(logprobs.refusal, None);
    assert_eq!(response.usage.unwrap().total_tokens, 11);
});

fixture!(test_non_pydantic_response_format, |response| {
    let answer: Value = serde_json::from_str(text(&response, 0)).expect("the answer is JSON");
    assert_eq!(answer["location"], "San Francisco, CA");
    assert!(text(&response, 0).contains("18°C"), "multi-byte UTF-8 kept");
    let usage = response.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (19, 177));
});

fixture!(test_parse_max_tokens_reached, |response| {
    assert_eq!(response.finish_reasons(), [&FinishReason::Length]);
    assert_eq!(response.text(), Some("{\""));
    assert_eq!(response.usage.unwrap().completion_tokens, 1);
});

fixture!(test_parse_multiple_pydantic_tools, |response| {
    let calls = response.tool_calls();
    assert_eq!(calls.len(), 2, "two parallel tool calls");
    assert_eq!(calls[0].function.name, "GetWeatherArgs");
    assert_eq!(calls[1].function.name, "get_stock_price");
    assert_ne!(calls[0].id, calls[1].id);
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].function.arguments).unwrap(),
        serde_json::json!({"ticker": "AAPL", "exchange": "NASDAQ"})
    );
    assert_eq!(response.finish_reasons(), [&FinishReason::ToolCalls]);
});

fixture!(test_parse_nothing, |response| {
    assert!(text(&response, 0).starts_with("I'm unable to provide real-time weather updates."));
    assert_eq!(response.finish_reasons(), [&FinishReason::Stop]);
    assert!(response.tool_calls().is_empty());
    assert_eq!(response.choices[0].message.refusal, None);
});

fixture!(test_parse_pydantic_model, |response| {
    assert_eq!(
        serde_json::from_str::<Value>(text(&response, 0)).unwrap(),
        serde_json::json!({"city": "San Francisco", "temperature": 61, "units": "f"})
    );
});

fixture!(test_parse_pydantic_model_multiple_choices, |response| {
    assert_eq!(response.choices.len(), 3);
    let temperatures: Vec<i64> = (0..3)
        .map(|i| {
            serde_json::from_str::<Value>(text(&response, i)).unwrap()["temperature"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(temperatures, [65, 61, 59], "interleaved choices kept apart");
    assert_eq!(response.finish_reasons().len(), 3);
    assert_eq!(response.usage.unwrap().completion_tokens, 42);
});

fixture!(test_parse_pydantic_model_refusal, |response| {
    let message = &response.choices[0].message;
    assert_eq!(
        message.refusal.as_deref(),
        Some("I'm sorry, I can't assist with that request.")
    );
    assert_eq!(message.content, None);
});

fixture!(test_parse_pydantic_tool, |response| {
    let calls = response.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "call_c91SqDXlYFuETYv8mUHzz6pp");
    assert_eq!(calls[0].function.name, "GetWeatherArgs");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap()["country"],
        "UK"
    );
});

fixture!(test_parse_strict_tools, |response| {
    let calls = response.tool_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap(),
        serde_json::json!({"city": "San Francisco", "state": "CA"})
    );
});

fixture!(test_refusal_logprobs_events, |response| {
    let choice = &response.choices[0];
    assert_eq!(
        choice.message.refusal.as_deref(),
        Some("I'm very sorry, but I can't assist with that.")
    );
    let logprobs = choice.logprobs.as_ref().unwrap();
    let refusal_tokens = logprobs.refusal.as_ref().unwrap();
    assert_eq!(refusal_tokens.len(), 11);
    let joined: String = refusal_tokens.iter().map(|t| t.token.as_str()).collect();
    assert_eq!(Some(joined.as_str()), choice.message.refusal.as_deref());
    assert_eq!(logprobs.content, None);
});

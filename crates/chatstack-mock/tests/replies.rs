//! Normal replies over real loopback HTTP: shapes, determinism, caps, choices, streams, tool
//! calls, models, auth, validation, headers and counters.

mod common;

use std::time::Duration;

use chatstack_mock::{MockConfig, MockServer, RateLimitConfig};
use chatstack_proto::{
    ChatAccumulator, ChatRequest, ChatResponse, FinishReason, Message, RateLimitSnapshot,
};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn unary_reply_has_the_openai_shape_and_headers() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let request_body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"}
        ]
    });
    let response = post(&server, &request_body, &[]).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert!(
        headers["openai-processing-ms"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let snapshot = RateLimitSnapshot::from_headers(&headers);
    assert_eq!(snapshot.limit_requests, Some(10_000));
    assert_eq!(snapshot.remaining_requests, Some(9_999));
    assert_eq!(snapshot.limit_tokens, Some(30_000_000));
    assert!(snapshot.remaining_tokens.unwrap() < 30_000_000);
    assert!(snapshot.reset_requests.unwrap() <= Duration::from_secs(60));
    assert!(snapshot.reset_tokens.is_some());

    let raw: Value = response.json().await.unwrap();
    assert_eq!(raw["object"], "chat.completion");
    assert!(raw["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(raw["choices"][0]["message"]["role"], "assistant");
    let reply: ChatResponse = serde_json::from_value(raw).unwrap();
    assert_eq!(reply.model, "gpt-4o-mini");
    assert_eq!(reply.text().unwrap().split(' ').count(), 16);
    assert_eq!(reply.finish_reasons(), [&FinishReason::Stop]);
    let usage = reply.usage.unwrap();
    let request: ChatRequest = serde_json::from_value(request_body).unwrap();
    assert_eq!(usage.prompt_tokens, request.estimate_prompt_tokens());
    // 3 + 2 × 4 + ceil((9 + 30) / 4)
    assert_eq!(usage.prompt_tokens, 21);
    assert_eq!(usage.completion_tokens, 16);
    assert_eq!(usage.total_tokens, 37);
}

#[tokio::test]
async fn same_request_same_body_and_unique_request_ids() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let first = post(&server, &body("hello"), &[]).await;
    let first_id = first.headers()["x-request-id"].clone();
    let first = first.bytes().await.unwrap();
    let second = post(&server, &body("hello"), &[]).await;
    assert_ne!(second.headers()["x-request-id"], first_id);
    assert_eq!(second.bytes().await.unwrap(), first);
    let other = post(&server, &body("hello there"), &[])
        .await
        .bytes()
        .await
        .unwrap();
    assert_ne!(other, first);

    // The same words come back streamed.
    let unary: ChatResponse = serde_json::from_slice(&first).unwrap();
    let streamed = read_stream(post(&server, &stream_body("hello"), &[]).await).await;
    assert_eq!(streamed.text(0), unary.text().unwrap());
}

#[tokio::test]
async fn output_caps_cut_with_finish_reason_length() {
    let server = MockServer::start(MockConfig::default().reply_tokens(20))
        .await
        .unwrap();
    let mut request = body("cap me");
    request["max_tokens"] = json!(5);
    let (_, reply) = post_json(&server, &request, &[]).await;
    let reply: ChatResponse = serde_json::from_value(reply).unwrap();
    assert_eq!(reply.text().unwrap().split(' ').count(), 5);
    assert_eq!(reply.finish_reasons(), [&FinishReason::Length]);
    assert_eq!(reply.usage.unwrap().completion_tokens, 5);

    // max_completion_tokens wins over max_tokens; a cap above the reply changes nothing.
    request["max_completion_tokens"] = json!(3);
    request["max_tokens"] = json!(100);
    let (_, reply) = post_json(&server, &request, &[]).await;
    assert_eq!(reply["usage"]["completion_tokens"], 3);
    request["max_completion_tokens"] = json!(50);
    let (_, reply) = post_json(&server, &request, &[]).await;
    assert_eq!(reply["usage"]["completion_tokens"], 20);
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");

    // Streams stop at the cap too.
    let mut request = stream_body("cap me");
    request["max_completion_tokens"] = json!(4);
    let streamed = read_stream(post(&server, &request, &[]).await).await;
    assert_eq!(streamed.content_chunks(), 4);
    let finish: Vec<_> = streamed
        .chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.finish_reason.clone())
        .collect();
    assert_eq!(finish, [FinishReason::Length]);
}

#[tokio::test]
async fn reply_tokens_header_sets_the_length() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let headers = [("x-mock-reply-tokens", "64")];
    let (_, reply) = post_json(&server, &body("long"), &headers).await;
    assert_eq!(reply["usage"]["completion_tokens"], 64);
    let streamed = read_stream(post(&server, &stream_body("long"), &headers).await).await;
    assert_eq!(streamed.content_chunks(), 64);
    let (_, reply) = post_json(&server, &body("none"), &[("x-mock-reply-tokens", "0")]).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "");
    let response = post(&server, &body("bad"), &[("x-mock-reply-tokens", "many")]).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "x-mock-reply-tokens");
}

#[tokio::test]
async fn n_choices_are_distinct_and_capped() {
    let server = MockServer::start(MockConfig::default().max_choices(4))
        .await
        .unwrap();
    let mut request = body("choose");
    request["n"] = json!(3);
    let (_, reply) = post_json(&server, &request, &[]).await;
    let reply: ChatResponse = serde_json::from_value(reply).unwrap();
    assert_eq!(reply.choices.len(), 3);
    for (index, choice) in reply.choices.iter().enumerate() {
        assert_eq!(choice.index as usize, index);
    }
    assert_ne!(
        reply.choices[0].message.content,
        reply.choices[1].message.content
    );
    assert_eq!(reply.usage.unwrap().completion_tokens, 48);
    assert_eq!(reply.usage.unwrap().prompt_tokens, 3 + 4 + 2);

    request["n"] = json!(50);
    let (_, reply) = post_json(&server, &request, &[]).await;
    assert_eq!(reply["choices"].as_array().unwrap().len(), 4);

    // Streamed: interleaved by index, and the accumulator rebuilds every choice.
    let mut request = stream_body("choose");
    request["n"] = json!(3);
    let streamed = read_stream(post(&server, &request, &[]).await).await;
    assert!(streamed.done);
    let indices: Vec<u32> = streamed.chunks[3..6]
        .iter()
        .map(|c| c.choices[0].index)
        .collect();
    assert_eq!(indices, [0, 1, 2], "content chunks interleave by choice");
    let mut accumulator = ChatAccumulator::new();
    for chunk in &streamed.chunks {
        accumulator.push(chunk);
    }
    let rebuilt = accumulator.finish();
    for (index, choice) in rebuilt.choices.iter().enumerate() {
        assert_eq!(choice.message.content, reply_choice_text(&reply, index));
    }
}

fn reply_choice_text(reply: &Value, index: usize) -> Option<String> {
    // Only the first three choices of the capped reply are comparable (same seeds).
    reply["choices"][index]["message"]["content"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn stream_layout_with_and_without_usage() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let response = post(
        &server,
        &stream_body("stream"),
        &[("x-mock-reply-tokens", "5")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    // role, 5 content, finish, usage, [DONE]
    assert_eq!(events.len(), 9, "{text}");
    let chunks: Vec<Value> = events[..8]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    for chunk in &chunks[..8] {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    for chunk in &chunks[1..6] {
        assert!(chunk["choices"][0]["delta"]["content"].is_string());
        assert!(chunk["choices"][0]["finish_reason"].is_null());
    }
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(chunks[7]["usage"]["completion_tokens"], 5);
    assert_eq!(events[8], "[DONE]");

    // Without include_usage: no usage chunk.
    let mut request = stream_body("stream");
    request["stream_options"] = json!({"include_usage": false});
    let streamed = read_stream(post(&server, &request, &[]).await).await;
    assert!(streamed.done);
    assert!(streamed.chunks.iter().all(|c| c.usage.is_none()));
    assert_eq!(streamed.chunks.len(), 1 + 16 + 1);
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            }, "required": ["city"]}
        }},
        {"type": "function", "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}
        }}
    ])
}

#[tokio::test]
async fn tool_calls_unary_and_streamed_by_index() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let mut request = body("What's the weather in Paris?");
    request["tools"] = weather_tools();
    let (_, reply) = post_json(&server, &request, &[]).await;
    let reply: ChatResponse = serde_json::from_value(reply).unwrap();
    assert_eq!(reply.finish_reasons(), [&FinishReason::ToolCalls]);
    let call = &reply.tool_calls()[0];
    assert!(call.id.starts_with("call_"));
    assert_eq!(call.kind, "function");
    assert_eq!(call.function.name, "get_weather");
    let arguments: Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(arguments["unit"], "celsius");
    assert!(arguments["city"].is_string());
    assert_eq!(
        reply.usage.unwrap().completion_tokens,
        call.function.arguments.len().div_ceil(4) as u64
    );

    // Streamed: a header delta with id and name, then argument deltas by index.
    request["stream"] = json!(true);
    let streamed = read_stream(post(&server, &request, &[]).await).await;
    assert!(streamed.done);
    let first = &streamed.chunks[0].choices[0].delta.tool_calls[0];
    assert_eq!(first.index, 0);
    assert_eq!(first.id.as_deref(), Some(call.id.as_str()));
    assert_eq!(
        first.function.as_ref().unwrap().name.as_deref(),
        Some("get_weather")
    );
    assert!(streamed.content_chunks() > 3);
    for chunk in &streamed.chunks[1..=streamed.content_chunks()] {
        let delta = &chunk.choices[0].delta.tool_calls[0];
        assert_eq!(delta.index, 0);
        assert!(delta.id.is_none());
        assert!(delta.function.as_ref().unwrap().arguments.is_some());
    }
    let mut accumulator = ChatAccumulator::new();
    for chunk in &streamed.chunks {
        accumulator.push(chunk);
    }
    let rebuilt = accumulator.finish();
    assert_eq!(rebuilt.tool_calls(), reply.tool_calls());
    assert_eq!(rebuilt.finish_reasons(), [&FinishReason::ToolCalls]);

    // A named tool; "none"; a name that is not among the tools.
    request["stream"] = json!(false);
    request["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let (_, reply) = post_json(&server, &request, &[]).await;
    assert_eq!(
        reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    request["tool_choice"] = json!("none");
    let (_, reply) = post_json(&server, &request, &[]).await;
    assert!(reply["choices"][0]["message"]["content"].is_string());
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    request["tool_choice"] = json!({"type": "function", "function": {"name": "nope"}});
    let (status, reply) = post_json(&server, &request, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(reply["error"]["param"], "tool_choice");
}

#[tokio::test]
async fn json_response_formats_answer_json() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let mut request = body("json please");
    request["response_format"] = json!({"type": "json_schema", "json_schema": {
        "name": "person", "strict": true,
        "schema": {"type": "object", "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}}
        }}
    }});
    let (_, reply) = post_json(&server, &request, &[]).await;
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    let person: Value = serde_json::from_str(content).unwrap();
    assert!(person["name"].is_string() && person["age"].is_u64() && person["tags"].is_array());
    request["stream"] = json!(true);
    let streamed = read_stream(post(&server, &request, &[]).await).await;
    assert_eq!(streamed.text(0), content);
}

#[tokio::test]
async fn usage_header_reports_every_token_category() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let usage = r#"{"cached_tokens":100,"cache_write_tokens":20,"reasoning_tokens":7,"prompt_audio_tokens":3,"completion_audio_tokens":2,"image_tokens":1,"accepted_prediction_tokens":4,"rejected_prediction_tokens":5}"#;
    let (_, reply) = post_json(&server, &body("cost"), &[("x-mock-usage", usage)]).await;
    let usage = &reply["usage"];
    assert_eq!(usage["prompt_tokens"], 120);
    assert_eq!(usage["completion_tokens"], 16 + 7);
    assert_eq!(usage["total_tokens"], 143);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 100);
    assert_eq!(usage["prompt_tokens_details"]["cache_write_tokens"], 20);
    assert_eq!(usage["prompt_tokens_details"]["audio_tokens"], 3);
    assert_eq!(usage["prompt_tokens_details"]["image_tokens"], 1);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 7);
    assert_eq!(usage["completion_tokens_details"]["audio_tokens"], 2);
    assert_eq!(
        usage["completion_tokens_details"]["accepted_prediction_tokens"],
        4
    );
    assert_eq!(
        usage["completion_tokens_details"]["rejected_prediction_tokens"],
        5
    );

    // The same in the usage chunk of a stream; explicit totals win.
    let headers = [(
        "x-mock-usage",
        r#"{"prompt_tokens":1000,"completion_tokens":2}"#,
    )];
    let streamed = read_stream(post(&server, &stream_body("cost"), &headers).await).await;
    let usage = streamed.chunks.last().unwrap().usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (1000, 2, 1002)
    );

    for bad in ["{", r#"{"cachd_tokens":1}"#, r#"{"cached_tokens":-1}"#] {
        let (status, error) = post_json(&server, &body("cost"), &[("x-mock-usage", bad)]).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(error["error"]["param"], "x-mock-usage");
    }
}

#[tokio::test]
async fn models_endpoints() {
    let server = MockServer::start(MockConfig::default().models(["a-model", "org/b-model"]))
        .await
        .unwrap();
    let list: Value = client()
        .get(format!("{}/models", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "a-model");
    assert_eq!(list["data"][1]["object"], "model");
    assert!(list["data"][1]["created"].is_u64());
    assert!(list["data"][1]["owned_by"].is_string());
    let one = client()
        .get(format!("{}/models/org/b-model", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap()["id"], "org/b-model");
    let missing = client()
        .get(format!("{}/models/nope", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
}

#[tokio::test]
async fn bearer_key_is_checked() {
    let server = MockServer::start(MockConfig::default().api_key("sk-test-0123456789"))
        .await
        .unwrap();
    let url = server.chat_completions_url();
    let missing = client().post(&url).json(&body("hi")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], "invalid_api_key");
    assert!(error["error"]["param"].is_null());

    let wrong = client()
        .post(&url)
        .bearer_auth("sk-wrong-abcdefghijkl")
        .json(&body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let message = wrong.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("sk-") && !message.contains("sk-wrong-abcdefghijkl"),
        "{message}"
    );

    let right = client()
        .post(&url)
        .bearer_auth("sk-test-0123456789")
        .json(&body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let models = client()
        .get(format!("{}/models", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
    // A bad key beats a bad body, as on the real API.
    let both = client().post(&url).body("not json").send().await.unwrap();
    assert_eq!(both.status(), 401);
    let counters = server.counters().snapshot();
    assert_eq!(counters.status(401), 4);
    assert_eq!(
        counters.model("gpt-4o-mini"),
        1,
        "only accepted requests count by model"
    );
}

#[tokio::test]
async fn invalid_input_gets_a_400_envelope_and_never_panics() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let url = server.chat_completions_url();
    let deep = "[".repeat(100_000);
    let garbage: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"".to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        br#"{"model":"m"}"#.to_vec(),
        br#"{"model":"m","messages":[]}"#.to_vec(),
        br#"{"model":"","messages":[{"role":"user","content":"x"}]}"#.to_vec(),
        br#"{"model":"m","messages":[{"role":"user","content":7}]}"#.to_vec(),
        br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":-1}"#.to_vec(),
        br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1e99}"#.to_vec(),
        deep.into_bytes(),
        vec![0xff, 0xfe, 0x00, 0x7b],
    ];
    for bytes in garbage {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
        let response = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{shown}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{shown}");
        assert!(error["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Odd but valid requests are answered.
    let odd = json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "brand_new_part", "x": 1}
            ]},
            {"role": "mystery", "content": null}
        ],
        "n": 0, "max_tokens": 0, "tools": [], "provider_field": {"a": [1, 2]}
    });
    let (status, reply) = post_json(&server, &odd, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    // Unknown paths and methods.
    let missing = client()
        .post(format!("{}/completions", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "Invalid URL (POST /v1/completions)"
    );
    let wrong_method = client().get(&url).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(wrong_method.json::<Value>().await.unwrap()["error"].is_object());
}

#[tokio::test]
async fn oversized_requests_get_a_413_envelope() {
    let server = MockServer::start(MockConfig::default().max_request_body(1024))
        .await
        .unwrap();
    let big = body(&"x".repeat(4096));
    let response = post(&server, &big, &[]).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/json");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "request_too_large");
    // Chunked, without a Content-Length: caught while reading.
    let stream = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 512]))),
    );
    let response = client()
        .post(server.chat_completions_url())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "request_too_large"
    );
    assert_eq!(server.counters().status(413), 2);
}

#[tokio::test]
async fn context_window_and_enforced_rate_limits() {
    let server = MockServer::start(
        MockConfig::default().context_window(50).rate_limits(
            RateLimitConfig::default()
                .requests_per_minute(3)
                .enforce(true),
        ),
    )
    .await
    .unwrap();
    let mut request = body("short");
    request["max_tokens"] = json!(100);
    let (status, error) = post_json(&server, &request, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    assert_eq!(error["error"]["param"], "messages");

    let first = post(&server, &body("a"), &[]).await;
    assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "1");
    let second = post(&server, &body("b"), &[]).await;
    assert_eq!(second.headers()["x-ratelimit-remaining-requests"], "0");
    let third = post(&server, &body("c"), &[]).await;
    assert_eq!(third.status(), 429);
    let retry_after: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let error: Value = third.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert_eq!(error["error"]["type"], "requests");
}

#[tokio::test]
async fn counters_count_exactly_and_reset() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let counters = server.counters();
    let mut other = body("x");
    other["model"] = json!("gpt-4.1");
    for _ in 0..3 {
        post(&server, &body("x"), &[]).await.bytes().await.unwrap();
    }
    post(&server, &other, &[("x-mock-fault", "503")])
        .await
        .bytes()
        .await
        .unwrap();
    post(&server, &other, &[("x-mock-fault", "429")])
        .await
        .bytes()
        .await
        .unwrap();
    read_stream(post(&server, &stream_body("s"), &[]).await).await;
    client()
        .get(format!("{}/models", server.url()))
        .send()
        .await
        .unwrap();
    client()
        .post(server.chat_completions_url())
        .body("bad")
        .send()
        .await
        .unwrap();

    let snapshot = counters.snapshot();
    assert_eq!(snapshot.total, 8);
    assert_eq!(snapshot.status(200), 5);
    assert_eq!(snapshot.status(503), 1);
    assert_eq!(snapshot.status(429), 1);
    assert_eq!(snapshot.status(400), 1);
    assert_eq!(snapshot.model("gpt-4o-mini"), 4);
    assert_eq!(snapshot.model("gpt-4.1"), 2);
    assert_eq!(snapshot.fault("unavailable"), 1);
    assert_eq!(snapshot.fault("rate_limit"), 1);
    assert_eq!(snapshot.streams, 1);
    assert_eq!(counters.total(), 8);
    assert_eq!(counters.status(200), 5);
    assert_eq!(counters.model("gpt-4.1"), 2);

    counters.reset();
    let snapshot = counters.snapshot();
    assert_eq!(
        (
            snapshot.total,
            snapshot.by_status.len(),
            snapshot.by_model.len()
        ),
        (0, 0, 0)
    );
    post(&server, &body("x"), &[]).await.bytes().await.unwrap();
    assert_eq!(server.counters().total(), 1);
}

#[tokio::test]
async fn in_flight_gauges_follow_requests_and_streams() {
    let server =
        MockServer::start(MockConfig::default().token_interval(Duration::from_millis(100)))
            .await
            .unwrap();
    let counters = server.counters();
    let url = server.chat_completions_url();
    let slow = tokio::spawn(async move {
        client()
            .post(url)
            .header("x-mock-latency-ms", "2500")
            .json(&body("slow"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    let response = post(&server, &stream_body("stream"), &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while counters.in_flight_requests() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{counters:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(counters.in_flight_requests(), 2);
    assert_eq!(counters.in_flight_streams(), 1);
    read_stream(response).await;
    slow.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counters.in_flight_requests() + counters.in_flight_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauges never settled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn http2_prior_knowledge_works() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = post_with(&client, &server, &body("h2"), &[]).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let streamed = read_stream(post_with(&client, &server, &stream_body("h2"), &[]).await).await;
    assert!(streamed.done);

    // A reset takes the whole HTTP/2 connection down, and leaves nothing running.
    let reset = client
        .post(server.chat_completions_url())
        .header("x-mock-fault", "reset")
        .json(&body("h2"))
        .send()
        .await;
    assert!(reset.is_err());
    let response = post_with(&client, &server, &body("h2 again"), &[]).await;
    assert_eq!(response.status(), 200);
    let counters = server.counters();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counters.in_flight_requests() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a request stayed in flight"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn prompt_tokens_follow_the_documented_formula() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let request = ChatRequest::new(
        "m",
        [
            Message::system("You are a helpful assistant."),
            Message::user("x".repeat(401)),
        ],
    );
    let (_, reply) = post_json(&server, &serde_json::to_value(&request).unwrap(), &[]).await;
    // 3 + 4 × 2 + ceil((28 + 401) / 4) = 11 + 108
    assert_eq!(reply["usage"]["prompt_tokens"], 119);
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let addr = server.addr();
    post(&server, &body("x"), &[]).await.bytes().await.unwrap();
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let addr = server.addr();
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn mutated_requests_get_200_or_400_never_a_broken_connection() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = client();
    let valid = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "mutate me"}, {"role": "assistant", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
        "tools": weather_tools(),
        "tool_choice": "auto",
        "n": 2, "max_tokens": 7, "stream": true,
        "stream_options": {"include_usage": true},
        "response_format": {"type": "json_object"}
    })
    .to_string()
    .into_bytes();
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..300 {
        let mut bytes = valid.clone();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..bytes.len());
            match rng.u8(..3) {
                0 => bytes[at] = rng.u8(..),
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, b"{}[]\",:0-e9tfn\\ "[rng.usize(..16)]),
            }
        }
        let response = client
            .post(server.chat_completions_url())
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let status = response.status().as_u16();
        assert!(status == 200 || status == 400, "round {round}: {status}");
        response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
}

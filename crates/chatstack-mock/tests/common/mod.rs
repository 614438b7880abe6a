//! Helpers shared by the integration tests: a client, request bodies, a stream reader on
//! chatstack-proto's decoder, and raw HTTP over a TcpStream for the broken-connection faults.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chatstack_mock::MockServer;
use chatstack_proto::{ChatChunk, StreamDecoder, StreamEvent};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A chat request body with one user message.
pub fn body(content: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
    })
}

/// A streaming chat request body with `include_usage`.
pub fn stream_body(content: &str) -> Value {
    let mut body = body(content);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

/// POSTs `body` to the chat endpoint with extra headers.
pub async fn post(
    server: &MockServer,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    post_with(&client(), server, body, headers).await
}

pub async fn post_with(
    client: &reqwest::Client,
    server: &MockServer,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client.post(server.chat_completions_url()).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Posts and decodes a JSON body.
pub async fn post_json(
    server: &MockServer,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let response = post(server, body, headers).await;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// What a streamed body decoded to.
#[derive(Debug, Default)]
pub struct Streamed {
    pub chunks: Vec<ChatChunk>,
    pub done: bool,
    /// An error the stream carried (an error event, or an end without `[DONE]`).
    pub error: Option<chatstack_proto::Error>,
    /// Whether reading the body failed at the transport level.
    pub transport_error: bool,
}

impl Streamed {
    /// Chunks that carry content or tool-call argument deltas.
    pub fn content_chunks(&self) -> usize {
        self.chunks
            .iter()
            .filter(|chunk| {
                chunk.choices.iter().any(|choice| {
                    choice.delta.role.is_none()
                        && (choice
                            .delta
                            .content
                            .as_deref()
                            .is_some_and(|c| !c.is_empty())
                            || !choice.delta.tool_calls.is_empty())
                })
            })
            .count()
    }

    /// The concatenated content of choice `index`.
    pub fn text(&self, index: u32) -> String {
        self.chunks
            .iter()
            .flat_map(|chunk| &chunk.choices)
            .filter(|choice| choice.index == index)
            .filter_map(|choice| choice.delta.content.as_deref())
            .collect()
    }
}

/// Reads a streamed response to its end with chatstack-proto's `StreamDecoder`.
pub async fn read_stream(mut response: reqwest::Response) -> Streamed {
    let mut decoder = StreamDecoder::new();
    let mut streamed = Streamed::default();
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => decoder.feed(&bytes),
            Ok(None) => break,
            Err(_) => {
                streamed.transport_error = true;
                break;
            }
        }
    }
    decoder.finish();
    while let Some(event) = decoder.next_event() {
        match event {
            StreamEvent::Chunk(chunk) => streamed.chunks.push(chunk),
            StreamEvent::Done => streamed.done = true,
            StreamEvent::Error(error) => streamed.error = Some(error),
        }
    }
    streamed
}

/// An HTTP/1.1 POST to the chat endpoint as raw text.
pub fn raw_post(body: &Value, headers: &[(&str, &str)]) -> String {
    let body = body.to_string();
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    request
}

/// Sends raw bytes and reads until the server closes (or breaks) the connection.
/// Returns what was read and the error that ended the read, if any.
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> (Vec<u8>, Option<io::Error>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read_buf(&mut received)).await {
            Ok(Ok(0)) => return (received, None),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return (received, Some(error)),
            Err(_) => panic!("the server neither answered nor closed within 10 s"),
        }
    }
}

/// Splits a raw HTTP/1.1 response into its head and body bytes.
pub fn split_head(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end + 4..],
    )
}

/// A header of a raw response head.
pub fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

//! The floor: a minimal hand-written client on bare reqwest, what a careful author would write
//! without a library. Its own serde structs, `serde_json::to_vec` and `from_slice`, a Bearer
//! header, a status check, and for streams a minimal SSE line splitter.

use std::pin::pin;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{API_KEY, BenchClient, MODEL, PROMPT, REPLY_TOKENS, check_reply, check_stream};

/// The floor client: a reqwest client with its defaults, the endpoint, and the key's header.
pub struct Floor {
    /// The HTTP client, with reqwest's defaults.
    http: reqwest::Client,
    /// `{base}/chat/completions`.
    url: reqwest::Url,
    /// `Bearer KEY`.
    auth: HeaderValue,
}

/// The request body.
#[derive(Serialize)]
struct Request<'a> {
    /// The model.
    model: &'a str,
    /// The conversation: one user message.
    messages: [Message<'a>; 1],
    /// The reply cap.
    max_tokens: u32,
    /// `true` for a stream; left out for a unary call.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    /// `include_usage` for a stream; left out for a unary call.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

/// A request message.
#[derive(Serialize)]
struct Message<'a> {
    /// `user`.
    role: &'a str,
    /// The text.
    content: &'a str,
}

/// The stream options of a streaming request.
#[derive(Serialize)]
struct StreamOptions {
    /// Asks for a final chunk with the usage.
    include_usage: bool,
}

/// A unary response.
#[derive(Deserialize)]
struct Response {
    /// The completion id.
    id: String,
    /// The choices; one here.
    choices: Vec<Choice>,
    /// The token counts.
    usage: Option<Usage>,
}

/// A choice of a unary response.
#[derive(Deserialize)]
struct Choice {
    /// The choice's index.
    index: u32,
    /// The answer.
    message: ResponseMessage,
    /// Why the answer ended.
    finish_reason: Option<String>,
}

/// The message of a choice.
#[derive(Deserialize)]
struct ResponseMessage {
    /// `assistant`.
    role: String,
    /// The text.
    content: Option<String>,
}

/// Token counts.
#[derive(Deserialize)]
struct Usage {
    /// Prompt tokens.
    prompt_tokens: u64,
    /// Completion tokens.
    completion_tokens: u64,
    /// Their sum.
    total_tokens: u64,
}

/// One chunk of a stream.
#[derive(Deserialize)]
struct Chunk {
    /// The deltas; none in the usage chunk.
    choices: Vec<ChunkChoice>,
    /// The token counts, in the last chunk.
    usage: Option<Usage>,
}

/// A choice of a chunk.
#[derive(Deserialize)]
struct ChunkChoice {
    /// What the chunk adds.
    delta: Delta,
}

/// What a chunk adds to a choice.
#[derive(Deserialize)]
struct Delta {
    /// Text.
    content: Option<String>,
}

impl Floor {
    /// A floor client for the mock at `base_url`.
    pub fn new(base_url: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(&format!("{base_url}/chat/completions"))
            .map_err(|error| format!("invalid URL {base_url:?}: {error}"))?;
        let auth = HeaderValue::from_str(&format!("Bearer {API_KEY}"))
            .map_err(|error| format!("invalid key: {error}"))?;
        Ok(Self {
            http: reqwest::Client::new(),
            url,
            auth,
        })
    }

    /// POSTs the request (streaming or not) and checks the status.
    async fn post(&self, stream: bool) -> Result<reqwest::Response, String> {
        let request = Request {
            model: MODEL,
            messages: [Message {
                role: "user",
                content: PROMPT,
            }],
            max_tokens: REPLY_TOKENS,
            stream: stream.then_some(true),
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        };
        let body = serde_json::to_vec(&request).map_err(|error| error.to_string())?;
        let response = self
            .http
            .post(self.url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            Err(format!("status {status}"))
        }
    }
}

impl BenchClient for Floor {
    type Held = BoxStream<'static, reqwest::Result<Bytes>>;

    async fn unary(&self) -> Result<(), String> {
        let body = self
            .post(false)
            .await?
            .bytes()
            .await
            .map_err(|error| format!("reading the body failed: {error}"))?;
        let response: Response =
            serde_json::from_slice(&body).map_err(|error| format!("bad JSON: {error}"))?;
        let choice = response.choices.first();
        let valid = !response.id.is_empty()
            && choice.is_some_and(|choice| {
                choice.index == 0
                    && choice.message.role == "assistant"
                    && choice.finish_reason.is_some()
            })
            && response.usage.as_ref().is_some_and(|usage| {
                usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
            });
        if !valid {
            return Err("the response is not a valid chat completion".to_owned());
        }
        check_reply(
            choice.and_then(|choice| choice.message.content.as_deref()),
            response.usage.map(|usage| usage.completion_tokens),
        )
    }

    async fn stream(&self) -> Result<(), String> {
        let mut body = pin!(self.post(true).await?.bytes_stream());
        let mut lines = SseLines::default();
        let mut text = String::new();
        let mut chunks = 0;
        let mut completion_tokens = None;
        loop {
            let done = lines
                .read(&mut body, |chunk| {
                    chunks += 1;
                    text.extend(chunk.choices.into_iter().filter_map(|c| c.delta.content));
                    if let Some(usage) = chunk.usage {
                        completion_tokens = Some(usage.completion_tokens);
                    }
                })
                .await?;
            if done {
                return check_stream(&text, chunks, completion_tokens);
            }
        }
    }

    async fn hold(&self) -> Result<Self::Held, String> {
        let mut body = self.post(true).await?.bytes_stream().boxed();
        let mut lines = SseLines::default();
        let mut text = false;
        while !text {
            if lines
                .read(&mut body, |chunk| {
                    text |= chunk
                        .choices
                        .iter()
                        .any(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty()));
                })
                .await?
            {
                return Err("the stream ended before its first content chunk".to_owned());
            }
        }
        Ok(body)
    }
}

/// A minimal SSE reader: buffers the body, splits it on `\n`, and decodes each `data: `
/// line's JSON into a [`Chunk`] until `data: [DONE]`.
#[derive(Default)]
struct SseLines {
    /// Bytes read but not yet split into lines.
    buffer: Vec<u8>,
}

impl SseLines {
    /// Reads one piece of the body and hands each complete chunk in it to `on_chunk`.
    /// Returns whether the stream is done (`[DONE]` seen).
    async fn read<S>(
        &mut self,
        body: &mut S,
        mut on_chunk: impl FnMut(Chunk),
    ) -> Result<bool, String>
    where
        S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
    {
        let bytes = match body.next().await {
            Some(bytes) => bytes.map_err(|error| format!("reading the stream failed: {error}"))?,
            None => return Err("the stream ended without [DONE]".to_owned()),
        };
        self.buffer.extend_from_slice(&bytes);
        let mut start = 0;
        let mut done = false;
        while let Some(end) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buffer[start..start + end];
            start += end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(data) = line.strip_prefix(b"data: ") else {
                continue;
            };
            if data == b"[DONE]" {
                done = true;
                break;
            }
            let chunk = serde_json::from_slice(data)
                .map_err(|error| format!("bad JSON in a chunk: {error}"))?;
            on_chunk(chunk);
        }
        self.buffer.drain(..start);
        Ok(done)
    }
}

//! Reading and decoding response bodies: capped reads, unary decoding, and the SSE body
//! stream.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use chatstack_proto::{
    ChatAccumulator, ChatChunk, ChatResponse, Error, ErrorKind, ProviderError, StreamDecoder,
    StreamEvent, TimeoutKind,
};
use futures_core::Stream;
use http::{HeaderMap, StatusCode};

/// The most bytes of an error body read: enough for any envelope, and bounded.
const MAX_ERROR_BODY_READ: usize = 64 * 1024;

/// Maps a reqwest error to chatstack's, with the cause chain in the message and without the
/// URL (which could carry a key in its query).
pub(crate) fn map_reqwest_error(error: reqwest::Error) -> Error {
    let kind = if error.is_timeout() {
        if error.is_connect() {
            ErrorKind::Timeout(TimeoutKind::Connect)
        } else {
            ErrorKind::Timeout(TimeoutKind::Total)
        }
    } else if error.is_body() || error.is_decode() {
        ErrorKind::Incomplete
    } else if error.is_builder() {
        ErrorKind::Config
    } else {
        ErrorKind::Connection
    };
    let error = error.without_url();
    Error::new(kind, chain_message(&error)).with_source(error)
}

pub(crate) fn map_middleware_error(error: reqwest_middleware::Error) -> Error {
    match error {
        reqwest_middleware::Error::Reqwest(error) => map_reqwest_error(error),
        reqwest_middleware::Error::Middleware(error) => Error::new(
            ErrorKind::Connection,
            format!("reqwest middleware failed: {error:#}"),
        ),
    }
}

fn chain_message(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn too_large(limit: usize) -> Error {
    Error::new(
        ErrorKind::BodyTooLarge,
        format!("the response body passed the {limit}-byte limit"),
    )
}

/// Reads a whole body, failing as soon as it passes `limit` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large(limit));
    }
    let mut body = BytesMut::with_capacity(
        response
            .content_length()
            .map_or(8 * 1024, |length| length as usize),
    );
    while let Some(chunk) = response.chunk().await.map_err(map_reqwest_error)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads the start of an error body; a body that breaks off or runs long still yields what
/// was read, since the status already decided the outcome.
pub(crate) async fn read_error_body(mut response: reqwest::Response) -> Bytes {
    let mut body = BytesMut::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY_READ - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_READ {
            break;
        }
    }
    body.freeze()
}

/// Decodes the body of a successful unary response. A 200 whose body is an error envelope
/// is an error; a body sent as an event stream is folded into one response.
pub(crate) fn decode_unary(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    event_stream: bool,
    max_event_size: usize,
) -> Result<ChatResponse, Error> {
    if event_stream {
        return fold_event_stream(body, max_event_size)
            .map_err(|error| error.with_status(status).with_headers(headers));
    }
    match serde_json::from_slice::<ChatResponse>(body) {
        Ok(response) if response.choices.is_empty() => match error_envelope(body) {
            Some(provider) => Err(Error::from_provider(provider)
                .with_status(status)
                .with_headers(headers)),
            None => Ok(response),
        },
        Ok(response) => Ok(response),
        Err(error) => Err(Error::decode(error, body)
            .with_status(status)
            .with_headers(headers)),
    }
}

/// The error envelope of a body that decoded as a response without choices, if it is one.
fn error_envelope(body: &[u8]) -> Option<ProviderError> {
    memchr::memmem::find(body, b"\"error\"")?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let is_error = value.get("error").is_some_and(|e| !e.is_null())
        || value.get("type").and_then(|t| t.as_str()) == Some("error");
    if is_error {
        ProviderError::from_json(&value)
    } else {
        None
    }
}

fn fold_event_stream(body: &[u8], max_event_size: usize) -> Result<ChatResponse, Error> {
    let mut decoder = StreamDecoder::with_max_event_size(max_event_size);
    decoder.feed(body);
    decoder.finish();
    let mut accumulator = ChatAccumulator::new();
    while let Some(event) = decoder.next_event() {
        match event {
            StreamEvent::Chunk(chunk) => accumulator.push(&chunk),
            StreamEvent::Done => break,
            StreamEvent::Error(error) => return Err(error),
        }
    }
    Ok(accumulator.finish())
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The chunks of a streamed response, decoded from its SSE body as it arrives.
///
/// It ends after `data: [DONE]`, or after its first error: an error event, an undecodable
/// chunk, a connection that broke, or an end without `[DONE]` ([`ErrorKind::Incomplete`]).
pub(crate) struct SseBody {
    body: ByteStream,
    decoder: StreamDecoder,
    ended: bool,
}

impl SseBody {
    pub(crate) fn new(response: reqwest::Response, max_event_size: usize) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            decoder: StreamDecoder::with_max_event_size(max_event_size),
            ended: false,
        }
    }
}

impl Stream for SseBody {
    type Item = Result<ChatChunk, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.decoder.next_event() {
                Some(StreamEvent::Chunk(chunk)) => return Poll::Ready(Some(Ok(chunk))),
                Some(StreamEvent::Done) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Some(StreamEvent::Error(error)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None if this.decoder.is_terminated() => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                None => {}
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.decoder.feed(&bytes),
                Poll::Ready(Some(Err(error))) => {
                    this.ended = true;
                    let mut error = map_reqwest_error(error);
                    if error.kind() == ErrorKind::Incomplete {
                        error = Error::new(
                            ErrorKind::Incomplete,
                            format!(
                                "the stream broke off after {} chunks: {}",
                                this.decoder.chunks_decoded(),
                                error.message()
                            ),
                        );
                    }
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => this.decoder.finish(),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> Result<ChatResponse, Error> {
        decode_unary(
            StatusCode::OK,
            &HeaderMap::new(),
            body.as_bytes(),
            false,
            1 << 20,
        )
    }

    #[test]
    fn a_200_with_an_error_envelope_is_an_error() {
        let error =
            decode(r#"{"error":{"message":"Overloaded","type":"overloaded_error"}}"#).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Overloaded);
        assert_eq!(error.status(), Some(StatusCode::OK));
        assert!(error.is_retryable());
    }

    #[test]
    fn empty_choices_decode_without_error() {
        let response = decode(r#"{"id":"x","object":"chat.completion","choices":[]}"#).unwrap();
        assert!(response.choices.is_empty());
        assert_eq!(response.text(), None);
    }

    #[test]
    fn the_word_error_in_content_is_not_an_error() {
        let response = decode(
            r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"\"error\" is a word"},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(response.text(), Some("\"error\" is a word"));
    }

    #[test]
    fn malformed_json_is_a_decode_error_that_keeps_the_body() {
        let error = decode(r#"{"id":"x","choices":[{"#).unwrap_err();
        assert!(error.is_decode());
        assert_eq!(error.body(), Some(r#"{"id":"x","choices":[{"#));
        assert!(!error.is_retryable());
        let empty = decode("").unwrap_err();
        assert!(empty.is_decode());
    }

    #[test]
    fn an_event_stream_answer_to_a_unary_call_is_folded() {
        let body = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
                    data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}]}\n\n\
                    data: [DONE]\n\n";
        let response = decode_unary(
            StatusCode::OK,
            &HeaderMap::new(),
            body.as_bytes(),
            true,
            1 << 20,
        )
        .unwrap();
        assert_eq!(response.text(), Some("Hi!"));
        let cut = decode_unary(
            StatusCode::OK,
            &HeaderMap::new(),
            &body.as_bytes()[..60],
            true,
            1 << 20,
        )
        .unwrap_err();
        assert!(cut.is_incomplete());
    }
}

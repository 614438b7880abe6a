//! Reading and decoding response bodies: capped reads, unary decoding, and the SSE body
//! stream.

use std::error::Error as StdError;
use std::pin::Pin;
use std::str::Utf8Error;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use chatstack_proto::{
    ChatAccumulator, ChatChunk, ChatResponse, Error, ErrorKind, ProviderError, StreamDecoder,
    StreamEvent, TimeoutKind,
};
use futures_core::Stream;
use futures_util::StreamExt;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
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

/// The `content-type` of a response, if it has a readable one.
fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// A media type without its parameters: `text/event-stream; charset=utf-8` -> `text/event-stream`.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

fn is_event_stream(content_type: &str) -> bool {
    essence(content_type).eq_ignore_ascii_case("text/event-stream")
}

fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .get(essence.len().saturating_sub(5)..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

/// The content codings that compress: a body in one of them cannot be read as it is.
const COMPRESSIONS: [&str; 7] = [
    "gzip",
    "x-gzip",
    "deflate",
    "br",
    "zstd",
    "compress",
    "x-compress",
];

/// Refuses a compressed body. The transport never asks for one (no `Accept-Encoding`, and
/// reqwest's decompression is off), so a server or proxy that compresses anyway sends bytes
/// the transport cannot read: a decode error, not retried, since the server would do it again.
/// Other labels (`identity`, or a bogus `utf-8` some servers send) leave the body to be
/// decoded as it is.
pub(crate) fn check_encoding(status: StatusCode, headers: &HeaderMap) -> Result<(), Error> {
    let Some(encoding) = headers.get(CONTENT_ENCODING) else {
        return Ok(());
    };
    let encoding = String::from_utf8_lossy(encoding.as_bytes());
    let encoding = encoding.trim();
    let compressed = encoding.split(',').any(|coding| {
        COMPRESSIONS
            .iter()
            .any(|known| coding.trim().eq_ignore_ascii_case(known))
    });
    if !compressed {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Decode,
        format!(
            "the response is `{encoding}`-encoded, which this client did not ask for and does not decode"
        ),
    )
    .with_status(status)
    .with_headers(headers))
}

/// Decodes the body of a successful unary response. A 200 whose body is an error envelope
/// is an error; a body sent as an event stream is folded into one response. A body that is
/// not JSON is a decode error that names its content type when that is not JSON either.
pub(crate) fn decode_unary(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    max_event_size: usize,
) -> Result<ChatResponse, Error> {
    let content_type = content_type(headers);
    if content_type.is_some_and(is_event_stream) {
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
        Err(error) => Err(match content_type.filter(|kind| !is_json(kind)) {
            Some(kind) => Error::new(
                ErrorKind::Decode,
                format!("could not decode the response: it is `{kind}`, not JSON ({error})"),
            )
            .with_body(body)
            .with_source(error),
            None => Error::decode(error, body),
        }
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
    if let Err(error) = std::str::from_utf8(body) {
        return Err(invalid_utf8(error, body, error.valid_up_to(), None));
    }
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

/// A decode error for invalid UTF-8 at `at` in `bytes` (in a stream: after `chunks` chunks).
/// Keeps the line it is on (lossily), up to a little past it.
fn invalid_utf8(error: Utf8Error, bytes: &[u8], at: usize, chunks: Option<u64>) -> Error {
    let start = bytes[..at]
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let end = bytes.len().min(at.saturating_add(64));
    let after = chunks.map_or_else(String::new, |chunks| format!(" after {chunks} chunks"));
    Error::new(
        ErrorKind::Decode,
        format!("the response is not valid UTF-8{after}: {error}"),
    )
    .with_body(&bytes[start..end])
    .with_source(error)
}

/// Checks that a body arriving in pieces is UTF-8, characters split between pieces included.
#[derive(Debug, Default)]
struct Utf8Check {
    /// The start of a character the last piece ended inside.
    partial: [u8; 4],
    len: usize,
}

impl Utf8Check {
    /// Checks the next piece. The error carries where, in this piece, the first invalid
    /// sequence starts (0 when it began in an earlier piece).
    fn check(&mut self, mut bytes: &[u8]) -> Result<(), (Utf8Error, usize)> {
        let mut offset = 0;
        if self.len > 0 {
            let width = match self.partial[0] {
                lead if lead >= 0xF0 => 4,
                lead if lead >= 0xE0 => 3,
                _ => 2,
            };
            let take = (width - self.len).min(bytes.len());
            self.partial[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            match std::str::from_utf8(&self.partial[..self.len]) {
                Ok(_) => self.len = 0,
                // Still inside the character: this piece was shorter than its rest.
                Err(error) if error.error_len().is_none() => return Ok(()),
                Err(error) => return Err((error, 0)),
            }
            offset = take;
            bytes = &bytes[take..];
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_none() => {
                let tail = &bytes[error.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.len = tail.len();
                Ok(())
            }
            Err(error) => Err((error, offset + error.valid_up_to())),
        }
    }
}

/// Whether the first bytes of a body can start an event stream or a JSON document. Too few
/// bytes to tell count as yes.
fn starts_like_a_stream(bytes: &[u8]) -> bool {
    const STARTS: [&[u8]; 6] = [b"data:", b"event:", b"id:", b"retry:", b":", b"{"];
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Some(first) = bytes.iter().position(|byte| !byte.is_ascii_whitespace()) else {
        return true;
    };
    let start = &bytes[first..];
    STARTS
        .iter()
        .any(|prefix| start.starts_with(prefix) || prefix.starts_with(start))
}

/// Opens the body of a successful response to a streaming request as an [`SseBody`].
///
/// A body labelled `text/event-stream`, JSON (a server that ignored `stream: true`: the
/// decoder reads it as one chunk) or nothing is decoded as it comes. One labelled otherwise
/// is decoded only if its first bytes start an event stream or JSON (servers mislabel
/// streams); anything else (a proxy's HTML sign-in page, a `text/plain` error) is a decode
/// error that names the content type and keeps the start of the body, instead of a stream
/// that ends without a chunk. A compressed body is refused by [`check_encoding`].
pub(crate) async fn open_stream(
    mut response: reqwest::Response,
    max_event_size: usize,
) -> Result<SseBody, Error> {
    let status = response.status();
    check_encoding(status, response.headers())?;
    let kind = match content_type(response.headers()) {
        Some(kind) if !is_event_stream(kind) && !is_json(kind) => kind.to_owned(),
        _ => return Ok(SseBody::new(response, max_event_size, None)),
    };
    match response.chunk().await.map_err(map_reqwest_error)? {
        Some(first) if starts_like_a_stream(&first) => {
            Ok(SseBody::new(response, max_event_size, Some(first)))
        }
        first => {
            let headers = std::mem::take(response.headers_mut());
            let mut body = BytesMut::from(first.unwrap_or_default());
            body.extend_from_slice(&read_error_body(response).await);
            Err(Error::new(
                ErrorKind::Decode,
                format!("a streaming request got a `{kind}` response, not an event stream"),
            )
            .with_status(status)
            .with_headers(&headers)
            .with_body(&body))
        }
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The chunks of a streamed response, decoded from its SSE body as it arrives: each chunk is
/// yielded as soon as its event is complete, nothing is held back.
///
/// It ends after `data: [DONE]`, or after its first error: an error event, an undecodable
/// chunk, bytes that are not UTF-8 ([`ErrorKind::Decode`], after the chunks before them), a
/// connection that broke, or an end without `[DONE]` ([`ErrorKind::Incomplete`]).
pub(crate) struct SseBody {
    body: ByteStream,
    decoder: StreamDecoder,
    utf8: Utf8Check,
    /// An error found in the bytes, yielded once the events before it are out.
    failure: Option<Error>,
    ended: bool,
}

impl SseBody {
    /// The stream of `response`'s body, after `first` if the first piece was read already.
    pub(crate) fn new(
        response: reqwest::Response,
        max_event_size: usize,
        first: Option<Bytes>,
    ) -> Self {
        let first = futures_util::stream::iter(first.map(Ok));
        Self {
            body: Box::pin(first.chain(response.bytes_stream())),
            decoder: StreamDecoder::with_max_event_size(max_event_size),
            utf8: Utf8Check::default(),
            failure: None,
            ended: false,
        }
    }

    /// Feeds a piece of the body to the decoder, up to the first invalid UTF-8 if any.
    fn feed(&mut self, bytes: &[u8]) {
        match self.utf8.check(bytes) {
            Ok(()) => self.decoder.feed(bytes),
            Err((error, at)) => {
                self.decoder.feed(&bytes[..at]);
                let chunks = self.decoder.chunks_decoded();
                self.failure = Some(invalid_utf8(error, bytes, at, Some(chunks)));
            }
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
            if let Some(error) = this.failure.take() {
                this.ended = true;
                return Poll::Ready(Some(Err(error)));
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.feed(&bytes),
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
        decode_unary(StatusCode::OK, &HeaderMap::new(), body.as_bytes(), 1 << 20)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    const EVENT_STREAM: (&str, &str) = ("content-type", "text/event-stream");

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
        let sse = headers(&[EVENT_STREAM]);
        let response = decode_unary(StatusCode::OK, &sse, body.as_bytes(), 1 << 20).unwrap();
        assert_eq!(response.text(), Some("Hi!"));
        let cut = decode_unary(StatusCode::OK, &sse, &body.as_bytes()[..60], 1 << 20).unwrap_err();
        assert!(cut.is_incomplete());
        // Invalid UTF-8 in a folded stream is a decode error, not replacement characters.
        let mut bad = body.as_bytes().to_vec();
        bad[50] = 0xFF;
        let error = decode_unary(StatusCode::OK, &sse, &bad, 1 << 20).unwrap_err();
        assert!(error.is_decode(), "{error:?}");
        assert!(error.to_string().contains("UTF-8"), "{error}");
    }

    #[test]
    fn content_types() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("Text/Event-Stream ; charset=utf-8"));
        assert!(!is_event_stream("text/event-streams"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/html"));
        assert!(!is_json("json"));
        assert_eq!(content_type(&headers(&[("content-type", " ")])), None);
    }

    #[test]
    fn a_body_that_is_not_json_names_its_content_type() {
        let html = headers(&[("content-type", "text/html; charset=utf-8")]);
        let error = decode_unary(StatusCode::OK, &html, b"<html></html>", 1 << 20).unwrap_err();
        assert!(error.is_decode());
        assert!(
            error.to_string().contains("`text/html; charset=utf-8`"),
            "{error}"
        );
        assert_eq!(error.body(), Some("<html></html>"));
        // A JSON body is decoded whatever its label says.
        let text = headers(&[("content-type", "text/plain")]);
        let ok =
            r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}"#;
        let response = decode_unary(StatusCode::OK, &text, ok.as_bytes(), 1 << 20).unwrap();
        assert_eq!(response.text(), Some("hi"));
    }

    #[test]
    fn compressed_bodies_are_refused() {
        let error =
            check_encoding(StatusCode::OK, &headers(&[("content-encoding", "gzip")])).unwrap_err();
        assert!(error.is_decode() && !error.is_retryable());
        assert!(error.to_string().contains("`gzip`-encoded"), "{error}");
        for compressed in ["br", "identity, GZIP", "zstd"] {
            let found = http::HeaderMap::from_iter([(
                CONTENT_ENCODING,
                http::HeaderValue::from_static(compressed),
            )]);
            assert!(
                check_encoding(StatusCode::OK, &found).is_err(),
                "{compressed}"
            );
        }
        for fine in [
            &[][..],
            &[("content-encoding", "identity")],
            &[("content-encoding", "utf-8")],
        ] {
            assert!(check_encoding(StatusCode::OK, &headers(fine)).is_ok());
        }
    }

    #[test]
    fn utf8_is_checked_across_pieces() {
        let text = "héllo 日本語 🦀!".as_bytes();
        for cut in 0..=text.len() {
            for second in cut..=text.len() {
                let mut check = Utf8Check::default();
                for piece in [&text[..cut], &text[cut..second], &text[second..]] {
                    assert!(check.check(piece).is_ok(), "cuts at {cut} and {second}");
                }
                assert_eq!(check.len, 0);
            }
        }
        let mut check = Utf8Check::default();
        assert_eq!(check.check(b"ab\xFF\xFEcd").unwrap_err().1, 2);
        // A character whose continuation is broken in the next piece.
        let mut check = Utf8Check::default();
        assert!(check.check(b"x\xE6\x97").is_ok());
        assert_eq!(check.check(b"A rest").unwrap_err().1, 0);
        // A lone continuation byte after a complete character.
        let mut check = Utf8Check::default();
        assert!(check.check(b"\xC3").is_ok());
        assert_eq!(check.check(b"\xA9\xA9").unwrap_err().1, 1);
    }

    #[test]
    fn stream_starts() {
        for yes in [
            &b"data: {}"[..],
            b"\n\ndata:",
            b"event: error",
            b": keep-alive",
            b"id: 1",
            b"retry: 10",
            b"{\"id\"",
            b"\xEF\xBB\xBFdata: x",
            b"da",
            b"",
            b"  \r\n",
        ] {
            assert!(
                starts_like_a_stream(yes),
                "{:?}",
                String::from_utf8_lossy(yes)
            );
        }
        for no in [
            &b"<!DOCTYPE html>"[..],
            b"<html>",
            b"Internal error",
            b"[1]",
            b"dat x",
        ] {
            assert!(
                !starts_like_a_stream(no),
                "{:?}",
                String::from_utf8_lossy(no)
            );
        }
    }

    fn response(content_type: &'static str, body: &'static [u8]) -> reqwest::Response {
        http::Response::builder()
            .header("content-type", content_type)
            .header("x-request-id", "req_1")
            .body(body)
            .unwrap()
            .into()
    }

    async fn chunks(body: SseBody) -> (Vec<ChatChunk>, Option<Error>) {
        let mut body = std::pin::pin!(body);
        let mut chunks = Vec::new();
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => chunks.push(chunk),
                Err(error) => return (chunks, Some(error)),
            }
        }
        (chunks, None)
    }

    const STREAM: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";

    #[tokio::test]
    async fn a_mislabelled_event_stream_is_still_read() {
        let body = open_stream(response("text/plain", STREAM), 1 << 20)
            .await
            .unwrap();
        let (chunks, error) = chunks(body).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text().collect::<String>(), "Hi");
    }

    #[tokio::test]
    async fn an_html_answer_to_a_stream_request_is_a_decode_error() {
        let Err(error) = open_stream(response("text/html", b"<html>Sign in</html>"), 1 << 20).await
        else {
            panic!("an HTML page is not a stream");
        };
        assert!(error.is_decode());
        assert!(error.to_string().contains("`text/html`"), "{error}");
        assert_eq!(error.body(), Some("<html>Sign in</html>"));
        assert_eq!(error.request_id(), Some("req_1"));
        assert_eq!(error.status(), Some(StatusCode::OK));
    }

    #[tokio::test]
    async fn invalid_utf8_ends_a_stream_after_the_chunks_before_it() {
        const BAD: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xFF\xFE\"}}]}\n\ndata: [DONE]\n\n";
        let body = open_stream(response("text/event-stream", BAD), 1 << 20)
            .await
            .unwrap();
        let (chunks, error) = chunks(body).await;
        assert_eq!(chunks.len(), 1);
        let error = error.expect("a decode error");
        assert!(error.is_decode(), "{error:?}");
        assert!(error.to_string().contains("after 1 chunks"), "{error}");
        assert!(error.body().unwrap().starts_with("data: {"), "{error:?}");
    }
}

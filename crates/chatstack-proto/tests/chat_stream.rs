//! `ChatStream`: completion hooks, read-ahead of the first chunk, and inner-stream wrapping.

use std::sync::{Arc, Mutex};

use chatstack_proto::{ChatChunk, ChatStream, Error, ErrorKind, LlmResponse, ResponseMeta};
use futures_util::{FutureExt, StreamExt, stream};

fn chunk(text: &str) -> ChatChunk {
    serde_json::from_value(serde_json::json!({
        "id": "c", "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}}]
    }))
    .unwrap()
}

fn usage_chunk() -> ChatChunk {
    serde_json::from_value(serde_json::json!({
        "id": "c", "model": "m", "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    }))
    .unwrap()
}

type Seen = Arc<Mutex<Vec<(bool, bool, Option<u64>)>>>;

fn observed(stream: ChatStream) -> (ChatStream, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let stream = stream.on_complete(move |completion| {
        log.lock().unwrap().push((
            completion.error.is_some(),
            completion.cancelled,
            completion.usage.map(|u| u.total_tokens),
        ));
    });
    (stream, seen)
}

#[test]
fn hooks_run_once_at_the_end_with_the_usage() {
    let items = vec![Ok(chunk("a")), Ok(chunk("b")), Ok(usage_chunk())];
    let (stream, seen) = observed(ChatStream::new(
        stream::iter(items),
        ResponseMeta::default(),
    ));
    let texts: Vec<_> = stream
        .map(|item| item.unwrap().text().collect::<String>())
        .collect::<Vec<_>>()
        .now_or_never()
        .unwrap();
    assert_eq!(texts, ["a", "b", ""]);
    assert_eq!(*seen.lock().unwrap(), [(false, false, Some(5))]);
}

#[test]
fn a_failed_stream_reports_its_error_and_then_ends() {
    let items = vec![
        Ok(chunk("a")),
        Err(Error::new(ErrorKind::Incomplete, "cut")),
        Ok(chunk("never")),
    ];
    let (mut stream, seen) = observed(ChatStream::new(
        stream::iter(items),
        ResponseMeta::default(),
    ));
    assert!(stream.next().now_or_never().unwrap().unwrap().is_ok());
    assert!(stream.next().now_or_never().unwrap().unwrap().is_err());
    assert!(
        stream.next().now_or_never().unwrap().is_none(),
        "fused after the error"
    );
    assert_eq!(*seen.lock().unwrap(), [(true, false, None)]);
}

#[test]
fn dropping_early_reports_cancelled() {
    let items = vec![Ok(chunk("a")), Ok(chunk("b"))];
    let (mut stream, seen) = observed(ChatStream::new(
        stream::iter(items),
        ResponseMeta::default(),
    ));
    assert!(stream.next().now_or_never().unwrap().is_some());
    drop(stream);
    assert_eq!(*seen.lock().unwrap(), [(false, true, None)]);
}

#[test]
fn first_chunk_ready_reads_ahead_without_losing_the_chunk() {
    let items = vec![Ok(chunk("first")), Ok(chunk("second"))];
    let mut stream = ChatStream::new(stream::iter(items), ResponseMeta::default());
    stream.first_chunk_ready().now_or_never().unwrap().unwrap();
    stream.first_chunk_ready().now_or_never().unwrap().unwrap();
    let texts: Vec<String> = stream
        .map(|item| item.unwrap().text().collect())
        .collect::<Vec<_>>()
        .now_or_never()
        .unwrap();
    assert_eq!(texts, ["first", "second"]);
}

#[test]
fn first_chunk_ready_surfaces_an_error_before_the_first_chunk() {
    let items = vec![Err(Error::new(ErrorKind::Server, "boom")), Ok(chunk("x"))];
    let (mut stream, seen) = observed(ChatStream::new(
        stream::iter(items),
        ResponseMeta::default(),
    ));
    let error = stream
        .first_chunk_ready()
        .now_or_never()
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Server);
    assert!(stream.next().now_or_never().unwrap().is_none());
    assert_eq!(*seen.lock().unwrap(), [(true, false, None)]);
}

#[test]
fn layers_reach_the_stream_through_the_response_trait() {
    let mut stream = ChatStream::new(stream::iter(vec![Ok(chunk("a"))]), ResponseMeta::default());
    let inner = stream.as_chat_stream_mut().expect("a stream is a stream");
    inner.wrap_inner(|inner| inner.map(|item| item.map(|_| chunk("wrapped"))));
    let text: String = stream
        .map(|item| item.unwrap().text().collect::<String>())
        .collect::<String>()
        .now_or_never()
        .unwrap();
    assert_eq!(text, "wrapped");
    let mut unary = chatstack_proto::ChatResponse::default();
    assert!(unary.as_chat_stream_mut().is_none());
}

#[test]
fn layers_reach_the_body_through_the_request_trait() {
    use chatstack_proto::{ChatRequest, LlmRequest, Message, StreamRequest};
    let mut stream = StreamRequest(ChatRequest::new("a", [Message::user("hi")]));
    stream.as_chat_request_mut().unwrap().model = "b".into();
    assert_eq!(stream.model(), "b");
    assert!(stream.is_streaming());
    let mut unary = ChatRequest::new("a", [Message::user("hi")]);
    unary.as_chat_request_mut().unwrap().temperature = Some(0.5);
    assert_eq!(unary.temperature, Some(0.5));
}

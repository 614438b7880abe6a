//! The timeout layer: total, first-chunk and idle limits, on tokio's paused clock with
//! scripted services, and over real loopback HTTP against the mock.
#![cfg(feature = "timeout")]

mod support;

use std::time::Duration;

use chatstack_middleware::timeout::{TimeoutConfig, TimeoutLayer};
use chatstack_proto::{
    ChatChunk, ChatRequest, ChatStream, Error, ErrorKind, LlmResponse, Message, ResponseMeta,
    StreamRequest, TimeoutKind,
};
use futures_util::StreamExt;
use support::{Ask, Script, Step};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

fn layer(total: u64, first_chunk: u64, idle: u64) -> TimeoutLayer {
    TimeoutLayer::new()
        .total(MS * total as u32)
        .first_chunk(MS * first_chunk as u32)
        .idle(MS * idle as u32)
}

fn chunk(index: usize) -> ChatChunk {
    ChatChunk {
        id: format!("chunk-{index}"),
        ..ChatChunk::default()
    }
}

/// A stream whose `i`-th chunk comes `gaps[i]` after the one before (after the first poll,
/// for the first).
fn timed_stream(gaps: Vec<Duration>) -> ChatStream {
    let chunks =
        futures_util::stream::iter(gaps.into_iter().enumerate()).then(|(index, gap)| async move {
            tokio::time::sleep(gap).await;
            Ok(chunk(index))
        });
    ChatStream::new(chunks, ResponseMeta::default())
}

/// A streaming service of chatstack's `ChatStream` from a `tower::service_fn`: the response
/// (headers) after `headers`, then chunks after `gaps`.
fn streaming<R>(
    headers: Duration,
    gaps: Vec<Duration>,
) -> impl Service<R, Response = ChatStream, Error = Error, Future: Send> + Clone {
    tower::service_fn(move |_request: R| {
        let gaps = gaps.clone();
        async move {
            tokio::time::sleep(headers).await;
            Ok(timed_stream(gaps))
        }
    })
}

/// Reads a stream to its end: the chunk ids, and the error it ended with.
async fn drain(stream: &mut ChatStream) -> (Vec<String>, Option<Error>) {
    let mut ids = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => ids.push(chunk.id),
            Err(error) => return (ids, Some(error)),
        }
    }
    (ids, None)
}

// ---- total, unary, on the support service ----

#[tokio::test(start_paused = true)]
async fn total_timeout_fires_at_exactly_the_limit() {
    let script = Script::new([Step::Answer(Duration::from_secs(60))]);
    let service = layer(1000, 50, 50).layer(script.service());

    let started = Instant::now();
    let error = service.oneshot(Ask::new("m")).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(error.kind(), ErrorKind::Timeout(TimeoutKind::Total));
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        "request timeout: no response within the total limit of 1s"
    );
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_response_just_under_the_total_limit_passes() {
    // tokio's timers count whole milliseconds: 999 ms is the longest wait under 1 s.
    let script = Script::new([Step::Answer(MS * 999)]);
    let service = layer(1000, 1, 1).layer(script.service());

    let started = Instant::now();
    let answer = service.oneshot(Ask::new("m")).await.unwrap();
    assert_eq!(answer.text, "done");
    assert_eq!(started.elapsed(), MS * 999);
}

#[tokio::test(start_paused = true)]
async fn a_response_ready_at_the_limit_wins_over_it() {
    let script = Script::new([Step::Answer(Duration::from_secs(1))]);
    let service = layer(1000, 1, 1).layer(script.service());
    assert!(service.oneshot(Ask::new("m")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn unary_responses_get_only_the_total_limit() {
    // First-chunk and idle limits far below the response time do not apply to it.
    let script = Script::new([Step::Answer(Duration::from_secs(5))]);
    let service = layer(10_000, 10, 10).layer(script.service());
    assert!(service.oneshot(Ask::new("m")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn errors_of_the_inner_service_pass_unchanged() {
    let script = Script::new([Step::fail(|| {
        Error::new(ErrorKind::InvalidRequest, "bad request")
    })]);
    let service = layer(1000, 1000, 1000).layer(script.service());
    let error = service.oneshot(Ask::new("m")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
}

#[tokio::test(start_paused = true)]
async fn no_total_limit_waits_as_long_as_it_takes() {
    let script = Script::new([Step::Answer(Duration::from_secs(3600))]);
    let service =
        TimeoutLayer::from_config(TimeoutConfig::default().total(None)).layer(script.service());
    assert!(service.oneshot(Ask::new("m")).await.is_ok());
}

// ---- streams, on service_fn streams ----

#[tokio::test(start_paused = true)]
async fn total_limit_of_a_stream_covers_its_headers() {
    let service = layer(1000, 5000, 5000).layer(streaming::<Ask>(MS * 2000, vec![MS * 10]));
    let started = Instant::now();
    let error = service.oneshot(Ask::new("m")).await.unwrap_err();
    assert_eq!(error.timeout_kind(), Some(TimeoutKind::Total));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn first_chunk_timeout_is_its_own_kind_and_counts_from_the_call() {
    // Headers after 600 ms, the first chunk 600 ms later: 1.2 s from the call, past 1 s.
    let service = layer(10_000, 1000, 5000).layer(streaming::<Ask>(MS * 600, vec![MS * 600]));
    let started = Instant::now();
    let error = service.oneshot(Ask::new("m")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout(TimeoutKind::FirstChunk));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        "timeout waiting for the first chunk: no first chunk within the first-chunk limit of 1s from the call"
    );
}

#[tokio::test(start_paused = true)]
async fn the_call_of_a_stream_resolves_at_its_first_chunk_which_is_kept() {
    let service = layer(10_000, 1000, 1000).layer(streaming::<Ask>(MS * 100, vec![MS * 400, MS]));
    let started = Instant::now();
    let mut stream = service.oneshot(Ask::new("m")).await.unwrap();
    assert_eq!(
        started.elapsed(),
        MS * 500,
        "resolved when the first chunk arrived"
    );
    let (ids, error) = drain(&mut stream).await;
    assert_eq!(ids, ["chunk-0", "chunk-1"]);
    assert!(error.is_none());
}

#[tokio::test(start_paused = true)]
async fn without_a_first_chunk_limit_the_call_resolves_at_the_headers() {
    let config = TimeoutConfig::default().first_chunk(None).idle(MS * 1000);
    let service = TimeoutLayer::from_config(config)
        .layer(streaming::<Ask>(MS * 100, vec![MS * 5000, MS * 10]));
    let started = Instant::now();
    let mut stream = service.oneshot(Ask::new("m")).await.unwrap();
    assert_eq!(started.elapsed(), MS * 100);
    // The idle limit runs between chunks, not before the first one.
    let (ids, error) = drain(&mut stream).await;
    assert_eq!(ids, ["chunk-0", "chunk-1"]);
    assert!(error.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_streaming_request_is_held_to_the_first_chunk_limit_before_its_headers() {
    // `StreamRequest::is_streaming()` is true: no chunk can come before the headers, so the
    // first-chunk limit ends the wait for them when it is the shorter one.
    let service = layer(10_000, 1000, 1000).layer(streaming::<StreamRequest>(MS * 5000, vec![]));
    let started = Instant::now();
    let request = StreamRequest::from(ChatRequest::new("m", [Message::user("hi")]));
    let error = service.oneshot(request).await.unwrap_err();
    assert_eq!(error.timeout_kind(), Some(TimeoutKind::FirstChunk));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_is_its_own_kind_after_the_chunks_before_it() {
    let gaps = vec![MS * 100, MS * 100, MS * 100, MS * 5000, MS * 100];
    let service = layer(1000, 1000, 1000).layer(streaming::<Ask>(MS * 10, gaps));
    let started = Instant::now();
    let mut stream = service.oneshot(Ask::new("m")).await.unwrap();
    let (ids, error) = drain(&mut stream).await;
    assert_eq!(ids, ["chunk-0", "chunk-1", "chunk-2"]);
    let error = error.expect("the stream goes quiet");
    assert_eq!(error.kind(), ErrorKind::Timeout(TimeoutKind::Idle));
    assert_eq!(started.elapsed(), MS * (10 + 300 + 1000));
    assert_eq!(
        error.to_string(),
        "stream idle timeout: no chunk within the idle limit of 1s after chunk 3"
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the error"
    );
}

#[tokio::test(start_paused = true)]
async fn regular_chunks_pass_in_full_however_long_the_stream() {
    // 50 chunks 400 ms apart: 20 s, far past every limit, each gap under the idle one.
    let service = layer(1000, 1000, 500).layer(streaming::<Ask>(MS * 100, vec![MS * 400; 50]));
    let started = Instant::now();
    let mut stream = service.oneshot(Ask::new("m")).await.unwrap();
    let (ids, error) = drain(&mut stream).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(ids.len(), 50);
    assert_eq!(started.elapsed(), MS * (100 + 50 * 400));
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_not_mistaken_for_a_silent_provider() {
    // Chunks are produced by a task of their own, into a buffer, as a socket receives them.
    let service = layer(1000, 1000, 100).layer(tower::service_fn(|_: Ask| async {
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for index in 0..3 {
                tokio::time::sleep(MS * 10).await;
                sender.send(Ok(chunk(index))).await.unwrap();
            }
        });
        let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let item = receiver.recv().await?;
            Some((item, receiver))
        });
        Ok::<_, Error>(ChatStream::new(chunks, ResponseMeta::default()))
    }));
    let mut stream = service.oneshot(Ask::new("m")).await.unwrap();
    // The caller pauses far longer than the idle limit; the chunks are ready when it returns.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ids, error) = drain(&mut stream).await;
    assert_eq!(ids.len(), 3);
    assert!(error.is_none(), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_before_its_first_chunk_fails_the_call() {
    let service = layer(1000, 1000, 1000).layer(tower::service_fn(|_: Ask| async {
        let failing = futures_util::stream::iter([Err(Error::new(ErrorKind::Server, "boom"))]);
        Ok::<_, Error>(ChatStream::new(failing, ResponseMeta::default()))
    }));
    let error = service.oneshot(Ask::new("m")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Server);
}

#[tokio::test(start_paused = true)]
async fn response_metadata_passes_through() {
    let service = layer(1000, 1000, 1000).layer(tower::service_fn(|_: Ask| async {
        let meta = ResponseMeta {
            request_id: Some("req-1".into()),
            ..ResponseMeta::default()
        };
        Ok::<_, Error>(ChatStream::new(
            futures_util::stream::iter([Ok(chunk(0))]),
            meta,
        ))
    }));
    let stream = service.oneshot(Ask::new("m")).await.unwrap();
    assert_eq!(stream.meta().request_id.as_deref(), Some("req-1"));
}

#[test]
fn accessors_and_defaults() {
    let layer = TimeoutLayer::default();
    assert_eq!(layer.config(), &TimeoutConfig::default());
    assert_eq!(layer.config().total, Some(Duration::from_secs(600)));
    let mut service = layer.total(None).layer(0_u8);
    assert_eq!(service.config().total, None);
    *service.get_mut() += 1;
    assert_eq!(*service.get_ref(), 1);
    assert_eq!(service.into_inner(), 1);
}

// ---- over real loopback HTTP (real time: sockets and the paused clock do not mix) ----

mod http {
    use super::*;
    use chatstack_mock::{MockConfig, MockServer};
    use chatstack_transport::HttpTransport;

    async fn mock() -> MockServer {
        let config = MockConfig::default()
            .token_interval(MS * 5)
            .stall_cap(Duration::from_secs(5));
        MockServer::start(config).await.unwrap()
    }

    fn transport(mock: &MockServer) -> HttpTransport {
        HttpTransport::builder()
            .base_url(mock.url())
            .build()
            .unwrap()
    }

    fn stream_request(fault: &str) -> StreamRequest {
        let mut request = StreamRequest::from(ChatRequest::new("gpt-4o", [Message::user("Hi")]));
        request
            .meta
            .headers
            .insert("x-mock-fault", fault.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn slow_first_chunk_is_a_first_chunk_timeout() {
        let mock = mock().await;
        let service = layer(5000, 200, 5000).layer(transport(&mock));
        let started = std::time::Instant::now();
        let error = service
            .oneshot(stream_request("slow_first_chunk:1000"))
            .await
            .unwrap_err();
        assert_eq!(
            error.timeout_kind(),
            Some(TimeoutKind::FirstChunk),
            "{error}"
        );
        let elapsed = started.elapsed();
        assert!(elapsed >= MS * 200 && elapsed < MS * 900, "{elapsed:?}");
        assert!(error.to_string().contains("200ms"), "{error}");
    }

    #[tokio::test]
    async fn stall_is_an_idle_timeout_after_the_chunks_before_it() {
        let mock = mock().await;
        let service = layer(5000, 5000, 200).layer(transport(&mock));
        let mut stream = service.oneshot(stream_request("stall:2")).await.unwrap();
        let mut contents = Vec::new();
        let error = loop {
            match stream.next().await {
                Some(Ok(chunk)) => contents.extend(
                    chunk
                        .choices
                        .iter()
                        .filter_map(|choice| choice.delta.content.clone())
                        .filter(|content| !content.is_empty()),
                ),
                Some(Err(error)) => break error,
                None => panic!("the stream stalls, it does not end"),
            }
        };
        assert_eq!(
            contents.len(),
            2,
            "the two content chunks arrive: {contents:?}"
        );
        assert_eq!(error.timeout_kind(), Some(TimeoutKind::Idle), "{error}");
        assert!(
            error
                .to_string()
                .contains("idle limit of 200ms after chunk 3"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_healthy_stream_passes_in_full() {
        let mock = mock().await;
        let service = layer(300, 300, 300).layer(transport(&mock));
        let mut request = stream_request("latency:0");
        request
            .meta
            .headers
            .insert("x-mock-reply-tokens", "64".parse().unwrap());
        // 64 chunks 5 ms apart: longer than the total limit, each gap far under the idle one.
        let response = service
            .oneshot(request)
            .await
            .unwrap()
            .collect_response()
            .await
            .unwrap();
        let text = response.text().unwrap();
        assert_eq!(text.split(' ').count(), 64);
    }

    #[tokio::test]
    async fn slow_unary_response_is_a_total_timeout() {
        let mock = mock().await;
        let service = layer(200, 5000, 5000).layer(transport(&mock));
        let mut request = ChatRequest::new("gpt-4o", [Message::user("Hi")]);
        request
            .meta
            .headers
            .insert("x-mock-fault", "latency:1000".parse().unwrap());
        let error = service.oneshot(request).await.unwrap_err();
        assert_eq!(error.timeout_kind(), Some(TimeoutKind::Total), "{error}");
        assert!(
            error.to_string().contains("total limit of 200ms"),
            "{error}"
        );
        let unhurried = layer(200, 5000, 5000).layer(transport(&mock));
        let response = unhurried
            .oneshot(ChatRequest::new("gpt-4o", [Message::user("Hi")]))
            .await
            .unwrap();
        assert!(response.meta().status.is_success());
    }
}

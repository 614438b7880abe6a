//! Helpers shared by the wire tests: a mock, a transport on it, requests, and a stream reader.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use chatstack_mock::{MockConfig, MockServer};
use chatstack_proto::{ChatRequest, ChatStream, Error, Message};
use chatstack_transport::HttpTransport;
use futures_util::StreamExt;

pub async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

pub fn transport(mock: &MockServer) -> HttpTransport {
    HttpTransport::builder()
        .base_url(mock.url())
        .build()
        .unwrap()
}

pub fn request() -> ChatRequest {
    ChatRequest::new(
        "gpt-4.1",
        [
            Message::system("Be brief."),
            Message::user("Name three rivers."),
        ],
    )
}

pub fn with_fault(fault: &str) -> ChatRequest {
    let mut request = request();
    request
        .meta
        .headers
        .insert("x-mock-fault", fault.parse().unwrap());
    request
}

/// Reads a stream to its end: the chunks' text, and the error it ended with, if any.
pub async fn drain(mut stream: ChatStream) -> (String, usize, Option<Error>) {
    let mut text = String::new();
    let mut chunks = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                chunks += 1;
                text.extend(chunk.text());
            }
            Err(error) => return (text, chunks, Some(error)),
        }
    }
    (text, chunks, None)
}

/// Waits until the mock has no request in flight (it noticed that the client hung up), and
/// returns the bytes it wrote in total.
pub async fn settled_bytes_written(mock: &MockServer) -> u64 {
    let counters = mock.counters();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counters.in_flight_requests() > 0 {
        assert!(
            Instant::now() < deadline,
            "the mock is still sending 10 s after the client stopped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    counters.bytes_written()
}

//! The harness every case of the `layers` bench shares: one runtime, one request, one no-op
//! inner service and one call loop, so that every case differs from its `inner_alone`
//! baseline by the layer alone.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chatstack_middleware::{
    ChatRequest, ChatResponse, ChatStream, Error, ErrorKind, Message, StreamRequest,
};
use chatstack_proto::{ChatChunk, ResponseMeta, Usage};
use criterion::Bencher;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};

/// The model every request asks for.
pub const MODEL: &str = "gpt-4.1";

/// A dated snapshot of [`MODEL`], as providers name the model that answered.
pub const SNAPSHOT: &str = "gpt-4.1-2025-04-14";

/// The request of every case: "Hello" to [`MODEL`], its output capped at 2 tokens. Its
/// prompt is estimated at 9 tokens, so the rate limiter charges it 11: even the fastest
/// case stays far below the limiter's quotas. Every call sends a clone of it, made in the
/// timed loop (the baseline pays for it too).
pub fn request() -> ChatRequest {
    ChatRequest::new(MODEL, [Message::user("Hello")]).max_completion_tokens(2)
}

/// [`request`], to be answered as a stream.
pub fn stream_request() -> StreamRequest {
    StreamRequest(request())
}

/// The usage of every unary answer: 9 prompt tokens (4 of them cached) and 1 completion
/// token (a reasoning one), so that the cost layer prices every kind of token, and the rate
/// limiter, which charged 11, gives 1 back on every reconciled call.
fn usage() -> Usage {
    let mut usage = Usage::new(9, 1);
    usage.prompt_tokens_details.cached_tokens = 4;
    usage.completion_tokens_details.reasoning_tokens = 1;
    usage
}

/// How a [`NoOp`] fails.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// Every call, with a 500: a provider fault, which breakers count and fallbacks route
    /// around.
    Server,
    /// Calls for this model only, with a 500: the primary is down, its alternatives are not.
    ServerFor(&'static str),
    /// Every call, with a 401: the key is refused.
    Unauthorized,
}

/// The inner service of every case: it answers (or fails) at once, having nothing to do.
///
/// Like the transport, it answers a [`ChatRequest`] with a [`ChatResponse`] (reporting
/// [`usage`], and naming the model that answered only when told to) and a
/// [`StreamRequest`] with a [`ChatStream`] of empty chunks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOp {
    answered_by: &'static str,
    chunks: usize,
    failure: Option<Failure>,
}

impl NoOp {
    /// Names `model` as the model that answered (by default none is named).
    pub fn answered_by(self, model: &'static str) -> Self {
        Self {
            answered_by: model,
            ..self
        }
    }

    /// Streams this many chunks (by default none).
    pub fn chunks(self, chunks: usize) -> Self {
        Self { chunks, ..self }
    }

    /// Fails as `failure` says.
    pub fn failing(self, failure: Failure) -> Self {
        Self {
            failure: Some(failure),
            ..self
        }
    }

    fn outcome(&self, model: &str) -> Result<(), Error> {
        match self.failure {
            Some(Failure::Server) => Err(Error::new(ErrorKind::Server, "down")),
            Some(Failure::ServerFor(down)) if down == model => {
                Err(Error::new(ErrorKind::Server, "unavailable"))
            }
            Some(Failure::Unauthorized) => Err(Error::from_response(
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
                b"",
            )),
            Some(Failure::ServerFor(_)) | None => Ok(()),
        }
    }
}

impl Service<ChatRequest> for NoOp {
    type Response = ChatResponse;
    type Error = Error;
    type Future = Ready<Result<ChatResponse, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        ready(self.outcome(&request.model).map(|()| ChatResponse {
            model: self.answered_by.to_owned(),
            usage: Some(usage()),
            ..ChatResponse::default()
        }))
    }
}

impl Service<StreamRequest> for NoOp {
    type Response = ChatStream;
    type Error = Error;
    type Future = Ready<Result<ChatStream, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: StreamRequest) -> Self::Future {
        let chunks =
            futures_util::stream::repeat_with(|| Ok(ChatChunk::default())).take(self.chunks);
        ready(
            self.outcome(&request.model)
                .map(|()| ChatStream::new(chunks, ResponseMeta::default())),
        )
    }
}

/// What a case expects of every call it times; anything else stops the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The call is answered.
    Answer,
    /// The call fails (refused by the layer, or by the inner service).
    Refusal,
}

/// How the loop consumes an answer: a unary response is dropped, a stream read to its end.
pub trait Consume {
    /// Consumes the answer.
    fn consume(self) -> impl Future<Output = ()>;
}

impl Consume for ChatResponse {
    async fn consume(self) {
        drop(black_box(self));
    }
}

impl Consume for ChatStream {
    async fn consume(mut self) {
        while let Some(chunk) = self.next().await {
            black_box(chunk.expect("a chunk"));
        }
    }
}

/// Runs the calls: one current-thread tokio runtime, with its clock (for the timeouts and
/// the rate limiter).
pub struct Harness {
    runtime: Runtime,
}

impl Harness {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        Self { runtime }
    }

    /// One call, untimed: to bring a service to the state a case measures (circuits made or
    /// opened, keys taken out of rotation).
    pub fn call<S, R>(&self, service: &mut S, request: R) -> Result<S::Response, Error>
    where
        S: Service<R, Error = Error>,
    {
        self.runtime
            .block_on(async { service.ready().await?.call(request).await })
    }

    /// The routine of one case: calls `service` in a loop, each time polling it ready,
    /// calling it with a clone of `request` and consuming the answer, as a caller would,
    /// and times the loop.
    pub fn calls<'a, S, R>(
        &'a self,
        service: &'a mut S,
        request: &'a R,
        expect: Expect,
    ) -> impl FnMut(&mut Bencher<'_>) + 'a
    where
        S: Service<R, Error = Error>,
        S::Response: Consume,
        R: Clone,
    {
        move |bencher: &mut Bencher<'_>| {
            bencher.iter_custom(|iters| self.time(&mut *service, request, iters, expect))
        }
    }

    fn time<S, R>(&self, service: &mut S, request: &R, iters: u64, expect: Expect) -> Duration
    where
        S: Service<R, Error = Error>,
        S::Response: Consume,
        R: Clone,
    {
        self.runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..iters {
                let result = async {
                    let ready = service.ready().await?;
                    ready.call(black_box(request.clone())).await
                }
                .await;
                match (result, expect) {
                    (Ok(response), Expect::Answer) => response.consume().await,
                    (Err(error), Expect::Refusal) => drop(black_box(error)),
                    (Ok(_), Expect::Refusal) => panic!("a call meant to fail was answered"),
                    (Err(error), Expect::Answer) => {
                        panic!("a call meant to be answered failed: {error}")
                    }
                }
            }
            started.elapsed()
        })
    }
}

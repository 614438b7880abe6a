//! What the circuit breaker adds to a call: a no-op inner service alone, then wrapped, with
//! the circuit closed (with and without slow-call timing) and open. The difference between
//! `inner_alone` and `closed` is the cost per call on the hot path.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use chatstack_middleware::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use chatstack_middleware::{Completion, Error, ErrorKind, LlmRequest, LlmResponse};
use chatstack_proto::{RequestMeta, ResponseMeta, Usage};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use tower::{Layer, Service};

/// A request that costs nothing to make.
struct Request {
    model: &'static str,
    meta: RequestMeta,
}

impl Request {
    fn new(model: &'static str) -> Self {
        Self {
            model,
            meta: RequestMeta::default(),
        }
    }
}

impl LlmRequest for Request {
    fn model(&self) -> &str {
        self.model
    }
    fn meta(&self) -> &RequestMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut RequestMeta {
        &mut self.meta
    }
}

/// A unary response that completes as soon as it exists.
#[derive(Default)]
struct Response {
    meta: ResponseMeta,
}

impl LlmResponse for Response {
    fn meta(&self) -> &ResponseMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ResponseMeta {
        &mut self.meta
    }
    fn usage(&self) -> Option<&Usage> {
        None
    }
    fn on_complete<F>(self, hook: F) -> Self
    where
        F: FnOnce(&Completion<'_>) + Send + 'static,
    {
        hook(&Completion::unary(None, ""));
        self
    }
}

/// Answers or fails at once.
#[derive(Clone, Copy)]
struct NoOp {
    fail: bool,
}

impl Service<Request> for NoOp {
    type Response = Response;
    type Error = Error;
    type Future = Ready<Result<Response, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        ready(if self.fail {
            Err(Error::new(ErrorKind::Server, "down"))
        } else {
            Ok(Response::default())
        })
    }
}

/// One call, polled to its end (every future here is ready at once).
fn call<S>(service: &mut S, model: &'static str) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    service
        .call(black_box(Request::new(model)))
        .now_or_never()
        .expect("ready at once")
}

fn circuit_breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("circuit_breaker");
    let models = ["gpt-4.1", "gpt-4o", "gpt-4o-mini", "o3-mini"];

    let mut inner = NoOp { fail: false };
    group.bench_function("inner_alone", |b| {
        b.iter(|| call(&mut inner, "gpt-4.1").is_ok())
    });

    let layer = CircuitBreakerLayer::default();
    let mut closed = layer.layer(NoOp { fail: false });
    for model in models {
        let _ = call(&mut closed, model); // circuits exist: lookups do not allocate
    }
    group.bench_function("closed", |b| {
        b.iter(|| call(&mut closed, "gpt-4.1").is_ok())
    });

    let timed = CircuitBreakerConfig::default().slow_call_duration(Duration::from_secs(60));
    let mut closed_timed = CircuitBreakerLayer::new(timed).layer(NoOp { fail: false });
    group.bench_function("closed_with_slow_call_timing", |b| {
        b.iter(|| call(&mut closed_timed, "gpt-4.1").is_ok())
    });

    let open_config = CircuitBreakerConfig::default()
        .minimum_calls(1)
        .open_duration(Duration::from_secs(3600));
    let mut open = CircuitBreakerLayer::new(open_config).layer(NoOp { fail: true });
    let _ = call(&mut open, "gpt-4.1");
    group.bench_function("open_rejects", |b| {
        b.iter(|| call(&mut open, "gpt-4.1").is_err())
    });
    group.finish();
}

criterion_group!(benches, circuit_breaker);
criterion_main!(benches);

//! What the rate limiter adds to a call when the quota is never reached: a no-op inner
//! service alone, then wrapped with no quotas, with a request quota, and with request and
//! token quotas (with every response reconciled). The difference between `inner_alone` and
//! the others is the cost per call on the path that does not wait.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use chatstack_middleware::rate_limit::{Quota, RateLimitConfig, RateLimitLayer, Reconcile};
use chatstack_middleware::{Completion, Error, LlmRequest, LlmResponse};
use chatstack_proto::{RequestMeta, ResponseMeta, Usage};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use tower::{Layer, Service};

/// A request that costs nothing to make: charged 2 tokens (an empty prompt, an output cap of
/// 2), so that even billions of calls stay far below the quotas.
struct Request {
    meta: RequestMeta,
}

impl LlmRequest for Request {
    fn model(&self) -> &str {
        "gpt-4.1"
    }
    fn meta(&self) -> &RequestMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut RequestMeta {
        &mut self.meta
    }
    fn max_output_tokens(&self) -> Option<u64> {
        Some(2)
    }
}

/// A unary response that completes as soon as it exists, having used 1 token: every call
/// is reconciled (a token given back).
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
        hook(&Completion::unary(Some(&Usage::new(1, 0)), ""));
        self
    }
}

/// Answers at once.
#[derive(Clone, Copy)]
struct NoOp;

impl Service<Request> for NoOp {
    type Response = Response;
    type Error = Error;
    type Future = Ready<Result<Response, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        ready(Ok(Response::default()))
    }
}

/// One call, polled to its end (every future here is ready at once).
fn call<S>(service: &mut S) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    service
        .call(black_box(Request {
            meta: RequestMeta::default(),
        }))
        .now_or_never()
        .expect("ready at once: the quota is never reached")
}

fn rate_limit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("rate_limit");
    let huge = Quota::per_minute(u64::from(u32::MAX));

    let mut inner = NoOp;
    group.bench_function("inner_alone", |b| b.iter(|| call(&mut inner).is_ok()));

    let mut unlimited = RateLimitLayer::default().layer(NoOp);
    group.bench_function("no_quota", |b| b.iter(|| call(&mut unlimited).is_ok()));

    let mut requests = RateLimitLayer::new(RateLimitConfig::default().requests(huge)).layer(NoOp);
    group.bench_function("requests", |b| b.iter(|| call(&mut requests).is_ok()));

    let both = RateLimitConfig::default().requests(huge).tokens(huge);
    let mut unreconciled = RateLimitLayer::new(both.reconcile(Reconcile::Off)).layer(NoOp);
    group.bench_function("requests_and_tokens", |b| {
        b.iter(|| call(&mut unreconciled).is_ok())
    });

    let mut reconciled = RateLimitLayer::new(both.reconcile(Reconcile::Full)).layer(NoOp);
    group.bench_function("requests_and_tokens_reconciled", |b| {
        b.iter(|| call(&mut reconciled).is_ok())
    });
    group.finish();
}

criterion_group!(benches, rate_limit);
criterion_main!(benches);

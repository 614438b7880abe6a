//! What the cost layer adds to a call: a no-op inner service alone, then wrapped. The
//! difference between `inner_alone` and `priced` is the cost per call: pricing the usage,
//! attaching the cost, and one ledger update.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use chatstack_middleware::cost::{CostLayer, CostLedger};
use chatstack_middleware::{Completion, Error, LlmRequest, LlmResponse};
use chatstack_proto::{RequestMeta, ResponseMeta, Usage};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use tower::{Layer, Service};

/// A request that costs nothing to make.
struct Request {
    model: &'static str,
    meta: RequestMeta,
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

/// A unary response with a usage, complete as soon as it exists.
struct Response {
    usage: Usage,
    model: &'static str,
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
        Some(&self.usage)
    }
    fn on_complete<F>(self, hook: F) -> Self
    where
        F: FnOnce(&Completion<'_>) + Send + 'static,
    {
        hook(&Completion::unary(Some(&self.usage), self.model));
        self
    }
}

/// Answers at once, as `answered` (empty: the model is not reported).
#[derive(Clone, Copy)]
struct NoOp {
    answered: &'static str,
}

impl Service<Request> for NoOp {
    type Response = Response;
    type Error = Error;
    type Future = Ready<Result<Response, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request) -> Self::Future {
        let mut usage = Usage::new(10_000, 2_000);
        usage.prompt_tokens_details.cached_tokens = 6_000;
        usage.completion_tokens_details.reasoning_tokens = 500;
        ready(Ok(Response {
            usage,
            model: self.answered,
            meta: ResponseMeta::default(),
        }))
    }
}

/// One call, polled to its end (every future here is ready at once).
fn call<S>(service: &mut S, model: &'static str, tag: Option<&str>) -> Response
where
    S: Service<Request, Response = Response, Error = Error>,
{
    let meta = RequestMeta {
        tag: tag.map(str::to_owned),
        ..RequestMeta::default()
    };
    service
        .call(black_box(Request { model, meta }))
        .now_or_never()
        .expect("ready at once")
        .expect("answered")
}

fn cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("cost");

    let mut inner = NoOp { answered: "" };
    group.bench_function("inner_alone", |b| {
        b.iter(|| call(&mut inner, "gpt-4.1", None))
    });

    let mut priced = CostLayer::new(CostLedger::new()).layer(NoOp { answered: "" });
    group.bench_function("priced", |b| b.iter(|| call(&mut priced, "gpt-4.1", None)));

    let mut tagged = CostLayer::new(CostLedger::new()).layer(NoOp { answered: "" });
    group.bench_function("priced_tagged", |b| {
        b.iter(|| call(&mut tagged, "gpt-4.1", Some("team-a")))
    });

    // The provider answers with a dated snapshot, resolved to the table's id.
    let mut snapshot = CostLayer::new(CostLedger::new()).layer(NoOp {
        answered: "gpt-4.1-2025-04-14",
    });
    group.bench_function("priced_answered_by_snapshot", |b| {
        b.iter(|| call(&mut snapshot, "gpt-4.1", None))
    });
    group.finish();
}

criterion_group!(benches, cost);
criterion_main!(benches);

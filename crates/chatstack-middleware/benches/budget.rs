//! What the budget layer adds to a call: a no-op inner service alone, then wrapped, with the
//! request admitted (reserve and settle) and refused; and the budget over the cost layer on
//! a shared ledger. The difference between `inner_alone` and `admitted` is the cost per call.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use chatstack_middleware::budget::BudgetLayer;
use chatstack_middleware::cost::{CostLayer, CostLedger, Usd};
use chatstack_middleware::{Completion, Error, LlmRequest, LlmResponse};
use chatstack_proto::{RequestMeta, ResponseMeta, Usage};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use tower::{Layer, Service, ServiceBuilder};

/// A request of 100 estimated prompt tokens, capped at 1,000 output tokens.
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
    fn estimated_prompt_tokens(&self) -> u64 {
        100
    }
    fn max_output_tokens(&self) -> Option<u64> {
        Some(1_000)
    }
}

/// A unary response with a usage, complete as soon as it exists.
struct Response {
    meta: ResponseMeta,
}

const USAGE: Usage = Usage {
    prompt_tokens: 100,
    completion_tokens: 500,
    total_tokens: 600,
    prompt_tokens_details: chatstack_proto::PromptTokensDetails {
        cached_tokens: 0,
        cache_write_tokens: 0,
        audio_tokens: 0,
        image_tokens: 0,
    },
    completion_tokens_details: chatstack_proto::CompletionTokensDetails {
        reasoning_tokens: 0,
        audio_tokens: 0,
        accepted_prediction_tokens: 0,
        rejected_prediction_tokens: 0,
    },
};

impl LlmResponse for Response {
    fn meta(&self) -> &ResponseMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ResponseMeta {
        &mut self.meta
    }
    fn usage(&self) -> Option<&Usage> {
        Some(&USAGE)
    }
    fn on_complete<F>(self, hook: F) -> Self
    where
        F: FnOnce(&Completion<'_>) + Send + 'static,
    {
        hook(&Completion::unary(Some(&USAGE), ""));
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
        ready(Ok(Response {
            meta: ResponseMeta::default(),
        }))
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
        .expect("ready at once")
}

fn budget(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget");

    let mut inner = NoOp;
    group.bench_function("inner_alone", |b| b.iter(|| call(&mut inner).is_ok()));

    // Spending never reaches a cap this large during the bench.
    let mut admitted = BudgetLayer::new(Usd::MAX).layer(NoOp);
    group.bench_function("admitted", |b| b.iter(|| call(&mut admitted).is_ok()));

    let mut refused = BudgetLayer::new(Usd::ZERO).layer(NoOp);
    group.bench_function("refused", |b| b.iter(|| call(&mut refused).is_err()));

    let ledger = CostLedger::new();
    let mut stacked = ServiceBuilder::new()
        .layer(BudgetLayer::with_ledger(Usd::MAX, ledger.clone()))
        .layer(CostLayer::new(ledger))
        .service(NoOp);
    group.bench_function("on_ledger_with_cost", |b| {
        b.iter(|| call(&mut stacked).is_ok())
    });
    group.finish();
}

criterion_group!(benches, budget);
criterion_main!(benches);

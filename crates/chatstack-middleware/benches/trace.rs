//! What the trace layer adds to a call: a no-op inner service alone, then wrapped, with no
//! subscriber installed (spans are disabled), with a no-op subscriber (spans are enabled,
//! so every field is formatted and recorded, but the subscriber does nothing with them),
//! and with `tracing_subscriber`'s registry and no layers (spans are stored and closed).
//! With the `metrics` feature every wrapped call also records the histograms into the
//! facade's no-op recorder.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use chatstack_middleware::trace::TraceLayer;
use chatstack_middleware::{Completion, Error, LlmRequest, LlmResponse};
use chatstack_proto::{RequestMeta, ResponseMeta, Usage};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use tower::{Layer, Service};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A request that costs nothing to make.
#[derive(Default)]
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
        Some(256)
    }
}

/// A unary response with usage, complete as soon as it exists.
#[derive(Default)]
struct Response {
    usage: Usage,
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
        hook(&Completion::unary(Some(&self.usage), "gpt-4.1-2025-04-14"));
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
            usage: Usage::new(120, 48),
            meta: ResponseMeta::default(),
        }))
    }
}

/// Interested in everything, keeps nothing.
struct NoOpSubscriber {
    next_id: AtomicU64,
}

impl Subscriber for NoOpSubscriber {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// One call, polled to its end (every future here is ready at once).
fn call<S>(service: &mut S) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Error>,
{
    service
        .call(black_box(Request::default()))
        .now_or_never()
        .expect("ready at once")
}

fn trace(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace");

    let mut inner = NoOp;
    group.bench_function("inner_alone", |b| b.iter(|| call(&mut inner).is_ok()));

    let mut traced = TraceLayer::new()
        .provider("openai")
        .server_address("api.openai.com")
        .layer(NoOp);
    group.bench_function("no_subscriber", |b| b.iter(|| call(&mut traced).is_ok()));

    let noop = NoOpSubscriber {
        next_id: AtomicU64::new(1),
    };
    tracing::subscriber::with_default(noop, || {
        tracing::callsite::rebuild_interest_cache();
        group.bench_function("noop_subscriber", |b| b.iter(|| call(&mut traced).is_ok()));
    });

    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        tracing::callsite::rebuild_interest_cache();
        group.bench_function("registry_without_layers", |b| {
            b.iter(|| call(&mut traced).is_ok())
        });
    });
    group.finish();
}

criterion_group!(benches, trace);
criterion_main!(benches);

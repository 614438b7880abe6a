//! What the retry layer adds per call over a no-op inner service: the success path (clone
//! of the service and the request, a budget deposit, the attempt count), unary and stream
//! (where it also reads the first chunk ahead).

use std::hint::black_box;
use std::time::{Duration, Instant};

use chatstack_middleware::retry::RetryLayer;
use chatstack_middleware::{ChatRequest, ChatResponse, ChatStream, Error, Message};
use chatstack_proto::{ChatChunk, ResponseMeta};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new("gpt-4o", [Message::user("Hello")])
}

/// Calls `service` `iters` times, awaiting each response with `finish`, and times it all.
fn run<S, F, Fut>(runtime: &Runtime, service: &S, iters: u64, finish: F) -> Duration
where
    S: Service<ChatRequest, Error = Error> + Clone,
    F: Fn(S::Response) -> Fut,
    Fut: Future<Output = ()>,
{
    runtime.block_on(async {
        let mut service = service.clone();
        let request = request();
        let started = Instant::now();
        for _ in 0..iters {
            let response = service
                .ready()
                .await
                .unwrap()
                .call(black_box(request.clone()))
                .await
                .unwrap();
            finish(response).await;
        }
        started.elapsed()
    })
}

fn unary(c: &mut Criterion) {
    let runtime = runtime();
    let noop = tower::service_fn(|_: ChatRequest| {
        std::future::ready(Ok::<_, Error>(ChatResponse::default()))
    });
    let retried = RetryLayer::new().layer(noop);
    let unbudgeted = RetryLayer::new().budget(None).layer(noop);

    let mut group = c.benchmark_group("retry/unary");
    group.bench_function("noop", |b| {
        b.iter_custom(|iters| run(&runtime, &noop, iters, |r| async { drop(black_box(r)) }))
    });
    group.bench_function("retry", |b| {
        b.iter_custom(|iters| run(&runtime, &retried, iters, |r| async { drop(black_box(r)) }))
    });
    group.bench_function("retry_without_budget", |b| {
        b.iter_custom(|iters| {
            run(&runtime, &unbudgeted, iters, |r| async {
                drop(black_box(r))
            })
        })
    });
    group.finish();
}

fn stream(c: &mut Criterion) {
    let runtime = runtime();
    let noop = tower::service_fn(|_: ChatRequest| {
        let chunks = futures_util::stream::repeat_with(|| Ok(ChatChunk::default())).take(4);
        std::future::ready(Ok::<_, Error>(ChatStream::new(
            chunks,
            ResponseMeta::default(),
        )))
    });
    let retried = RetryLayer::new().layer(noop);
    let drain = |mut stream: ChatStream| async move {
        while let Some(chunk) = stream.next().await {
            black_box(chunk.unwrap());
        }
    };

    let mut group = c.benchmark_group("retry/stream");
    group.bench_function("noop", |b| {
        b.iter_custom(|iters| run(&runtime, &noop, iters, drain))
    });
    group.bench_function("retry", |b| {
        b.iter_custom(|iters| run(&runtime, &retried, iters, drain))
    });
    group.finish();
}

criterion_group!(benches, unary, stream);
criterion_main!(benches);

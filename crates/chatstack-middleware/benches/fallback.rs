//! What the fallback layer adds per call over a no-op inner service: on the common path
//! (the primary answers) and when a call falls back once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chatstack_middleware::fallback::FallbackLayer;
use chatstack_middleware::{ChatRequest, ChatResponse, Error, ErrorKind, Message};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

/// Calls `service` `iters` times and times it all.
fn run<S>(runtime: &Runtime, service: &S, iters: u64) -> Duration
where
    S: Service<ChatRequest, Response = ChatResponse, Error = Error> + Clone,
{
    runtime.block_on(async {
        let mut service = service.clone();
        let request = ChatRequest::new("gpt-4o", [Message::user("Hello")]);
        let started = Instant::now();
        for _ in 0..iters {
            let response = service
                .ready()
                .await
                .unwrap()
                .call(black_box(request.clone()))
                .await
                .unwrap();
            black_box(response);
        }
        started.elapsed()
    })
}

fn fallback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let noop = tower::service_fn(|_: ChatRequest| {
        std::future::ready(Ok::<_, Error>(ChatResponse::default()))
    });
    // Fails for the primary model, answers for the others.
    let failing_primary = tower::service_fn(|request: ChatRequest| {
        std::future::ready(match request.model.as_str() {
            "gpt-4o" => Err(Error::new(ErrorKind::Server, "unavailable")),
            _ => Ok(ChatResponse::default()),
        })
    });
    let no_alternatives = FallbackLayer::new().layer(noop);
    let one_model = FallbackLayer::new().model("gpt-4o-mini").layer(noop);
    let one_service = FallbackLayer::new().service("backup", noop).layer(noop);
    let falls_back = FallbackLayer::new()
        .model("gpt-4o-mini")
        .layer(failing_primary);

    let mut group = c.benchmark_group("fallback");
    group.bench_function("noop", |b| {
        b.iter_custom(|iters| run(&runtime, &noop, iters))
    });
    group.bench_function("no_alternatives", |b| {
        b.iter_custom(|iters| run(&runtime, &no_alternatives, iters))
    });
    group.bench_function("primary_answers/model_alternative", |b| {
        b.iter_custom(|iters| run(&runtime, &one_model, iters))
    });
    group.bench_function("primary_answers/service_alternative", |b| {
        b.iter_custom(|iters| run(&runtime, &one_service, iters))
    });
    group.bench_function("falls_back_once", |b| {
        b.iter_custom(|iters| run(&runtime, &falls_back, iters))
    });
    group.finish();
}

criterion_group!(benches, fallback);
criterion_main!(benches);

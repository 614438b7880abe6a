//! A batch's memory does not grow with the number of requests: peak heap and peak resident
//! requests of a 1,000- and a 100,000-request batch of a cheap in-process reply.
//!
//! This test binary counts heap bytes with `peak_alloc`'s global allocator, which wraps the
//! system one and keeps the bytes live now and their peak (resettable): so the binary itself
//! has no `unsafe` (counting needs `unsafe impl GlobalAlloc`, which lives in that crate). It
//! lives in its own file (so its own binary, with this single test) so that no other test
//! allocates while it measures.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chatstack::middleware::cost::{CostLayer, CostLedger};
use chatstack::{ChatRequest, ChatResponse, Error, Message, Usage, batch};
use futures_util::StreamExt;
use peak_alloc::PeakAlloc;
use tower::ServiceBuilder;

/// The system allocator, counting the bytes live now and their peak.
#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const CONCURRENCY: usize = 64;

/// What one run measured.
struct Run {
    /// Peak heap bytes above what was live before the batch was made.
    peak_heap: usize,
    /// Peak number of requests pulled from the input and not yet yielded as results.
    peak_resident: u64,
    elapsed: Duration,
}

async fn run(n: u64, in_order: bool) -> Run {
    let ledger = CostLedger::new();
    let canned = ChatResponse {
        id: "chatcmpl-canned".into(),
        model: "gpt-4.1".into(),
        usage: Some(Usage::new(12, 4)),
        ..ChatResponse::default()
    };
    let provider = tower::service_fn(move |_: ChatRequest| {
        let response = canned.clone();
        async move {
            // Pending once, so every slot fills as over a network.
            tokio::task::yield_now().await;
            Ok::<_, Error>(response)
        }
    });
    let service = ServiceBuilder::new()
        .layer(CostLayer::new(ledger.clone()))
        .service(provider);

    let pulled = Arc::new(AtomicU64::new(0));
    let yielded = Arc::new(AtomicU64::new(0));
    let peak_resident = Arc::new(AtomicU64::new(0));
    let requests = {
        let (pulled, yielded, peak) = (pulled.clone(), yielded.clone(), peak_resident.clone());
        (0..n).map(move |i| {
            let resident =
                pulled.fetch_add(1, Ordering::Relaxed) + 1 - yielded.load(Ordering::Relaxed);
            peak.fetch_max(resident, Ordering::Relaxed);
            let mut request = ChatRequest::new("gpt-4.1", [Message::user("Say hi.")]);
            request.meta.id = Some(format!("row-{i}"));
            request
        })
    };

    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let start = Instant::now();
    let results = batch(service, requests, CONCURRENCY);
    let mut results = if in_order {
        results.in_order().boxed_local()
    } else {
        results.boxed_local()
    };
    let mut next = 0;
    while let Some(item) = results.next().await {
        yielded.fetch_add(1, Ordering::Relaxed);
        assert!(item.result.is_ok());
        if in_order {
            assert_eq!(item.index, next);
        }
        next += 1;
    }
    let elapsed = start.elapsed();
    drop(results);
    let peak_heap = HEAP.peak_usage().saturating_sub(baseline);

    assert_eq!(next, n, "N in, N out");
    assert_eq!(ledger.snapshot().total.requests, n);
    Run {
        peak_heap,
        peak_resident: peak_resident.load(Ordering::Relaxed),
        elapsed,
    }
}

#[test]
fn peak_memory_does_not_grow_with_the_number_of_requests() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for in_order in [false, true] {
        // A warm-up, so lazily made statics are not counted in the first run.
        runtime.block_on(run(100, in_order));
        let small = runtime.block_on(run(1_000, in_order));
        let large = runtime.block_on(run(100_000, in_order));
        let mode = if in_order {
            "in order"
        } else {
            "completion order"
        };
        println!(
            "{mode}, concurrency {CONCURRENCY}: peak heap {} B for 1,000 requests, {} B for \
             100,000; peak resident requests {} and {}; {:.0} and {:.0} requests/s",
            small.peak_heap,
            large.peak_heap,
            small.peak_resident,
            large.peak_resident,
            1_000.0 / small.elapsed.as_secs_f64(),
            100_000.0 / large.elapsed.as_secs_f64(),
        );
        // The input is pulled as slots free: at most one request beyond the slots, or, in
        // order, beyond the reorder window (4 × concurrency by default).
        let bound = if in_order {
            4 * CONCURRENCY
        } else {
            CONCURRENCY
        } as u64
            + 1;
        assert!(small.peak_resident <= bound);
        assert!(large.peak_resident <= bound);
        // 100 times the requests, the same peak within 10 % (allocator and hash-map
        // rounding, timing of which futures are live together).
        assert!(
            large.peak_heap <= small.peak_heap + small.peak_heap / 10,
            "peak heap grew with N: {} B → {} B",
            small.peak_heap,
            large.peak_heap
        );
    }
}

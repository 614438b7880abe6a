//! A batch of 200 requests with a cost report.
//!
//! The requests are generated lazily (an iterator, pulled one per free slot) and run 16 at a
//! time through the `Client`'s stack against a mock that answers 10% of requests with a
//! 503 and 5% with a 429 (`retry-after-ms: 100`); the retry layer absorbs them. Progress is
//! printed at most every 150 ms through `on_progress`; then a report: successes and
//! failures, attempts, tokens, the cost by model and by tag from the ledger, and the rate.
//!
//! ```text
//! cargo run --example batch_cost_report
//! ```

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chatstack::batch::batch;
use chatstack::middleware::retry::{Backoff, RetryLayer};
use chatstack::{ChatRequest, Client, Message};
use chatstack_mock::{Fault, MockConfig};
use common::Target;
use futures_util::StreamExt;

const REQUESTS: usize = 200;
const CONCURRENCY: usize = 16;
const TAGS: [&str; 3] = ["support", "billing", "research"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(Target::from_env()).await
}

async fn run(target: Target) -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockConfig::default()
        .latency(Duration::from_millis(10))
        .jitter(Duration::from_millis(20))
        .fault(Fault::ServiceUnavailable, 0.10)
        .fault(
            Fault::RateLimitMs {
                retry_after: Duration::from_millis(100),
            },
            0.05,
        )
        .seed(42);
    let upstream = target.connect(mock).await?;
    let client = Client::builder()
        .base_url(upstream.base_url.as_str())
        .api_key(upstream.key()?)
        .retry(
            RetryLayer::new()
                .max_attempts(5)
                .backoff(Backoff::new().base(Duration::from_millis(50))),
        )
        .build()?;

    // Two models: the one configured, and a cheaper one against the mock.
    let models = if upstream.is_mock() {
        vec![upstream.model.clone(), "gpt-4.1-mini".to_owned()]
    } else {
        vec![upstream.model.clone()]
    };
    // Lazy: each request is built when the batch has a free slot for it.
    let requests = (0..REQUESTS).map(move |i| {
        let mut request = ChatRequest::new(
            models[i % models.len()].as_str(),
            [Message::user(format!(
                "Classify ticket #{i} as bug, question or feature."
            ))],
        )
        .max_completion_tokens(20)
        .tag(TAGS[i % TAGS.len()]);
        request.meta.id = Some(format!("ticket-{i}"));
        request
    });

    let mut last_print: Option<Instant> = None;
    let mut results = batch(client.service(), requests, CONCURRENCY).on_progress(move |p| {
        let finished = p.total == Some(p.done);
        if finished || last_print.is_none_or(|at| at.elapsed() >= Duration::from_millis(150)) {
            last_print = Some(Instant::now());
            println!(
                "progress {:>3}/{} | ok {:>3} failed {:>2} | {:>3} attempts | {} | {:>6.1} req/s",
                p.done,
                p.total.unwrap_or_default(),
                p.ok,
                p.failed,
                p.attempts,
                p.cost,
                p.requests_per_second(),
            );
        }
    });

    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut retried = 0_u64;
    while let Some(item) = results.next().await {
        match &item.result {
            Ok(response) if response.meta.attempts > 1 => retried += 1,
            Ok(_) => {}
            Err(error) => *errors.entry(error.kind().to_string()).or_default() += 1,
        }
    }

    let p = results.progress();
    println!();
    println!("batch of {} at concurrency {CONCURRENCY}", p.done);
    println!(
        "ok {} | failed {} | {} attempts ({} requests needed a retry) | {:.2?} | {:.1} req/s",
        p.ok,
        p.failed,
        p.attempts,
        retried,
        p.elapsed,
        p.requests_per_second()
    );
    for (kind, count) in &errors {
        println!("  failed: {count} × {kind}");
    }
    println!(
        "tokens: {} in, {} out",
        p.prompt_tokens, p.completion_tokens
    );
    let ledger = client.ledger().snapshot();
    println!("cost by model:");
    for (model, entry) in &ledger.by_model {
        println!(
            "  {model:<14} {:>4} requests  {:>6} in {:>6} out  {}",
            entry.requests,
            entry.tokens.prompt(),
            entry.tokens.completion(),
            entry.cost
        );
    }
    println!("cost by tag:");
    for (tag, entry) in &ledger.by_tag {
        println!("  {tag:<14} {:>4} requests  {}", entry.requests, entry.cost);
    }
    println!(
        "total {} (batch progress says {})",
        ledger.total.cost, p.cost
    );
    if let Some(mock) = &upstream.mock {
        let counters = mock.counters();
        println!(
            "at the mock: {} requests, {} × 200, {} × 503, {} × 429",
            counters.total(),
            counters.status(200),
            counters.status(503),
            counters.status(429)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn runs_against_the_mock() {
        run(Target::Mock).await.unwrap();
    }
}

//! Layers à la carte: a stack of your own on a bare `HttpTransport`, with
//! `tower::ServiceBuilder`.
//!
//! The `Client` composes the default stack for you; this example composes one by hand,
//! picking the layers it wants (cost, retry, rate limit, timeout, auth) and mixing in a
//! plain tower combinator (`map_request`, which tags every request for the ledger). The
//! `ServiceBuilderExt` methods (`chat_cost`, `chat_retry`, ...) are `.layer(...)` by name.
//! The mock fails about half the requests with a 503, so the call takes a retry or two (seed 5: three attempts).
//!
//! ```text
//! cargo run --example custom_stack
//! ```

mod common;

use std::time::Duration;

use chatstack::middleware::auth::AuthLayer;
use chatstack::middleware::cost::{CostLayer, CostLedger};
use chatstack::middleware::rate_limit::{RateLimitConfig, RateLimitLayer};
use chatstack::middleware::retry::{Backoff, RetryLayer};
use chatstack::middleware::timeout::TimeoutLayer;
use chatstack::{ChatRequest, HttpTransport, Message, ResponseExt, ServiceBuilderExt};
use chatstack_mock::{Fault, MockConfig};
use common::Target;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(Target::from_env()).await
}

async fn run(target: Target) -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockConfig::default()
        .fault(Fault::ServiceUnavailable, 0.5)
        .seed(5);
    let upstream = target.connect(mock).await?;

    let ledger = CostLedger::new();
    let rate_limit = RateLimitLayer::new(
        RateLimitConfig::default()
            .requests_per_minute(60)
            .tokens_per_minute(100_000),
    );
    let service = ServiceBuilder::new()
        // A plain tower combinator: attribute the spend of everything below to this job.
        .map_request(|request: ChatRequest| request.tag("custom-stack"))
        .chat_cost(CostLayer::new(ledger.clone()))
        .chat_retry(
            RetryLayer::new()
                .max_attempts(4)
                .backoff(Backoff::new().base(Duration::from_millis(50))),
        )
        .chat_rate_limit(rate_limit.clone())
        .chat_timeout(TimeoutLayer::new().total(Duration::from_secs(30)))
        .chat_auth(AuthLayer::new(upstream.key()?))
        .service(
            HttpTransport::builder()
                .base_url(upstream.base_url.as_str())
                .build()?,
        );

    let request = ChatRequest::new(
        upstream.model.as_str(),
        [Message::user(
            "One line: why is retry outside the rate limiter here?",
        )],
    )
    .max_completion_tokens(80);
    let model = request.model.clone();
    let response = service.oneshot(request).await?;

    println!("{}", response.text().unwrap_or("(no text)"));
    let usage = response.usage.unwrap_or_default();
    let cost = response
        .cost()
        .map_or_else(|| "-".to_owned(), |cost| cost.cost.to_string());
    println!(
        "model {} | {} + {} tokens | {cost} | {} attempt(s) | {:?} | request id {}",
        response.model,
        usage.prompt_tokens,
        usage.completion_tokens,
        response.meta.attempts,
        response.meta.latency,
        response.meta.request_id.as_deref().unwrap_or("-"),
    );
    let snapshot = ledger.snapshot();
    for (tag, entry) in &snapshot.by_tag {
        println!(
            "ledger: tag {tag}: {} request(s), {}",
            entry.requests, entry.cost
        );
    }
    if let Some(status) = rate_limit.status(&model) {
        println!(
            "rate limiter for {model}: {} request(s) and {} tokens available now",
            status.requests_available.unwrap_or(u32::MAX),
            status.tokens_available.unwrap_or(u32::MAX),
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

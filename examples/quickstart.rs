//! Quickstart: one chat through the `Client` and its default stack (trace, cost, retry,
//! circuit breaker, timeouts, auth).
//!
//! Runs against chatstack's built-in mock provider by default, and against a real
//! OpenAI-compatible endpoint when `OPENAI_API_KEY` is set (`OPENAI_BASE_URL` picks the
//! endpoint, `CHATSTACK_MODEL` the model).
//!
//! ```text
//! cargo run --example quickstart
//! ```

mod common;

use chatstack::{ChatRequest, Client, Message, ResponseExt};
use chatstack_mock::MockConfig;
use common::Target;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(Target::from_env()).await
}

async fn run(target: Target) -> Result<(), Box<dyn std::error::Error>> {
    // The mock, if any, lives as long as `upstream`.
    let upstream = target.connect(MockConfig::default()).await?;
    let client = Client::builder()
        .base_url(upstream.base_url.as_str())
        .api_key(upstream.key()?)
        .build()?;

    let request = ChatRequest::new(
        upstream.model.as_str(),
        [
            Message::system("You are a concise assistant."),
            Message::user("In one sentence: why put retries in one place only?"),
        ],
    )
    .max_completion_tokens(100);

    let response = client.send(request).await?;
    println!("{}", response.text().unwrap_or("(no text)"));
    let usage = response.usage.unwrap_or_default();
    let cost = response
        .cost()
        .map_or_else(|| "-".to_owned(), |cost| cost.cost.to_string());
    eprintln!(
        "model {} | {} prompt + {} completion tokens | {cost} | {} attempt(s) | request id {} | {:?}",
        response.model,
        usage.prompt_tokens,
        usage.completion_tokens,
        response.meta.attempts,
        response.meta.request_id.as_deref().unwrap_or("-"),
        response.meta.latency,
    );
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

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

use chatstack::middleware::auth::ApiKey;
use chatstack::{ChatRequest, Client, Message, ResponseExt};
use chatstack_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let has_key = std::env::var("OPENAI_API_KEY").is_ok_and(|key| !key.trim().is_empty());

    // Keep the mock alive for as long as the client talks to it.
    let mut _mock = None;
    let (client, model) = if has_key {
        let model = std::env::var("CHATSTACK_MODEL").unwrap_or_else(|_| "gpt-4.1-mini".into());
        (Client::from_env()?, model)
    } else {
        const MOCK_KEY: &str = "sk-mock-quickstart-0000";
        let mock = MockServer::start(MockConfig::default().api_key(MOCK_KEY)).await?;
        eprintln!(
            "OPENAI_API_KEY is not set: using the built-in mock at {}",
            mock.url()
        );
        let client = Client::builder()
            .base_url(mock.url())
            .api_key(ApiKey::new(MOCK_KEY)?)
            .build()?;
        _mock = Some(mock);
        (client, "gpt-4.1".to_owned())
    };

    let request = ChatRequest::new(
        model,
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

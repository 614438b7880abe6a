//! Quickstart: one chat through the HTTP transport.
//!
//! Runs against chatstack's built-in mock provider by default, and against a real
//! OpenAI-compatible endpoint when `OPENAI_API_KEY` is set (`OPENAI_BASE_URL` picks the
//! endpoint, `CHATSTACK_MODEL` the model).
//!
//! ```text
//! cargo run --example quickstart
//! ```

use chatstack::{ChatRequest, HttpTransport, Message};
use chatstack_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let api_key = std::env::var("OPENAI_API_KEY")
        .ok()
        .map(|key| key.trim().to_owned())
        .filter(|key| !key.is_empty());

    // Keep the mock alive for as long as the transport talks to it.
    let mut _mock = None;
    let (transport, model) = match api_key {
        Some(key) => {
            let base_url = std::env::var("OPENAI_BASE_URL")
                .unwrap_or_else(|_| "https://api.openai.com/v1".to_owned());
            let transport = HttpTransport::builder()
                .base_url(base_url)
                .header("authorization", &format!("Bearer {key}"))
                .build()?;
            let model = std::env::var("CHATSTACK_MODEL").unwrap_or_else(|_| "gpt-4.1-mini".into());
            (transport, model)
        }
        None => {
            let mock = MockServer::start(MockConfig::default()).await?;
            eprintln!(
                "OPENAI_API_KEY is not set: using the built-in mock at {}",
                mock.url()
            );
            let transport = HttpTransport::builder().base_url(mock.url()).build()?;
            _mock = Some(mock);
            (transport, "gpt-4.1".to_owned())
        }
    };

    let request = ChatRequest::new(
        model,
        [
            Message::system("You are a concise assistant."),
            Message::user("In one sentence: why put retries in one place only?"),
        ],
    )
    .max_completion_tokens(100);

    let response = transport.send(request).await?;
    println!("{}", response.text().unwrap_or("(no text)"));
    if let Some(usage) = response.usage {
        eprintln!(
            "model {} | {} prompt + {} completion tokens | request id {} | {:?}",
            response.model,
            usage.prompt_tokens,
            usage.completion_tokens,
            response.meta.request_id.as_deref().unwrap_or("-"),
            response.meta.latency,
        );
    }
    Ok(())
}

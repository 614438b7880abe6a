//! Four providers' models through one base URL, with a cost line each, and what a month
//! of output would cost on each.
//!
//! One `Client`, one base URL: a relay or gateway that serves several providers behind the
//! OpenAI protocol (OpenRouter, LiteLLM, a company gateway), or chatstack's mock, which
//! answers any model. Each response is priced from the built-in price table, by the model
//! that answered; then `Pricing::compare` prices 10M output tokens a month on each model,
//! at list price and through a relay that bills 85% of it.
//!
//! ```text
//! cargo run --example multi_model
//! OPENAI_API_KEY=... OPENAI_BASE_URL=https://openrouter.ai/api/v1 cargo run --example multi_model
//! ```

mod common;

use chatstack::middleware::cost::{Pricing, TokenCounts};
use chatstack::{ChatRequest, Client, Message, ResponseExt};
use chatstack_mock::MockConfig;
use common::Target;

/// The models, as the built-in price table names them.
const MODELS: [&str; 4] = [
    "gpt-4.1",
    "claude-sonnet-4.5",
    "gemini-2.5-flash",
    "deepseek-v3.2",
];

/// The relay's multiplier on list prices.
const RELAY_MULTIPLIER: f64 = 0.85;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(Target::from_env()).await
}

async fn run(target: Target) -> Result<(), Box<dyn std::error::Error>> {
    let upstream = target
        .connect(MockConfig::default().reply_tokens(24))
        .await?;
    let client = Client::builder()
        .base_url(upstream.base_url.as_str())
        .api_key(upstream.key()?)
        .build()?;

    println!("one request per model through {}", client.url());
    for model in MODELS {
        let request = ChatRequest::new(
            model,
            [Message::user("Name one reason to price every request.")],
        )
        .max_completion_tokens(60);
        match client.send(request).await {
            Ok(response) => {
                let usage = response.usage.unwrap_or_default();
                let cost = response.cost().map_or_else(
                    || "-".to_owned(),
                    |cost| format!("{} ({})", cost.cost, cost.model),
                );
                println!(
                    "{model:<18} {:>4} in + {:>4} out tokens  {cost:<32}  {:?}",
                    usage.prompt_tokens, usage.completion_tokens, response.meta.latency,
                );
            }
            // A real endpoint may not serve every model: say so and go on.
            Err(error) => println!("{model:<18} failed: {error}"),
        }
    }
    println!("total {}", client.ledger().total_cost());

    // PRICING.md's comparison: 10M output tokens a month.
    let month = TokenCounts {
        output: 10_000_000,
        ..TokenCounts::default()
    };
    let rows = Pricing::default()
        .multiplier(RELAY_MULTIPLIER)
        .compare(MODELS, &month);
    println!();
    println!("10M output tokens a month   list price   at {RELAY_MULTIPLIER} (relay)");
    for row in &rows {
        let show = |usd: Option<chatstack::middleware::cost::Usd>| {
            usd.map_or_else(|| "no price".to_owned(), |usd| format!("{usd:.2}"))
        };
        println!(
            "{:<26} {:>11}   {:>13}",
            row.model,
            show(row.list),
            show(row.billed)
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

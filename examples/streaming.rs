//! Streaming: print the text deltas as they arrive, then the usage and cost of the whole
//! answer.
//!
//! `Client::stream` returns a stream of `ChatEvent`s: every chunk as it comes
//! (`ChatEvent::Chunk`), then the whole response (`ChatEvent::Done`) with the same usage
//! and cost a unary call would carry. The mock sends one token every 15 ms, so the deltas
//! visibly trickle in.
//!
//! ```text
//! cargo run --example streaming
//! ```

mod common;

use std::io::Write;
use std::time::Duration;

use chatstack::{ChatEvent, ChatRequest, Client, Message, ResponseExt};
use chatstack_mock::MockConfig;
use common::Target;
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(Target::from_env()).await
}

async fn run(target: Target) -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockConfig::default()
        .reply_tokens(48)
        .token_interval(Duration::from_millis(15));
    let upstream = target.connect(mock).await?;
    let client = Client::builder()
        .base_url(upstream.base_url.as_str())
        .api_key(upstream.key()?)
        .build()?;

    let request = ChatRequest::new(
        upstream.model.as_str(),
        [
            Message::system("You are a concise assistant."),
            Message::user("In three sentences: what does backpressure mean in an async client?"),
        ],
    )
    .max_completion_tokens(150);

    let mut stream = client.stream(request).await?;
    eprintln!(
        "stream started: HTTP {}, request id {}",
        stream.meta().status,
        stream.meta().request_id.as_deref().unwrap_or("-")
    );
    let mut chunks = 0_u32;
    let mut stdout = std::io::stdout();
    while let Some(event) = stream.next().await {
        match event? {
            ChatEvent::Chunk(chunk) => {
                chunks += 1;
                for text in chunk.text() {
                    print!("{text}");
                }
                stdout.flush()?;
            }
            ChatEvent::Done(response) => {
                println!();
                let usage = response.usage.unwrap_or_default();
                let cost = response
                    .cost()
                    .map_or_else(|| "-".to_owned(), |cost| cost.cost.to_string());
                println!(
                    "[{} | {chunks} chunks | {} prompt + {} completion tokens | {cost} | finish {} | {} attempt(s) | {:?} to headers]",
                    response.model,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    response
                        .choices
                        .first()
                        .and_then(|choice| choice.finish_reason.as_ref())
                        .map_or("-", |reason| reason.as_str()),
                    response.meta.attempts,
                    response.meta.latency,
                );
            }
        }
    }
    println!("ledger total {}", client.ledger().total_cost());
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

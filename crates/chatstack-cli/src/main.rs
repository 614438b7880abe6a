//! `chatstack`: run OpenAI Batch JSONL files through the chatstack stack with progress and a
//! cost report, chat from the terminal, compare model prices, and serve the mock provider.
//!
//! ```text
//! chatstack run batch.jsonl -o results.jsonl --mock     # a batch against the built-in mock
//! chatstack chat --stream "Why is the sky blue?"        # one chat, streamed
//! chatstack prices --multiplier 0.85                    # the price table and a monthly plan
//! chatstack mock --port 8080                            # the mock provider alone
//! ```
#![forbid(unsafe_code)]

mod chat;
mod mock;
mod prices;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An async client stack for LLM chat APIs, on the command line.
#[derive(Debug, Parser)]
#[command(name = "chatstack", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an OpenAI Batch API JSONL file through the stack, writing one result line per input.
    Run(run::RunArgs),
    /// Send one chat and print the answer (streamed with --stream); usage and cost on stderr.
    Chat(chat::ChatArgs),
    /// Show the price table and what a month of tokens costs per model.
    Prices(prices::PricesArgs),
    /// Serve the mock provider until Ctrl-C.
    Mock(mock::MockArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chatstack: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::execute(args).await,
            Command::Chat(args) => chat::execute(args).await,
            Command::Prices(args) => prices::execute(args),
            Command::Mock(args) => mock::execute(args).await,
        }
    })
}

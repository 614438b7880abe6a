//! `chatstack-bench`: a load benchmark that sends the same chat requests through four clients
//! against chatstack's mock provider and prints their throughput, latency, CPU time and memory
//! side by side, each as a ratio to a hand-written floor on bare reqwest.
//!
//! ```text
//! cargo run --release -p chatstack-bench                    # the full run (a few minutes)
//! cargo run --release -p chatstack-bench -- --quick         # a smoke run
//! cargo run --release -p chatstack-bench -- --clients floor,stack --modes unary --json out.json
//! ```
//!
//! One binary plays three parts. Without a subcommand it is the orchestrator
//! ([`orchestrator`]): it starts the mock provider in a process of its own (the hidden `mock`
//! subcommand, [`mock`]), then runs each client, mode and round in a fresh process (the
//! hidden `client` subcommand, [`clients`] and [`driver`]), so that the CPU time and peak RSS
//! each reports belong to that client alone, and prints the report ([`report`]).
#![forbid(unsafe_code)]

mod clients;
mod driver;
mod mock;
mod orchestrator;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::clients::Kind;
use crate::clients::stack::Layer;
use crate::driver::Mode;

/// Load benchmark: the same chat requests through bare reqwest, chatstack's transport,
/// chatstack's full stack and async-openai, each in its own process, against the mock
/// provider.
#[derive(Debug, Parser)]
#[command(name = "chatstack-bench", about)]
struct Cli {
    /// A part this binary plays for itself; absent for a benchmark run.
    #[command(subcommand)]
    command: Option<Command>,
    /// The benchmark's settings.
    #[command(flatten)]
    bench: BenchArgs,
}

/// The hidden parts the orchestrator starts as child processes.
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the mock provider; print its base URL; exit when stdin closes.
    #[command(hide = true)]
    Mock(MockArgs),
    /// Measure one client in one mode; print the figures as one JSON line.
    #[command(hide = true)]
    Client(ClientArgs),
}

/// The settings of a benchmark run.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Unary requests per client and round [default: 50000; 2000 with --quick]
    #[arg(long, value_name = "N")]
    requests: Option<usize>,
    /// Streaming requests per client and round [default: 5000; 200 with --quick]
    #[arg(long, value_name = "M")]
    stream_requests: Option<usize>,
    /// Requests in flight at once in unary and stream mode
    #[arg(long, value_name = "C", default_value_t = 64)]
    concurrency: usize,
    /// Rounds; each runs every client in turn for each mode, the order rotated per round
    /// [default: 5; 1 with --quick]
    #[arg(long, value_name = "R")]
    rounds: Option<usize>,
    /// Clients to run, comma-separated
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "floor,transport,stack,async-openai"
    )]
    clients: Vec<Kind>,
    /// Modes to run, comma-separated
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "unary,stream,hold"
    )]
    modes: Vec<Mode>,
    /// Streams held open at once in hold mode [default: 1000; 200 with --quick]
    #[arg(long, value_name = "K")]
    inflight: Option<usize>,
    /// Write every round's figures and the summary to this file as JSON
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// A smoke run: fewer requests, one round, fewer streams held (explicit flags still win)
    #[arg(long)]
    quick: bool,
    /// Layers to leave out of the stack client, comma-separated: what each costs over the
    /// wire. The targets then no longer judge the default stack.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LAYERS")]
    stack_without: Vec<Layer>,
}

/// Arguments of the hidden `mock` subcommand.
#[derive(Debug, Args)]
struct MockArgs {
    /// Stall every stream after its first content chunk (the mock of hold mode).
    #[arg(long)]
    stall: bool,
}

/// Arguments of the hidden `client` subcommand.
#[derive(Debug, Args)]
struct ClientArgs {
    /// The client to measure.
    #[arg(long, value_enum)]
    kind: Kind,
    /// What to measure.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The mock's base URL (`http://127.0.0.1:PORT/v1`).
    #[arg(long)]
    url: String,
    /// Timed requests (unary and stream mode).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests in flight at once (unary and stream mode).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Streams held open at once (hold mode).
    #[arg(long, default_value_t = 1_000)]
    inflight: usize,
    /// Layers to leave out (stack client only).
    #[arg(long, value_enum, value_delimiter = ',')]
    stack_without: Vec<Layer>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Mock(args)) => mock::serve(args.stall),
        Some(Command::Client(args)) => clients::measure(&args),
        None => orchestrator::run(cli.bench),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chatstack-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

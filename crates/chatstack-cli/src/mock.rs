//! `chatstack mock`: the mock provider as a standalone server, exactly as the
//! `chatstack-mock` binary serves it (same flags, parsed by [`chatstack_mock::args`]).
//!
//! ```text
//! chatstack mock --port 8080 --fault-rate 0.2 --fault 503 --seed 42
//! ```
//!
//! Prints its base URL (`http://127.0.0.1:PORT/v1`) on stdout, then serves until Ctrl-C.
//! Exit status: 0 after Ctrl-C (or `--help`), 2 for a bad flag, 1 when it cannot listen.

use std::io::Write;
use std::process::ExitCode;

use chatstack_mock::MockServer;
use chatstack_mock::args::{Command, USAGE, parse_args};

/// Arguments of `chatstack mock`: passed as they are to the mock's own parser, so that
/// `chatstack mock` and `chatstack-mock` take the same flags.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct MockArgs {
    /// The mock's flags: --port N, --api-key KEY, --reply-tokens N, --latency-ms N,
    /// --jitter-ms N, --token-interval-ms N, --fault-rate F --fault NAME[:ARG] (repeatable),
    /// --seed S, --model NAME, --context-window N, --stall-cap-ms N. `chatstack mock --help`
    /// lists them all.
    #[arg(
        value_name = "MOCK FLAGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// Runs `chatstack mock`.
pub async fn execute(args: MockArgs) -> ExitCode {
    let config = match parse_args(args.args) {
        Ok(Command::Serve(config)) => *config,
        Ok(Command::Help) => {
            print!("{}", USAGE.replace("chatstack-mock", "chatstack mock"));
            let _ = std::io::stdout().flush();
            return ExitCode::SUCCESS;
        }
        Ok(_) => {
            eprintln!("chatstack mock: this command line is not supported (see --help)");
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("chatstack mock: {error}");
            return ExitCode::from(2);
        }
    };
    let server = match MockServer::start(config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("chatstack mock: cannot listen: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", server.url());
    let _ = std::io::stdout().flush();
    eprintln!(
        "chatstack mock: serving on {}; press Ctrl-C to stop",
        server.url()
    );
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("chatstack mock: cannot wait for Ctrl-C: {error}");
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}

//! `chatstack-mock`: the mock provider as a standalone server. See `chatstack-mock --help`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use chatstack_mock::MockServer;
use chatstack_mock::args::{Command, USAGE, parse_args};

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Serve(config)) => *config,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(_) => return ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chatstack-mock: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chatstack-mock: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match MockServer::start(config).await {
            Ok(server) => server,
            Err(error) => {
                eprintln!("chatstack-mock: cannot listen: {error}");
                return ExitCode::FAILURE;
            }
        };
        println!("{}", server.url());
        let _ = std::io::stdout().flush();
        if let Err(error) = tokio::signal::ctrl_c().await {
            eprintln!("chatstack-mock: cannot wait for Ctrl-C: {error}");
        }
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

//! The mock provider, in a process of its own: [`serve`] is the hidden `mock` subcommand,
//! [`MockProcess`] the orchestrator's handle on it.
//!
//! The mock runs apart from the clients so that its CPU time and memory never count as
//! theirs. Every client sends the same key, and the mock checks it.

use std::io::{self, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chatstack_mock::{Fault, MockConfig, MockServer, RateLimitConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::clients::{API_KEY, REPLY_TOKENS};

/// How long a stalled stream stays open: far longer than any hold run takes.
const STALL_CAP: Duration = Duration::from_secs(600);

/// The quota the mock reports in its `x-ratelimit-*` headers, in requests and in tokens per
/// minute. Far above what a run sends: chatstack's rate limiter pauses a model whose
/// reported remaining quota runs under 5 % (as it should against a real provider), and the
/// mock's default of 10,000 requests a minute would run out within seconds here.
const REPORTED_QUOTA: u64 = 1_000_000_000_000;

/// Runs the mock provider until its stdin closes: prints its base URL as one line on stdout
/// first. With `stall`, every stream sends its role chunk and one content chunk, then holds
/// the connection open until [`STALL_CAP`] (the mock of hold mode).
pub fn serve(stall: bool) -> Result<(), String> {
    let mut config = MockConfig::default()
        .api_key(API_KEY)
        .reply_tokens(REPLY_TOKENS)
        .stall_cap(STALL_CAP)
        .rate_limits(
            RateLimitConfig::default()
                .requests_per_minute(REPORTED_QUOTA)
                .tokens_per_minute(REPORTED_QUOTA),
        );
    if stall {
        config = config.fault(Fault::stall(1), 1.0);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("mock: cannot start the runtime: {error}"))?;
    // The server runs on the runtime's workers; this thread only waits for stdin to close.
    let server = runtime
        .block_on(MockServer::start(config))
        .map_err(|error| format!("mock: cannot listen: {error}"))?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}", server.url())
        .and_then(|()| stdout.flush())
        .map_err(|error| format!("mock: cannot write the URL: {error}"))?;
    // Read to the end: the orchestrator never writes, so this returns when it closes the pipe
    // or exits.
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    drop(server);
    Ok(())
}

/// A mock provider in a child process, killed when this handle is dropped (on every exit
/// path of the orchestrator, errors and panics included).
pub struct MockProcess {
    /// The child; `kill_on_drop` ends it with this handle.
    _child: Child,
    /// The child's stdin, held open: the mock exits when it closes, also should the
    /// orchestrator die without running destructors.
    _stdin: ChildStdin,
    /// The mock's base URL, `http://127.0.0.1:PORT/v1`.
    url: String,
}

impl MockProcess {
    /// Starts `exe mock [--stall]` and waits for the base URL it prints.
    pub async fn start(exe: &Path, stall: bool) -> Result<Self, String> {
        let mut command = Command::new(exe);
        command
            .arg("mock")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if stall {
            command.arg("--stall");
        }
        let mut child = command
            .spawn()
            .map_err(|error| format!("cannot start the mock ({}): {error}", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the mock's stdin or stdout is not piped".to_owned());
        };
        let mut url = String::new();
        BufReader::new(stdout)
            .read_line(&mut url)
            .await
            .map_err(|error| format!("cannot read the mock's URL: {error}"))?;
        let url = url.trim().to_owned();
        if !url.starts_with("http://") {
            return Err(format!("the mock did not print its URL (got {url:?})"));
        }
        Ok(Self {
            _child: child,
            _stdin: stdin,
            url,
        })
    }

    /// The mock's base URL, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

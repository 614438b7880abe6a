//! The default command: starts the mock provider (and, for hold mode, a second one that
//! stalls every stream), runs every client, mode and round in a child process of its own,
//! collects the JSON line each prints, and hands the lot to the [report](crate::report).

use std::path::Path;
use std::process::Stdio;

use serde::Serialize;
use tokio::process::Command;

use crate::BenchArgs;
use crate::clients::{Kind, REPLY_TOKENS, STREAM_CHUNKS};
use crate::driver::{Figures, Mode};
use crate::mock::MockProcess;
use crate::report::{Machine, Report, RoundResult};

/// What a run does, with `--quick` and the defaults resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Unary requests per client and round.
    pub requests: usize,
    /// Streaming requests per client and round.
    pub stream_requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Rounds.
    pub rounds: usize,
    /// Streams held open at once in hold mode.
    pub inflight: usize,
    /// Tokens per reply.
    pub reply_tokens: u32,
    /// Chunks per stream.
    pub stream_chunks: usize,
    /// The clients, in the order of the report (and of the first round).
    pub clients: Vec<Kind>,
    /// The modes, in the order of the report (and run).
    pub modes: Vec<Mode>,
    /// The layers left out of the stack client (none: the default stack).
    pub stack_without: Vec<&'static str>,
}

impl Settings {
    /// Resolves the command line: `--quick` lowers the defaults, explicit flags win.
    fn new(args: &BenchArgs) -> Result<Self, String> {
        let pick = |value: Option<usize>, full: usize, quick: usize| {
            value.unwrap_or(if args.quick { quick } else { full })
        };
        let settings = Self {
            requests: pick(args.requests, 50_000, 2_000),
            stream_requests: pick(args.stream_requests, 5_000, 200),
            concurrency: args.concurrency,
            rounds: pick(args.rounds, 5, 1),
            inflight: pick(args.inflight, 1_000, 200),
            reply_tokens: REPLY_TOKENS,
            stream_chunks: STREAM_CHUNKS,
            clients: sorted(&args.clients),
            modes: sorted(&args.modes),
            stack_without: args
                .stack_without
                .iter()
                .map(|layer| layer.name())
                .collect(),
        };
        let counts = [
            ("--requests", settings.requests),
            ("--stream-requests", settings.stream_requests),
            ("--concurrency", settings.concurrency),
            ("--rounds", settings.rounds),
            ("--inflight", settings.inflight),
        ];
        if let Some((flag, _)) = counts.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{flag} must be at least 1"));
        }
        if settings.clients.is_empty() || settings.modes.is_empty() {
            return Err("name at least one client and one mode".to_owned());
        }
        Ok(settings)
    }

    /// The timed requests of `mode` (unary or stream).
    fn requests_of(&self, mode: Mode) -> usize {
        match mode {
            Mode::Stream => self.stream_requests,
            Mode::Unary | Mode::Hold => self.requests,
        }
    }
}

/// `items` in their canonical order (that of the report), without repeats.
fn sorted<T: Copy + Ord>(items: &[T]) -> Vec<T> {
    let mut items = items.to_vec();
    items.sort_unstable();
    items.dedup();
    items
}

/// Runs the benchmark, prints the report on stdout (progress on stderr), and writes the
/// JSON file when asked.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let settings = Settings::new(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let report = runtime.block_on(orchestrate(settings))?;
    print!("{}", report.render_results());
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|error| format!("cannot encode the report: {error}"))?;
        std::fs::write(&path, json + "\n")
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Starts the mocks, runs every round, and returns the report. The mocks are killed when
/// this returns, with a result or an error.
async fn orchestrate(settings: Settings) -> Result<Report, String> {
    let exe = std::env::current_exe()
        .map_err(|error| format!("cannot find this program's path: {error}"))?;
    let machine = Machine::detect();
    print!("{}", Report::header(&machine, &settings));

    let mock = MockProcess::start(&exe, false).await?;
    let stall_mock = if settings.modes.contains(&Mode::Hold) {
        Some(MockProcess::start(&exe, true).await?)
    } else {
        None
    };

    let mut results = Vec::new();
    for round in 1..=settings.rounds {
        // Rotate the order, so that no client always runs first (or last).
        let mut order = settings.clients.clone();
        let shift = (round - 1) % order.len();
        order.rotate_left(shift);
        for &mode in &settings.modes {
            let url = match (mode, &stall_mock) {
                (Mode::Hold, Some(stall_mock)) => stall_mock.url(),
                _ => mock.url(),
            };
            for &client in &order {
                let figures = run_client(&exe, client, mode, url, &settings)
                    .await
                    .map_err(|error| format!("round {round}, {client} {mode}: {error}"))?;
                eprintln!(
                    "round {round}/{}  {mode:<6} {client:<12} {}",
                    settings.rounds,
                    progress(&figures)
                );
                results.push(RoundResult {
                    round,
                    client,
                    mode,
                    figures,
                });
            }
        }
    }
    Ok(Report::new(machine, settings, results))
}

/// Runs `exe client ...` for one client and mode and reads the figures it prints.
async fn run_client(
    exe: &Path,
    client: Kind,
    mode: Mode,
    url: &str,
    settings: &Settings,
) -> Result<Figures, String> {
    let mut command = Command::new(exe);
    command
        .arg("client")
        .args(["--kind", client.name(), "--mode", mode.name(), "--url", url])
        .args(["--requests", &settings.requests_of(mode).to_string()])
        .args(["--concurrency", &settings.concurrency.to_string()])
        .args(["--inflight", &settings.inflight.to_string()]);
    if client == Kind::Stack && !settings.stack_without.is_empty() {
        command.args(["--stack-without", &settings.stack_without.join(",")]);
    }
    let output = command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| format!("cannot run the client process: {error}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "the client process failed ({}): {}",
            output.status,
            stderr.trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let figures: Figures = serde_json::from_str(line)
        .map_err(|error| format!("cannot read the client's figures {line:?}: {error}"))?;
    match (&figures, mode) {
        (Figures::Hold(_), Mode::Hold) | (Figures::Load(_), Mode::Unary | Mode::Stream) => {
            Ok(figures)
        }
        _ => Err(format!("the client answered {line:?} for {mode} mode")),
    }
}

/// One progress line's figures.
fn progress(figures: &Figures) -> String {
    match figures {
        Figures::Load(load) => format!(
            "{:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  {:.1} µs CPU/req  peak RSS {:.1} MiB",
            load.req_per_s,
            load.p50_ms,
            load.p99_ms,
            load.cpu_us_per_req,
            load.peak_rss_kib as f64 / 1024.0
        ),
        Figures::Hold(hold) => format!(
            "{:>9.1} KiB per stream  (RSS {:.1} → {:.1} MiB)",
            hold.kib_per_stream,
            hold.rss_before_kib as f64 / 1024.0,
            hold.rss_held_kib as f64 / 1024.0
        ),
    }
}

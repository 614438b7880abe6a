//! `chatstack run`: an OpenAI Batch API JSONL file through the chatstack stack, one result
//! line per input line, with progress and a cost report.
//!
//! The input is read twice, lazily both times: a first pass refuses duplicate custom_ids
//! (before anything is sent) and counts the lines for the progress bar; the second feeds
//! [`chatstack::batch_stream`] one line per free slot. Memory holds the in-flight requests,
//! the custom_ids (for the duplicate check and `--resume`) and a fixed-size latency
//! histogram; never the bodies of the whole file.

mod input;
mod output;
mod report;

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use chatstack::middleware::auth::ApiKey;
use chatstack::middleware::cost::{PriceTable, Pricing, Usd};
use chatstack::middleware::rate_limit::RateLimitConfig;
use chatstack::middleware::retry::{Backoff, RetryBudget, RetryLayer};
use chatstack::middleware::timeout::TimeoutLayer;
use chatstack::{ChatRequest, ChatResponse, ChatService, Client, Error, ErrorKind};
use chatstack_mock::{Fault, MockConfig, MockServer};
use futures_util::StreamExt as _;
use futures_util::future::{Either, Ready, ready};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use self::input::{InputError, LineReader};
use self::report::{ReportInput, Stats};

const EXIT_STATUS_HELP: &str = "\
Input: one JSON object per line, either an OpenAI Batch API line
  {\"custom_id\": \"a1\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {...}}
or a bare Chat Completions body, whose custom_id is then its line number (\"1\", \"2\", ...).
Blank lines are skipped. Every other line gets exactly one output line, in the Batch API
output format: {\"id\", \"custom_id\", \"response\": {\"status_code\", \"request_id\", \"body\"},
\"error\": {\"code\", \"message\"} or null}, in completion order, flushed as each finishes.
A failure always has an error; an HTTP error also has its response (status, envelope).

Output: -o FILE, else INPUT with .jsonl replaced by .results.jsonl. Without --resume an
existing output is overwritten; with --resume the custom_ids already in it are skipped
(failed ones too) and a partial last line left by a killed run is cut off.

Ctrl-C: stops reading new lines, lets the requests in flight finish and writes them; a
second Ctrl-C abandons those (not written: a --resume sends them again).

Exit status:
  0    every request succeeded (including those skipped by --resume)
  1    some requests failed; the output has a line for each (or the output could not be written)
  2    usage or input error (bad flags, no API key, unreadable input, duplicate custom_id): nothing sent
  130  interrupted by Ctrl-C; the output is consistent, finish with --resume";

/// Arguments of `chatstack run`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = EXIT_STATUS_HELP, after_help = "See --help for the formats, Ctrl-C and the exit status (0 ok, 1 some failed, 2 usage/input error, 130 interrupted).")]
pub struct RunArgs {
    /// The input JSONL file (Batch API lines or bare request bodies).
    #[arg(value_name = "INPUT.jsonl")]
    pub input: PathBuf,

    /// Where to write the results [default: INPUT with .results.jsonl].
    #[arg(short, long, value_name = "OUTPUT.jsonl")]
    pub output: Option<PathBuf>,

    /// Skip the custom_ids already in OUTPUT and append the rest.
    #[arg(long)]
    pub resume: bool,

    /// Send every request to this model instead of the one in its body.
    #[arg(long)]
    pub model: Option<String>,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,

    /// Requests per minute (client-side rate limit; waits rather than fails).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rpm: Option<u64>,

    /// Tokens per minute (estimated prompt + max output tokens, charged up front).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tpm: Option<u64>,

    /// Spending cap in dollars ("12.50" or "$12.50"): a request whose worst-case cost would
    /// pass it is not sent, and gets a budget_exceeded error line.
    #[arg(long, value_name = "USD")]
    pub max_budget_usd: Option<Usd>,

    /// Retries per request after the first attempt (429, 5xx, timeouts, connection errors).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_retries: u32,

    /// Limit of one attempt, in seconds [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,

    /// The provider's base URL [default: https://api.openai.com/v1].
    #[arg(long, env = "OPENAI_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,

    /// The environment variable holding the API key.
    #[arg(long, default_value = "OPENAI_API_KEY", value_name = "VAR")]
    pub api_key_env: String,

    /// A price file in LiteLLM's model_prices_and_context_window.json format, over the
    /// built-in prices.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Multiply every price (a relay billing 85 % of list price: 0.85).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub price_multiplier: f64,

    /// Also write the final report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,

    /// Start the built-in mock provider on an ephemeral port and send everything there (no
    /// key needed). Retries back off from 10 ms, and the circuit breaker is off: injected
    /// faults are independent draws, not an outage.
    #[arg(long)]
    pub mock: bool,

    /// With --mock: inject a fault into this fraction of requests (seeded, reproducible).
    #[arg(long, default_value_t = 0.0, requires = "mock", value_name = "RATE")]
    pub mock_fault_rate: f64,

    /// With --mock: the faults to inject, comma-separated, in the mock's names: unavailable
    /// (503), server_error (500), bad_gateway, overloaded (529), rate_limit[:SECS],
    /// rate_limit_ms[:MS], reset, truncated, malformed_json, mid_stream_error, latency:MS, ...
    /// --mock-fault-rate is shared equally between them.
    #[arg(
        long,
        default_value = "unavailable",
        requires = "mock",
        value_name = "LIST"
    )]
    pub mock_faults: String,

    /// With --mock: latency added to every response, in milliseconds.
    #[arg(long, default_value_t = 0, requires = "mock", value_name = "MS")]
    pub mock_latency_ms: u64,

    /// With --mock: the seed of the mock's fault draws.
    #[arg(long, default_value_t = 1, requires = "mock")]
    pub mock_seed: u64,
}

/// The faults of `--mock-faults`: at least one, each a name the mock knows.
fn mock_faults(args: &RunArgs) -> Result<Vec<Fault>, UsageError> {
    let faults =
        Fault::parse_list(&args.mock_faults).map_err(|error| format!("--mock-faults: {error}"))?;
    if faults.is_empty() {
        return Err("--mock-faults names no fault".into());
    }
    Ok(faults)
}

/// An error before anything is sent: exit status 2.
struct UsageError(String);

impl<T: Into<String>> From<T> for UsageError {
    fn from(message: T) -> Self {
        Self(message.into())
    }
}

/// Runs `chatstack run`.
pub async fn execute(args: RunArgs) -> ExitCode {
    match run(args).await {
        Ok(status) => ExitCode::from(status),
        Err(UsageError(message)) => {
            eprintln!("chatstack run: {message}");
            ExitCode::from(2)
        }
    }
}

/// The default output: INPUT with `.jsonl` replaced by `.results.jsonl`.
fn default_output(input: &Path) -> PathBuf {
    let name = input
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch".to_owned());
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    input.with_file_name(format!("{stem}.results.jsonl"))
}

/// Marks a line that could not be read: the service answers it without sending anything.
#[derive(Debug, Clone)]
struct InvalidLine;

/// The client's service, answering invalid lines with an error at once, so that they flow
/// through the batch (in order, counted) like every other line.
#[derive(Clone)]
struct RunService(ChatService);

impl tower::Service<ChatRequest> for RunService {
    type Response = ChatResponse;
    type Error = Error;
    type Future = Either<
        Ready<Result<ChatResponse, Error>>,
        <ChatService as tower::Service<ChatRequest>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        if request.meta.extensions.get::<InvalidLine>().is_some() {
            return Either::Left(ready(Err(Error::new(
                ErrorKind::InvalidRequest,
                "invalid input line",
            ))));
        }
        Either::Right(self.0.call(request))
    }
}

/// An input line taken by the batch and not yet written.
struct Pending {
    line: u64,
    custom_id: String,
    invalid: Option<InputError>,
}

type PendingMap = Arc<Mutex<HashMap<u64, Pending>>>;

struct Feed {
    reader: LineReader<tokio::fs::File>,
    model: Option<String>,
    skip: std::collections::HashSet<String>,
    pending: PendingMap,
    next_index: u64,
    io_error: Arc<Mutex<Option<std::io::Error>>>,
}

/// The lines still to run, as a lazy stream of requests: one line read per free slot.
fn feed(state: Feed) -> impl futures_util::Stream<Item = ChatRequest> {
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            let line = match state.reader.next_line().await {
                Ok(Some((number, bytes))) => input::classify(bytes, number, state.model.as_deref()),
                Ok(None) => return None,
                Err(error) => {
                    *state
                        .io_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(error);
                    return None;
                }
            };
            let Some(line) = line else { continue };
            if state.skip.contains(&line.custom_id) {
                continue;
            }
            let (request, invalid) = match line.request {
                Ok(request) => (request, None),
                Err(error) => {
                    let mut request = ChatRequest::default();
                    request.meta.extensions.insert(InvalidLine);
                    request.meta.id = Some(line.custom_id.clone());
                    (request, Some(error))
                }
            };
            let index = state.next_index;
            state.next_index += 1;
            state
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    index,
                    Pending {
                        line: line.number,
                        custom_id: line.custom_id,
                        invalid,
                    },
                );
            return Some((request, state));
        }
    })
}

fn build_client(
    args: &RunArgs,
    key: Option<ApiKey>,
    base_url: Option<String>,
) -> Result<Client, UsageError> {
    let mut table = PriceTable::builtin();
    if let Some(path) = &args.prices {
        table
            .load_litellm_file(path)
            .map_err(|error| format!("--prices {}: {error}", path.display()))?;
    }
    let pricing = Pricing::new(table).multiplier(args.price_multiplier);
    let mut retry = RetryLayer::new().max_attempts(args.max_retries.saturating_add(1));
    let mut builder = Client::builder().pricing(pricing);
    if args.mock {
        retry = retry
            .backoff(
                Backoff::new()
                    .base(Duration::from_millis(10))
                    .cap(Duration::from_millis(200)),
            )
            .budget(RetryBudget::new().retry_ratio(1.0));
        builder = builder.no_circuit_breaker();
    }
    builder = builder.retry(retry);
    if let Some(base_url) = base_url {
        builder = builder.base_url(base_url);
    }
    if let Some(key) = key {
        builder = builder.api_key(key);
    }
    if let Some(cap) = args.max_budget_usd {
        builder = builder.budget(cap);
    }
    if args.rpm.is_some() || args.tpm.is_some() {
        let mut config = RateLimitConfig::default();
        if let Some(rpm) = args.rpm {
            config = config.requests_per_minute(rpm);
        }
        if let Some(tpm) = args.tpm {
            config = config.tokens_per_minute(tpm);
        }
        builder = builder.rate_limit(config);
    }
    if let Some(seconds) = args.timeout {
        builder = builder.timeout(TimeoutLayer::new().total(Duration::from_secs_f64(seconds)));
    }
    builder
        .build()
        .map_err(|error| UsageError(format!("cannot build the client: {error}")))
}

fn validate(args: &RunArgs) -> Result<(), UsageError> {
    if let Some(seconds) = args.timeout {
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
            return Err("--timeout must be a number of seconds above 0 (at most a day)".into());
        }
    }
    if !(args.price_multiplier.is_finite() && args.price_multiplier >= 0.0) {
        return Err("--price-multiplier must be a number of 0 or more".into());
    }
    if !(0.0..=1.0).contains(&args.mock_fault_rate) {
        return Err("--mock-fault-rate must be between 0 and 1".into());
    }
    mock_faults(args)?;
    if args.mock_latency_ms > 600_000 {
        return Err("--mock-latency-ms must be at most 600000".into());
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<u8, UsageError> {
    validate(&args)?;
    let key = if args.mock {
        None
    } else {
        match ApiKey::from_env(&args.api_key_env) {
            Ok(key) => Some(key),
            Err(error) => {
                return Err(UsageError(format!(
                    "no API key: {}.\n  Set {} to your provider's key (and --base-url or OPENAI_BASE_URL for a provider other than OpenAI),\n  or add --mock to run against the built-in mock provider, no key needed:\n    chatstack run {} --mock",
                    error.message(),
                    args.api_key_env,
                    args.input.display()
                )));
            }
        }
    };
    let output_path = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.input));
    if output_path == args.input {
        return Err("the output file must not be the input file".into());
    }
    let input_meta = std::fs::metadata(&args.input)
        .map_err(|error| format!("cannot read {}: {error}", args.input.display()))?;
    if input_meta.is_dir() {
        return Err(format!("{} is a directory", args.input.display()).into());
    }

    // With --resume, what is done already; the partial last line of a killed run is cut off.
    let (mut out, previous) = if args.resume {
        let opened = output::open(&output_path, true)
            .map_err(|error| format!("cannot resume from {}: {error}", output_path.display()))?;
        (Some(opened.0), opened.1)
    } else {
        (None, output::Previous::default())
    };

    let scan = match input::scan(&args.input, &previous.done).await {
        Ok(Ok(scan)) => scan,
        Ok(Err(duplicate)) => {
            return Err(format!(
                "duplicate custom_id {:?} on lines {} and {} of {}: custom_ids must be unique; nothing was sent",
                duplicate.custom_id,
                duplicate.first_line,
                duplicate.second_line,
                args.input.display()
            )
            .into());
        }
        Err(error) => return Err(format!("cannot read {}: {error}", args.input.display()).into()),
    };
    let mut out = match out.take() {
        Some(out) => out,
        None => {
            output::open(&output_path, false)
                .map_err(|error| format!("cannot write {}: {error}", output_path.display()))?
                .0
        }
    };

    let base_url = args.base_url.clone().filter(|url| !url.trim().is_empty());
    let mock = if args.mock {
        let mut config = MockConfig::default().seed(args.mock_seed);
        if args.mock_fault_rate > 0.0 {
            let faults = mock_faults(&args).map_err(|UsageError(message)| message)?;
            let share = args.mock_fault_rate / faults.len() as f64;
            let mut deciding = 0.0;
            for fault in faults {
                // The mock draws every rule, in order, and the first fault that decides the
                // answer wins: the i-th such fault fires with share / (1 - i * share), so
                // that each answers `share` of the requests. A delay (`latency`,
                // `slow_first_chunk`) decides nothing and adds to whatever else is drawn.
                let probability = if fault.is_delay() {
                    share
                } else {
                    let probability = share / (1.0 - deciding * share);
                    deciding += 1.0;
                    probability
                };
                config = config.fault(fault, probability);
            }
        }
        if args.mock_latency_ms > 0 {
            config = config.latency(Duration::from_millis(args.mock_latency_ms));
        }
        let server = MockServer::start(config)
            .await
            .map_err(|error| format!("cannot start the mock provider: {error}"))?;
        Some(server)
    } else {
        None
    };
    let base_url = match &mock {
        Some(server) => Some(server.url().to_owned()),
        None => base_url,
    };
    let client = build_client(&args, key, base_url)?;

    if previous.truncated > 0 {
        eprintln!(
            "chatstack run: cut off a partial last line ({} bytes) of {}",
            previous.truncated,
            output_path.display()
        );
    }
    let to_run = scan.lines.saturating_sub(scan.skipped);
    if args.resume {
        eprintln!(
            "chatstack run: resuming: {} of {} lines already in {}, {} to run",
            scan.skipped,
            scan.lines,
            output_path.display(),
            to_run
        );
    }

    let file = tokio::fs::File::open(&args.input)
        .await
        .map_err(|error| format!("cannot read {}: {error}", args.input.display()))?;
    let pending: PendingMap = Arc::default();
    let io_error = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let requests = feed(Feed {
        reader: LineReader::new(file),
        model: args.model.clone(),
        skip: previous.done,
        pending: Arc::clone(&pending),
        next_index: 0,
        io_error: Arc::clone(&io_error),
    })
    .take_until(stop_rx);
    let concurrency = usize::try_from(args.concurrency).unwrap_or(usize::MAX);
    let batch = chatstack::batch_stream(RunService(client.service()), requests, concurrency);
    let mut batch = std::pin::pin!(batch);

    // Ctrl-C arrives on a channel, so that no press is lost between two polls.
    let (signal_tx, mut signal_rx) = tokio::sync::mpsc::unbounded_channel();
    let signals = tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if signal_tx.send(()).is_err() {
                break;
            }
        }
    });
    let mut stop_tx = Some(stop_tx);

    let bar = std::io::stderr()
        .is_terminal()
        .then(|| progress_bar(to_run));
    let started = Instant::now();
    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(2), Duration::from_secs(2));
    let mut stats = Stats::default();
    let mut interrupted = false;
    let mut abandoned = 0u64;
    let mut auth_reported = false;
    let mut write_error = None;

    loop {
        tokio::select! {
            item = batch.next() => {
                let Some(item) = item else { break };
                let entry = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&item.index);
                let entry = entry.unwrap_or_else(|| Pending {
                    line: 0,
                    custom_id: item.id.clone().unwrap_or_default(),
                    invalid: None,
                });
                let record = match (&entry.invalid, &item.result) {
                    (Some(error), _) => {
                        stats.failed += 1;
                        stats.invalid_input += 1;
                        *stats.errors_by_code.entry(error.code.to_owned()).or_default() += 1;
                        output::input_error_line(entry.line, &entry.custom_id, error)
                    }
                    (None, Ok(response)) => {
                        stats.ok += 1;
                        stats.sent += 1;
                        stats.attempts += u64::from(response.meta.attempts.max(1));
                        let ms = u64::try_from(response.meta.latency.as_millis()).unwrap_or(u64::MAX);
                        stats.latency_ms.record(ms);
                        output::success_line(entry.line, &entry.custom_id, response)
                    }
                    (None, Err(error)) => {
                        stats.failed += 1;
                        if error.attempts() > 0 {
                            stats.sent += 1;
                            stats.attempts += u64::from(error.attempts());
                        }
                        let code = output::error_code(error);
                        *stats.errors_by_code.entry(code.to_owned()).or_default() += 1;
                        match error.status().map(|status| status.as_u16()) {
                            Some(429) => stats.final_429 += 1,
                            Some(401) => stats.final_401 += 1,
                            _ => {}
                        }
                        if error.is_auth() && !auth_reported {
                            auth_reported = true;
                            let message = format!(
                                "chatstack run: authentication failed: {error}\n  check the key in {} (and --base-url)",
                                args.api_key_env
                            );
                            say(bar.as_ref(), &message);
                        }
                        output::error_line(entry.line, &entry.custom_id, error)
                    }
                };
                if let Err(error) = out.write(&record) {
                    write_error = Some(error);
                    break;
                }
                if let Some(bar) = &bar {
                    update_bar(bar, &batch.progress(), &stats);
                }
            }
            _ = ticker.tick(), if bar.is_none() => {
                eprintln!("{}", plain_progress(&batch.progress(), &stats, to_run, started.elapsed()));
            }
            Some(()) = signal_rx.recv() => {
                if let Some(stop) = stop_tx.take() {
                    interrupted = true;
                    let _ = stop.send(());
                    let in_flight = pending.lock().unwrap_or_else(PoisonError::into_inner).len();
                    say(bar.as_ref(), &format!(
                        "chatstack run: interrupted: reading no more lines; finishing {in_flight} in flight (Ctrl-C again to abandon them)"
                    ));
                } else {
                    abandoned = pending.lock().unwrap_or_else(PoisonError::into_inner).len() as u64;
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    signals.abort();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if abandoned > 0 {
        eprintln!(
            "chatstack run: abandoned {abandoned} requests in flight (not written; --resume sends them again)"
        );
    }
    let read_error = io_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(error) = &read_error {
        eprintln!(
            "chatstack run: reading {} failed midway: {error}",
            args.input.display()
        );
    }
    if let Some(error) = &write_error {
        eprintln!(
            "chatstack run: cannot write {}: {error}",
            output_path.display()
        );
    }

    let status = if interrupted {
        130
    } else if write_error.is_some() || read_error.is_some() || stats.failed + previous.failed > 0 {
        1
    } else {
        0
    };
    let report = report::build(ReportInput {
        input: args.input.display().to_string(),
        output: output_path.display().to_string(),
        interrupted,
        exit_status: status,
        lines: scan.lines,
        skipped: scan.skipped,
        skipped_failed: previous.failed,
        stats: &stats,
        ledger: client.ledger().snapshot(),
        mock_429: mock.as_ref().map(|server| server.counters().status(429)),
        elapsed,
    });
    eprint!("{}", report::render(&report));
    if stats.final_401 > 0 {
        eprintln!(
            "chatstack run: {} requests were refused with 401 Unauthorized: the key in {} is wrong or revoked",
            stats.final_401, args.api_key_env
        );
    }
    if interrupted {
        eprintln!("chatstack run: interrupted; rerun with --resume to finish");
    }
    if let Some(path) = &args.report_json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(path, json));
        if let Err(error) = written {
            eprintln!("chatstack run: cannot write {}: {error}", path.display());
        }
    }
    if let Some(server) = mock {
        server.shutdown().await;
    }
    Ok(status)
}

/// A message on stderr that does not tear the progress bar.
fn say(bar: Option<&ProgressBar>, message: &str) {
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("{message}")),
        None => eprintln!("{message}"),
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn update_bar(bar: &ProgressBar, progress: &chatstack::BatchProgress, stats: &Stats) {
    bar.set_position(stats.ok + stats.failed);
    bar.set_message(format!(
        "ok {} failed {} | {:.1} req/s | {} tok | {}",
        stats.ok,
        stats.failed,
        progress.requests_per_second(),
        progress.prompt_tokens + progress.completion_tokens,
        report::dollars(progress.cost),
    ));
}

fn plain_progress(
    progress: &chatstack::BatchProgress,
    stats: &Stats,
    total: u64,
    elapsed: Duration,
) -> String {
    let done = stats.ok + stats.failed;
    let rate = if elapsed.as_secs_f64() > 0.0 {
        done as f64 / elapsed.as_secs_f64()
    } else {
        0.0
    };
    let eta = if rate > 0.0 {
        format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
    } else {
        "?".to_owned()
    };
    format!(
        "[{:>6.1}s] {done}/{total} done ({} ok, {} failed), {rate:.1} req/s, {} tokens, {}, ETA {eta}",
        elapsed.as_secs_f64(),
        stats.ok,
        stats.failed,
        progress.prompt_tokens + progress.completion_tokens,
        report::dollars(progress.cost),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_output_replaces_jsonl() {
        assert_eq!(
            default_output(Path::new("examples/data/batch.jsonl")),
            PathBuf::from("examples/data/batch.results.jsonl")
        );
        assert_eq!(
            default_output(Path::new("prompts")),
            PathBuf::from("prompts.results.jsonl")
        );
    }
}

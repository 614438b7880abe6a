//! The measurement inside a client process, one piece of code for every client: warm-up,
//! the timed run with per-request latencies, CPU time and peak RSS from `getrusage`, and the
//! memory of streams held in flight ([`hold`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeValLike;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::clients::BenchClient;

/// Streams held, then released, to warm a client up before hold mode measures.
const HOLD_WARMUP: usize = 64;

/// How long hold mode waits for every stream's first content chunk.
const HOLD_TIMEOUT: Duration = Duration::from_secs(120);

/// What a client process measures.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Unary requests, each read whole.
    Unary,
    /// Streaming requests, each read to its last chunk.
    Stream,
    /// Many streams held open at once: the memory each costs.
    Hold,
}

impl Mode {
    /// The name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Unary => "unary",
            Mode::Stream => "stream",
            Mode::Hold => "hold",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The figures of one client process: the line it prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Figures {
    /// Of unary or stream mode.
    Load(LoadFigures),
    /// Of hold mode.
    Hold(HoldFigures),
}

/// The figures of a timed run of unary or streaming requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadFigures {
    /// Requests timed (the warm-up not included).
    pub requests: usize,
    /// Requests that failed: always 0, since a failure ends the run with its error instead.
    pub failures: usize,
    /// Wall time of the timed run, in seconds.
    pub elapsed_s: f64,
    /// Requests completed per second.
    pub req_per_s: f64,
    /// Median latency, from the call to the whole response (a stream: its last chunk), ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// CPU time of the whole process (user + system, all threads) per request, µs.
    pub cpu_us_per_req: f64,
    /// Peak resident set size of the process over its life, KiB.
    pub peak_rss_kib: u64,
}

/// The figures of a hold run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldFigures {
    /// Streams held open at once.
    pub inflight: usize,
    /// Resident set size before the streams were opened, KiB.
    pub rss_before_kib: u64,
    /// Resident set size with every stream open past its first content chunk, KiB.
    pub rss_held_kib: u64,
    /// The difference, per stream, KiB.
    pub kib_per_stream: f64,
}

/// Unary (`streaming` false) or stream mode: warms the client up with
/// max(4 × `concurrency`, `requests` / 20) untimed requests, then times `requests` requests
/// sent by `concurrency` tasks.
pub async fn load<C: BenchClient>(
    client: Arc<C>,
    streaming: bool,
    requests: usize,
    concurrency: usize,
) -> Result<Figures, String> {
    let concurrency = concurrency.max(1);
    let warmup = (4 * concurrency).max(requests / 20);
    run(&client, streaming, warmup, concurrency)
        .await
        .map_err(|error| format!("warm-up: {error}"))?;

    let before = Rusage::now()?;
    let started = Instant::now();
    let mut latencies = run(&client, streaming, requests, concurrency).await?;
    let elapsed = started.elapsed();
    let after = Rusage::now()?;

    latencies.sort_unstable();
    let count = latencies.len().max(1) as f64;
    let cpu = after.cpu.saturating_sub(before.cpu);
    Ok(Figures::Load(LoadFigures {
        requests: latencies.len(),
        failures: 0,
        elapsed_s: elapsed.as_secs_f64(),
        req_per_s: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50) as f64 / 1e3,
        p99_ms: percentile(&latencies, 0.99) as f64 / 1e3,
        cpu_us_per_req: cpu.as_secs_f64() * 1e6 / count,
        peak_rss_kib: after.peak_rss_kib,
    }))
}

/// Sends `requests` requests from `concurrency` tasks that pull from one shared counter;
/// returns each request's latency in µs. The first failure stops every task and is the
/// error.
async fn run<C: BenchClient>(
    client: &Arc<C>,
    streaming: bool,
    requests: usize,
    concurrency: usize,
) -> Result<Vec<u64>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let per_task = requests / concurrency + 1;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.min(requests) {
        let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            while !failed.load(Ordering::Relaxed) && next.fetch_add(1, Ordering::Relaxed) < requests
            {
                let started = Instant::now();
                let result = if streaming {
                    client.stream().await
                } else {
                    client.unary().await
                };
                if let Err(error) = result {
                    failed.store(true, Ordering::Relaxed);
                    return Err(error);
                }
                latencies.push(started.elapsed().as_micros() as u64);
            }
            Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut failures = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(some)) => latencies.extend(some),
            Ok(Err(error)) => {
                failures += 1;
                first_error.get_or_insert(error);
            }
            Err(error) => {
                failures += 1;
                first_error.get_or_insert(format!("a task panicked: {error}"));
            }
        }
    }
    match first_error {
        None => Ok(latencies),
        Some(error) => Err(format!(
            "{failures} request(s) failed (each stops its task); the first: {error}"
        )),
    }
}

/// The value at quantile `q` of `sorted` (nearest rank); 0 for no values.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// Hold mode: warms the client up by holding and releasing [`HOLD_WARMUP`] streams, reads
/// the RSS, then opens `inflight` streams at once and, when every one has delivered its
/// first content chunk, reads the RSS again. The mock of hold mode stalls every stream
/// after that chunk.
pub async fn hold<C: BenchClient>(client: Arc<C>, inflight: usize) -> Result<Figures, String> {
    hold_streams(&client, HOLD_WARMUP)
        .await
        .map_err(|error| format!("warm-up: {error}"))?;
    let rss_before_kib = resident_kib()?;
    let rss_held_kib = hold_streams(&client, inflight).await?;
    Ok(Figures::Hold(HoldFigures {
        inflight,
        rss_before_kib,
        rss_held_kib,
        kib_per_stream: rss_held_kib.saturating_sub(rss_before_kib) as f64 / inflight.max(1) as f64,
    }))
}

/// Opens `count` streams at once, each in its own task; once every one has its first
/// content chunk, reads the RSS, releases them all and waits until they are dropped.
/// Returns the RSS read while they were all open, in KiB.
async fn hold_streams<C: BenchClient>(client: &Arc<C>, count: usize) -> Result<u64, String> {
    let (ready, mut arrivals) = mpsc::unbounded_channel::<Result<(), String>>();
    let (release, released) = watch::channel(());
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let (client, ready, mut released) = (client.clone(), ready.clone(), released.clone());
        tasks.spawn(async move {
            match client.hold().await {
                Ok(stream) => {
                    let _ = ready.send(Ok(()));
                    // Ends when the sender is dropped: the release.
                    let _ = released.changed().await;
                    drop(stream);
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            }
        });
    }
    drop(ready);

    let mut arrived = 0;
    let waited = tokio::time::timeout(HOLD_TIMEOUT, async {
        while arrived < count {
            match arrivals.recv().await {
                Some(Ok(())) => arrived += 1,
                Some(Err(error)) => return Err(format!("a stream failed: {error}")),
                None => return Err("the stream tasks ended early".to_owned()),
            }
        }
        Ok(())
    })
    .await;
    let rss = match waited {
        Ok(Ok(())) => resident_kib(),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(format!(
            "only {arrived} of {count} streams had their first chunk within {HOLD_TIMEOUT:?}"
        )),
    };
    drop(release);
    if rss.is_err() {
        tasks.shutdown().await;
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| format!("a stream task panicked: {error}"))?;
    }
    rss
}

/// The process's resident set size now, in KiB: `VmRSS` from `/proc/self/status`, or where
/// there is no such file, the peak from `getrusage`.
fn resident_kib() -> Result<u64, String> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Rusage::now().map(|usage| usage.peak_rss_kib);
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS line in /proc/self/status".to_owned())
}

/// What `getrusage(RUSAGE_SELF)` says of the process.
struct Rusage {
    /// User plus system CPU time, all threads.
    cpu: Duration,
    /// Peak resident set size, KiB.
    peak_rss_kib: u64,
}

impl Rusage {
    /// Reads the process's usage now.
    fn now() -> Result<Self, String> {
        let usage = getrusage(UsageWho::RUSAGE_SELF)
            .map_err(|error| format!("getrusage failed: {error}"))?;
        let micros = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
        // `ru_maxrss` is in KiB on Linux and the BSDs, in bytes on Apple's systems.
        let max_rss = u64::try_from(usage.max_rss()).unwrap_or(0);
        let peak_rss_kib = if cfg!(target_vendor = "apple") {
            max_rss / 1024
        } else {
            max_rss
        };
        Ok(Self {
            cpu: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
            peak_rss_kib,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}

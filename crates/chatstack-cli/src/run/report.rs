//! The run's statistics and the final report (text on stderr, JSON with --report-json).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chatstack::middleware::cost::{LedgerSnapshot, Usd};
use serde::Serialize;

/// Latencies in a log-linear histogram: exact below 128 ms, then 64 buckets per power of
/// two (within ~1.6 %). Fixed size (a few KiB) whatever the number of requests.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB: u64 = 64;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            // Values below 2·SUB, then SUB buckets for each power of two up to 2^64.
            counts: vec![0; (2 * SUB + 64 * SUB) as usize],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(value: u64) -> usize {
        if value < 2 * SUB {
            return value as usize;
        }
        let exponent = 63 - u64::from(value.leading_zeros()); // >= 7
        let shift = exponent - 6; // keep the top 7 bits: 64..128
        let mantissa = value >> shift; // in 64..128
        (2 * SUB + (exponent - 7) * SUB + (mantissa - SUB)) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB {
            return index;
        }
        let exponent = (index - 2 * SUB) / SUB + 7;
        let mantissa = (index - 2 * SUB) % SUB + SUB;
        mantissa << (exponent - 6)
    }

    pub fn record(&mut self, value: u64) {
        let index = Self::index(value).min(self.counts.len() - 1);
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// The value at quantile `q` (0..=1): the lower bound of its bucket, at most the max.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::lower_bound(index).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Counts kept as results come in.
#[derive(Debug, Default)]
pub struct Stats {
    pub ok: u64,
    pub failed: u64,
    pub invalid_input: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub attempts: u64,
    pub sent: u64,
    /// Requests whose final error had status 429.
    pub final_429: u64,
    /// Requests whose final error had status 401.
    pub final_401: u64,
    pub latency_ms: Histogram,
}

/// The report, as written to --report-json.
#[derive(Debug, Serialize)]
pub struct Report {
    pub input: String,
    pub output: String,
    pub interrupted: bool,
    pub exit_status: u8,
    pub requests: Requests,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub attempts: u64,
    pub retries: u64,
    pub http_429: Http429,
    pub latency_ms: Latency,
    pub tokens: Tokens,
    pub cost_usd: String,
    pub cost_by_model: BTreeMap<String, ModelCost>,
    pub elapsed_seconds: f64,
    pub requests_per_second: f64,
    pub output_tokens_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct Requests {
    /// Non-blank input lines.
    pub lines: u64,
    /// Skipped with --resume: already in the output.
    pub skipped: u64,
    /// Of the skipped, lines that had failed.
    pub skipped_failed: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Of the failed: input lines that could not be sent.
    pub invalid_input: u64,
    /// Not run (interrupted): left for a --resume.
    pub not_run: u64,
}

#[derive(Debug, Serialize)]
pub struct Http429 {
    /// Requests whose final error was a 429 (after retries).
    pub final_errors: u64,
    /// 429s the built-in mock sent (every attempt), with --mock; null otherwise.
    pub mock_observed: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Tokens {
    pub input: u64,
    pub cached_input: u64,
    pub output: u64,
    pub reasoning: u64,
}

#[derive(Debug, Serialize)]
pub struct ModelCost {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: String,
}

pub struct ReportInput<'a> {
    pub input: String,
    pub output: String,
    pub interrupted: bool,
    pub exit_status: u8,
    pub lines: u64,
    pub skipped: u64,
    pub skipped_failed: u64,
    pub stats: &'a Stats,
    pub ledger: LedgerSnapshot,
    pub mock_429: Option<u64>,
    pub elapsed: Duration,
}

pub fn build(input: ReportInput<'_>) -> Report {
    let stats = input.stats;
    let seconds = input.elapsed.as_secs_f64();
    let per_second = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let done = stats.ok + stats.failed;
    let tokens = input.ledger.total.tokens;
    let histogram = &stats.latency_ms;
    Report {
        input: input.input,
        output: input.output,
        interrupted: input.interrupted,
        exit_status: input.exit_status,
        requests: Requests {
            lines: input.lines,
            skipped: input.skipped,
            skipped_failed: input.skipped_failed,
            succeeded: stats.ok,
            failed: stats.failed,
            invalid_input: stats.invalid_input,
            not_run: input.lines.saturating_sub(input.skipped + done),
        },
        errors_by_kind: stats.errors_by_code.clone(),
        attempts: stats.attempts,
        retries: stats.attempts.saturating_sub(stats.sent),
        http_429: Http429 {
            final_errors: stats.final_429,
            mock_observed: input.mock_429,
        },
        latency_ms: Latency {
            count: histogram.total,
            p50: histogram.quantile(0.50),
            p95: histogram.quantile(0.95),
            p99: histogram.quantile(0.99),
            max: (histogram.total > 0).then_some(histogram.max),
        },
        tokens: Tokens {
            input: tokens.input + tokens.cached_input + tokens.cache_write,
            cached_input: tokens.cached_input,
            output: tokens.output + tokens.reasoning,
            reasoning: tokens.reasoning,
        },
        cost_usd: dollars(input.ledger.total.cost),
        cost_by_model: input
            .ledger
            .by_model
            .iter()
            .map(|(model, entry)| {
                (
                    model.clone(),
                    ModelCost {
                        requests: entry.requests,
                        input_tokens: entry.tokens.prompt(),
                        output_tokens: entry.tokens.completion(),
                        cost_usd: dollars(entry.cost),
                    },
                )
            })
            .collect(),
        elapsed_seconds: (seconds * 1000.0).round() / 1000.0,
        requests_per_second: (per_second(done) * 10.0).round() / 10.0,
        output_tokens_per_second: (per_second(tokens.completion()) * 10.0).round() / 10.0,
    }
}

/// Dollars with six decimals: `$0.012345`.
pub fn dollars(usd: Usd) -> String {
    format!("${:.6}", usd.as_dollars_f64())
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"))
}

/// The report as text, for stderr.
pub fn render(report: &Report) -> String {
    let r = &report.requests;
    let mut text = String::new();
    let _ = writeln!(text, "chatstack run: {} -> {}", report.input, report.output);
    let mut requests = format!(
        "  requests   {} lines: {} succeeded, {} failed",
        r.lines, r.succeeded, r.failed
    );
    if r.invalid_input > 0 {
        let _ = write!(requests, " ({} invalid input)", r.invalid_input);
    }
    if r.skipped > 0 {
        let _ = write!(
            requests,
            ", {} skipped (already in output, {} of them failed)",
            r.skipped, r.skipped_failed
        );
    }
    if r.not_run > 0 {
        let _ = write!(requests, ", {} not run", r.not_run);
    }
    let _ = writeln!(text, "{requests}");
    if !report.errors_by_kind.is_empty() {
        let kinds: Vec<String> = report
            .errors_by_kind
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect();
        let _ = writeln!(text, "  errors     {}", kinds.join(", "));
    }
    let mock = report
        .http_429
        .mock_observed
        .map(|n| format!(" ({n} sent by the mock)"))
        .unwrap_or_default();
    let _ = writeln!(
        text,
        "  attempts   {} ({} retries); 429s: {} final{mock}",
        report.attempts, report.retries, report.http_429.final_errors
    );
    let l = &report.latency_ms;
    let _ = writeln!(
        text,
        "  latency    p50 {}, p95 {}, p99 {}, max {} ({} successes)",
        ms(l.p50),
        ms(l.p95),
        ms(l.p99),
        ms(l.max),
        l.count
    );
    let t = &report.tokens;
    let _ = writeln!(
        text,
        "  tokens     {} in ({} cached), {} out ({} reasoning)",
        t.input, t.cached_input, t.output, t.reasoning
    );
    let _ = writeln!(text, "  cost       {}", report.cost_usd);
    for (model, cost) in &report.cost_by_model {
        let _ = writeln!(
            text,
            "    {model:<22} {:>6} req  {:>9} in  {:>9} out  {}",
            cost.requests, cost.input_tokens, cost.output_tokens, cost.cost_usd
        );
    }
    let _ = writeln!(
        text,
        "  throughput {:.1} req/s, {:.0} output tokens/s over {:.2} s",
        report.requests_per_second, report.output_tokens_per_second, report.elapsed_seconds
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut histogram = Histogram::default();
        for value in 1..=10_000u64 {
            histogram.record(value);
        }
        for (q, exact) in [(0.5, 5000.0), (0.95, 9500.0), (0.99, 9900.0)] {
            let got = histogram.quantile(q).unwrap() as f64;
            assert!((got - exact).abs() / exact < 0.02, "q{q}: {got} vs {exact}");
        }
        let mut small = Histogram::default();
        small.record(3);
        small.record(5);
        assert_eq!(small.quantile(0.5), Some(3));
        assert_eq!(small.quantile(0.99), Some(5));
        assert_eq!(Histogram::default().quantile(0.5), None);
        let mut huge = Histogram::default();
        huge.record(u64::MAX);
        assert_eq!(
            huge.quantile(0.5),
            Some(Histogram::lower_bound(Histogram::index(u64::MAX)))
        );
    }
}

//! The report: a header naming the machine and the settings, one table per mode with the
//! median of every figure over the rounds and its ratio to the floor, the targets chatstack
//! holds itself to, and the JSON form of it all.

use std::fmt::Write;

use serde::Serialize;

use crate::clients::Kind;
use crate::driver::{Figures, HoldFigures, LoadFigures, Mode};
use crate::orchestrator::Settings;

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// The kernel, such as `Linux 6.8.0-45-generic`.
    pub kernel: String,
    /// The CPU model, where `/proc/cpuinfo` names it.
    pub cpu_model: Option<String>,
}

impl Machine {
    /// Reads the CPU count, the kernel (from `/proc/version`) and the CPU model (from
    /// `/proc/cpuinfo`), as far as the system tells.
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let kernel = std::fs::read_to_string("/proc/version")
            .ok()
            .and_then(|version| {
                // "Linux version 6.8.0-45-generic (builder@host) ..."
                let mut words = version.split_whitespace();
                let os = words.next()?;
                let release = words.nth(1)?;
                Some(format!("{os} {release}"))
            })
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .filter(|line| line.starts_with("model name"))
                    .find_map(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            });
        Self {
            cpus,
            kernel,
            cpu_model,
        }
    }
}

/// The figures of one client process.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    /// The round, from 1.
    pub round: usize,
    /// The client.
    pub client: Kind,
    /// The mode.
    pub mode: Mode,
    /// What the process measured.
    pub figures: Figures,
}

/// A whole run: what it ran on and with, every round's figures, the medians, and the
/// targets. Serialized whole for `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The machine.
    machine: Machine,
    /// The settings.
    settings: Settings,
    /// Every client process's figures.
    rounds: Vec<RoundResult>,
    /// Medians over the rounds, per mode and client.
    summary: Summary,
    /// The targets, for the clients and modes that ran.
    targets: Vec<Target>,
}

/// Medians over the rounds, per mode, one row per client in the order of the settings.
#[derive(Debug, Default, Serialize)]
struct Summary {
    /// Unary mode.
    unary: Vec<LoadRow>,
    /// Stream mode.
    stream: Vec<LoadRow>,
    /// Hold mode.
    hold: Vec<HoldRow>,
}

/// One client's medians in unary or stream mode, with ratios to the floor's.
#[derive(Debug, Serialize)]
struct LoadRow {
    /// The client.
    client: Kind,
    /// Requests per second.
    req_per_s: f64,
    /// Over the floor's.
    req_per_s_x_floor: Option<f64>,
    /// Median latency, ms.
    p50_ms: f64,
    /// 99th percentile latency, ms.
    p99_ms: f64,
    /// CPU time per request, µs.
    cpu_us_per_req: f64,
    /// Over the floor's.
    cpu_x_floor: Option<f64>,
    /// Peak RSS, MiB.
    peak_rss_mib: f64,
    /// Over the floor's.
    peak_rss_x_floor: Option<f64>,
}

/// One client's medians in hold mode, with the ratio to the floor's.
#[derive(Debug, Serialize)]
struct HoldRow {
    /// The client.
    client: Kind,
    /// Memory per stream in flight, KiB.
    kib_per_stream: f64,
    /// Over the floor's.
    kib_per_stream_x_floor: Option<f64>,
    /// RSS before the streams were opened, MiB.
    rss_before_mib: f64,
    /// RSS with every stream open, MiB.
    rss_held_mib: f64,
}

/// A target and whether the run met it.
#[derive(Debug, Serialize)]
struct Target {
    /// What is promised.
    target: String,
    /// Whether this run kept the promise.
    met: bool,
    /// The numbers.
    detail: String,
}

impl Report {
    /// The header printed before the run: the machine and the settings.
    pub fn header(machine: &Machine, settings: &Settings) -> String {
        let cpu = machine
            .cpu_model
            .as_deref()
            .map(|model| format!(" ({model})"))
            .unwrap_or_default();
        let names = |names: Vec<&str>| names.join(", ");
        format!(
            "chatstack-bench on {} CPUs{cpu}, {}\n\
             unary N={}, stream M={}, C={}, {}-token replies ({} chunks per stream), \
             hold K={}, {} round{}\n\
             clients {}; modes {}{}\n\n",
            machine.cpus,
            machine.kernel,
            settings.requests,
            settings.stream_requests,
            settings.concurrency,
            settings.reply_tokens,
            settings.stream_chunks,
            settings.inflight,
            settings.rounds,
            plural(settings.rounds),
            names(settings.clients.iter().map(|kind| kind.name()).collect()),
            names(settings.modes.iter().map(|mode| mode.name()).collect()),
            if settings.stack_without.is_empty() {
                String::new()
            } else {
                format!(
                    "\nstack WITHOUT {}: the targets do not judge the default stack",
                    settings.stack_without.join(", ")
                )
            },
        )
    }

    /// Summarises the rounds and checks the targets.
    pub fn new(machine: Machine, settings: Settings, rounds: Vec<RoundResult>) -> Self {
        let mut summary = Summary::default();
        for &mode in &settings.modes {
            match mode {
                Mode::Unary | Mode::Stream => {
                    let rows = load_rows(&settings.clients, &rounds, mode);
                    if mode == Mode::Unary {
                        summary.unary = rows;
                    } else {
                        summary.stream = rows;
                    }
                }
                Mode::Hold => summary.hold = hold_rows(&settings.clients, &rounds),
            }
        }
        let targets = targets(&settings, &summary);
        Self {
            machine,
            settings,
            rounds,
            summary,
            targets,
        }
    }

    /// The tables and the targets.
    pub fn render_results(&self) -> String {
        let settings = &self.settings;
        let rounds = format!(
            "(median of {} round{})",
            settings.rounds,
            plural(settings.rounds)
        );
        let mut out = String::new();
        for &mode in &settings.modes {
            match mode {
                Mode::Unary => {
                    let title = format!(
                        "unary  N={} C={}  {}-token replies  {rounds}",
                        settings.requests, settings.concurrency, settings.reply_tokens
                    );
                    render_load(&mut out, &title, &self.summary.unary);
                }
                Mode::Stream => {
                    let title = format!(
                        "stream  M={} C={}  {} chunks per stream, latency to the last  {rounds}",
                        settings.stream_requests, settings.concurrency, settings.stream_chunks
                    );
                    render_load(&mut out, &title, &self.summary.stream);
                }
                Mode::Hold => {
                    let title = format!(
                        "hold  K={} streams in flight, each past its first content chunk  {rounds}",
                        settings.inflight
                    );
                    render_hold(&mut out, &title, &self.summary.hold);
                }
            }
        }
        if !self.targets.is_empty() {
            out.push_str("targets\n");
            for target in &self.targets {
                let verdict = if target.met { "MET" } else { "MISSED" };
                let _ = writeln!(out, "  {verdict:<7} {}: {}", target.target, target.detail);
            }
        }
        out
    }
}

/// "s" unless `count` is 1.
fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => 0.0,
        len if len % 2 == 1 => values[middle],
        _ => (values[middle - 1] + values[middle]) / 2.0,
    }
}

/// `value` over `floor`, when there is a floor to divide by.
fn ratio(value: f64, floor: Option<f64>) -> Option<f64> {
    floor
        .filter(|floor| *floor > 0.0)
        .map(|floor| value / floor)
}

/// The medians of unary or stream mode, one row per client that ran.
fn load_rows(clients: &[Kind], rounds: &[RoundResult], mode: Mode) -> Vec<LoadRow> {
    let mut rows: Vec<LoadRow> = clients
        .iter()
        .filter_map(|&client| {
            let runs: Vec<&LoadFigures> = rounds
                .iter()
                .filter(|result| result.client == client && result.mode == mode)
                .filter_map(|result| match &result.figures {
                    Figures::Load(load) => Some(load),
                    Figures::Hold(_) => None,
                })
                .collect();
            if runs.is_empty() {
                return None;
            }
            let of =
                |figure: fn(&LoadFigures) -> f64| median(runs.iter().map(|r| figure(r)).collect());
            Some(LoadRow {
                client,
                req_per_s: of(|r| r.req_per_s),
                req_per_s_x_floor: None,
                p50_ms: of(|r| r.p50_ms),
                p99_ms: of(|r| r.p99_ms),
                cpu_us_per_req: of(|r| r.cpu_us_per_req),
                cpu_x_floor: None,
                peak_rss_mib: of(|r| r.peak_rss_kib as f64 / 1024.0),
                peak_rss_x_floor: None,
            })
        })
        .collect();
    let floor = rows.iter().find(|row| row.client == Kind::Floor);
    let floor = floor.map(|row| (row.req_per_s, row.cpu_us_per_req, row.peak_rss_mib));
    for row in &mut rows {
        row.req_per_s_x_floor = ratio(row.req_per_s, floor.map(|f| f.0));
        row.cpu_x_floor = ratio(row.cpu_us_per_req, floor.map(|f| f.1));
        row.peak_rss_x_floor = ratio(row.peak_rss_mib, floor.map(|f| f.2));
    }
    rows
}

/// The medians of hold mode, one row per client that ran.
fn hold_rows(clients: &[Kind], rounds: &[RoundResult]) -> Vec<HoldRow> {
    let mut rows: Vec<HoldRow> = clients
        .iter()
        .filter_map(|&client| {
            let runs: Vec<&HoldFigures> = rounds
                .iter()
                .filter(|result| result.client == client)
                .filter_map(|result| match &result.figures {
                    Figures::Hold(hold) => Some(hold),
                    Figures::Load(_) => None,
                })
                .collect();
            if runs.is_empty() {
                return None;
            }
            let of =
                |figure: fn(&HoldFigures) -> f64| median(runs.iter().map(|r| figure(r)).collect());
            Some(HoldRow {
                client,
                kib_per_stream: of(|r| r.kib_per_stream),
                kib_per_stream_x_floor: None,
                rss_before_mib: of(|r| r.rss_before_kib as f64 / 1024.0),
                rss_held_mib: of(|r| r.rss_held_kib as f64 / 1024.0),
            })
        })
        .collect();
    let floor = rows
        .iter()
        .find(|row| row.client == Kind::Floor)
        .map(|row| row.kib_per_stream);
    for row in &mut rows {
        row.kib_per_stream_x_floor = ratio(row.kib_per_stream, floor);
    }
    rows
}

/// A ratio as the tables show it: two decimals, or a dash without a floor.
fn show_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".to_owned(), |ratio| format!("{ratio:.2}"))
}

/// Writes the table of unary or stream mode.
fn render_load(out: &mut String, title: &str, rows: &[LoadRow]) {
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<12} {:>9} {:>7} {:>8} {:>8} {:>11} {:>7} {:>13} {:>7}",
        "client",
        "req/s",
        "×floor",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "×floor",
        "peak RSS MiB",
        "×floor"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<12} {:>9.0} {:>7} {:>8.2} {:>8.2} {:>11.1} {:>7} {:>13.1} {:>7}",
            row.client.name(),
            row.req_per_s,
            show_ratio(row.req_per_s_x_floor),
            row.p50_ms,
            row.p99_ms,
            row.cpu_us_per_req,
            show_ratio(row.cpu_x_floor),
            row.peak_rss_mib,
            show_ratio(row.peak_rss_x_floor),
        );
    }
    out.push('\n');
}

/// Writes the table of hold mode.
fn render_hold(out: &mut String, title: &str, rows: &[HoldRow]) {
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<12} {:>14} {:>7} {:>15} {:>13}",
        "client", "KiB per stream", "×floor", "RSS before MiB", "RSS held MiB"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<12} {:>14.1} {:>7} {:>15.1} {:>13.1}",
            row.client.name(),
            row.kib_per_stream,
            show_ratio(row.kib_per_stream_x_floor),
            row.rss_before_mib,
            row.rss_held_mib,
        );
    }
    out.push('\n');
}

/// The most memory the stack may take per stream in flight, KiB.
const STACK_KIB_PER_STREAM: f64 = 32.0;

/// The row of `client` in `rows`.
fn find(rows: &[LoadRow], client: Kind) -> Option<&LoadRow> {
    rows.iter().find(|row| row.client == client)
}

/// The targets whose clients and modes ran, checked against the medians.
fn targets(settings: &Settings, summary: &Summary) -> Vec<Target> {
    let mut targets = Vec::new();
    let concurrency = settings.concurrency;
    if let (Some(stack), Some(floor)) = (
        find(&summary.unary, Kind::Stack),
        find(&summary.unary, Kind::Floor),
    ) {
        let speed = stack.req_per_s / floor.req_per_s;
        targets.push(Target {
            target: format!("stack ≥ 0.97× floor req/s, unary, C={concurrency}"),
            met: speed >= 0.97,
            detail: format!(
                "{speed:.3}× ({:.0} vs {:.0} req/s)",
                stack.req_per_s, floor.req_per_s
            ),
        });
        let cpu = stack.cpu_us_per_req / floor.cpu_us_per_req;
        targets.push(Target {
            target: format!("stack ≤ 1.10× floor CPU/request, unary, C={concurrency}"),
            met: cpu <= 1.10,
            detail: format!(
                "{cpu:.3}× ({:.1} vs {:.1} µs/req)",
                stack.cpu_us_per_req, floor.cpu_us_per_req
            ),
        });
    }
    for (mode, rows) in [("unary", &summary.unary), ("stream", &summary.stream)] {
        let (Some(stack), Some(other)) = (find(rows, Kind::Stack), find(rows, Kind::AsyncOpenai))
        else {
            continue;
        };
        targets.push(Target {
            target: format!("stack ahead of async-openai on req/s, {mode}"),
            met: stack.req_per_s > other.req_per_s,
            detail: format!(
                "{:.0} vs {:.0} req/s ({:.2}×)",
                stack.req_per_s,
                other.req_per_s,
                stack.req_per_s / other.req_per_s
            ),
        });
        targets.push(Target {
            target: format!("stack ahead of async-openai on CPU/request, {mode}"),
            met: stack.cpu_us_per_req < other.cpu_us_per_req,
            detail: format!(
                "{:.1} vs {:.1} µs/req ({:.2}×)",
                stack.cpu_us_per_req,
                other.cpu_us_per_req,
                stack.cpu_us_per_req / other.cpu_us_per_req
            ),
        });
    }
    if let Some(stack) = summary.hold.iter().find(|row| row.client == Kind::Stack) {
        targets.push(Target {
            target: format!(
                "stack ≤ {STACK_KIB_PER_STREAM} KiB per in-flight stream at {} in flight",
                settings.inflight
            ),
            met: stack.kib_per_stream <= STACK_KIB_PER_STREAM,
            detail: format!("{:.1} KiB", stack.kib_per_stream),
        });
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}

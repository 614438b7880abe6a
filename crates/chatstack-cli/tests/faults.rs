//! `chatstack run` through every fault the mock can inject: the real binary over a 20-line
//! batch, each fault drawn by 30 % of the requests.
//!
//! The 503 runs through `chatstack run --mock` (its default `--mock-faults`), and every fault
//! (503 again included) runs against a mock provider started here, with the fault as a
//! seeded rule, through `--base-url` and a key in the environment, as a run against a real
//! provider would. (`--mock-faults` itself is tested in `run.rs`.)
//!
//! Every run must end within [`DEADLINE`] (it is killed and the test fails otherwise), write
//! exactly one output line per input line with each custom_id once, exit with the documented
//! status (0: all succeeded, 1: some failed), never print a panic, and agree with the mock:
//! a retryable fault costs exactly one retry and every line recovers; a permanent fault fails
//! exactly the lines that drew it, each with a Batch API error line carrying its typed error
//! code (and the HTTP response, for an HTTP error). A 401 or `insufficient_quota` also takes
//! the run's only key out of rotation (the auth layer's rule): the lines not sent by then
//! fail at once with `auth_error`, unsent.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use chatstack_mock::{Fault, MockConfig, MockServer};
use serde_json::{Value, json};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_chatstack");
/// Lines per batch.
const LINES: usize = 20;
/// The share of requests that draw the fault.
const RATE: f64 = 0.3;
/// The seed of the mock's draws. With it, every permanent fault hits a few lines (a line
/// that is not retried draws once); any seed that hits at least one will do.
const SEED: u64 = 7;
/// Retries per line: at 30 %, a line fails 13 attempts in a row once in six million.
const MAX_RETRIES: &str = "12";
/// The limit of one attempt, in seconds, for the faults about time (the others keep the
/// default of 600 s): short, so that their runs take seconds, and far above what a healthy
/// answer takes on a loaded machine.
const TIMEOUT: &str = "3";
/// How long the mock holds a stalled or silent connection: far past the limit.
const HOLD: Duration = Duration::from_secs(30);
/// The most a run may take.
const DEADLINE: Duration = Duration::from_secs(120);
const KEY: &str = "sk-faults-test-0123456789";
const KEY_VAR: &str = "CHATSTACK_FAULTS_TEST_KEY";

/// What the faulted lines of a run come to.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Retried until answered: every line succeeds, each fault cost one retry, exit 0.
    Recovers,
    /// A redirect within the origin, followed: every line succeeds at its first attempt, the
    /// mock sees two requests for each redirected one, exit 0.
    Followed,
    /// Permanent: each line that drew the fault fails with this error code (and, for an
    /// HTTP error, this status in its `response`), the others succeed (but for the lines a
    /// revoked key left unsent), exit 1.
    Fails {
        code: &'static str,
        status: Option<u16>,
    },
}

const fn fails(code: &'static str, status: u16) -> Expect {
    Expect::Fails {
        code,
        status: Some(status),
    }
}

/// Every fault, by family: the spec as a fault rule takes it, and what it comes to.
const RATE_LIMITS: &[(&str, Expect)] = &[
    ("rate_limit:1", Expect::Recovers),
    ("rate_limit_date:1", Expect::Recovers),
    ("rate_limit_ms:100", Expect::Recovers),
    ("insufficient_quota", fails("insufficient_quota", 429)),
];
const SERVER_ERRORS: &[(&str, Expect)] = &[
    ("server_error", Expect::Recovers),
    ("bad_gateway", Expect::Recovers),
    ("unavailable", Expect::Recovers),
    ("overloaded", Expect::Recovers),
    ("error_in_200", Expect::Recovers),
    // Unary: a 200 whose body is a `server_error` envelope.
    ("mid_stream_error", Expect::Recovers),
];
const CLIENT_ERRORS: &[(&str, Expect)] = &[
    ("unauthorized", fails("auth_error", 401)),
    (
        "context_length_exceeded",
        fails("context_length_exceeded", 400),
    ),
    (
        "redirect:http://localhost:9/v1/chat/completions",
        fails("http_error", 307),
    ),
    ("redirect:/v1/chat/completions?moved=1", Expect::Followed),
];
const DELAYS_AND_BROKEN_CONNECTIONS: &[(&str, Expect)] = &[
    ("latency:30000", Expect::Recovers),
    ("slow_first_chunk:30000", Expect::Recovers),
    ("no_answer", Expect::Recovers),
    ("stall", Expect::Recovers),
    ("drip", Expect::Recovers),
    ("reset", Expect::Recovers),
    ("truncated", Expect::Recovers),
];
const BAD_BODIES: &[(&str, Expect)] = &[
    ("malformed_json", fails("decode_error", 200)),
    ("wrong_content_type", fails("decode_error", 200)),
    ("invalid_utf8", fails("decode_error", 200)),
    ("corrupt_gzip", fails("decode_error", 200)),
    // Its Content-Length (32 MiB) is past the 16 MiB cap: refused before a byte is read.
    (
        "oversized",
        Expect::Fails {
            code: "body_too_large",
            status: None,
        },
    ),
];

const FAMILIES: &[&[(&str, Expect)]] = &[
    RATE_LIMITS,
    SERVER_ERRORS,
    CLIENT_ERRORS,
    DELAYS_AND_BROKEN_CONNECTIONS,
    BAD_BODIES,
];

fn fault_of(spec: &str) -> Fault {
    spec.parse()
        .unwrap_or_else(|error| panic!("`{spec}` does not parse: {error}"))
}

/// A fresh directory per run, removed when the run ends, pass or fail.
fn temp_dir(name: &str) -> tempfile::TempDir {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    tempfile::Builder::new()
        .prefix(&format!("chatstack-faults-{name}-"))
        .tempdir()
        .expect("a temp dir")
}

/// A batch of [`LINES`] Batch API lines, `req-0` to `req-19`. Each line names its own model,
/// so that each has its own circuit: the breaker opens on a failure rate over at least ten
/// calls, which a 30 % fault rate reaches by chance on a circuit shared by a few lines, and
/// that is the breaker doing its job, not what this test is about.
fn write_batch(path: &Path) {
    let lines: Vec<String> = (0..LINES)
        .map(|i| {
            json!({
                "custom_id": format!("req-{i}"),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": format!("gpt-4.1-line-{i}"),
                    "messages": [{"role": "user", "content": format!("Question {i}?")}],
                    "max_completion_tokens": 32,
                },
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("the batch is written");
}

/// What a run left.
struct Run {
    status: ExitStatus,
    stderr: String,
    lines: Vec<Value>,
    report: Value,
}

/// Runs `chatstack run INPUT -o OUT --report-json REPORT ARGS...` and waits for it, at
/// most [`DEADLINE`]: past it, the process is killed and the test fails. Its output goes to
/// files, so that a full pipe cannot block it.
async fn run(name: &str, args: &[&str]) -> Run {
    let dir = temp_dir(name);
    let input = dir.path().join("batch.jsonl");
    let out = dir.path().join("out.jsonl");
    let report = dir.path().join("report.json");
    let stderr_path = dir.path().join("stderr.txt");
    write_batch(&input);
    let stderr_file = std::fs::File::create(&stderr_path).expect("a stderr file");
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .arg("--report-json")
        .arg(&report)
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env(KEY_VAR, KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .spawn()
        .expect("the binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("{name}: `chatstack run` did not end within {DEADLINE:?}; stderr:\n{stderr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{name}: a partial last line"
    );
    let lines = text
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{name}: an output line is not JSON: {error}"))
        })
        .collect();
    let report = std::fs::read(&report)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    Run {
        status,
        stderr,
        lines,
        report,
    }
}

/// What every run must show: one line per input line, each custom_id once, no panic,
/// no key on stderr; and every failed line a Batch API error line.
fn check_lines(name: &str, run: &Run) -> HashMap<String, Value> {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
        "{name}: a panic:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains(KEY), "{name}: the key was printed");
    assert_eq!(
        run.lines.len(),
        LINES,
        "{name}: one output line per input line; stderr:\n{}",
        run.stderr
    );
    let mut by_id = HashMap::new();
    for line in &run.lines {
        let id = line["custom_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: a line without custom_id: {line}"))
            .to_owned();
        assert!(
            line["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("batch_req_")),
            "{name}: {line}"
        );
        if line["error"].is_null() {
            assert_eq!(line["response"]["status_code"], 200, "{name}: {line}");
            assert!(
                line["response"]["body"]["choices"][0]["message"]["content"].is_string(),
                "{name}: {line}"
            );
        } else {
            assert!(line["error"]["code"].is_string(), "{name}: {line}");
            assert!(line["error"]["message"].is_string(), "{name}: {line}");
        }
        assert!(
            by_id.insert(id.clone(), line.clone()).is_none(),
            "{name}: {id} twice"
        );
    }
    for i in 0..LINES {
        assert!(
            by_id.contains_key(&format!("req-{i}")),
            "{name}: req-{i} lost"
        );
    }
    by_id
}

/// Runs the batch against a mock whose requests draw `spec` at [`RATE`], and checks the run
/// against `expect` and the mock's counters.
async fn run_fault(spec: &'static str, expect: Expect) {
    let fault = fault_of(spec);
    let mock = MockServer::start(
        MockConfig::default()
            .api_key(KEY)
            .seed(SEED)
            .stall_cap(HOLD)
            .fault(fault.clone(), RATE),
    )
    .await
    .expect("the mock starts");
    let mut args = vec![
        "--base-url",
        mock.url(),
        "--api-key-env",
        KEY_VAR,
        "--max-retries",
        MAX_RETRIES,
    ];
    if is_about_time(&fault) {
        args.extend(["--timeout", TIMEOUT]);
    }
    let run = run(spec, &args).await;
    let by_id = check_lines(spec, &run);
    let counters = mock.counters();
    let faults = counters.fault(fault.clone());
    let attempts = run.report["attempts"].as_u64().unwrap_or_else(|| {
        panic!("{spec}: no report; stderr:\n{}", run.stderr);
    });
    let failed: Vec<&Value> = by_id.values().filter(|l| !l["error"].is_null()).collect();
    match expect {
        Expect::Recovers | Expect::Followed => {
            assert_eq!(
                run.status.code(),
                Some(0),
                "{spec}: every line recovers; stderr:\n{}",
                run.stderr
            );
            assert!(failed.is_empty(), "{spec}: {failed:?}");
            assert!(faults > 0, "{spec}: the mock never injected the fault");
            if let Expect::Recovers = expect {
                // Each fault cost one attempt, and was retried.
                assert_eq!(attempts, LINES as u64 + faults, "{spec}: {}", run.report);
                assert_eq!(counters.total(), attempts, "{spec}: sent and received");
            } else {
                assert_eq!(attempts, LINES as u64, "{spec}: {}", run.report);
                assert_eq!(counters.total(), attempts + faults, "{spec}");
            }
            assert_eq!(run.report["requests"]["failed"], 0, "{spec}");
        }
        Expect::Fails { code, status } => {
            assert!(faults > 0, "{spec}: the mock never injected the fault");
            assert_eq!(
                run.status.code(),
                Some(1),
                "{spec}: some lines failed; stderr:\n{}",
                run.stderr
            );
            // Not retried: one attempt per line.
            assert_eq!(attempts, LINES as u64, "{spec}: {}", run.report);
            let sent = counters.total();
            let (faulted, unsent): (Vec<&Value>, Vec<&Value>) =
                failed.iter().partition(|line| !is_unsent(line));
            assert_eq!(
                faulted.len() as u64,
                faults,
                "{spec}: the lines that drew the fault fail with it"
            );
            for line in &faulted {
                assert_eq!(line["error"]["code"], code, "{spec}: {line}");
                match status {
                    Some(status) => {
                        assert_eq!(line["response"]["status_code"], status, "{spec}: {line}");
                        assert!(
                            line["response"]["body"]["error"].is_object(),
                            "{spec}: {line}"
                        );
                    }
                    None => assert!(line["response"].is_null(), "{spec}: {line}"),
                }
            }
            if revokes_the_key(&fault) {
                // The only key is out of rotation after the first refusal: the lines not
                // sent by then fail at once, unsent (the auth layer's documented rule).
                assert_eq!(unsent.len() as u64, LINES as u64 - sent, "{spec}");
            } else {
                assert!(unsent.is_empty(), "{spec}: {unsent:?}");
                assert_eq!(sent, LINES as u64, "{spec}");
            }
            assert_eq!(
                run.report["requests"]["failed"],
                failed.len() as u64,
                "{spec}"
            );
            let ok = LINES - failed.len();
            assert!(
                run.stderr
                    .contains(&format!("{ok} succeeded, {} failed", failed.len())),
                "{spec}: {}",
                run.stderr
            );
        }
    }
    mock.shutdown().await;
}

/// Whether the fault is one only a time limit ends.
fn is_about_time(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Latency(_)
            | Fault::SlowFirstChunk(_)
            | Fault::NoAnswer
            | Fault::Stall { .. }
            | Fault::Drip { .. }
    )
}

/// Whether the fault makes the auth layer take the key out of rotation: a 401 or
/// `insufficient_quota` (`chatstack::middleware::auth::is_key_rejected`).
fn revokes_the_key(fault: &Fault) -> bool {
    matches!(fault, Fault::Unauthorized | Fault::InsufficientQuota)
}

/// Whether a line failed without being sent: the key was out of rotation by then.
fn is_unsent(line: &Value) -> bool {
    line["error"]["code"] == "auth_error"
        && line["response"].is_null()
        && line["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("the request was not sent"))
}

/// Runs every fault of a family, all at once.
async fn run_family(family: &'static [(&'static str, Expect)]) {
    futures_util::future::join_all(
        family
            .iter()
            .map(|&(spec, expect)| tokio::spawn(run_fault(spec, expect))),
    )
    .await
    .into_iter()
    .for_each(|result| {
        if let Err(error) = result {
            std::panic::resume_unwind(error.into_panic());
        }
    });
}

#[test]
fn every_fault_of_the_mock_has_a_case() {
    let covered: Vec<&str> = FAMILIES
        .iter()
        .flat_map(|family| family.iter())
        .map(|(spec, _)| fault_of(spec).name())
        .collect();
    for name in Fault::NAMES {
        let spec = match *name {
            "redirect" => "redirect:/elsewhere",
            name => name,
        };
        let fault = fault_of(spec);
        assert!(
            covered.contains(&fault.name()),
            "the mock's fault `{name}` has no case in the CLI's fault tests"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_flag_injects_503s_that_all_recover() {
    let run = run(
        "mock-503",
        &[
            "--mock",
            "--mock-fault-rate",
            "0.3",
            "--mock-seed",
            "7",
            "--max-retries",
            MAX_RETRIES,
        ],
    )
    .await;
    check_lines("mock-503", &run);
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    assert_eq!(run.report["requests"]["failed"], 0);
    let retries = run.report["retries"].as_u64().expect("retries");
    assert!(retries > 0, "the mock injected no 503: {}", run.report);
    assert_eq!(run.report["attempts"], LINES as u64 + retries);
    assert!(
        run.stderr.contains(&format!("{LINES} succeeded, 0 failed")),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_recover_and_insufficient_quota_fails_its_lines() {
    run_family(RATE_LIMITS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_recover() {
    run_family(SERVER_ERRORS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_and_redirects_elsewhere_fail_their_lines() {
    run_family(CLIENT_ERRORS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_and_broken_connections_recover() {
    run_family(DELAYS_AND_BROKEN_CONNECTIONS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_fail_their_lines_with_a_decode_error() {
    run_family(BAD_BODIES).await;
}

//! `chatstack run`, end to end: the real binary against mock providers.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chatstack_mock::{MockConfig, MockServer};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_chatstack");

/// A fresh directory per test, removed when the test ends, pass or fail.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("chatstack-run-{name}-"))
        .tempdir()
        .expect("a temp dir")
}

fn batch_line(id: &str, model: &str, prompt: &str) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_completion_tokens": 32,
        },
    })
    .to_string()
}

fn write_batch(path: &Path, n: usize) {
    let models = [
        "gpt-4.1",
        "claude-sonnet-4.5",
        "gemini-2.5-flash",
        "deepseek-v3.2",
    ];
    let lines: Vec<String> = (0..n)
        .map(|i| {
            batch_line(
                &format!("req-{i}"),
                models[i % 4],
                &format!("Question {i}?"),
            )
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn chatstack(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .args(args)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL");
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap()
}

/// The complete lines of an output file, parsed.
fn results(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// custom_id -> how many lines have it.
fn id_counts(lines: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in lines {
        let id = line["custom_id"].as_str().unwrap().to_owned();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn two_thousand_requests_with_20_percent_faults_all_succeed() {
    let dir = temp_dir("faults");
    let input = dir.path().join("batch.jsonl");
    write_batch(&input, 2000);
    let report_path = dir.path().join("report.json");
    let output = run(&mut chatstack(&[
        input.to_str().unwrap(),
        "--mock",
        "--mock-fault-rate",
        "0.2",
        "--max-retries",
        "12",
        "--concurrency",
        "64",
        "--report-json",
        report_path.to_str().unwrap(),
    ]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    // Default output: INPUT with .results.jsonl.
    let lines = results(&dir.path().join("batch.results.jsonl"));
    assert_eq!(lines.len(), 2000);
    let counts = id_counts(&lines);
    assert_eq!(counts.len(), 2000);
    assert!(counts.values().all(|&n| n == 1));
    for line in &lines {
        assert!(line["error"].is_null(), "{line}");
        assert_eq!(line["response"]["status_code"], 200);
        assert!(line["response"]["body"]["choices"][0]["message"]["content"].is_string());
    }

    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["requests"]["succeeded"], 2000);
    assert_eq!(report["requests"]["failed"], 0);
    assert_eq!(report["exit_status"], 0);
    let retries = report["retries"].as_u64().unwrap();
    let mock_503s_are_the_retries = report["attempts"].as_u64().unwrap() - 2000;
    assert_eq!(retries, mock_503s_are_the_retries);
    assert!(
        (250..=800).contains(&retries),
        "about 20 % of attempts fail: {retries}"
    );
    assert!(report["latency_ms"]["p99"].is_u64());
    assert_eq!(report["cost_by_model"].as_object().unwrap().len(), 4);
    let text = stderr(&output);
    assert!(text.contains("2000 succeeded, 0 failed"), "{text}");
    assert!(text.contains("p50") && text.contains("cost"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_resume_runs_each_custom_id_exactly_once() {
    let dir = temp_dir("resume");
    let input = dir.path().join("batch.jsonl");
    let out = dir.path().join("out.jsonl");
    let n = 1000;
    write_batch(&input, n);
    let key = "sk-resume-test-0123456789";
    let mock = MockServer::start(
        MockConfig::default()
            .api_key(key)
            .latency(Duration::from_millis(20)),
    )
    .await
    .unwrap();
    let concurrency = 16;
    let args = |resume: bool| {
        let mut command = chatstack(&[
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--base-url",
            mock.url(),
            "--api-key-env",
            "RESUME_TEST_KEY",
            "--concurrency",
            "16",
            "--max-retries",
            "0",
        ]);
        command.env("RESUME_TEST_KEY", key);
        if resume {
            command.arg("--resume");
        }
        command
    };

    // First run: killed with SIGKILL once some lines are written.
    let mut child = args(false)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let written = std::fs::read(&out).map(|b| b.iter().filter(|&&c| c == b'\n').count());
        if written.unwrap_or(0) >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the first run wrote too little");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Let the mock count requests whose bytes were already on the wire.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let written = results(&out);
    let written_count = written.len() as u64;
    assert!(written_count < n as u64, "killed midway");
    assert!(id_counts(&written).values().all(|&c| c == 1));
    let sent_first = mock.counters().total();
    // Every written line was sent once; at most `concurrency` more were in flight at the kill.
    assert!(
        sent_first >= written_count,
        "{sent_first} < {written_count}"
    );
    assert!(
        sent_first <= written_count + concurrency,
        "{sent_first} sent for {written_count} lines"
    );

    // Second run: --resume sends exactly the lines not written, none of the written ones.
    let output = run(&mut args(true));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines = results(&out);
    assert_eq!(lines.len(), n, "{}", stderr(&output));
    let counts = id_counts(&lines);
    assert_eq!(counts.len(), n);
    assert!(counts.values().all(|&c| c == 1));
    let sent_second = mock.counters().total() - sent_first;
    assert_eq!(sent_second, n as u64 - written_count);
    assert!(stderr(&output).contains(&format!("{written_count} of {n} lines already")));
    assert!(!stderr(&output).contains(key));
    mock.shutdown().await;
}

#[test]
fn mock_faults_are_shared_between_the_named_faults_and_each_recovers() {
    let dir = temp_dir("mock-faults");
    let input = dir.path().join("batch.jsonl");
    write_batch(&input, 400);
    let report_path = dir.path().join("report.json");
    let output = run(&mut chatstack(&[
        input.to_str().unwrap(),
        "--mock",
        "--mock-fault-rate",
        "0.3",
        "--mock-faults",
        "rate_limit_ms:5, server_error,reset",
        "--max-retries",
        "12",
        "--report-json",
        report_path.to_str().unwrap(),
    ]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(results(&dir.path().join("batch.results.jsonl")).len(), 400);
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["requests"]["succeeded"], 400);
    // About 30 % of some 570 attempts fail, a third of them with each fault: every fault
    // shows, and none takes more than its share by far.
    let retries = report["retries"].as_u64().unwrap();
    assert!((100..=260).contains(&retries), "{retries}");
    let text = stderr(&output);
    let sent = text
        .split_once("429s: 0 final (")
        .and_then(|(_, rest)| rest.split_once(" sent by the mock"))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the report counts the mock's 429s: {text}"));
    assert!(
        sent * 5 >= retries && sent * 2 <= retries,
        "429s are about a third of the {retries} retries: {sent}"
    );

    // A delay decides no answer: next to it, server_error still answers half the requests
    // at a rate of 1 (not all of them), and with no retries, half the lines fail.
    let out = dir.path().join("delays.jsonl");
    let output = run(&mut chatstack(&[
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mock",
        "--mock-fault-rate",
        "1",
        "--mock-faults",
        "latency:1,server_error",
        "--max-retries",
        "0",
    ]));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let failed = results(&out)
        .iter()
        .filter(|line| !line["error"].is_null())
        .count();
    assert!((140..=260).contains(&failed), "half of 400 fail: {failed}");

    // A name the mock does not know is a usage error that lists the ones it does.
    let output = run(&mut chatstack(&[
        input.to_str().unwrap(),
        "--mock",
        "--mock-fault-rate",
        "0.1",
        "--mock-faults",
        "unavailable,gremlins",
    ]));
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("--mock-faults: unknown fault `gremlins`"),
        "{text}"
    );
    assert!(text.contains("rate_limit_ms"), "{text}");
}

#[test]
fn malformed_lines_and_a_budget_cap_become_error_lines() {
    let dir = temp_dir("malformed");
    let input = dir.path().join("batch.jsonl");
    let out = dir.path().join("out.jsonl");
    let mut lines = vec![
        batch_line("ok-1", "gpt-4.1", "Hello"),
        "{not json".to_owned(),
        r#"{"custom_id":"no-body","method":"POST","url":"/v1/chat/completions"}"#.to_owned(),
        String::new(),
        r#"{"custom_id":"bad-body","body":{"model":"gpt-4.1","messages":"oops"}}"#.to_owned(),
        batch_line("ok-2", "deepseek-v3.2", "Hi"),
    ];
    // A budget of $0.0001 admits a few cheap deepseek requests, and refuses the rest.
    for i in 0..40 {
        let mut line: Value =
            serde_json::from_str(&batch_line(&format!("big-{i}"), "gpt-4.1", "Write")).unwrap();
        line["body"]["max_completion_tokens"] = json!(4000);
        lines.push(line.to_string());
    }
    std::fs::write(&input, lines.join("\n")).unwrap(); // no final newline
    let output = run(&mut chatstack(&[
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mock",
        "--max-budget-usd",
        "$0.01",
        "--concurrency",
        "1",
    ]));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let results = results(&out);
    let by_id: HashMap<String, Value> = results
        .iter()
        .map(|line| (line["custom_id"].as_str().unwrap().to_owned(), line.clone()))
        .collect();
    assert_eq!(results.len(), 45, "one line per non-blank input line");
    assert_eq!(by_id.len(), 45);
    assert!(by_id["ok-1"]["error"].is_null());
    assert!(by_id["ok-2"]["error"].is_null());
    assert_eq!(by_id["2"]["error"]["code"], "invalid_json");
    assert!(
        by_id["2"]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2:")
    );
    assert_eq!(by_id["no-body"]["error"]["code"], "missing_body");
    assert_eq!(by_id["bad-body"]["error"]["code"], "invalid_body");
    let refused = results
        .iter()
        .filter(|line| line["error"]["code"] == "budget_exceeded")
        .count();
    // Worst case of one big request: ~4000 × $8/M = $0.032 > $0.01: all refused, none sent.
    assert_eq!(refused, 40);
    let text = stderr(&output);
    assert!(text.contains("budget_exceeded 40"), "{text}");
    assert!(text.contains("invalid_json 1"), "{text}");
    assert!(text.contains("2 succeeded, 43 failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_gets_a_clear_401_and_is_never_shown() {
    let dir = temp_dir("auth");
    let input = dir.path().join("batch.jsonl");
    let out = dir.path().join("out.jsonl");
    write_batch(&input, 5);
    let mock = MockServer::start(MockConfig::default().api_key("sk-right-key-0123456789"))
        .await
        .unwrap();
    let wrong = "sk-wrong-key-abcdefghijklmnop";
    let output = run(chatstack(&[
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--base-url",
        mock.url(),
    ])
    .env("OPENAI_API_KEY", wrong));
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains("OPENAI_API_KEY"), "{text}");
    let file = std::fs::read_to_string(&out).unwrap();
    for place in [
        &text,
        &String::from_utf8_lossy(&output.stdout).into_owned(),
        &file,
    ] {
        assert!(!place.contains(wrong), "the key leaked: {place}");
        assert!(
            !place.contains("abcdefghijklmnop"),
            "the key leaked: {place}"
        );
    }
    let lines = results(&out);
    assert_eq!(lines.len(), 5);
    // The first refusal takes the only key out of rotation: the requests after it are not
    // sent (auth_error, no response) rather than sent again with a key known to be wrong.
    let mut refused_by_provider = 0;
    for line in &lines {
        assert_eq!(line["error"]["code"], "auth_error", "{line}");
        if line["response"]["status_code"] == 401 {
            refused_by_provider += 1;
        } else {
            assert!(line["response"].is_null(), "{line}");
        }
    }
    assert!(refused_by_provider >= 1);
    assert_eq!(mock.counters().status(401), refused_by_provider);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_custom_id_is_refused_before_any_request() {
    let dir = temp_dir("duplicate");
    let input = dir.path().join("batch.jsonl");
    let out = dir.path().join("out.jsonl");
    let lines = [
        batch_line("a", "gpt-4.1", "one"),
        batch_line("b", "gpt-4.1", "two"),
        batch_line("c", "gpt-4.1", "three"),
        batch_line("b", "gpt-4.1", "four"),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let output = run(chatstack(&[
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--base-url",
        mock.url(),
    ])
    .env("OPENAI_API_KEY", "sk-any-0123456789"));
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("duplicate custom_id \"b\" on lines 2 and 4"),
        "{text}"
    );
    assert_eq!(mock.counters().total(), 0, "nothing was sent");
    assert!(!out.exists(), "no output was started");
    mock.shutdown().await;
}

#[test]
fn bare_bodies_get_their_line_numbers_as_custom_ids() {
    let dir = temp_dir("bare");
    let input = dir.path().join("bodies.jsonl");
    let out = dir.path().join("out.jsonl");
    let body = |prompt: &str| {
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": prompt}]})
            .to_string()
    };
    std::fs::write(
        &input,
        format!("{}\n\n{}\n{}\n", body("a"), body("b"), body("c")),
    )
    .unwrap();
    let output = run(&mut chatstack(&[
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--mock",
        "--model",
        "deepseek-v3.2",
    ]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let lines = results(&out);
    let mut ids: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["1", "3", "4"], "blank line 2 is skipped");
    for line in &lines {
        assert_eq!(
            line["response"]["body"]["model"], "deepseek-v3.2",
            "--model overrides"
        );
    }
}

#[test]
fn without_a_key_or_mock_it_says_how_to_use_mock() {
    let dir = temp_dir("nokey");
    let input = dir.path().join("batch.jsonl");
    write_batch(&input, 3);
    let output = run(&mut chatstack(&[input.to_str().unwrap()]));
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("OPENAI_API_KEY"), "{text}");
    assert!(text.contains("--mock"), "{text}");
    assert!(!dir.path().join("batch.results.jsonl").exists());
}

#[test]
fn help_documents_the_exit_status() {
    let output = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "Exit status",
        "130",
        "--resume",
        "--mock-fault-rate",
        "--max-budget-usd",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

//! The `chat`, `prices` and `mock` commands, run as the real `chatstack` binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use chatstack_mock::{MockConfig, MockServer};

/// The `chatstack` binary, with no key and no base URL from the test's environment.
fn chatstack() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatstack"));
    command
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null());
    command
}

/// Runs `chatstack ARGS` to its end.
fn run(args: &[&str]) -> Output {
    chatstack().args(args).output().expect("the binary runs")
}

/// The child's stdout, as text.
fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The child's stderr, as text.
fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line of `text` that starts with `model` (after indentation), split on whitespace.
fn row<'a>(text: &'a str, model: &str) -> Vec<&'a str> {
    text.lines()
        .map(str::split_whitespace)
        .map(Iterator::collect::<Vec<_>>)
        .find(|words| words.first() == Some(&model))
        .unwrap_or_else(|| panic!("no row for {model} in:\n{text}"))
}

/// The comparison part of `prices`' output (after its "Monthly cost" heading).
fn comparison(text: &str) -> &str {
    let start = text.find("Monthly cost").expect("a comparison");
    &text[start..]
}

#[test]
fn prices_compares_the_four_models_at_list_price() {
    let output = run(&["prices"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let plan = comparison(&text);
    assert!(plan.contains("10,000,000 output tokens"), "{plan}");
    assert_eq!(row(plan, "gpt-4.1")[1..], ["$80.00"]);
    assert_eq!(row(plan, "claude-sonnet-4.5")[1..], ["$150.00"]);
    assert_eq!(row(plan, "gemini-2.5-flash")[1..], ["$25.00"]);
    assert_eq!(row(plan, "deepseek-v3.2")[1..], ["$4.20"]);
}

#[test]
fn prices_at_a_multiplier() {
    let output = run(&["prices", "--multiplier", "0.85"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let plan = comparison(&text);
    assert_eq!(row(plan, "gpt-4.1")[1..], ["$80.00", "$68.00"]);
    assert_eq!(row(plan, "claude-sonnet-4.5")[1..], ["$150.00", "$127.50"]);
    assert_eq!(row(plan, "gemini-2.5-flash")[1..], ["$25.00", "$21.25"]);
    assert_eq!(row(plan, "deepseek-v3.2")[1..], ["$4.20", "$3.57"]);
}

#[test]
fn prices_table_has_the_pricing_md_figures() {
    let output = run(&["prices"]);
    let text = stdout(&output);
    let table = &text[..text.find("Monthly cost").expect("a comparison")];
    // model, input, cached input, cache write, output (per million).
    assert_eq!(row(table, "gpt-4.1")[1..5], ["2.00", "0.50", "—", "8.00"]);
    let sonnet = row(table, "claude-sonnet-4-5");
    assert_eq!(sonnet[1], "(claude-sonnet-4.5)");
    assert_eq!(sonnet[2..8], ["3.00", "0.30", "3.75", "/", "6.00", "15.00"]);
    assert_eq!(
        sonnet[8..].join(" "),
        "over 200k: in 6.00, out 22.50, read 0.60, write 7.50 / 12.00"
    );
    assert_eq!(
        row(table, "gemini-2.5-flash")[1..],
        ["0.30", "0.03", "—", "2.50"]
    );
    let deepseek = row(table, "deepseek-chat");
    assert_eq!(
        deepseek[1..],
        ["(deepseek-v3.2)", "0.28", "0.028", "—", "0.42"]
    );
}

#[test]
fn prices_of_one_model_through_its_alias() {
    let output = run(&["prices", "deepseek-v3.2", "--output-tokens", "1000000"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("deepseek-chat (deepseek-v3.2)"), "{text}");
    assert!(
        !text.contains("gpt-4.1"),
        "only the model asked for:\n{text}"
    );
    assert_eq!(row(comparison(&text), "deepseek-v3.2")[1..], ["$0.42"]);
}

#[test]
fn prices_of_an_unknown_model_is_a_usage_error() {
    let output = run(&["prices", "no-such-model-9000"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("no price for model `no-such-model-9000`"),
        "{message}"
    );
    assert!(stdout(&output).is_empty());
    let bad = run(&["prices", "--multiplier", "-1"]);
    assert_eq!(bad.status.code(), Some(2));
    let missing = run(&["prices", "--prices", "/nonexistent/prices.json"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("cannot be read"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn prices_json_parses() {
    let output = run(&["prices", "--json", "--multiplier", "0.85"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let models = json["models"].as_array().expect("models");
    let gpt = models
        .iter()
        .find(|model| model["model"] == "gpt-4.1")
        .expect("gpt-4.1");
    assert_eq!(gpt["input"], "2.00");
    assert_eq!(gpt["output"], "8.00");
    let rows = json["comparison"]["rows"].as_array().expect("rows");
    let figures: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|row| {
            (
                row["model"].as_str().unwrap(),
                row["list_usd"].as_str().unwrap(),
                row["billed_usd"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        figures,
        [
            ("gpt-4.1", "80.000000000", "68.000000000"),
            ("claude-sonnet-4.5", "150.000000000", "127.500000000"),
            ("gemini-2.5-flash", "25.000000000", "21.250000000"),
            ("deepseek-v3.2", "4.200000000", "3.570000000"),
        ]
    );
}

#[test]
fn prices_loads_a_litellm_file() {
    let path = std::env::temp_dir().join(format!("chatstack-prices-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"acme/acme-large": {"mode": "chat", "input_cost_per_token": 1e-06,
            "output_cost_per_token": 4e-06}}"#,
    )
    .unwrap();
    let output = run(&["prices", "acme-large", "--prices", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        row(&text, "acme/acme-large")[1..],
        ["(acme-large)", "1.00", "—", "—", "4.00"]
    );
    assert_eq!(row(comparison(&text), "acme-large")[1..], ["$40.00"]);
}

#[test]
fn chat_with_the_mock_prints_an_answer_and_a_usage_line() {
    let output = run(&["chat", "--mock", "Say hello"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let answer = stdout(&output);
    assert!(!answer.trim().is_empty());
    let usage = stderr(&output);
    for part in [
        "gpt-4.1",
        "tokens in ",
        " / out ",
        "cost $",
        "1 attempt",
        "latency ",
        "request id ",
    ] {
        assert!(usage.contains(part), "`{part}` missing from {usage}");
    }
    assert_eq!(usage.trim().lines().count(), 1, "one line: {usage}");
}

#[test]
fn chat_streamed_prints_the_same_text() {
    let args = [
        "chat",
        "--mock",
        "--model",
        "deepseek-v3.2",
        "--system",
        "Be brief.",
        "Tell me a story",
    ];
    let unary = run(&args);
    let streamed = run(&[&args[..], &["--stream"]].concat());
    assert!(unary.status.success(), "{}", stderr(&unary));
    assert!(streamed.status.success(), "{}", stderr(&streamed));
    assert!(!stdout(&unary).trim().is_empty());
    assert_eq!(stdout(&streamed), stdout(&unary));
    let usage = stderr(&streamed);
    assert!(
        usage.contains("cost $") && usage.contains("first token"),
        "{usage}"
    );
}

#[test]
fn chat_without_a_key_says_how_to_use_the_mock() {
    let output = run(&["chat", "Hello"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("OPENAI_API_KEY is not set"), "{message}");
    assert!(message.contains("--mock"), "{message}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn chat_with_a_wrong_key_is_a_clear_401_without_the_key() {
    // A multi-thread runtime serves the mock on its workers while this thread waits.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime
        .block_on(MockServer::start(
            MockConfig::default().api_key("sk-right-key-0123456789"),
        ))
        .unwrap();
    let wrong = "sk-wrong-key-abcdefghijklmnop";
    let output = chatstack()
        .args([
            "chat",
            "--base-url",
            server.url(),
            "--api-key-env",
            "CHATSTACK_TEST_KEY",
            "Hi",
        ])
        .env("CHATSTACK_TEST_KEY", wrong)
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(1));
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(err.contains("status 401"), "{err}");
    assert!(err.contains("Incorrect API key"), "{err}");
    assert!(err.contains("CHATSTACK_TEST_KEY"), "{err}");
    for text in [&out, &err] {
        assert!(!text.contains(wrong), "the key leaked: {text}");
        assert!(
            !text.contains("wrong-key-abcdefghijklmnop"),
            "the key leaked: {text}"
        );
    }
    runtime.block_on(server.shutdown());
}

/// Kills the child when dropped, so that a failing test leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mock_serves_until_killed() {
    let child = chatstack()
        .args(["mock", "--port", "0", "--reply-tokens", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let mut child = KillOnDrop(child);
    let mut url = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
        "{url}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = runtime.block_on(async {
        let client = chatstack::Client::builder()
            .base_url(url.clone())
            .build()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), client.chat("gpt-4.1", "Hello"))
            .await
            .expect("answered in time")
            .expect("answered")
    });
    assert_eq!(text.split_whitespace().count(), 5, "{text}");
    assert!(child.0.try_wait().unwrap().is_none(), "still serving");
    drop(child);

    let help = run(&["mock", "--help"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("--fault-rate"));
    let bad = run(&["mock", "--bogus"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--bogus"));
}

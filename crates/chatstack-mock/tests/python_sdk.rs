//! The official OpenAI Python SDK reads the mock's replies and maps its errors
//! (`tests/python_sdk.py`).
//!
//! Needs `python3` with the `openai` module (`pip install openai`). Without them the test
//! fails when the `CI` environment variable is set, and is skipped with a notice otherwise.

use std::process::Stdio;
use std::time::Duration;

use chatstack_mock::{MockConfig, MockServer};
use tokio::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python_sdk.py");

/// Whether `python3 -c "import openai"` works.
async fn python_with_openai() -> Result<(), String> {
    let output = Command::new("python3")
        .args(["-c", "import openai"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| format!("cannot run python3: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 cannot import openai: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_reads_replies_and_errors() {
    if let Err(problem) = python_with_openai().await {
        if std::env::var_os("CI").is_some() {
            panic!("{problem}; install the SDK with `pip install openai`");
        }
        eprintln!(
            "SKIPPED openai_python_sdk_reads_replies_and_errors: {problem} (pip install openai)"
        );
        return;
    }
    let server = MockServer::start(MockConfig::default().api_key("sk-mock-python"))
        .await
        .unwrap();
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(server.url())
        .env("OPENAI_MAX_RETRIES", "0")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut text)
            .await
            .unwrap();
        text
    };
    let (stdout, stderr, status) = tokio::time::timeout(Duration::from_secs(60), async {
        let (stdout, stderr) = tokio::join!(read(Box::new(stdout)), read(Box::new(stderr)));
        (stdout, stderr, child.wait().await.unwrap())
    })
    .await
    .expect("the SDK checks finish within a minute");
    println!("{stdout}");
    assert!(
        status.success(),
        "python_sdk.py failed ({status}):\n{stdout}\n{stderr}"
    );
    let checks = stdout
        .lines()
        .filter(|line| line.starts_with("ok "))
        .count();
    assert!(checks >= 30, "only {checks} checks ran:\n{stdout}");
    assert!(
        stdout.contains("all") && stdout.contains("checks passed"),
        "{stdout}"
    );
    let counters = server.counters().snapshot();
    assert!(
        counters.status(429) >= 3 && counters.status(529) == 1,
        "{counters:?}"
    );
    assert_eq!(counters.resets, 1);
}

//! Writing the output (one Batch API output line per input line) and reading it back for
//! `--resume`.
//!
//! A line is `{"id","custom_id","response":{"status_code","request_id","body"},"error"}`.
//! A success has the response and `error: null`. A failure always has
//! `error: {"code","message"}`; when the provider answered with an HTTP error, `response` holds
//! its status, request id and the error envelope as body, else `response` is `null`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use chatstack::proto::TimeoutKind;
use chatstack::{ChatResponse, Error, ErrorKind};
use serde_json::{Value, json};

use super::input::InputError;

/// The stable snake_case code of an error kind, as written in `error.code` and counted in
/// the report.
pub fn error_code(error: &Error) -> &'static str {
    match error.kind() {
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::InsufficientQuota => "insufficient_quota",
        ErrorKind::Server => "server_error",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::Timeout(TimeoutKind::Connect) => "connect_timeout",
        ErrorKind::Timeout(_) => "timeout",
        ErrorKind::Connection => "connection_error",
        ErrorKind::Auth => "auth_error",
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::ContextLengthExceeded => "context_length_exceeded",
        ErrorKind::ContentFilter => "content_filter",
        ErrorKind::Status => "http_error",
        ErrorKind::Provider => "provider_error",
        ErrorKind::Decode => "decode_error",
        ErrorKind::Incomplete => "incomplete_response",
        ErrorKind::BodyTooLarge => "body_too_large",
        ErrorKind::CircuitOpen => "circuit_open",
        ErrorKind::RateLimitWait => "rate_limit_wait_refused",
        ErrorKind::BudgetExceeded => "budget_exceeded",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::BackendUnavailable => "backend_unavailable",
        ErrorKind::Config => "config_error",
        _ => "error",
    }
}

fn record_id(line: u64) -> String {
    format!("batch_req_{line:08}")
}

/// One output line, its fields in the Batch API's order.
#[derive(Debug, serde::Serialize)]
pub struct Record {
    id: String,
    custom_id: String,
    response: Value,
    error: Value,
}

fn record(line: u64, custom_id: &str, response: Value, error: Value) -> Record {
    Record {
        id: record_id(line),
        custom_id: custom_id.to_owned(),
        response,
        error,
    }
}

/// The output line of a response.
pub fn success_line(line: u64, custom_id: &str, response: &ChatResponse) -> Record {
    let response = json!({
        "status_code": response.meta.status.as_u16(),
        "request_id": response.meta.request_id,
        "body": response,
    });
    record(line, custom_id, response, Value::Null)
}

/// The output line of a request that failed.
pub fn error_line(line: u64, custom_id: &str, error: &Error) -> Record {
    let response = error.status().map(|status| {
        let body = match error.provider() {
            Some(provider) => json!({"error": {
                "message": provider.message,
                "type": provider.kind,
                "param": provider.param,
                "code": provider.code,
            }}),
            None => json!({"error": {"message": error.message(), "type": null, "param": null, "code": null}}),
        };
        json!({
            "status_code": status.as_u16(),
            "request_id": error.request_id(),
            "body": body,
        })
    });
    let error = json!({"code": error_code(error), "message": error.to_string()});
    record(line, custom_id, response.unwrap_or(Value::Null), error)
}

/// The output line of an input line that could not be sent.
pub fn input_error_line(line: u64, custom_id: &str, error: &InputError) -> Record {
    let message = format!("line {line}: {}", error.message);
    let error = json!({"code": error.code, "message": message});
    record(line, custom_id, Value::Null, error)
}

/// The output file, one whole line per `write` call, flushed to the OS at once: a process
/// killed afterwards loses nothing it wrote; one killed during a write leaves at most one
/// partial last line, which `--resume` cuts off.
pub struct Output {
    file: File,
}

impl Output {
    pub fn write(&mut self, record: &impl serde::Serialize) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()
    }
}

/// What `--resume` found in an existing output file.
#[derive(Debug, Default)]
pub struct Previous {
    /// custom_ids already written.
    pub done: HashSet<String>,
    /// Of them, lines with an error.
    pub failed: u64,
    /// Bytes of a partial last line cut off.
    pub truncated: u64,
}

/// Opens the output: truncated for a fresh run; for `--resume`, read (custom_ids of its
/// complete lines), cut after its last complete line, and opened for appending.
pub fn open(path: &Path, resume: bool) -> io::Result<(Output, Previous)> {
    if !resume {
        let file = File::create(path)?;
        return Ok((Output { file }, Previous::default()));
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut previous = Previous::default();
    let mut complete_end = 0u64;
    {
        let mut reader = BufReader::new(&mut file);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            let read = reader.read_until(b'\n', &mut buffer)?;
            if read == 0 {
                break;
            }
            if buffer.last() != Some(&b'\n') {
                // A partial line from a killed run: never a result.
                previous.truncated = read as u64;
                break;
            }
            complete_end += read as u64;
            let Ok(value) = serde_json::from_slice::<Value>(&buffer) else {
                continue;
            };
            if let Some(id) = value.get("custom_id").and_then(Value::as_str) {
                if value.get("error").is_some_and(|error| !error.is_null()) {
                    previous.failed += 1;
                }
                previous.done.insert(id.to_owned());
            }
        }
    }
    file.set_len(complete_end)?;
    file.seek(SeekFrom::Start(complete_end))?;
    Ok((Output { file }, previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_cuts_a_partial_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(
            &path,
            "{\"custom_id\":\"a\",\"error\":null}\n{\"custom_id\":\"b\",\"error\":{\"code\":\"x\"}}\n{\"custom_id\":\"c\",\"err",
        )
        .unwrap();
        let (mut output, previous) = open(&path, true).unwrap();
        assert_eq!(previous.done.len(), 2);
        assert!(previous.done.contains("a") && previous.done.contains("b"));
        assert_eq!(previous.failed, 1);
        assert!(previous.truncated > 0);
        output.write(&json!({"custom_id": "c"})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with("{\"custom_id\":\"c\"}\n"));
    }
}

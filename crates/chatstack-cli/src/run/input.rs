//! Reading the input: one JSON object a line, in the OpenAI Batch API input format
//! (`{"custom_id","method","url","body"}`) or a bare Chat Completions body (whose custom_id is
//! its 1-based line number). Blank lines are skipped and are not requests.

use std::collections::HashMap;
use std::path::Path;

use chatstack::ChatRequest;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Why a line cannot be sent: becomes that line's `error` in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// A stable snake_case code (`invalid_json`, `invalid_body`, ...).
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl InputError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// One non-blank input line, classified.
#[derive(Debug)]
pub struct Line {
    /// 1-based line number in the input file.
    pub number: u64,
    /// The line's custom_id, or its line number when it has none (bare body) or cannot be
    /// read.
    pub custom_id: String,
    /// The request to send, or why there is none.
    pub request: Result<ChatRequest, InputError>,
}

/// Classifies one line (without its newline). `None` for a blank line.
pub fn classify(bytes: &[u8], number: u64, model: Option<&str>) -> Option<Line> {
    let bytes = trim_ascii(bytes);
    if bytes.is_empty() {
        return None;
    }
    let line_id = number.to_string();
    let (custom_id, request) = match parse(bytes) {
        Ok((id, request)) => (id.unwrap_or(line_id), Ok(request)),
        Err((id, error)) => (id.unwrap_or(line_id), Err(error)),
    };
    let request = request.map(|mut request| {
        if let Some(model) = model {
            model.clone_into(&mut request.model);
        }
        request.meta.id = Some(custom_id.clone());
        request
    });
    Some(Line {
        number,
        custom_id,
        request,
    })
}

type Parsed = Result<(Option<String>, ChatRequest), (Option<String>, InputError)>;

fn parse(bytes: &[u8]) -> Parsed {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        let code = if std::str::from_utf8(bytes).is_err() {
            "invalid_utf8"
        } else {
            "invalid_json"
        };
        (
            None,
            InputError::new(code, format!("not valid JSON: {error}")),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err((
            None,
            InputError::new("invalid_line", "a line must be a JSON object"),
        ));
    };
    let batch_format = ["custom_id", "body", "method", "url"]
        .iter()
        .any(|key| object.contains_key(*key));
    if !batch_format {
        return body_to_request(Value::Object(object)).map(|request| (None, request));
    }
    let custom_id = match object.remove("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(_) => {
            return Err((
                None,
                InputError::new("invalid_custom_id", "custom_id must be a non-empty string"),
            ));
        }
        None => {
            return Err((
                None,
                InputError::new("missing_custom_id", "a Batch API line needs a custom_id"),
            ));
        }
    };
    let fail = |error| Err((Some(custom_id.clone()), error));
    match object.get("method") {
        None => {}
        Some(Value::String(method)) if method.eq_ignore_ascii_case("POST") => {}
        Some(_) => return fail(InputError::new("invalid_method", "method must be \"POST\"")),
    }
    match object.get("url") {
        None => {}
        Some(Value::String(url)) if url.trim_end_matches('/').ends_with("/chat/completions") => {}
        Some(_) => {
            return fail(InputError::new(
                "unsupported_url",
                "only /v1/chat/completions is supported",
            ));
        }
    }
    let Some(body) = object.remove("body") else {
        return fail(InputError::new(
            "missing_body",
            "a Batch API line needs a body",
        ));
    };
    match body_to_request(body) {
        Ok(request) => Ok((Some(custom_id), request)),
        Err((_, error)) => fail(error),
    }
}

fn body_to_request(mut body: Value) -> Result<ChatRequest, (Option<String>, InputError)> {
    let Some(object) = body.as_object_mut() else {
        return Err((
            None,
            InputError::new("invalid_body", "the body must be a JSON object"),
        ));
    };
    // Results are unary: a batch line asking for a stream is answered whole, as the Batch API
    // does.
    object.remove("stream");
    object.remove("stream_options");
    serde_json::from_value::<ChatRequest>(body).map_err(|error| {
        (
            None,
            InputError::new(
                "invalid_body",
                format!("not a Chat Completions request: {error}"),
            ),
        )
    })
}

fn trim_ascii(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if first.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = bytes {
        if last.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

/// Reads lines as raw bytes (a line that is not UTF-8 becomes an error line, not an I/O
/// error), one at a time.
pub struct LineReader<R> {
    reader: BufReader<R>,
    buffer: Vec<u8>,
    number: u64,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, inner),
            buffer: Vec::new(),
            number: 0,
        }
    }

    /// The next line's number and bytes (without the newline), or `None` at the end.
    pub async fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        self.buffer.clear();
        let read = self.reader.read_until(b'\n', &mut self.buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        Ok(Some((self.number, &self.buffer)))
    }
}

/// What the first pass over the input found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Non-blank lines.
    pub lines: u64,
    /// Of them, lines that cannot be sent.
    pub invalid: u64,
    /// Lines whose custom_id is in `skip` (already in the output, with --resume).
    pub skipped: u64,
}

/// A custom_id used twice: the run is refused before anything is sent.
#[derive(Debug)]
pub struct Duplicate {
    pub custom_id: String,
    pub first_line: u64,
    pub second_line: u64,
}

/// The first pass: refuses duplicate custom_ids and counts the work.
///
/// Memory: a map of the custom_ids (not the bodies) — the price of refusing a duplicate
/// before the first request is sent.
pub async fn scan(
    path: &Path,
    skip: &std::collections::HashSet<String>,
) -> Result<Result<Scan, Duplicate>, std::io::Error> {
    let file = tokio::fs::File::open(path).await?;
    let mut reader = LineReader::new(file);
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut scan = Scan::default();
    while let Some((number, bytes)) = reader.next_line().await? {
        let Some(line) = classify(bytes, number, None) else {
            continue;
        };
        scan.lines += 1;
        if line.request.is_err() {
            scan.invalid += 1;
        }
        if skip.contains(&line.custom_id) {
            scan.skipped += 1;
        }
        if let Some(first_line) = seen.get(&line.custom_id) {
            return Ok(Err(Duplicate {
                custom_id: line.custom_id,
                first_line: *first_line,
                second_line: number,
            }));
        }
        seen.insert(line.custom_id, number);
    }
    Ok(Ok(scan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lines_bare_bodies_and_errors() {
        let batch = br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}}"#;
        let line = classify(batch, 1, Some("deepseek-v3.2")).unwrap();
        assert_eq!(line.custom_id, "a");
        let request = line.request.unwrap();
        assert_eq!(request.model, "deepseek-v3.2");
        assert_eq!(request.meta.id.as_deref(), Some("a"));

        let bare = br#" {"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]} "#;
        let line = classify(bare, 7, None).unwrap();
        assert_eq!(line.custom_id, "7");
        assert!(line.request.is_ok());

        assert!(classify(b"  \r", 3, None).is_none());
        let broken = classify(b"{\"custom_id\":", 4, None).unwrap();
        assert_eq!(
            (broken.custom_id.as_str(), broken.request.unwrap_err().code),
            ("4", "invalid_json")
        );
        let no_body = classify(br#"{"custom_id":"x"}"#, 5, None).unwrap();
        assert_eq!(
            (
                no_body.custom_id.as_str(),
                no_body.request.unwrap_err().code
            ),
            ("x", "missing_body")
        );
        let url = classify(
            br#"{"custom_id":"y","url":"/v1/embeddings","body":{}}"#,
            6,
            None,
        );
        assert_eq!(url.unwrap().request.unwrap_err().code, "unsupported_url");
        let latin1 = classify(b"\xff\xfe", 8, None).unwrap();
        assert_eq!(latin1.request.unwrap_err().code, "invalid_utf8");
        let body = classify(br#"{"custom_id":"z","body":{"model":1}}"#, 9, None).unwrap();
        assert_eq!(body.request.unwrap_err().code, "invalid_body");
    }
}

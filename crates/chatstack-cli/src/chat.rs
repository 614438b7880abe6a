//! `chatstack chat`: one chat through the [`Client`]'s default stack (retry, circuit
//! breaker, timeouts, cost), the answer on stdout, usage and cost on stderr.
//!
//! ```text
//! chatstack chat --mock "Hello"                                  # no key needed
//! chatstack chat --stream --model gpt-4.1 "Why is the sky blue?"  # tokens as they come
//! chatstack chat --base-url http://localhost:11434/v1 --api-key-env OLLAMA_KEY "Hi"
//! ```
//!
//! Exit status: 0 on success; 1 when the request failed (the message gives the error kind,
//! the HTTP status and the provider's message, never the key); 2 for a usage error (no API
//! key and no `--mock`, a bad `--base-url`).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chatstack::middleware::auth::ApiKey;
use chatstack::middleware::cost::PriceSource;
use chatstack::{ChatEvent, ChatRequest, ChatResponse, Client, Error, Message, ResponseExt};
use chatstack_mock::{MockConfig, MockServer};
use futures_util::StreamExt;

/// Exit status of a usage error.
const USAGE_ERROR: u8 = 2;

/// The key the built-in mock is started with (and sent to it) under `--mock`.
const MOCK_KEY: &str = "sk-chatstack-mock-key";

/// Arguments of `chatstack chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The prompt, sent as one user message (`-`: read it from stdin).
    pub prompt: String,

    /// The model to ask.
    #[arg(short, long, default_value = "gpt-4.1")]
    pub model: String,

    /// Print the answer token by token as it is generated.
    #[arg(short, long)]
    pub stream: bool,

    /// A system message sent before the prompt.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,

    /// The most tokens the answer may have (`max_completion_tokens`).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,

    /// The API's base URL (default: OPENAI_BASE_URL when set, else OpenAI's).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// The environment variable that holds the API key.
    #[arg(long, value_name = "VAR", default_value = chatstack::API_KEY_VAR)]
    pub api_key_env: String,

    /// Start the built-in mock provider on a free local port and chat with it (no key
    /// needed, nothing leaves the machine).
    #[arg(long, conflicts_with = "base_url")]
    pub mock: bool,
}

/// What a failure ends the command with: the message (already printed) and the status.
struct Failure(u8);

/// Runs `chatstack chat`.
pub async fn execute(args: ChatArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code)) => ExitCode::from(code),
    }
}

/// The key read from the environment, kept so that it can be scrubbed from any message.
struct Secret(String);

impl Secret {
    /// `text` with every occurrence of the key replaced.
    fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

/// The command itself: every failure has printed its message when it returns.
async fn run(args: ChatArgs) -> Result<(), Failure> {
    let prompt = read_prompt(&args.prompt)?;

    // The endpoint and the key: the built-in mock, or the user's.
    let mut mock = None;
    let (base_url, key, secret) = if args.mock {
        let server = MockServer::start(MockConfig::default().api_key(MOCK_KEY))
            .await
            .map_err(|error| {
                eprintln!("chatstack chat: cannot start the mock provider: {error}");
                Failure(1)
            })?;
        let url = server.url().to_owned();
        mock = Some(server);
        let key = ApiKey::new(MOCK_KEY).map_err(|error| {
            eprintln!("chatstack chat: {error}");
            Failure(1)
        })?;
        (Some(url), key, Secret(String::new()))
    } else {
        let (key, secret) = key_from_env(&args.api_key_env)?;
        let base_url = args.base_url.clone().or_else(|| {
            std::env::var(chatstack::BASE_URL_VAR)
                .ok()
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty())
        });
        (base_url, key, secret)
    };

    let mut builder = Client::builder().api_key(key);
    if let Some(url) = &base_url {
        builder = builder.base_url(url.clone());
    }
    let client = builder.build().map_err(|error| {
        eprintln!(
            "chatstack chat: invalid configuration: {}",
            secret.scrub(&error.to_string())
        );
        Failure(USAGE_ERROR)
    })?;

    let mut messages = Vec::with_capacity(2);
    if let Some(system) = &args.system {
        messages.push(Message::system(system.clone()));
    }
    messages.push(Message::user(prompt));
    let mut request = ChatRequest::new(args.model.clone(), messages);
    if let Some(max) = args.max_tokens {
        request = request.max_completion_tokens(max);
    }

    let started = Instant::now();
    let outcome = if args.stream {
        stream_answer(&client, request).await
    } else {
        unary_answer(&client, request).await
    };
    let elapsed = started.elapsed();
    if let Some(server) = mock {
        server.shutdown().await;
    }
    match outcome {
        Ok((response, first_token)) => {
            eprintln!(
                "{}",
                usage_line(&response, &args.model, elapsed, first_token)
            );
            Ok(())
        }
        Err(error) => {
            eprintln!("{}", secret.scrub(&describe_error(&error, &args)));
            Err(Failure(1))
        }
    }
}

/// The prompt, or stdin's text for `-`.
fn read_prompt(prompt: &str) -> Result<String, Failure> {
    if prompt != "-" {
        return Ok(prompt.to_owned());
    }
    std::io::read_to_string(std::io::stdin())
        .map(|text| text.trim_end().to_owned())
        .map_err(|error| {
            eprintln!("chatstack chat: cannot read the prompt from stdin: {error}");
            Failure(USAGE_ERROR)
        })
}

/// The API key in `var`, or the usage error that says how to do without one.
fn key_from_env(var: &str) -> Result<(ApiKey, Secret), Failure> {
    let value = std::env::var(var).ok();
    let trimmed = value.as_deref().map(str::trim).unwrap_or_default();
    if trimmed.is_empty() {
        let name = if looks_like_var(var) {
            var
        } else {
            "the --api-key-env variable"
        };
        eprintln!(
            "chatstack chat: no API key: {name} is {}.\n  \
             Set it (export {name}=sk-...), name another variable with --api-key-env VAR,\n  \
             or try chatstack without a key against the built-in mock provider:\n  \
             chatstack chat --mock \"Hello\"",
            if value.is_some() { "empty" } else { "not set" },
        );
        return Err(Failure(USAGE_ERROR));
    }
    let secret = Secret(trimmed.to_owned());
    match ApiKey::new(trimmed.to_owned()) {
        Ok(key) => Ok((key, secret)),
        Err(error) => {
            eprintln!(
                "chatstack chat: the key in {} is not usable: {}",
                if looks_like_var(var) {
                    var
                } else {
                    "--api-key-env"
                },
                secret.scrub(&error.to_string())
            );
            Err(Failure(USAGE_ERROR))
        }
    }
}

/// Whether `name` looks like an environment variable's name (so that it may be shown: a key
/// passed to `--api-key-env` by mistake must not be).
fn looks_like_var(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A unary call: the whole answer, printed at once.
async fn unary_answer(
    client: &Client,
    request: ChatRequest,
) -> Result<(ChatResponse, Option<Duration>), Error> {
    let response = client.send(request).await?;
    let text = response.clone().into_text()?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    Ok((response, None))
}

/// A streamed call: each text delta printed and flushed as it comes. Returns the final
/// response and the time to the first text.
async fn stream_answer(
    client: &Client,
    request: ChatRequest,
) -> Result<(ChatResponse, Option<Duration>), Error> {
    let started = Instant::now();
    let mut first_token = None;
    let mut printed = false;
    let mut stream = client.stream(request).await?;
    let mut done = None;
    let result = loop {
        match stream.next().await {
            Some(Ok(event)) => {
                if let Some(text) = event.text() {
                    if !text.is_empty() {
                        first_token.get_or_insert_with(|| started.elapsed());
                        printed = true;
                        let mut stdout = std::io::stdout().lock();
                        let _ = stdout
                            .write_all(text.as_bytes())
                            .and_then(|()| stdout.flush());
                    }
                }
                if let ChatEvent::Done(response) = event {
                    done = Some(response);
                }
            }
            Some(Err(error)) => break Err(error),
            None => break Ok(()),
        }
    };
    if printed {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(b"\n").and_then(|()| stdout.flush());
    }
    result?;
    let response = done.ok_or_else(|| {
        Error::new(
            chatstack::ErrorKind::Incomplete,
            "the stream ended without a final response",
        )
    })?;
    if !printed {
        // No text came: say why (a refusal, a filter, tool calls only).
        response.clone().into_text()?;
    }
    Ok((response, first_token))
}

/// The one stderr line after an answer: model, tokens, cost, attempts, latency, request id.
fn usage_line(
    response: &ChatResponse,
    asked: &str,
    elapsed: Duration,
    first_token: Option<Duration>,
) -> String {
    let model = if response.model.is_empty() {
        asked
    } else {
        response.model.as_str()
    };
    let tokens = match &response.usage {
        Some(usage) => {
            let mut text = format!(
                "tokens in {} / out {}",
                usage.prompt_tokens, usage.completion_tokens
            );
            let cached = usage.prompt_tokens_details.cached_tokens;
            let reasoning = usage.completion_tokens_details.reasoning_tokens;
            if cached > 0 {
                text.push_str(&format!(" ({cached} cached in)"));
            }
            if reasoning > 0 {
                text.push_str(&format!(" ({reasoning} reasoning out)"));
            }
            text
        }
        None => "tokens unknown (no usage reported)".to_owned(),
    };
    let cost = match response.cost() {
        Some(cost) if cost.source == PriceSource::Unpriced => {
            format!("cost unknown (no price for `{}`)", cost.model)
        }
        Some(cost) if !cost.usage_reported => "cost unknown (no usage reported)".to_owned(),
        Some(cost) => format!("cost {}", cost.cost),
        None => "cost unknown".to_owned(),
    };
    let attempts = response.meta.attempts.max(1);
    let mut latency = format!("latency {}", millis(elapsed));
    if let Some(first) = first_token {
        latency.push_str(&format!(" (first token {})", millis(first)));
    }
    let request_id = response.meta.request_id.as_deref().unwrap_or("none");
    format!(
        "[{model} · {tokens} · {cost} · {attempts} attempt{} · {latency} · request id {request_id}]",
        if attempts == 1 { "" } else { "s" }
    )
}

/// A duration as `850 ms` or `2.31 s`.
fn millis(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1_000 {
        format!("{ms} ms")
    } else {
        format!("{}.{:02} s", ms / 1_000, (ms % 1_000) / 10)
    }
}

/// A failed request, explained: the kind, the status, the provider's message and code, and
/// what to check.
fn describe_error(error: &Error, args: &ChatArgs) -> String {
    let mut text = format!("chatstack chat: the request failed: {error}");
    if let Some(provider) = error.provider() {
        let mut details = Vec::new();
        if !provider.message.is_empty() && provider.message != error.message() {
            details.push(format!("message: {}", provider.message));
        }
        if let Some(kind) = &provider.kind {
            details.push(format!("type {kind}"));
        }
        if let Some(code) = &provider.code {
            details.push(format!("code {code}"));
        }
        if let Some(param) = &provider.param {
            details.push(format!("param {param}"));
        }
        if !details.is_empty() {
            text.push_str(&format!("\n  provider error: {}", details.join(", ")));
        }
    } else if let Some(body) = error.body() {
        let body: String = body.chars().take(300).collect();
        text.push_str(&format!("\n  response body: {body}"));
    }
    let hint = if error.is_auth() {
        Some(if looks_like_var(&args.api_key_env) {
            format!(
                "check the API key in {} (or use --mock to try chatstack without one)",
                args.api_key_env
            )
        } else {
            "check the API key (or use --mock to try chatstack without one)".to_owned()
        })
    } else if error.is_connection() {
        Some("check --base-url (or OPENAI_BASE_URL) and the network".to_owned())
    } else if error.is_rate_limited() || error.is_insufficient_quota() {
        Some("the provider refused for rate or quota; try again later, or check billing".to_owned())
    } else {
        None
    };
    if let Some(hint) = hint {
        text.push_str(&format!("\n  hint: {hint}"));
    }
    text
}

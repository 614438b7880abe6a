//! Command-line arguments of the `chatstack-mock` binary, parsed by hand.
//!
//! The parser lives in the library so that other binaries (the `chatstack mock` subcommand)
//! accept exactly the same flags.

use std::fmt;
use std::time::Duration;

use crate::config::MockConfig;
use crate::fault::{Fault, FaultRule};

/// The usage text of the `chatstack-mock` binary.
pub const USAGE: &str = "\
Usage: chatstack-mock [OPTIONS]

An OpenAI-compatible mock Chat Completions server on 127.0.0.1. Prints its base URL
(http://127.0.0.1:PORT/v1) on stdout and serves until Ctrl-C.

Options:
  --port N                 port to bind (default 0: any free port)
  --api-key KEY            require `Authorization: Bearer KEY`
  --reply-tokens N         tokens (words) per reply (default 16)
  --latency-ms N           fixed delay before every response
  --jitter-ms N            extra random delay, uniform in 0..=N ms
  --token-interval-ms N    delay before each streamed content chunk
  --fault-rate F           probability (0..1) for the --fault flags that follow
  --fault NAME[:ARG]       inject this fault into a share F of requests (repeatable)
  --seed S                 seed of the fault and jitter draws
  --model NAME             a model for GET /v1/models (repeatable; replaces the defaults)
  --context-window N       400 context_length_exceeded past N prompt + output tokens
  --stall-cap-ms N         how long stall, no_answer and drip hold a connection
                           (default 300000)
  -h, --help               print this help

Faults: rate_limit[:SECS] rate_limit_date[:SECS] rate_limit_ms[:MS] insufficient_quota
  server_error bad_gateway unavailable overloaded unauthorized context_length_exceeded
  latency:MS slow_first_chunk[:MS] stall[:N] mid_stream_error[:N] reset truncated
  malformed_json oversized[:BYTES] no_answer wrong_content_type invalid_utf8[:N]
  error_in_200 corrupt_gzip drip[:MS] redirect:URL   (aliases: 429 500 502 503 529 401)

Example: chatstack-mock --port 8080 --fault-rate 0.2 --fault unavailable --seed 42
";

/// What the command line asks for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// Serve with this configuration.
    Serve(Box<MockConfig>),
    /// Print [`USAGE`] and exit.
    Help,
}

/// A command line that could not be read. Its message names the flag at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsError {
    message: String,
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArgsError {}

fn error(message: impl Into<String>) -> ArgsError {
    ArgsError {
        message: message.into(),
    }
}

/// Parses the arguments (without the program name). Flags take their value as the next
/// argument or after `=` (`--port=8080`).
///
/// ```
/// use chatstack_mock::args::{Command, parse_args};
///
/// let Command::Serve(config) = parse_args(["--port", "8080", "--fault-rate", "0.2", "--fault", "503"]).unwrap()
/// else { unreachable!() };
/// assert_eq!(config.port, 8080);
/// assert_eq!(config.faults[0].probability, 0.2);
/// assert!(parse_args(["--prot", "1"]).unwrap_err().to_string().contains("--prot"));
/// ```
pub fn parse_args<I, S>(args: I) -> Result<Command, ArgsError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = MockConfig::default();
    let mut fault_rate: Option<f64> = None;
    let mut models: Option<Vec<String>> = None;
    let mut args = args.into_iter().map(Into::into);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let known = [
            "--port",
            "--api-key",
            "--reply-tokens",
            "--latency-ms",
            "--jitter-ms",
            "--token-interval-ms",
            "--fault-rate",
            "--fault",
            "--seed",
            "--model",
            "--context-window",
            "--stall-cap-ms",
        ];
        if !known.contains(&flag.as_str()) {
            return Err(if flag.starts_with('-') {
                error(format!("unknown flag `{flag}` (see --help)"))
            } else {
                error(format!("unexpected argument `{flag}` (see --help)"))
            });
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| error(format!("`{flag}` needs a value")))?,
        };
        let number = |value: &str| {
            value.parse::<u64>().map_err(|_| {
                error(format!(
                    "`{flag}` needs a non-negative integer, not `{value}`"
                ))
            })
        };
        let millis = |value: &str| number(value).map(Duration::from_millis);
        match flag.as_str() {
            "--port" => {
                config.port = u16::try_from(number(&value)?)
                    .map_err(|_| error(format!("`--port` must be at most 65535, not `{value}`")))?;
            }
            "--api-key" => {
                if value.trim().is_empty() {
                    return Err(error("`--api-key` must not be empty"));
                }
                config.api_key = Some(value.trim().to_owned());
            }
            "--reply-tokens" => {
                let tokens = u32::try_from(number(&value)?).unwrap_or(u32::MAX);
                config = config.reply_tokens(tokens);
            }
            "--latency-ms" => config.latency.fixed = millis(&value)?,
            "--jitter-ms" => config.latency.jitter = millis(&value)?,
            "--token-interval-ms" => config.token_interval = millis(&value)?,
            "--stall-cap-ms" => config.stall_cap = millis(&value)?,
            "--seed" => config.seed = number(&value)?,
            "--context-window" => config.context_window = Some(number(&value)?),
            "--model" => models.get_or_insert_with(Vec::new).push(value),
            "--fault-rate" => {
                let rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|rate| (0.0..=1.0).contains(rate))
                    .ok_or_else(|| {
                        error(format!(
                            "`--fault-rate` needs a number from 0 to 1, not `{value}`"
                        ))
                    })?;
                fault_rate = Some(rate);
            }
            "--fault" => {
                let rate = fault_rate.ok_or_else(|| {
                    error(format!(
                        "`--fault {value}` needs a `--fault-rate F` before it"
                    ))
                })?;
                let fault: Fault = value
                    .parse()
                    .map_err(|e| error(format!("`--fault`: {e}")))?;
                config.faults.push(FaultRule::new(fault, rate));
            }
            _ => unreachable!("every known flag is handled"),
        }
    }
    if let Some(models) = models {
        config.models = models;
    }
    Ok(Command::Serve(Box::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> MockConfig {
        match parse_args(args.iter().copied()).unwrap() {
            Command::Serve(config) => *config,
            Command::Help => panic!("help"),
        }
    }

    fn fails(args: &[&str]) -> String {
        parse_args(args.iter().copied()).unwrap_err().to_string()
    }

    #[test]
    fn every_flag() {
        let config = serve(&[
            "--port=9000",
            "--api-key",
            "sk-x",
            "--reply-tokens",
            "64",
            "--latency-ms",
            "5",
            "--jitter-ms=6",
            "--token-interval-ms",
            "7",
            "--fault-rate",
            "0.25",
            "--fault",
            "503",
            "--fault",
            "stall:3",
            "--fault-rate",
            "1",
            "--fault",
            "reset",
            "--seed",
            "9",
            "--model",
            "a",
            "--model",
            "b",
            "--context-window",
            "100",
            "--stall-cap-ms",
            "1000",
        ]);
        assert_eq!(config.port, 9000);
        assert_eq!(config.api_key.as_deref(), Some("sk-x"));
        assert_eq!(config.reply_tokens, 64);
        assert_eq!(config.latency.fixed, Duration::from_millis(5));
        assert_eq!(config.latency.jitter, Duration::from_millis(6));
        assert_eq!(config.token_interval, Duration::from_millis(7));
        assert_eq!(
            config.faults,
            vec![
                FaultRule::new(Fault::ServiceUnavailable, 0.25),
                FaultRule::new(Fault::stall(3), 0.25),
                FaultRule::new(Fault::Reset, 1.0),
            ]
        );
        assert_eq!(config.seed, 9);
        assert_eq!(config.models, ["a", "b"]);
        assert_eq!(config.context_window, Some(100));
        assert_eq!(config.stall_cap, Duration::from_secs(1));
        assert_eq!(serve(&[]).port, 0);
    }

    #[test]
    fn the_usage_names_every_fault() {
        let faults = &USAGE[USAGE.find("Faults:").unwrap()..];
        let listed: Vec<&str> = faults
            .split(|c: char| c.is_whitespace() || "()[".contains(c))
            .map(|word| word.split(':').next().unwrap())
            .collect();
        for name in Fault::NAMES {
            assert!(listed.contains(name), "USAGE does not list `{name}`");
        }
    }

    #[test]
    fn a_redirect_fault_keeps_its_url() {
        let config = serve(&[
            "--fault-rate",
            "1",
            "--fault=redirect:http://localhost:9/v1/chat/completions?x=1",
        ]);
        assert_eq!(
            config.faults[0].fault,
            Fault::Redirect {
                location: "http://localhost:9/v1/chat/completions?x=1".to_owned()
            }
        );
    }

    #[test]
    fn help_and_errors() {
        assert!(matches!(parse_args(["-h"]), Ok(Command::Help)));
        assert!(matches!(
            parse_args(["--port", "1", "--help"]),
            Ok(Command::Help)
        ));
        assert!(fails(&["--bogus"]).contains("unknown flag `--bogus`"));
        assert!(fails(&["stray"]).contains("unexpected argument `stray`"));
        assert!(fails(&["--port"]).contains("`--port` needs a value"));
        assert!(fails(&["--port", "70000"]).contains("at most 65535"));
        assert!(fails(&["--port", "x"]).contains("non-negative integer"));
        assert!(fails(&["--fault", "reset"]).contains("--fault-rate"));
        assert!(fails(&["--fault-rate", "2"]).contains("from 0 to 1"));
        assert!(fails(&["--fault-rate", "0.5", "--fault", "nope"]).contains("unknown fault"));
        assert!(fails(&["--api-key", " "]).contains("empty"));
    }
}

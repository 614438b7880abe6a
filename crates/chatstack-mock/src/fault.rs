//! The faults the mock injects, their names, and their parameters.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The default `Retry-After` of [`Fault::RateLimit`] and [`Fault::RateLimitDate`].
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The default `retry-after-ms` of [`Fault::RateLimitMs`].
pub const DEFAULT_RETRY_AFTER_MS: Duration = Duration::from_millis(500);
/// The default delay of [`Fault::Latency`] and [`Fault::SlowFirstChunk`].
pub const DEFAULT_FAULT_DELAY: Duration = Duration::from_secs(1);
/// The default number of content chunks before [`Fault::Stall`] and [`Fault::MidStreamError`].
pub const DEFAULT_AFTER_CHUNKS: u32 = 2;
/// The default body size of [`Fault::Oversized`]: 32 MiB.
pub const DEFAULT_OVERSIZED_BYTES: u64 = 32 * 1024 * 1024;
/// The default content chunk of [`Fault::InvalidUtf8`] that carries the invalid bytes: the
/// second.
pub const DEFAULT_INVALID_UTF8_CHUNK: u32 = 2;
/// The default interval of [`Fault::Drip`]: 10 ms.
pub const DEFAULT_DRIP_INTERVAL: Duration = Duration::from_millis(10);

/// A fault the mock injects into a chat completion.
///
/// Each fault has a name (its [`Display`](fmt::Display) and [`FromStr`] form), used in the
/// `x-mock-fault` request header and the binary's `--fault` flag. Parameterised faults take an
/// optional argument after a colon (`stall:5`); without one they use the documented default.
///
/// | name | effect |
/// |---|---|
/// | `rate_limit[:SECS]` (or `429`) | 429 `rate_limit_exceeded`, `Retry-After: SECS` (default 1), `x-ratelimit-remaining-*: 0` |
/// | `rate_limit_date[:SECS]` | the same with `Retry-After` as an HTTP date SECS from now |
/// | `rate_limit_ms[:MS]` | the same with `retry-after-ms: MS` (default 500) and no `Retry-After` |
/// | `insufficient_quota` | 429 with the `insufficient_quota` envelope and no `Retry-After` |
/// | `server_error` (or `500`) | 500 `server_error` envelope |
/// | `bad_gateway` (or `502`) | 502 with an HTML body, as a proxy in front of the API sends |
/// | `unavailable` (or `503`) | 503 `server_error` envelope |
/// | `overloaded` (or `529`) | 529 `overloaded_error` envelope; the status line has an empty reason phrase |
/// | `unauthorized` (or `401`) | 401 `invalid_api_key` envelope |
/// | `context_length_exceeded` | 400 `context_length_exceeded` envelope |
/// | `latency:MS` | waits MS (default 1000) before answering, on top of the configured latency |
/// | `slow_first_chunk[:MS]` | a stream sends its headers, then waits MS (default 1000) before the first chunk; a unary reply waits before answering |
/// | `stall[:N]` | a stream sends its role chunk and N content chunks (default 2), then nothing until the stall cap passes, then the connection closes; a unary reply sends its headers and no body |
/// | `mid_stream_error[:N]` | a stream sends N content chunks (default 2), then `data: {"error":{...}}` and ends without `[DONE]`; a unary reply is a 200 whose body is that error envelope |
/// | `reset` | the connection is reset (TCP RST) before any response byte |
/// | `truncated` | a unary body is cut at half its `Content-Length`; a stream is cut after half its content chunks (no `[DONE]`, no final chunk of the chunked encoding); then the connection closes |
/// | `malformed_json` | a 200 with broken JSON (unary), or an event with broken JSON then `[DONE]` (stream) |
/// | `oversized[:BYTES]` | a 200 whose valid JSON body (or single SSE event) is BYTES long (default 32 MiB), streamed without being held in memory |
/// | `no_answer` | the request is read and nothing is sent, not even a status line, until the stall cap passes; then the connection closes (over HTTP/2: the whole connection) |
/// | `wrong_content_type` | a 200 `text/html` sign-in page, as a captive portal or an authenticating proxy sends, for unary and streaming requests alike |
/// | `invalid_utf8[:N]` | a stream whose Nth content chunk (default 2; 0 counts as 1) has the bytes `0xFF 0xFE` inside its JSON string, then goes on normally; a unary body has them inside its content |
/// | `error_in_200` | a 200 whose body is a `server_error` envelope with a `code` (unary), or an event stream whose first event is that envelope, with no `[DONE]` |
/// | `corrupt_gzip` | a 200 with `content-encoding: gzip` whose body is a valid gzip header followed by bytes that are not deflate data, for unary and streaming requests |
/// | `drip[:MS]` | a stream sends its role chunk, then, every MS ms (default 10; 0: as fast as the client reads), alternately a `: keep-alive` comment and a chunk whose content is `""`, never `[DONE]`, until the stall cap passes and the connection drops; a unary reply trickles one space every MS ms the same way |
/// | `redirect:URL` | 307 with `Location: URL` (the whole argument: everything after the first colon, so `redirect:http://127.0.0.1:8080/v1/chat/completions` works); a request already at URL (same host, path and query) is answered as if the fault were not there, so a client that follows the redirect, `x-mock-fault` header and all, gets an answer instead of a loop |
///
/// [`Latency`](Fault::Latency) and [`SlowFirstChunk`](Fault::SlowFirstChunk) add up with any
/// other fault; of the other faults that apply to one request, the first one wins.
///
/// A fault list in the `x-mock-fault` header is comma-separated, so a `redirect` URL there
/// cannot contain a comma.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// 429 `rate_limit_exceeded` with `Retry-After` in whole seconds (rounded up).
    RateLimit {
        /// The wait to advertise.
        retry_after: Duration,
    },
    /// 429 `rate_limit_exceeded` with `Retry-After` as an HTTP date.
    RateLimitDate {
        /// The wait to advertise.
        retry_after: Duration,
    },
    /// 429 `rate_limit_exceeded` with `retry-after-ms`.
    RateLimitMs {
        /// The wait to advertise.
        retry_after: Duration,
    },
    /// 429 `insufficient_quota`: out of credit, not worth retrying.
    InsufficientQuota,
    /// 500 `server_error`.
    ServerError,
    /// 502 with an HTML body.
    BadGateway,
    /// 503 `server_error`.
    ServiceUnavailable,
    /// 529 `overloaded_error`.
    Overloaded,
    /// 401 `invalid_api_key`.
    Unauthorized,
    /// 400 `context_length_exceeded`.
    ContextLengthExceeded,
    /// Extra delay before the response.
    Latency(Duration),
    /// Delay between a stream's headers and its first chunk.
    SlowFirstChunk(Duration),
    /// The stream goes silent after some content chunks.
    Stall {
        /// Content chunks sent before the stall.
        after_chunks: u32,
    },
    /// An error event in the middle of a stream.
    MidStreamError {
        /// Content chunks sent before the error event.
        after_chunks: u32,
    },
    /// A TCP reset before any response byte.
    Reset,
    /// A body shorter than its `Content-Length` (or an unfinished chunked stream).
    Truncated,
    /// A 200 with broken JSON.
    MalformedJson,
    /// A 200 with a very large body.
    Oversized {
        /// The body's size in bytes.
        bytes: u64,
    },
    /// No response at all: not even a status line, until the stall cap closes the connection.
    NoAnswer,
    /// A 200 `text/html` page instead of JSON or an event stream.
    WrongContentType,
    /// Invalid UTF-8 (`0xFF 0xFE`) inside a JSON string.
    InvalidUtf8 {
        /// The content chunk (1-based) that carries it.
        chunk: u32,
    },
    /// A 200 whose body (or first stream event) is an error envelope.
    ErrorIn200,
    /// A 200 that claims `content-encoding: gzip` and is not valid gzip.
    CorruptGzip,
    /// An endless trickle of tiny events (or spaces), until the stall cap.
    Drip {
        /// The time between two events.
        interval: Duration,
    },
    /// A 307 to another URL.
    Redirect {
        /// The `Location` sent.
        location: String,
    },
}

/// How many faults there are: the canonical names are the first entries of [`Fault::NAMES`].
pub(crate) const FAULT_COUNT: usize = 25;

/// The canonical fault names, in [`Fault::index`] order.
pub(crate) const FAULT_NAMES: &[&str] = Fault::NAMES.split_at(FAULT_COUNT).0;

impl Fault {
    /// Every fault name `FromStr` accepts, canonical names first, then aliases.
    pub const NAMES: &'static [&'static str] = &[
        "rate_limit",
        "rate_limit_date",
        "rate_limit_ms",
        "insufficient_quota",
        "server_error",
        "bad_gateway",
        "unavailable",
        "overloaded",
        "unauthorized",
        "context_length_exceeded",
        "latency",
        "slow_first_chunk",
        "stall",
        "mid_stream_error",
        "reset",
        "truncated",
        "malformed_json",
        "oversized",
        "no_answer",
        "wrong_content_type",
        "invalid_utf8",
        "error_in_200",
        "corrupt_gzip",
        "drip",
        "redirect",
        "429",
        "500",
        "502",
        "503",
        "529",
        "401",
    ];

    /// The fault's canonical name, without its argument.
    pub fn name(&self) -> &'static str {
        FAULT_NAMES[self.index()]
    }

    /// A dense index, one per kind of fault, for counters.
    pub(crate) fn index(&self) -> usize {
        match self {
            Self::RateLimit { .. } => 0,
            Self::RateLimitDate { .. } => 1,
            Self::RateLimitMs { .. } => 2,
            Self::InsufficientQuota => 3,
            Self::ServerError => 4,
            Self::BadGateway => 5,
            Self::ServiceUnavailable => 6,
            Self::Overloaded => 7,
            Self::Unauthorized => 8,
            Self::ContextLengthExceeded => 9,
            Self::Latency(_) => 10,
            Self::SlowFirstChunk(_) => 11,
            Self::Stall { .. } => 12,
            Self::MidStreamError { .. } => 13,
            Self::Reset => 14,
            Self::Truncated => 15,
            Self::MalformedJson => 16,
            Self::Oversized { .. } => 17,
            Self::NoAnswer => 18,
            Self::WrongContentType => 19,
            Self::InvalidUtf8 { .. } => 20,
            Self::ErrorIn200 => 21,
            Self::CorruptGzip => 22,
            Self::Drip { .. } => 23,
            Self::Redirect { .. } => 24,
        }
    }

    /// Whether the fault only delays the answer (and so adds up with other faults).
    pub fn is_delay(&self) -> bool {
        matches!(self, Self::Latency(_) | Self::SlowFirstChunk(_))
    }

    /// [`Fault::RateLimit`] with the default one-second `Retry-After`.
    pub fn rate_limit() -> Self {
        Self::RateLimit {
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// [`Fault::Stall`] after `after_chunks` content chunks.
    pub fn stall(after_chunks: u32) -> Self {
        Self::Stall { after_chunks }
    }

    /// [`Fault::MidStreamError`] after `after_chunks` content chunks.
    pub fn mid_stream_error(after_chunks: u32) -> Self {
        Self::MidStreamError { after_chunks }
    }

    /// [`Fault::Oversized`] with a body of `bytes` bytes.
    pub fn oversized(bytes: u64) -> Self {
        Self::Oversized { bytes }
    }

    /// Parses a comma-separated list such as `latency:200, server_error` (the syntax of the
    /// `x-mock-fault` header). Blank items are skipped.
    pub fn parse_list(list: &str) -> Result<Vec<Fault>, ParseFaultError> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl fmt::Display for Fault {
    /// Writes the fault in the form [`FromStr`] reads, argument included (`stall:2`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            Self::RateLimit { retry_after } | Self::RateLimitDate { retry_after } => {
                write!(f, "{name}:{}", ceil_secs(*retry_after))
            }
            Self::RateLimitMs { retry_after } => write!(f, "{name}:{}", retry_after.as_millis()),
            Self::Latency(delay) | Self::SlowFirstChunk(delay) => {
                write!(f, "{name}:{}", delay.as_millis())
            }
            Self::Stall { after_chunks } | Self::MidStreamError { after_chunks } => {
                write!(f, "{name}:{after_chunks}")
            }
            Self::Oversized { bytes } => write!(f, "{name}:{bytes}"),
            Self::InvalidUtf8 { chunk } => write!(f, "{name}:{chunk}"),
            Self::Drip { interval } => write!(f, "{name}:{}", interval.as_millis()),
            Self::Redirect { location } => write!(f, "{name}:{location}"),
            _ => f.write_str(name),
        }
    }
}

/// Whole seconds, rounded up: what a `Retry-After` header can say.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

impl FromStr for Fault {
    type Err = ParseFaultError;

    /// Reads `name` or `name:ARG` (`name=ARG` works too); see [`Fault`] for the names. The
    /// argument is everything after the first `:` or `=`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (name, arg) = match text.split_once([':', '=']) {
            Some((name, arg)) => (name.trim(), Some(arg.trim())),
            None => (text, None),
        };
        let number = |default: u64| -> Result<u64, ParseFaultError> {
            match arg {
                None => Ok(default),
                Some(arg) => arg.parse::<u64>().map_err(|_| ParseFaultError {
                    message: format!(
                        "fault `{name}` takes a non-negative integer argument, not `{arg}`"
                    ),
                }),
            }
        };
        let no_arg = |fault: Fault| match arg {
            None => Ok(fault),
            Some(arg) => Err(ParseFaultError {
                message: format!("fault `{name}` takes no argument (got `{arg}`)"),
            }),
        };
        let secs = |default: Duration| number(default.as_secs()).map(Duration::from_secs);
        let millis =
            |default: Duration| number(default.as_millis() as u64).map(Duration::from_millis);
        let chunks = || {
            number(u64::from(DEFAULT_AFTER_CHUNKS)).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        match name.to_ascii_lowercase().as_str() {
            "rate_limit" | "429" => Ok(Self::RateLimit {
                retry_after: secs(DEFAULT_RETRY_AFTER)?,
            }),
            "rate_limit_date" => Ok(Self::RateLimitDate {
                retry_after: secs(DEFAULT_RETRY_AFTER)?,
            }),
            "rate_limit_ms" => Ok(Self::RateLimitMs {
                retry_after: millis(DEFAULT_RETRY_AFTER_MS)?,
            }),
            "insufficient_quota" => no_arg(Self::InsufficientQuota),
            "server_error" | "500" => no_arg(Self::ServerError),
            "bad_gateway" | "502" => no_arg(Self::BadGateway),
            "unavailable" | "503" => no_arg(Self::ServiceUnavailable),
            "overloaded" | "529" => no_arg(Self::Overloaded),
            "unauthorized" | "401" => no_arg(Self::Unauthorized),
            "context_length_exceeded" => no_arg(Self::ContextLengthExceeded),
            "latency" => Ok(Self::Latency(millis(DEFAULT_FAULT_DELAY)?)),
            "slow_first_chunk" => Ok(Self::SlowFirstChunk(millis(DEFAULT_FAULT_DELAY)?)),
            "stall" => Ok(Self::Stall {
                after_chunks: chunks()?,
            }),
            "mid_stream_error" => Ok(Self::MidStreamError {
                after_chunks: chunks()?,
            }),
            "reset" => no_arg(Self::Reset),
            "truncated" => no_arg(Self::Truncated),
            "malformed_json" => no_arg(Self::MalformedJson),
            "oversized" => Ok(Self::Oversized {
                bytes: number(DEFAULT_OVERSIZED_BYTES)?,
            }),
            "no_answer" => no_arg(Self::NoAnswer),
            "wrong_content_type" => no_arg(Self::WrongContentType),
            "invalid_utf8" => Ok(Self::InvalidUtf8 {
                chunk: number(u64::from(DEFAULT_INVALID_UTF8_CHUNK))
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))?,
            }),
            "error_in_200" => no_arg(Self::ErrorIn200),
            "corrupt_gzip" => no_arg(Self::CorruptGzip),
            "drip" => Ok(Self::Drip {
                interval: millis(DEFAULT_DRIP_INTERVAL)?,
            }),
            "redirect" => match arg {
                Some(location)
                    if !location.is_empty() && http::HeaderValue::from_str(location).is_ok() =>
                {
                    Ok(Self::Redirect {
                        location: location.to_owned(),
                    })
                }
                Some(location) => Err(ParseFaultError {
                    message: format!(
                        "fault `redirect` needs a URL that can be a header value, not `{location}`"
                    ),
                }),
                None => Err(ParseFaultError {
                    message: "fault `redirect` needs a URL: `redirect:URL`".to_owned(),
                }),
            },
            _ => Err(ParseFaultError {
                message: format!(
                    "unknown fault `{name}` (known: {})",
                    Fault::NAMES.join(", ")
                ),
            }),
        }
    }
}

/// A fault name or argument that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFaultError {
    message: String,
}

impl fmt::Display for ParseFaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseFaultError {}

/// A fault the server injects on its own, with a probability.
///
/// Each chat completion that passes the key check and parses draws one number per rule, in
/// rule order, from the server's seeded RNG; the rule applies when its draw is below
/// `probability`. So a given seed and a given order of requests always inject the same faults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FaultRule {
    /// The fault.
    pub fault: Fault,
    /// The chance, 0 to 1, that a request gets it.
    pub probability: f64,
}

impl FaultRule {
    /// A rule; `probability` is clamped to 0..=1 (NaN counts as 0).
    pub fn new(fault: Fault, probability: f64) -> Self {
        let probability = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        Self { fault, probability }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_and_round_trips() {
        for name in Fault::NAMES {
            // The one fault without a default argument.
            let name = if *name == "redirect" {
                "redirect:http://127.0.0.1:1/v1"
            } else {
                name
            };
            let fault: Fault = name.parse().unwrap();
            let again: Fault = fault.to_string().parse().unwrap();
            assert_eq!(fault, again, "{name}");
        }
        for (index, name) in FAULT_NAMES.iter().enumerate() {
            let fault: Fault = match *name {
                "redirect" => format!("{name}:/elsewhere").parse().unwrap(),
                _ => name.parse().unwrap(),
            };
            assert_eq!(fault.index(), index);
            assert_eq!(fault.name(), *name);
        }
    }

    #[test]
    fn arguments_and_defaults() {
        assert_eq!("stall".parse::<Fault>().unwrap(), Fault::stall(2));
        assert_eq!("stall:7".parse::<Fault>().unwrap(), Fault::stall(7));
        assert_eq!("STALL = 7".parse::<Fault>().unwrap(), Fault::stall(7));
        assert_eq!(
            "rate_limit_ms:250".parse::<Fault>().unwrap(),
            Fault::RateLimitMs {
                retry_after: Duration::from_millis(250)
            }
        );
        assert_eq!(
            "429".parse::<Fault>().unwrap(),
            Fault::RateLimit {
                retry_after: Duration::from_secs(1)
            }
        );
        assert_eq!(
            "oversized".parse::<Fault>().unwrap(),
            Fault::oversized(32 << 20)
        );
        assert_eq!(
            Fault::RateLimit {
                retry_after: Duration::from_millis(1500)
            }
            .to_string(),
            "rate_limit:2"
        );
        assert_eq!(
            "invalid_utf8".parse::<Fault>().unwrap(),
            Fault::InvalidUtf8 { chunk: 2 }
        );
        assert_eq!(
            "drip".parse::<Fault>().unwrap(),
            Fault::Drip {
                interval: Duration::from_millis(10)
            }
        );
        assert_eq!(
            "drip:0".parse::<Fault>().unwrap().to_string(),
            "drip:0",
            "0 is a valid interval"
        );
    }

    #[test]
    fn a_redirect_takes_the_whole_url() {
        let url = "http://127.0.0.2:8080/v1/chat/completions?a=b:c";
        let fault: Fault = format!("redirect:{url}").parse().unwrap();
        assert_eq!(
            fault,
            Fault::Redirect {
                location: url.to_owned()
            }
        );
        assert_eq!(fault.to_string(), format!("redirect:{url}"));
        assert_eq!(fault.name(), "redirect");
        let error = "redirect".parse::<Fault>().unwrap_err().to_string();
        assert!(error.contains("needs a URL"), "{error}");
        assert!("redirect:".parse::<Fault>().is_err());
        assert!("redirect:http://a/\u{7f}".parse::<Fault>().is_err());
    }

    #[test]
    fn bad_names_and_arguments_are_errors() {
        let error = "bogus".parse::<Fault>().unwrap_err().to_string();
        assert!(error.contains("unknown fault `bogus`"), "{error}");
        assert!(error.contains("rate_limit"), "{error}");
        assert!("stall:-1".parse::<Fault>().is_err());
        assert!("reset:3".parse::<Fault>().is_err());
        assert!("no_answer:1".parse::<Fault>().is_err());
        assert!("drip:fast".parse::<Fault>().is_err());
        assert!("latency:soon".parse::<Fault>().is_err());
    }

    #[test]
    fn lists() {
        assert_eq!(
            Fault::parse_list(" latency:5 ,, 500 ").unwrap(),
            vec![Fault::Latency(Duration::from_millis(5)), Fault::ServerError]
        );
        assert!(Fault::parse_list("").unwrap().is_empty());
        assert!(Fault::parse_list("reset, nope").is_err());
    }

    #[test]
    fn rule_probability_is_clamped() {
        assert_eq!(FaultRule::new(Fault::Reset, 2.0).probability, 1.0);
        assert_eq!(FaultRule::new(Fault::Reset, -1.0).probability, 0.0);
        assert_eq!(FaultRule::new(Fault::Reset, f64::NAN).probability, 0.0);
    }
}

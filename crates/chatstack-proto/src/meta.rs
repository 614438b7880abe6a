//! Data that travels beside a request or a response but is not part of the JSON body.

use std::time::{Duration, Instant, SystemTime};

use http::{Extensions, HeaderMap, StatusCode};

/// Per-request data that is not body: extra headers, a cost tag, a deadline, an id, and
/// typed extensions for layers.
///
/// Serde skips it, so it never reaches the wire as JSON; the transport sends
/// [`headers`](Self::headers) as HTTP headers.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// Extra HTTP headers for this request only.
    pub headers: HeaderMap,
    /// A tag that cost accounting attributes this request's spend to (a user, a team, a job).
    pub tag: Option<String>,
    /// When the caller stops caring: layers that wait (rate limit, retry backoff) fail fast
    /// rather than wait past it. Under tokio's paused clock, derive it from
    /// `tokio::time::Instant::now()` so it moves with the paused clock.
    pub deadline: Option<Instant>,
    /// An id the caller knows the request by, such as a batch `custom_id`.
    pub id: Option<String>,
    /// Typed values layers attach to the request.
    pub extensions: Extensions,
}

impl PartialEq for RequestMeta {
    /// Compares everything but the extensions, which are not comparable.
    fn eq(&self, other: &Self) -> bool {
        self.headers == other.headers
            && self.tag == other.tag
            && self.deadline == other.deadline
            && self.id == other.id
    }
}

/// What the transport and the layers learned about an exchange, beside the body.
#[derive(Debug, Clone, Default)]
pub struct ResponseMeta {
    /// The HTTP status of the (last) attempt.
    pub status: StatusCode,
    /// The provider's request id (`x-request-id`), for support tickets.
    pub request_id: Option<String>,
    /// The `x-ratelimit-*` headers of the response.
    pub rate_limit: RateLimitSnapshot,
    /// How many attempts the request took (1 without retries).
    pub attempts: u32,
    /// Time from sending the request to the complete response (for a stream: to its headers).
    pub latency: Duration,
    /// Typed values layers attach to the response (cost, which fallback answered, ...).
    pub extensions: Extensions,
}

/// The provider's rate-limit state, from the `x-ratelimit-*` response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitSnapshot {
    /// `x-ratelimit-limit-requests`.
    pub limit_requests: Option<u64>,
    /// `x-ratelimit-limit-tokens`.
    pub limit_tokens: Option<u64>,
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-requests`: time until the request quota is full again.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-reset-tokens`: time until the token quota is full again.
    pub reset_tokens: Option<Duration>,
}

impl RateLimitSnapshot {
    /// Reads the snapshot from response headers; absent or malformed headers are `None`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let number = |name: &str| {
            header_str(headers, name).and_then(|v| v.trim().parse::<f64>().ok().map(|f| f as u64))
        };
        let reset = |name: &str| header_str(headers, name).and_then(parse_reset_duration);
        Self {
            limit_requests: number("x-ratelimit-limit-requests"),
            limit_tokens: number("x-ratelimit-limit-tokens"),
            remaining_requests: number("x-ratelimit-remaining-requests"),
            remaining_tokens: number("x-ratelimit-remaining-tokens"),
            reset_requests: reset("x-ratelimit-reset-requests"),
            reset_tokens: reset("x-ratelimit-reset-tokens"),
        }
    }

    /// Whether any of the headers was present.
    pub fn is_present(&self) -> bool {
        *self != Self::default()
    }
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

/// Parses the duration format of OpenAI's `x-ratelimit-reset-*` headers: `1s`, `6m0s`,
/// `59.999s`, `20ms`, `1h2m3s`; a bare number is seconds.
///
/// ```
/// use std::time::Duration;
/// use chatstack_proto::parse_reset_duration;
///
/// assert_eq!(parse_reset_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_reset_duration("20ms"), Some(Duration::from_millis(20)));
/// assert_eq!(parse_reset_duration("1.5"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_reset_duration("soon"), None);
/// ```
pub fn parse_reset_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// The wait a server asks for, from `retry-after-ms` (milliseconds, fractional allowed) or
/// `retry-after` (seconds, fractional allowed, or an HTTP date relative to `now`).
/// `retry-after-ms` wins when both are present, as in the OpenAI SDKs.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use chatstack_proto::retry_after;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "2.5".parse().unwrap());
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_millis(2500)));
/// headers.insert("retry-after-ms", "120".parse().unwrap());
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_millis(120)));
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = header_str(headers, "retry-after")?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads `x-should-retry`: `Some(true)` for `true`, `Some(false)` for `false`, else `None`.
pub fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match header_str(headers, "x-should-retry")?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Reads the provider's request id (`x-request-id`, or `request-id` as Anthropic sends it).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    header_str(headers, "x-request-id")
        .or_else(|| header_str(headers, "request-id"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn reset_durations_in_openai_format() {
        assert_eq!(parse_reset_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_reset_duration("59.999s"),
            Some(Duration::from_millis(59_999))
        );
        assert_eq!(
            parse_reset_duration("1h2m3s"),
            Some(Duration::from_secs(3723))
        );
        assert_eq!(parse_reset_duration("6m"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset_duration("ms"), None);
        assert_eq!(parse_reset_duration("5x"), None);
        assert_eq!(parse_reset_duration("-1"), None);
        assert_eq!(parse_reset_duration(""), None);
    }

    #[test]
    fn rate_limit_snapshot_reads_all_headers() {
        let snapshot = RateLimitSnapshot::from_headers(&headers(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-remaining-tokens", "29900"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-reset-tokens", "2m0s"),
        ]));
        assert_eq!(snapshot.limit_requests, Some(500));
        assert_eq!(snapshot.remaining_tokens, Some(29_900));
        assert_eq!(snapshot.reset_requests, Some(Duration::from_millis(120)));
        assert_eq!(snapshot.reset_tokens, Some(Duration::from_secs(120)));
        assert!(snapshot.is_present());
        assert!(!RateLimitSnapshot::from_headers(&HeaderMap::new()).is_present());
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500.5")]), now),
            Some(Duration::from_micros(1_500_500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        let mut map = HeaderMap::new();
        map.insert("retry-after", date.parse().unwrap());
        assert_eq!(retry_after(&map, now), Some(Duration::from_secs(7)));
        // A date in the past means "now".
        assert_eq!(
            retry_after(&map, now + Duration::from_secs(60)),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn should_retry_header() {
        assert_eq!(
            should_retry(&headers(&[("x-should-retry", "true")])),
            Some(true)
        );
        assert_eq!(
            should_retry(&headers(&[("x-should-retry", "false")])),
            Some(false)
        );
        assert_eq!(should_retry(&headers(&[("x-should-retry", "maybe")])), None);
    }
}

//! Data that travels beside a request or a response but is not part of the JSON body.

use std::time::{Duration, Instant, SystemTime};

use http::header::{AsHeaderName, RETRY_AFTER};
use http::{Extensions, HeaderMap, HeaderName, StatusCode};

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
        let count = |name: &HeaderName| header_str(headers, name).and_then(parse_count);
        let reset = |name: &HeaderName| header_str(headers, name).and_then(parse_reset_duration);
        Self {
            limit_requests: count(&names::LIMIT_REQUESTS),
            limit_tokens: count(&names::LIMIT_TOKENS),
            remaining_requests: count(&names::REMAINING_REQUESTS),
            remaining_tokens: count(&names::REMAINING_TOKENS),
            reset_requests: reset(&names::RESET_REQUESTS),
            reset_tokens: reset(&names::RESET_TOKENS),
        }
    }

    /// Whether any of the headers was present.
    pub fn is_present(&self) -> bool {
        *self != Self::default()
    }
}

/// The names of the response headers read here, built once: a lookup by a `&str` would
/// parse and validate the name on every response.
mod names {
    use http::HeaderName;

    pub(super) static LIMIT_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-limit-requests");
    pub(super) static LIMIT_TOKENS: HeaderName =
        HeaderName::from_static("x-ratelimit-limit-tokens");
    pub(super) static REMAINING_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining-requests");
    pub(super) static REMAINING_TOKENS: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining-tokens");
    pub(super) static RESET_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-reset-requests");
    pub(super) static RESET_TOKENS: HeaderName =
        HeaderName::from_static("x-ratelimit-reset-tokens");
    pub(super) static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
    pub(super) static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
    pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub(super) static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
}

pub(crate) fn header_str(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name)?.to_str().ok()
}

/// A count from an `x-ratelimit-*` header: an integer or, as some servers send, a decimal
/// or exponent form (truncated); `None` for anything else, a negative count included.
fn parse_count(text: &str) -> Option<u64> {
    // A header value is visible ASCII (`to_str` checked it): only ASCII space to trim.
    let text = text.trim_ascii();
    text.parse::<u64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|count| count.is_finite() && *count >= 0.0)
            // Saturating: a count past u64::MAX is u64::MAX.
            .map(|count| count as u64)
    })
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Parses the duration format of OpenAI's `x-ratelimit-reset-*` headers: `1s`, `6m0s`,
/// `59.999s`, `20ms`, `1h2m3s`; a bare number is seconds. Decimal parts are exact to the
/// nanosecond (no float rounding); a duration past what [`Duration`] holds is `None`.
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
    if text
        .bytes()
        .all(|byte| byte.is_ascii_digit() || byte == b'.')
    {
        return duration_of_nanos(scaled(text, NANOS_PER_SECOND)?);
    }
    if let Ok(seconds) = text.parse::<f64>() {
        // A bare number in exponent form (`1e3`).
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let mut nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos = match unit {
            "h" => 3_600 * NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "s" => NANOS_PER_SECOND,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        nanos = nanos.checked_add(scaled(number, unit_nanos)?)?;
        rest = after;
    }
    duration_of_nanos(nanos)
}

/// `number` (ASCII digits with at most one `.`) times `unit_nanos`, in whole nanoseconds
/// (what falls below a nanosecond is dropped); `None` when it is not such a number or the
/// product overflows.
fn scaled(number: &str, unit_nanos: u128) -> Option<u128> {
    /// Decimals read: past 18, a digit is worth under 10⁻¹⁸ of a unit, and no unit is
    /// 10¹⁸ ns long, so it cannot reach a nanosecond; 10¹⁸ · 3.6·10¹² ns stays far inside
    /// a `u128`.
    const MAX_DECIMALS: usize = 18;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let digits = |text: &str| {
        text.bytes().try_fold(0_u128, |value, digit| {
            value.checked_mul(10)?.checked_add(u128::from(digit - b'0'))
        })
    };
    let fraction = &fraction[..fraction.len().min(MAX_DECIMALS)];
    let decimals = 10_u128.pow(u32::try_from(fraction.len()).ok()?);
    let whole_nanos = digits(whole)?.checked_mul(unit_nanos)?;
    let fraction_nanos = digits(fraction)?.checked_mul(unit_nanos)? / decimals;
    whole_nanos.checked_add(fraction_nanos)
}

/// A duration of `nanos` nanoseconds, if a [`Duration`] holds it.
fn duration_of_nanos(nanos: u128) -> Option<Duration> {
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).ok()?;
    // The remainder is below 10^9, so it fits.
    let subsec = u32::try_from(nanos % NANOS_PER_SECOND).ok()?;
    Some(Duration::new(seconds, subsec))
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
    if let Some(ms) = header_str(headers, &names::RETRY_AFTER_MS)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = header_str(headers, RETRY_AFTER)?.trim();
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
    match header_str(headers, &names::SHOULD_RETRY)?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Reads the provider's request id (`x-request-id`, or `request-id` as Anthropic sends it).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    header_str(headers, &names::X_REQUEST_ID)
        .or_else(|| header_str(headers, &names::REQUEST_ID))
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
    fn reset_durations_are_exact_and_refuse_what_is_not_a_duration() {
        assert_eq!(parse_reset_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_reset_duration("1h0m0.5s"),
            Some(Duration::from_millis(3_600_500))
        );
        assert_eq!(
            parse_reset_duration("0.000000001s"),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(
            parse_reset_duration("0.1ms"),
            Some(Duration::from_micros(100))
        );
        assert_eq!(parse_reset_duration("7µs"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_reset_duration("7us3ns"),
            Some(Duration::from_nanos(7_003))
        );
        // Decimals of long units are exact too: 0.000000000009 h is 32.4 ns.
        assert_eq!(
            parse_reset_duration("0.000000000009h"),
            Some(Duration::from_nanos(32))
        );
        assert_eq!(
            parse_reset_duration("0.00000000099m"),
            Some(Duration::from_nanos(59))
        );
        assert_eq!(
            parse_reset_duration("1.0000000000000000000000000001s"),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            parse_reset_duration(" 250ms "),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_reset_duration("1."), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_reset_duration(".5s"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_reset_duration("1e3"), Some(Duration::from_secs(1000)));
        assert_eq!(
            parse_reset_duration("0.1"),
            Some(Duration::from_millis(100))
        );
        for junk in [
            "1.2.3s", ".s", "s", "1s2", "1 s", "NaN", "inf", "-1s", "1m-1s", "+1s",
        ] {
            assert_eq!(parse_reset_duration(junk), None, "{junk}");
        }
        // Past what a `Duration` holds: refused, never wrapped.
        assert_eq!(parse_reset_duration("99999999999999999999999h"), None);
        assert_eq!(parse_reset_duration("18446744073709551615h"), None);
        assert_eq!(
            parse_reset_duration("18446744073709551615s"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn rate_limit_counts_accept_integers_and_decimal_forms() {
        let snapshot = RateLimitSnapshot::from_headers(&headers(&[
            ("x-ratelimit-limit-requests", " 10000 "),
            ("x-ratelimit-limit-tokens", "2e6"),
            ("x-ratelimit-remaining-requests", "9999.0"),
            ("x-ratelimit-remaining-tokens", "lots"),
        ]));
        assert_eq!(snapshot.limit_requests, Some(10_000));
        assert_eq!(snapshot.limit_tokens, Some(2_000_000));
        assert_eq!(snapshot.remaining_requests, Some(9_999));
        assert_eq!(snapshot.remaining_tokens, None);
        assert_eq!(snapshot.reset_requests, None);
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count("1e400"), None);
        assert_eq!(parse_count("1e30"), Some(u64::MAX));
    }

    proptest::proptest! {
        /// The exact parser agrees with summing each part as a float, to within the float's
        /// own rounding.
        #[test]
        fn reset_durations_agree_with_float_arithmetic(
            parts in proptest::collection::vec(
                (0u32..100_000, proptest::option::of(0u32..1_000_000), 0usize..6),
                1..4,
            )
        ) {
            const UNITS: [(&str, f64); 6] =
                [("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)];
            let mut text = String::new();
            let mut seconds = 0.0_f64;
            for (whole, fraction, unit) in parts {
                let number = match fraction {
                    Some(fraction) => format!("{whole}.{fraction:06}"),
                    None => whole.to_string(),
                };
                seconds += number.parse::<f64>().unwrap() * UNITS[unit].1;
                text.push_str(&number);
                text.push_str(UNITS[unit].0);
            }
            let parsed = parse_reset_duration(&text).unwrap().as_secs_f64();
            proptest::prop_assert!(
                (parsed - seconds).abs() <= seconds * 1e-12 + 2e-9,
                "{text}: {parsed} against {seconds}"
            );
        }
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

//! [`RetryStopped`]: the mark on an error the retry layer did not retry because of the wait.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use chatstack_proto::Error;

/// Why a retryable error was given back at once, without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The server asked (`retry-after` or `retry-after-ms`) for a wait longer than the
    /// configured cap.
    RetryAfterAboveCap {
        /// The configured [`retry_after_cap`](super::RetryLayer::retry_after_cap).
        cap: Duration,
    },
    /// The wait would pass the request's deadline or the layer's total deadline.
    PastDeadline {
        /// The time left before the deadline.
        left: Duration,
    },
}

/// The mark on an error that the retry layer would have retried, but not after the wait it
/// had to make: a `retry-after` above the cap, or a wait past a deadline.
///
/// The error returned is the last attempt's, with everything it carried (kind, status,
/// provider envelope, request id, `retry-after`, `x-should-retry`, rate-limit snapshot,
/// body); its message adds why it was not retried, and its
/// [`source`](std::error::Error::source) is this mark, whose own source is the error's
/// previous cause. Find it with [`RetryStopped::find`]:
///
/// ```
/// use std::time::Duration;
/// use chatstack_middleware::retry::{RetryStopped, StopReason};
/// # fn check(error: &chatstack_middleware::Error) {
/// if let Some(stopped) = RetryStopped::find(error) {
///     if let StopReason::RetryAfterAboveCap { cap } = stopped.reason() {
///         println!("the server asked for {:?}, more than {cap:?}", stopped.wait());
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct RetryStopped {
    reason: StopReason,
    wait: Duration,
    cause: Option<Box<dyn StdError + Send + Sync>>,
}

impl RetryStopped {
    /// The mark on `error`, if the retry layer stopped because of the wait.
    pub fn find(error: &Error) -> Option<&RetryStopped> {
        StdError::source(error)?.downcast_ref()
    }

    /// Why the error was not retried.
    pub fn reason(&self) -> StopReason {
        self.reason
    }

    /// The wait that was refused.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// `error`, with its message extended by why it was not retried, and marked.
    pub(crate) fn mark(error: Error, reason: StopReason, wait: Duration) -> Error {
        let note = format!(
            "not retried: {}",
            Self {
                reason,
                wait,
                cause: None
            }
        );
        error.with_context(&note, |cause| Self {
            reason,
            wait,
            cause,
        })
    }
}

impl fmt::Display for RetryStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            StopReason::RetryAfterAboveCap { cap } => write!(
                f,
                "the server asked to wait {:?}, more than the retry-after cap of {cap:?}",
                self.wait
            ),
            StopReason::PastDeadline { left } => write!(
                f,
                "waiting {:?} would pass the deadline ({left:?} left)",
                self.wait
            ),
        }
    }
}

impl StdError for RetryStopped {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    #[test]
    fn the_mark_keeps_what_the_original_carried() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("retry-after", "120"),
            ("x-should-retry", "true"),
            ("x-request-id", "req_1"),
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        let body =
            br#"{"error":{"message":"Slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
        let original =
            Error::from_response(StatusCode::TOO_MANY_REQUESTS, &headers, body).with_attempts(2);
        let cap = Duration::from_secs(60);
        let marked = RetryStopped::mark(
            original,
            StopReason::RetryAfterAboveCap { cap },
            Duration::from_secs(120),
        );
        assert_eq!(marked.kind(), chatstack_proto::ErrorKind::RateLimited);
        assert_eq!(marked.status(), Some(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(marked.request_id(), Some("req_1"));
        assert_eq!(marked.retry_after(), Some(Duration::from_secs(120)));
        assert_eq!(marked.should_retry_header(), Some(true));
        assert_eq!(marked.attempts(), 2);
        assert_eq!(marked.provider().unwrap().message, "Slow down");
        let stopped = RetryStopped::find(&marked).expect("marked");
        assert_eq!(
            marked.rate_limit().reset_requests,
            Some(Duration::from_millis(120))
        );
        assert_eq!(stopped.reason(), StopReason::RetryAfterAboveCap { cap });
        assert!(marked.message().starts_with("Slow down; not retried:"));
        assert!(
            marked
                .to_string()
                .contains("more than the retry-after cap of 60s")
        );
    }

    #[test]
    fn an_unmarked_error_has_no_mark() {
        let error = Error::new(chatstack_proto::ErrorKind::Connection, "refused");
        assert!(RetryStopped::find(&error).is_none());
    }
}

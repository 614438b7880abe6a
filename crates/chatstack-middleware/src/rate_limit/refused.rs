//! [`RateLimitRefused`]: the mark on the error of a request the rate limiter would not wait
//! for.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chatstack_proto::{Error, ErrorKind};

/// Why the rate limiter refused a request rather than make it wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The request needs more tokens than the whole token quota admits in a minute: no
    /// wait would ever let it through. (A request larger than the quota's burst but within
    /// the quota waits for its turn instead.) The error has no `retry_after`.
    TooLarge {
        /// The tokens the request would be charged (prompt plus output cap).
        tokens: u64,
        /// The token quota: the most tokens any 60-second window admits
        /// ([`Quota::limit`](super::Quota::limit)).
        limit: u32,
    },
    /// The wait for the quota (or for a pause the provider asked for) would pass the
    /// request's [`deadline`](chatstack_proto::RequestMeta::deadline). The error's
    /// `retry_after` is `wait`.
    PastDeadline {
        /// The shortest wait the request faced (for a request behind others in the queue,
        /// a lower bound).
        wait: Duration,
        /// The time that was left before the deadline.
        left: Duration,
    },
}

/// The mark on an [`Error`] of kind [`ErrorKind::RateLimitWait`]: the rate limiter refused a
/// request at once instead of making it wait, and says why.
///
/// The error's message names the key and the reason; its [`source`](StdError::source) is
/// this mark. Find it with [`RateLimitRefused::find`]:
///
/// ```
/// use chatstack_middleware::rate_limit::{RateLimitRefused, RefusalReason};
/// # fn check(error: &chatstack_middleware::Error) {
/// if let Some(refused) = RateLimitRefused::find(error) {
///     match refused.reason() {
///         RefusalReason::TooLarge { tokens, limit } => {
///             eprintln!("{tokens} tokens can never pass a quota of {limit} a minute: split it");
///         }
///         RefusalReason::PastDeadline { wait, .. } => eprintln!("would have waited {wait:?}"),
///         _ => {}
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitRefused {
    key: Arc<str>,
    reason: RefusalReason,
}

impl RateLimitRefused {
    /// The mark on `error`, if the rate limiter refused the request.
    pub fn find(error: &Error) -> Option<&RateLimitRefused> {
        StdError::source(error)?.downcast_ref()
    }

    /// The key of the limiter that refused (by default, the model).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Why it refused.
    pub fn reason(&self) -> RefusalReason {
        self.reason
    }

    /// The error for a refusal.
    pub(crate) fn error(key: Arc<str>, reason: RefusalReason) -> Error {
        let mark = Self { key, reason };
        let error = Error::new(ErrorKind::RateLimitWait, mark.to_string());
        let error = match reason {
            RefusalReason::PastDeadline { wait, .. } => error.with_retry_after(wait),
            RefusalReason::TooLarge { .. } => error,
        };
        error.with_source(mark)
    }
}

impl fmt::Display for RateLimitRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            RefusalReason::TooLarge { tokens, limit } => write!(
                f,
                "rate limit `{}`: the request needs {tokens} tokens, more than the token quota \
                 of {limit} a minute, so it can never pass (raise the token quota, or lower \
                 the request's max tokens)",
                self.key
            ),
            RefusalReason::PastDeadline { wait, left } => write!(
                f,
                "rate limit `{}`: waiting {wait:?} would pass the request's deadline ({left:?} \
                 left)",
                self.key
            ),
        }
    }
}

impl StdError for RateLimitRefused {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_message_and_mark() {
        let too_large = RateLimitRefused::error(
            Arc::from("gpt-4.1"),
            RefusalReason::TooLarge {
                tokens: 5000,
                limit: 3000,
            },
        );
        assert_eq!(too_large.kind(), ErrorKind::RateLimitWait);
        assert_eq!(too_large.retry_after(), None);
        assert!(
            too_large.to_string().contains("can never pass"),
            "{too_large}"
        );
        assert!(
            too_large
                .to_string()
                .contains("token quota of 3000 a minute"),
            "{too_large}"
        );
        let mark = RateLimitRefused::find(&too_large).unwrap();
        assert_eq!(mark.key(), "gpt-4.1");

        let wait = Duration::from_secs(12);
        let late = RateLimitRefused::error(
            Arc::from("gpt-4.1"),
            RefusalReason::PastDeadline {
                wait,
                left: Duration::from_secs(3),
            },
        );
        assert_eq!(late.retry_after(), Some(wait));
        assert!(late.to_string().contains("deadline"), "{late}");
        assert!(!late.is_retryable(), "the caller's deadline does not move");
        assert!(matches!(
            RateLimitRefused::find(&late).unwrap().reason(),
            RefusalReason::PastDeadline { .. }
        ));
        assert!(RateLimitRefused::find(&Error::new(ErrorKind::Server, "x")).is_none());
    }
}

//! [`Outage`]: what a layer does while its Redis is unreachable, and
//! [`RedisUnavailable`], the mark on the error when it fails closed.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use chatstack_proto::{Error, ErrorKind};

/// What a shared [rate limiter](super::RedisLimiter) or [budget](super::RedisBudget) does
/// when Redis cannot be reached (or does not answer within the
/// [timeout](super::RedisOptions::timeout)).
///
/// Whatever the policy, nothing settled is lost: costs, releases and corrections wait in the
/// process's queue and reach Redis when it returns (see
/// [`RedisConnection`](super::RedisConnection)).
///
/// ```
/// use chatstack_middleware::redis::Outage;
///
/// // Ten replicas, each allowed a tenth of the quota on its own while Redis is down.
/// let outage = Outage::FailOpen { local_share: 0.1 };
/// assert_ne!(outage, Outage::default());
/// assert_eq!(Outage::default(), Outage::FailClosed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Outage {
    /// Refuse: the request fails at once with an error of kind
    /// [`ErrorKind::BackendUnavailable`] (not retryable) whose source is a
    /// [`RedisUnavailable`]. Nothing is sent that the shared limits have not admitted.
    #[default]
    FailClosed,
    /// Go on alone: each process falls back to an in-process limiter (or budget) holding
    /// `local_share` of the shared quota (of what was left of the budget when Redis was last
    /// seen). Give each of `n` replicas at most `1/n`, so that together they stay within the
    /// quota. The local share starts empty at each outage, so that the switch adds no burst.
    /// Clamped to `0..=1`; NaN is 0.
    FailOpen {
        /// The share of the quota (or of the budget left) this process may use on its own.
        local_share: f64,
    },
}

impl Outage {
    /// The local share, clamped; `None` when failing closed.
    pub(crate) fn local_share(self) -> Option<f64> {
        match self {
            Self::FailClosed => None,
            Self::FailOpen { local_share } if local_share.is_nan() => Some(0.0),
            Self::FailOpen { local_share } => Some(local_share.clamp(0.0, 1.0)),
        }
    }
}

/// The mark on an [`Error`] of kind [`ErrorKind::BackendUnavailable`]: a layer that keeps its
/// state in Redis could not reach it, and fails closed ([`Outage::FailClosed`]).
///
/// ```
/// use chatstack_middleware::redis::RedisUnavailable;
/// # fn check(error: &chatstack_middleware::Error) {
/// if let Some(unavailable) = RedisUnavailable::find(error) {
///     eprintln!("the shared {} `{}` is unreachable: {}", unavailable.layer(), unavailable.name(), unavailable.cause());
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisUnavailable {
    layer: &'static str,
    name: Arc<str>,
    cause: String,
}

impl RedisUnavailable {
    /// The mark on `error`, if a layer failed closed because Redis was unreachable.
    pub fn find(error: &Error) -> Option<&RedisUnavailable> {
        StdError::source(error)?.downcast_ref()
    }

    /// Which layer: `rate limit` or `budget`.
    pub fn layer(&self) -> &str {
        self.layer
    }

    /// The name of the shared state: the rate limiter's key, or the budget's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What went wrong: the client's error, a timeout, or that Redis counted as down.
    pub fn cause(&self) -> &str {
        &self.cause
    }

    pub(crate) fn error(layer: &'static str, name: Arc<str>, cause: String) -> Error {
        let mark = Self { layer, name, cause };
        Error::new(ErrorKind::BackendUnavailable, mark.to_string()).with_source(mark)
    }
}

impl fmt::Display for RedisUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shared {} `{}`: Redis is unreachable and the layer fails closed ({})",
            self.layer, self.name, self.cause
        )
    }
}

impl StdError for RedisUnavailable {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_is_typed_and_not_retryable() {
        let error = RedisUnavailable::error(
            "rate limit",
            Arc::from("gpt-4.1"),
            "connection refused".into(),
        );
        assert_eq!(error.kind(), ErrorKind::BackendUnavailable);
        assert!(!error.is_retryable());
        let mark = RedisUnavailable::find(&error).unwrap();
        assert_eq!((mark.layer(), mark.name()), ("rate limit", "gpt-4.1"));
        assert!(error.to_string().contains("connection refused"), "{error}");
    }

    #[test]
    fn shares_are_clamped() {
        assert_eq!(Outage::FailClosed.local_share(), None);
        let share = |local_share| Outage::FailOpen { local_share }.local_share();
        assert_eq!(share(1.5), Some(1.0));
        assert_eq!(share(-1.0), Some(0.0));
        assert_eq!(share(f64::NAN), Some(0.0));
        assert_eq!(share(0.25), Some(0.25));
    }
}

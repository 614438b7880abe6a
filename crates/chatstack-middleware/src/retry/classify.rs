//! Which errors are worth another attempt: [`RetryClassifier`] and its default,
//! [`IsRetryable`].

use chatstack_proto::Error;

/// Decides whether an error is worth another attempt.
///
/// Implemented by [`IsRetryable`] (the default) and by every closure `Fn(&Error) -> bool`:
///
/// ```
/// use chatstack_middleware::Error;
/// use chatstack_middleware::retry::RetryLayer;
///
/// // The SDKs' rules, but never retry a 409.
/// let layer = RetryLayer::new().classifier(|error: &Error| {
///     error.is_retryable() && error.status().is_none_or(|status| status != 409)
/// });
/// # let _ = layer;
/// ```
pub trait RetryClassifier {
    /// Whether `error` may go away if the same request is sent again.
    fn is_retryable(&self, error: &Error) -> bool;
}

/// The default classifier: [`Error::is_retryable`], the official OpenAI SDKs' rules.
///
/// `x-should-retry` decides first; then 408, 409, 429 (never `insufficient_quota`), 5xx and
/// 529, connection errors, timeouts and responses cut short are retried; 400, 401, 403, 404,
/// 422 and chatstack's own refusals (circuit open, budget exceeded, rate-limit wait refused)
/// are not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsRetryable;

impl RetryClassifier for IsRetryable {
    fn is_retryable(&self, error: &Error) -> bool {
        error.is_retryable()
    }
}

impl<F> RetryClassifier for F
where
    F: Fn(&Error) -> bool,
{
    fn is_retryable(&self, error: &Error) -> bool {
        self(error)
    }
}

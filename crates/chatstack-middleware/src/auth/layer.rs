//! [`AuthLayer`] and [`AuthScheme`].

use std::fmt;
use std::sync::Arc;

use chatstack_proto::Error;
use http::{HeaderName, StatusCode, header};
use tower::Layer;

use super::key::{ApiKey, KeyFingerprint, KeySource};
use super::pool::{KeyPool, RevokeIf};
use super::service::Auth;

/// Which header carries the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AuthScheme {
    /// `Authorization: Bearer <key>`: OpenAI and the OpenAI-compatible servers (DeepSeek,
    /// Groq, OpenRouter, Gemini's compatibility endpoint, vLLM, ...). The default.
    #[default]
    Bearer,
    /// `api-key: <key>`: Azure OpenAI.
    ApiKey,
    /// `x-api-key: <key>`: Anthropic.
    XApiKey,
}

impl AuthScheme {
    /// The name of the header the key goes in.
    pub fn header_name(self) -> HeaderName {
        match self {
            Self::Bearer => header::AUTHORIZATION,
            Self::ApiKey => HeaderName::from_static("api-key"),
            Self::XApiKey => HeaderName::from_static("x-api-key"),
        }
    }

    /// What goes before the key in the header value.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Self::Bearer => "Bearer ",
            Self::ApiKey | Self::XApiKey => "",
        }
    }
}

/// Whether `error` says the key itself is refused, which is what takes a key out of
/// rotation by default: a 401 (the key is wrong, revoked or expired) or `insufficient_quota`
/// (its account is out of credit).
///
/// Not a 403: providers answer 403 for a key that is fine but may not use one model or
/// region (an unverified organization asking for `o3`, say), and taking such a key out would
/// empty a pool over a single model. An auth error without a status (one reported inside a
/// response) counts like a 401.
///
/// ```
/// use chatstack_middleware::auth::is_key_rejected;
/// use chatstack_middleware::{Error, ErrorKind};
/// use http::{HeaderMap, StatusCode};
///
/// let unauthorized = Error::from_response(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"");
/// let forbidden = Error::from_response(StatusCode::FORBIDDEN, &HeaderMap::new(), b"");
/// assert!(is_key_rejected(&unauthorized));
/// assert!(!is_key_rejected(&forbidden));
/// assert!(!is_key_rejected(&Error::new(ErrorKind::RateLimited, "slow down")));
/// ```
pub fn is_key_rejected(error: &Error) -> bool {
    error.is_insufficient_quota()
        || (error.is_auth() && error.status() != Some(StatusCode::FORBIDDEN))
}

/// A [`Layer`] that puts an API key on every request, as an [`Auth`] service.
///
/// The key goes in the request's [`RequestMeta::headers`](chatstack_proto::RequestMeta),
/// which the transport sends as HTTP headers, under the [`AuthScheme`]'s header (by default
/// `Authorization: Bearer <key>`), marked sensitive. A request that already carries that
/// header keeps it: a per-request key (a gateway forwarding its callers' keys, say) wins over
/// the layer's, and its errors never take a pool key out of rotation.
///
/// Keys come from [`KeySource`]s: an [`ApiKey`] (literal, environment variable, file) or a
/// callback. With several, requests take them in turn (round-robin), and a key the provider
/// refuses ([`is_key_rejected`], or the predicate given to [`revoke_if`](Self::revoke_if))
/// is taken out of rotation. With none left, requests fail at once with an
/// [`ErrorKind::Auth`](chatstack_proto::ErrorKind::Auth) error, without being sent.
///
/// A layer is a handle on one pool: its clones, and every service it wraps, share it (and
/// its revocations). The builder methods return a layer with a new pool in which every key
/// is in rotation, so configure a layer before using it.
///
/// ```
/// use chatstack_middleware::auth::{ApiKey, AuthLayer, AuthScheme, KeySource};
///
/// # fn main() -> Result<(), chatstack_middleware::Error> {
/// // A key from the environment (an error that names the variable if it is unset):
/// fn anthropic() -> Result<AuthLayer, chatstack_middleware::Error> {
///     Ok(AuthLayer::from_env("ANTHROPIC_API_KEY")?.scheme(AuthScheme::XApiKey))
/// }
/// let pool = AuthLayer::pool([
///     ApiKey::new("sk-proj-first-key-0123456789AAAA")?,
///     ApiKey::new("sk-proj-second-key-012345678BBBB")?,
/// ])
/// // Also take keys out on a 403.
/// .revoke_if(|error| chatstack_middleware::auth::is_key_rejected(error) || error.is_auth());
/// assert_eq!(
///     format!("{pool:?}"),
///     r#"AuthLayer { scheme: Bearer, keys: [ApiKey("...AAAA"), ApiKey("...BBBB")], revoked: [] }"#,
/// );
/// # let _ = anthropic;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    sources: Arc<[KeySource]>,
    pool: Arc<KeyPool>,
}

impl AuthLayer {
    /// A layer that puts the one key of `source` on every request, as `Authorization: Bearer`.
    pub fn new(source: impl Into<KeySource>) -> Self {
        Self::pool([source.into()])
    }

    /// A layer that rotates the keys of `sources` round-robin, as `Authorization: Bearer`.
    /// An empty pool fails every request with an
    /// [`ErrorKind::Config`](chatstack_proto::ErrorKind::Config) error.
    pub fn pool<I>(sources: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<KeySource>,
    {
        let sources: Arc<[KeySource]> = sources.into_iter().map(Into::into).collect();
        let revoke_if: RevokeIf = Arc::new(is_key_rejected);
        let pool = Arc::new(KeyPool::new(&sources, AuthScheme::default(), revoke_if));
        Self { sources, pool }
    }

    /// A layer with the key in the environment variable `var`, trimmed; see
    /// [`ApiKey::from_env`] for its errors.
    pub fn from_env(var: &str) -> Result<Self, Error> {
        ApiKey::from_env(var).map(Self::new)
    }

    /// Which header carries the key (default [`AuthScheme::Bearer`]).
    pub fn scheme(self, scheme: AuthScheme) -> Self {
        let revoke_if = Arc::clone(self.pool.revoke_if());
        self.rebuild(scheme, revoke_if)
    }

    /// Which errors take the key the request was sent with out of rotation (default
    /// [`is_key_rejected`]: a 401 or `insufficient_quota`). Only errors of the response
    /// future count; an error inside a stream, after its response arrived, does not.
    pub fn revoke_if<F>(self, revoke_if: F) -> Self
    where
        F: Fn(&Error) -> bool + Send + Sync + 'static,
    {
        let scheme = self.pool.scheme();
        self.rebuild(scheme, Arc::new(revoke_if))
    }

    /// The fingerprints of the keys out of rotation.
    pub fn revoked(&self) -> Vec<KeyFingerprint> {
        self.pool.revoked()
    }

    /// Puts every key back in rotation: after an account was topped up, say.
    pub fn reinstate_all(&self) {
        self.pool.reinstate_all();
    }

    fn rebuild(self, scheme: AuthScheme, revoke_if: RevokeIf) -> Self {
        let pool = Arc::new(KeyPool::new(&self.sources, scheme, revoke_if));
        Self {
            sources: self.sources,
            pool,
        }
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("AuthLayer");
        self.pool.debug_fields(&mut debug);
        debug.finish()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth::from_parts(inner, Arc::clone(&self.pool))
    }
}

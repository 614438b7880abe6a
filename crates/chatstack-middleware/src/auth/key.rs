//! [`ApiKey`], [`KeySource`] and [`KeyFingerprint`]: keys held as secrets, where they come
//! from, and how logs name them.

use std::env::VarError;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chatstack_proto::{Error, ErrorKind};
use http::HeaderValue;
use secrecy::zeroize::{Zeroize, Zeroizing};
use secrecy::{ExposeSecret, SecretString};

/// Keys shorter than this are fingerprinted by a hash: their last four characters would be
/// too large a part of them. Every real provider key is longer (OpenAI's and Anthropic's
/// run past 40 characters, Azure's are 32).
const TAIL_FINGERPRINT_MIN_LEN: usize = 20;

/// An API key, trimmed, checked and held as a [`SecretString`]: zeroized when the last clone
/// is dropped, and never shown by `Debug` or `Display`, which show its [`KeyFingerprint`].
///
/// Clones share one copy of the secret.
///
/// ```
/// use chatstack_middleware::auth::ApiKey;
///
/// let key = ApiKey::new("sk-proj-0123456789abcdefWXYZ\n").unwrap(); // trimmed
/// assert_eq!(format!("{key:?}"), r#"ApiKey("...WXYZ")"#);
/// assert_eq!(key.to_string(), "...WXYZ");
/// assert!(ApiKey::new("  ").unwrap_err().to_string().contains("empty"));
/// ```
#[derive(Clone)]
pub struct ApiKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    secret: SecretString,
    identity: KeyIdentity,
}

impl ApiKey {
    /// A key given in code or configuration. Surrounding whitespace is trimmed; an empty key,
    /// or one with characters an HTTP header cannot carry (spaces, control characters,
    /// non-ASCII), is an [`ErrorKind::Config`] error that does not show the key.
    pub fn new(key: impl Into<SecretString>) -> Result<Self, Error> {
        Self::from_secret(key.into(), &Origin::Literal)
    }

    /// The key in the environment variable `var`, trimmed (a key saved with `echo` into a
    /// `.env` file or a Kubernetes secret often ends with a newline, which no provider
    /// accepts).
    ///
    /// A variable that is not set, not UTF-8, empty or only whitespace is an
    /// [`ErrorKind::Config`] error whose message names the variable and never shows its
    /// value. It names `var` only if it looks like a variable name (`A-Z`, `0-9`, `_`):
    /// a key passed here by mistake must not end up in the message.
    pub fn from_env(var: &str) -> Result<Self, Error> {
        let origin = Origin::Env(var);
        match std::env::var(var) {
            Ok(value) => Self::from_exposed(&Zeroizing::new(value), &origin),
            Err(VarError::NotPresent) => Err(config_error(format!("{origin} is not set"))),
            Err(VarError::NotUnicode(_)) => {
                Err(config_error(format!("{origin} does not hold UTF-8 text")))
            }
        }
    }

    /// The key in the file at `path` (a mounted secret, say), trimmed. Read once, here: for a
    /// key that changes while the program runs, use [`KeySource::callback`].
    ///
    /// A file that cannot be read, is not UTF-8 or is empty is an [`ErrorKind::Config`]
    /// error that never shows the file's content. It names the path only if the path has a
    /// directory part: a key passed here by mistake must not end up in the message.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let origin = Origin::File(path.as_ref());
        let bytes = std::fs::read(path.as_ref())
            .map(Zeroizing::new)
            .map_err(|error| {
                config_error(format!("{origin} cannot be read: {error}")).with_source(error)
            })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| config_error(format!("{origin} does not hold UTF-8 text")))?;
        Self::from_exposed(text, &origin)
    }

    /// What logs and `Debug` show instead of the key.
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.inner.identity.fingerprint
    }

    pub(crate) fn identity(&self) -> KeyIdentity {
        self.inner.identity
    }

    pub(crate) fn expose(&self) -> &str {
        self.inner.secret.expose_secret()
    }

    pub(crate) fn from_secret(secret: SecretString, origin: &Origin<'_>) -> Result<Self, Error> {
        let exposed = secret.expose_secret();
        let trimmed = exposed.trim();
        check(trimmed, origin)?;
        // Keep the caller's allocation when there is nothing to trim; otherwise copy the
        // trimmed part into a new secret and let the old one zeroize itself on drop.
        let secret = if trimmed.len() == exposed.len() {
            secret
        } else {
            SecretString::from(trimmed)
        };
        let identity = KeyIdentity::of(secret.expose_secret());
        Ok(Self {
            inner: Arc::new(KeyInner { secret, identity }),
        })
    }

    fn from_exposed(text: &str, origin: &Origin<'_>) -> Result<Self, Error> {
        let trimmed = text.trim();
        check(trimmed, origin)?;
        let identity = KeyIdentity::of(trimmed);
        Ok(Self {
            inner: Arc::new(KeyInner {
                secret: SecretString::from(trimmed),
                identity,
            }),
        })
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ApiKey")
            .field(&format_args!("\"{}\"", self.fingerprint()))
            .finish()
    }
}

impl fmt::Display for ApiKey {
    /// The key's [`KeyFingerprint`], never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.fingerprint(), f)
    }
}

/// The callback of a [`KeySource::callback`].
pub(crate) type KeyCallback = Arc<dyn Fn() -> Result<SecretString, Error> + Send + Sync>;

/// Where an [`AuthLayer`](super::AuthLayer) takes a key from: a fixed [`ApiKey`] (given
/// literally, or read from an environment variable or a file), or a callback asked on every
/// request.
///
/// ```
/// use chatstack_middleware::auth::{ApiKey, KeySource};
/// use secrecy::SecretString;
///
/// let fixed: KeySource = ApiKey::new("sk-proj-0123456789abcdefWXYZ").unwrap().into();
/// let rotating = KeySource::callback(|| Ok(SecretString::from("sk-from-the-vault-0123456789")));
/// assert_eq!(format!("{fixed:?}"), r#"KeySource::Key(ApiKey("...WXYZ"))"#);
/// assert_eq!(format!("{rotating:?}"), "KeySource::Callback");
/// ```
#[derive(Clone)]
pub struct KeySource {
    pub(crate) kind: SourceKind,
}

#[derive(Clone)]
pub(crate) enum SourceKind {
    Key(ApiKey),
    Callback(KeyCallback),
}

impl KeySource {
    /// A key that may change while the program runs (rotated in a vault, a short-lived
    /// token): `callback` is called on every request that uses this source, so it should
    /// return quickly, from a cache the application refreshes, and never block on I/O.
    ///
    /// Its key is trimmed and checked like an [`ApiKey`]; an error it returns fails the
    /// request as it is, without sending it. A key it returns that was taken out of rotation
    /// (after a 401 or `insufficient_quota`) is skipped; a new key is used at once.
    pub fn callback<F>(callback: F) -> Self
    where
        F: Fn() -> Result<SecretString, Error> + Send + Sync + 'static,
    {
        Self {
            kind: SourceKind::Callback(Arc::new(callback)),
        }
    }
}

impl From<ApiKey> for KeySource {
    fn from(key: ApiKey) -> Self {
        Self {
            kind: SourceKind::Key(key),
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            SourceKind::Key(key) => write!(f, "KeySource::Key({key:?})"),
            SourceKind::Callback(_) => f.write_str("KeySource::Callback"),
        }
    }
}

/// How logs, events and `Debug` output name a key without showing it: `...WXYZ`, its last
/// four characters (as provider dashboards show keys), for a key of 20 characters or more;
/// for a shorter key, `#` and 8 hex digits of its 64-bit FNV-1a hash, since four characters
/// would give too much of it away.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyFingerprint(Fingerprint);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Fingerprint {
    /// The last four bytes: a checked key is visible ASCII, so four characters.
    Tail([u8; 4]),
    Hash(u32),
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Fingerprint::Tail(tail) => {
                f.write_str("...")?;
                // Visible ASCII only (checked when the key was made).
                tail.iter()
                    .try_for_each(|&b| fmt::Write::write_char(f, char::from(b)))
            }
            Fingerprint::Hash(hash) => write!(f, "#{hash:08x}"),
        }
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint(\"{self}\")")
    }
}

/// What the pool knows a key by: a digest to tell keys apart (never zero, so that zero can
/// mean "no key"), and the fingerprint to name it in logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyIdentity {
    pub(crate) digest: u64,
    pub(crate) fingerprint: KeyFingerprint,
}

impl KeyIdentity {
    /// The identity of a checked key.
    pub(crate) fn of(key: &str) -> Self {
        // FNV-1a: stable across runs and platforms, so an operator can compute a short key's
        // fingerprint offline; it only tells keys apart, it protects nothing.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let bytes = key.as_bytes();
        let fingerprint = match bytes.last_chunk::<4>() {
            Some(tail) if bytes.len() >= TAIL_FINGERPRINT_MIN_LEN => Fingerprint::Tail(*tail),
            _ => Fingerprint::Hash((hash >> 32) as u32),
        };
        Self {
            digest: hash | 1,
            fingerprint: KeyFingerprint(fingerprint),
        }
    }
}

/// Where a key came from, for error messages that must never show the key itself.
pub(crate) enum Origin<'a> {
    Literal,
    Env(&'a str),
    File(&'a Path),
    Callback,
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal => f.write_str("the API key"),
            Self::Env(var) if looks_like_variable_name(var) => {
                write!(f, "the environment variable {var}")
            }
            Self::Env(_) => f.write_str(
                "the environment variable (its name is not shown: it is not of A-Z, 0-9 and _, \
                 and may be a key passed by mistake)",
            ),
            Self::File(path) if path.parent().is_some_and(|dir| dir != Path::new("")) => {
                write!(f, "the key file {}", path.display())
            }
            Self::File(_) => f.write_str(
                "the key file (its path is not shown: it has no directory part, and may be a \
                 key passed by mistake)",
            ),
            Self::Callback => f.write_str("the key the callback returned"),
        }
    }
}

fn looks_like_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a trimmed key: not empty, and only characters an HTTP header value can carry that
/// a key may hold (visible ASCII: no spaces, control characters or non-ASCII).
fn check(key: &str, origin: &Origin<'_>) -> Result<(), Error> {
    if key.is_empty() {
        return Err(config_error(format!("{origin} is empty")));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(config_error(format!(
            "{origin} holds characters an API key cannot have (spaces, control characters or \
             non-ASCII)"
        )));
    }
    Ok(())
}

/// Checks a key a callback returned, and names it; the header value is built by the caller.
pub(crate) fn callback_key(secret: &SecretString) -> Result<(&str, KeyIdentity), Error> {
    let key = secret.expose_secret().trim();
    check(key, &Origin::Callback)?;
    Ok((key, KeyIdentity::of(key)))
}

fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// The bytes of a header value that holds a key: zeroized when the last `Bytes` that shares
/// them is dropped, so cloning the value per request copies nothing.
struct SecretBytes(Box<[u8]>);

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A header value `prefix` + `key`, marked sensitive (so `Debug` of a `HeaderMap` shows
/// `Sensitive`, and HTTP/2 never indexes it in HPACK tables), in zeroize-on-drop memory.
///
/// `key` must be a checked key (visible ASCII), and `prefix` visible ASCII or spaces.
pub(crate) fn header_value(prefix: &str, key: &str) -> HeaderValue {
    // Exactly sized from the start: a growing buffer would leave copies of the key behind.
    let mut buffer = vec![0_u8; prefix.len() + key.len()].into_boxed_slice();
    buffer[..prefix.len()].copy_from_slice(prefix.as_bytes());
    buffer[prefix.len()..].copy_from_slice(key.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(SecretBytes(buffer)))
        .expect("a checked key and a scheme prefix are visible ASCII");
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_never_show_more_than_four_characters() {
        let long = KeyIdentity::of("sk-proj-abcdefghijklmnopWXYZ");
        assert_eq!(long.fingerprint.to_string(), "...WXYZ");
        let short = KeyIdentity::of("sk-short-1");
        let text = short.fingerprint.to_string();
        assert!(text.starts_with('#') && text.len() == 9, "{text}");
        assert!(!text.contains("rt-1"));
        assert_ne!(
            KeyIdentity::of("a").digest,
            KeyIdentity::of("b").digest,
            "keys are told apart"
        );
        assert_ne!(KeyIdentity::of("").digest, 0);
    }

    #[test]
    fn names_are_shown_only_when_they_cannot_be_keys() {
        assert!(looks_like_variable_name("OPENAI_API_KEY"));
        assert!(!looks_like_variable_name("sk-proj-abc"));
        assert!(!looks_like_variable_name("0123abcd"));
        assert!(!looks_like_variable_name(""));
        let shown = Origin::File(Path::new("/run/secrets/key")).to_string();
        assert!(shown.contains("/run/secrets/key"));
        let hidden = Origin::File(Path::new("sk-proj-abc")).to_string();
        assert!(!hidden.contains("sk-proj-abc"));
    }

    #[test]
    fn header_values_are_sensitive_and_exact() {
        let value = header_value("Bearer ", "sk-1");
        assert!(value.is_sensitive());
        assert_eq!(value.as_bytes(), b"Bearer sk-1");
        assert_eq!(format!("{value:?}"), "Sensitive");
        let shared = value.clone();
        assert_eq!(
            shared.as_bytes().as_ptr(),
            value.as_bytes().as_ptr(),
            "no copy"
        );
    }

    #[test]
    fn keys_are_checked() {
        assert!(ApiKey::new("sk-with space-0123456789").is_err());
        assert!(ApiKey::new("sk-\u{e9}-0123456789").is_err());
        assert_eq!(ApiKey::new(" sk-1\r\n").unwrap().expose(), "sk-1");
        assert!(callback_key(&SecretString::from("\n")).is_err());
        assert_eq!(
            callback_key(&SecretString::from("k\n")).unwrap().0,
            "k",
            "callback keys are trimmed too"
        );
    }
}

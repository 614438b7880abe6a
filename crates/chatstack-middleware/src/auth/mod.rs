//! API keys: held as secrets, put on every request, rotated, and taken out when refused.
//!
//! [`AuthLayer`] wraps a service in [`Auth`], which puts a key in each request's
//! [`RequestMeta::headers`](chatstack_proto::RequestMeta) under the header of its
//! [`AuthScheme`]: `Authorization: Bearer <key>` (OpenAI and compatibles, the default),
//! `api-key: <key>` (Azure OpenAI) or `x-api-key: <key>` (Anthropic). The transport sends
//! those headers with the request.
//!
//! # Where keys come from
//!
//! A [`KeySource`] is either an [`ApiKey`] or a callback:
//!
//! - [`ApiKey::new`]: a key given in code or configuration;
//! - [`ApiKey::from_env`]: an environment variable;
//! - [`ApiKey::from_file`]: a file, such as a mounted secret;
//! - [`KeySource::callback`]: a function called on every request, for keys that rotate (a
//!   vault, short-lived tokens).
//!
//! Every key is trimmed (a key saved with a trailing newline is a classic bug: the
//! provider answers 401 to a key that looks right) and checked: an empty key, or one with
//! characters an HTTP header cannot carry, is an [`ErrorKind::Config`](crate::ErrorKind)
//! error when the key is made (for a callback's key, when the request is).
//!
//! # Rotation and revocation
//!
//! [`AuthLayer::pool`] takes several sources and uses them in turn, round-robin. A request
//! whose response future fails with a 401 or `insufficient_quota` ([`is_key_rejected`], or
//! [`AuthLayer::revoke_if`]) takes its key out of rotation, with a `warn` event that names
//! the key by its [`KeyFingerprint`]; later requests use the other keys. When no key is left,
//! requests fail at once with an [`ErrorKind::Auth`](crate::ErrorKind) error, without
//! reaching the inner service. A callback whose key was taken out is asked again on the next
//! request: a rotated key is used at once, the refused one is skipped.
//! [`AuthLayer::reinstate_all`] puts every key back. The request that met the refusal fails
//! with it: retrying belongs to the retry layer (which does not retry a 401).
//!
//! # How keys are protected
//!
//! - A key is held as a [`secrecy::SecretString`], zeroized when dropped, and its header
//!   value is built once per key in a buffer zeroized when the last request using it is
//!   done; requests share it, so no copies of the key pile up in freed memory.
//! - The header value is marked sensitive: `Debug` of a `HeaderMap` shows `Sensitive`, and
//!   HTTP/2 keeps it out of its header compression tables.
//! - `Debug` and `Display` of [`AuthLayer`], [`Auth`], [`ApiKey`], [`KeySource`] and
//!   [`KeyFingerprint`] show fingerprints, never keys; error messages and tracing events
//!   never show a key, nor an environment variable's value or a file's content (nor a
//!   variable name or a path that may be a key passed by mistake).
//! - Past this layer the key leaves chatstack's hands: the HTTP stack copies headers into
//!   its write buffers, which are not zeroized. Zeroization here is best effort against
//!   memory dumps, not a guarantee.
//!
//! # Example
//!
//! ```
//! use chatstack_middleware::auth::{ApiKey, AuthLayer};
//! use chatstack_middleware::{ChatRequest, ChatResponse, Error, LlmRequest, Message};
//! use http::{HeaderMap, StatusCode};
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! // A provider that knows two keys, one of which is out of credit.
//! let provider = tower::service_fn(|request: ChatRequest| async move {
//!     let auth = request.meta().headers["authorization"].to_str().unwrap().to_owned();
//!     match auth.as_str() {
//!         "Bearer sk-proj-first-0123456789abcdAAAA" => Ok(ChatResponse::default()),
//!         _ => Err(Error::from_response(
//!             StatusCode::TOO_MANY_REQUESTS,
//!             &HeaderMap::new(),
//!             br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
//!         )),
//!     }
//! });
//! let layer = AuthLayer::pool([
//!     ApiKey::new("sk-proj-first-0123456789abcdAAAA")?,
//!     ApiKey::new("sk-proj-second-0123456789abcBBBB")?,
//! ]);
//! let mut service = layer.layer(provider);
//! let request = ChatRequest::new("gpt-4.1", [Message::user("Hello")]);
//!
//! service.ready().await?.call(request.clone()).await?; // the first key
//! let error = service.ready().await?.call(request.clone()).await.unwrap_err(); // the second
//! assert!(error.is_insufficient_quota());
//! assert_eq!(format!("{:?}", layer.revoked()), r#"[KeyFingerprint("...BBBB")]"#);
//! for _ in 0..3 {
//!     service.ready().await?.call(request.clone()).await?; // only the first is left
//! }
//! # Ok(())
//! # }
//! ```

mod future;
mod key;
mod layer;
mod pool;
mod service;

pub use future::ResponseFuture;
pub use key::{ApiKey, KeyFingerprint, KeySource};
pub use layer::{AuthLayer, AuthScheme, is_key_rejected};
pub use service::Auth;

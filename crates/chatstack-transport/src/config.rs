//! Configuration of the HTTP transport.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chatstack_proto::{Error, ErrorKind};
use http::HeaderMap;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use reqwest_middleware::{ClientWithMiddleware, Middleware};

use crate::transport::{HttpTransport, Inner};

/// The default base URL: OpenAI's API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The default path of the Chat Completions endpoint, appended to the base URL.
pub const DEFAULT_PATH: &str = "/chat/completions";
/// The default cap on a response body (and on a single stream event): 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The most redirects a transport follows, all within the origin of the request.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Headers whose values are secrets: marked sensitive so `Debug` output never shows them,
/// and warned about when they would travel over plain `http` to another machine.
const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "api-key",
    "x-api-key",
    "proxy-authorization",
];

/// Builds an [`HttpTransport`]. Every setting has a default; see each method.
///
/// # Credentials on the wire
///
/// - Redirects are followed only within the origin of the request (same scheme, host and
///   port), at most five in a row. reqwest drops `authorization` when a redirect leaves the
///   host, but not the `api-key` (Azure) or `x-api-key` (Anthropic) headers, so the transport
///   does not follow a redirect elsewhere at all: the 3xx comes back as an error
///   ([`ErrorKind::Status`]) that names the origin it pointed to.
/// - [`https_only`](Self::https_only) refuses a plain `http` base URL and any plain `http`
///   request. Without it, a transport that would send a credential header (`authorization`,
///   `api-key`, `x-api-key`, `proxy-authorization`) over plain `http` to a host that is not
///   loopback (`127.0.0.0/8`, `::1`, `localhost`) logs a `tracing` warning naming the host
///   (never the key): at build time for the builder's headers, else once, at the first such
///   request, for the per-request headers an auth layer adds.
///
/// ```
/// use std::time::Duration;
/// use chatstack_transport::HttpTransport;
///
/// let transport = HttpTransport::builder()
///     .base_url("http://127.0.0.1:8080/v1")
///     .connect_timeout(Duration::from_secs(5))
///     .timeout(Duration::from_secs(120))
///     .pool_max_idle_per_host(64)
///     .header("x-team", "search")
///     .build()
///     .expect("a valid configuration");
/// assert_eq!(transport.url(), "http://127.0.0.1:8080/v1/chat/completions");
/// ```
#[derive(Clone)]
pub struct HttpTransportBuilder {
    base_url: String,
    path: String,
    headers: HeaderMap,
    invalid_header: Option<String>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    pool_max_idle_per_host: Option<usize>,
    pool_idle_timeout: Option<Duration>,
    tcp_keepalive: Option<Duration>,
    tcp_nodelay: bool,
    http2_adaptive_window: bool,
    http2_prior_knowledge: bool,
    https_only: bool,
    max_response_bytes: usize,
    middleware: Vec<Arc<dyn Middleware>>,
    client: Option<ClientWithMiddleware>,
}

impl Default for HttpTransportBuilder {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            path: DEFAULT_PATH.to_owned(),
            headers: HeaderMap::new(),
            invalid_header: None,
            connect_timeout: Some(Duration::from_secs(10)),
            timeout: Some(Duration::from_secs(600)),
            pool_max_idle_per_host: None,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            tcp_keepalive: Some(Duration::from_secs(60)),
            tcp_nodelay: true,
            http2_adaptive_window: false,
            http2_prior_knowledge: false,
            https_only: false,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            middleware: Vec::new(),
            client: None,
        }
    }
}

impl std::fmt::Debug for HttpTransportBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransportBuilder")
            .field("base_url", &self.base_url)
            .field("path", &self.path)
            .field("headers", &self.headers)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("https_only", &self.https_only)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpTransportBuilder {
    /// The base URL, such as `https://api.openai.com/v1` (the default) or a relay's. A
    /// trailing slash is ignored.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// The endpoint path appended to the base URL; default `/chat/completions`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// A header sent with every request. Values of `authorization`, `api-key` and
    /// `x-api-key` are marked sensitive and never shown by `Debug`. An invalid name or value
    /// makes [`build`](Self::build) fail.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(mut value)) => {
                if is_sensitive(&name) {
                    value.set_sensitive(true);
                }
                self.headers.insert(name, value);
            }
            _ => self.invalid_header = Some(name.to_owned()),
        }
        self
    }

    /// Headers sent with every request (added to those set before).
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        for (name, mut value) in headers {
            if let Some(name) = name {
                if is_sensitive(&name) {
                    value.set_sensitive(true);
                }
                self.headers.insert(name, value);
            }
        }
        self
    }

    /// Timeout for establishing a connection; default 10 s. `None` waits forever.
    pub fn connect_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.connect_timeout = timeout.into();
        self
    }

    /// Timeout for a whole attempt: a unary call until its body is read, a stream until its
    /// headers arrive (chunk timeouts are the timeout layer's). Default 600 s, as the OpenAI
    /// SDKs; `None` waits forever.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Most idle connections kept per host; default unlimited.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = Some(max);
        self
    }

    /// How long an idle pooled connection is kept; default 90 s.
    pub fn pool_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.pool_idle_timeout = timeout.into();
        self
    }

    /// TCP keepalive interval; default 60 s.
    pub fn tcp_keepalive(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.tcp_keepalive = interval.into();
        self
    }

    /// Whether to set `TCP_NODELAY`; default true (small SSE frames should not wait).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp_nodelay = enabled;
        self
    }

    /// Whether to use HTTP/2 adaptive flow-control windows; default false.
    pub fn http2_adaptive_window(mut self, enabled: bool) -> Self {
        self.http2_adaptive_window = enabled;
        self
    }

    /// Whether to speak HTTP/2 from the first byte, without negotiating it; default false.
    ///
    /// Over plain `http` this is HTTP/2 with prior knowledge (`h2c`), for servers that speak
    /// it (vLLM or a gateway behind a proxy that strips TLS, the mock); a server that only
    /// speaks HTTP/1.1 then fails every request. Over `https`, ALPN already picks HTTP/2 when
    /// the server offers it; this option makes the transport refuse HTTP/1.1 servers.
    pub fn http2_prior_knowledge(mut self, enabled: bool) -> Self {
        self.http2_prior_knowledge = enabled;
        self
    }

    /// Whether to send requests over `https` only; default false.
    ///
    /// On, [`build`](Self::build) refuses a base URL that is not `https` (a
    /// [`ErrorKind::Config`] error), loopback included, and the client refuses any plain
    /// `http` request. Off, a credential header bound for a host that is not loopback over
    /// plain `http` is only warned about (see [`HttpTransportBuilder`]).
    pub fn https_only(mut self, enabled: bool) -> Self {
        self.https_only = enabled;
        self
    }

    /// The largest response body read, and the largest single stream event; default 16 MiB.
    /// Past it the call fails with [`ErrorKind::BodyTooLarge`].
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Adds reqwest-level middleware (tracing, caching, ...), run in the order added.
    ///
    /// Do not add a retrying middleware such as `reqwest_retry::RetryTransientMiddleware`:
    /// chatstack's retry layer already retries, and stacking the two multiplies attempts.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Uses a client you built yourself; the connection and pool settings of this builder
    /// are then ignored (base URL, path, headers, timeout and body cap still apply, and
    /// [`https_only`](Self::https_only) still checks the base URL). Its redirect policy is
    /// yours too: reqwest's default follows redirects to other hosts with the `api-key` and
    /// `x-api-key` headers, so give it one like this builder's (same origin only) or
    /// `reqwest::redirect::Policy::none()`.
    pub fn client(mut self, client: ClientWithMiddleware) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the transport.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a base URL that does not parse (or, with
    /// [`https_only`](Self::https_only), is not `https`), an invalid header, or a client that
    /// cannot be built.
    pub fn build(self) -> Result<HttpTransport, Error> {
        if let Some(name) = self.invalid_header {
            return Err(Error::new(
                ErrorKind::Config,
                format!("invalid header `{name}`"),
            ));
        }
        let joined = format!(
            "{}/{}",
            self.base_url.trim_end_matches('/'),
            self.path.trim_start_matches('/')
        );
        let url = reqwest::Url::parse(&joined).map_err(|error| {
            Error::new(
                ErrorKind::Config,
                format!("invalid URL `{joined}`: {error}"),
            )
            .with_source(error)
        })?;
        if self.https_only && url.scheme() != "https" {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "https_only is set, but the base URL is `{}` (for host `{}`), not `https`",
                    url.scheme(),
                    url.host_str().unwrap_or_default()
                ),
            ));
        }
        let cleartext_host = (url.scheme() == "http" && !is_loopback(&url))
            .then(|| url.host_str().unwrap_or_default().to_owned());
        let warned = match &cleartext_host {
            Some(host) if self.headers.keys().any(is_sensitive) => {
                warn_cleartext_credentials(host);
                true
            }
            _ => false,
        };
        let client = match self.client {
            Some(client) => client,
            None => {
                let mut builder = reqwest::Client::builder()
                    .tcp_nodelay(self.tcp_nodelay)
                    .pool_idle_timeout(self.pool_idle_timeout)
                    .tcp_keepalive(self.tcp_keepalive)
                    .http2_adaptive_window(self.http2_adaptive_window)
                    .redirect(redirect_policy())
                    // Retries live in one place, the retry layer, where they are counted and
                    // budgeted: reqwest's own (HTTP/2 GOAWAY, REFUSED_STREAM) are off.
                    .retry(reqwest::retry::never())
                    .https_only(self.https_only)
                    // Never ask for a compressed body, whatever reqwest features another crate
                    // turns on: a compressed answer is then always a typed decode error.
                    .no_gzip()
                    .no_brotli()
                    .no_deflate()
                    .no_zstd();
                if self.http2_prior_knowledge {
                    builder = builder.http2_prior_knowledge();
                }
                if let Some(timeout) = self.connect_timeout {
                    builder = builder.connect_timeout(timeout);
                }
                if let Some(max) = self.pool_max_idle_per_host {
                    builder = builder.pool_max_idle_per_host(max);
                }
                let client = builder.build().map_err(|error| {
                    Error::new(
                        ErrorKind::Config,
                        format!("cannot build the HTTP client: {error}"),
                    )
                    .with_source(error)
                })?;
                self.middleware
                    .into_iter()
                    .fold(reqwest_middleware::ClientBuilder::new(client), |b, m| {
                        b.with_arc(m)
                    })
                    .build()
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("chatstack/", env!("CARGO_PKG_VERSION"))),
        );
        headers.extend(self.headers);
        Ok(HttpTransport::from_inner(Inner {
            client,
            url,
            headers,
            timeout: self.timeout,
            max_response_bytes: self.max_response_bytes,
            cleartext_host,
            warned: AtomicBool::new(warned),
        }))
    }
}

pub(crate) fn is_sensitive(name: &HeaderName) -> bool {
    SENSITIVE_HEADERS.contains(&name.as_str())
}

/// Whether a URL's host is this machine: `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Warns that credentials are about to cross the network in cleartext. Names the host, never
/// a header value.
pub(crate) fn warn_cleartext_credentials(host: &str) {
    tracing::warn!(
        host,
        "credentials will be sent over plain http to a host that is not loopback: anyone on \
         the network path can read them; use an https base URL (https_only(true) enforces it)"
    );
}

/// The redirect policy of the transport's own client: follow at most [`MAX_REDIRECTS`], and
/// only within the origin of the request. reqwest strips `authorization` (not `api-key` or
/// `x-api-key`) from a redirect to another host; not following it at all keeps every key
/// with the host it was meant for. A redirect not followed comes back as the 3xx response.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let within_origin = attempt
            .previous()
            .first()
            .is_some_and(|origin| same_origin(origin, attempt.url()));
        if within_origin && attempt.previous().len() <= MAX_REDIRECTS {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Whether two URLs share scheme, host and port.
pub(crate) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_and_path_are_joined_with_one_slash() {
        for base in ["http://h/v1", "http://h/v1/"] {
            for path in ["/chat/completions", "chat/completions"] {
                let transport = HttpTransportBuilder::default()
                    .base_url(base)
                    .path(path)
                    .build()
                    .unwrap();
                assert_eq!(transport.url(), "http://h/v1/chat/completions");
            }
        }
        assert_eq!(
            HttpTransportBuilder::default().build().unwrap().url(),
            "https://api.openai.com/v1/chat/completions"
        );
    }

    #[test]
    fn bad_configuration_is_a_typed_error() {
        let error = HttpTransportBuilder::default()
            .base_url("not a url")
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        let error = HttpTransportBuilder::default()
            .header("x-bad", "line\nbreak")
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("x-bad"));
    }

    #[test]
    fn https_only_refuses_every_plain_http_base_url() {
        for base in [
            "http://api.example.com/v1",
            "http://127.0.0.1:8080/v1",
            "http://localhost/v1",
        ] {
            let error = HttpTransportBuilder::default()
                .base_url(base)
                .https_only(true)
                .build()
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config, "{base}");
            assert!(error.to_string().contains("https_only"), "{error}");
        }
        assert!(
            HttpTransportBuilder::default()
                .https_only(true)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn loopback_hosts() {
        for (url, loopback) in [
            ("http://127.0.0.1:1/v1", true),
            ("http://127.8.9.10/v1", true),
            ("http://[::1]:8080/v1", true),
            ("http://localhost:8080/v1", true),
            ("http://LOCALHOST/v1", true),
            ("http://10.0.0.1/v1", false),
            ("http://[::2]/v1", false),
            ("http://localhost.example.com/v1", false),
            ("http://api.openai.com/v1", false),
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            assert_eq!(is_loopback(&url), loopback, "{url}");
        }
    }

    #[test]
    fn origins() {
        let url = |text| reqwest::Url::parse(text).unwrap();
        assert!(same_origin(&url("https://h/a"), &url("https://h:443/b?c")));
        assert!(!same_origin(&url("https://h/a"), &url("http://h/a")));
        assert!(!same_origin(&url("http://h:1/a"), &url("http://h:2/a")));
        assert!(!same_origin(
            &url("http://127.0.0.1/a"),
            &url("http://localhost/a")
        ));
    }

    #[test]
    fn secrets_in_headers_never_show_in_debug() {
        let builder = HttpTransportBuilder::default()
            .header("authorization", "Bearer sk-secret-123")
            .header("api-key", "azure-secret-456")
            .header("x-team", "visible");
        let transport = builder.clone().build().unwrap();
        for text in [format!("{builder:?}"), format!("{transport:?}")] {
            assert!(!text.contains("sk-secret-123"), "{text}");
            assert!(!text.contains("azure-secret-456"), "{text}");
            assert!(text.contains("visible"), "{text}");
        }
    }
}

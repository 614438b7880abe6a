//! [`HttpTransport`]: one HTTP exchange per call, as a tower service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chatstack_proto::{
    ChatRequest, ChatResponse, ChatStream, Error, ErrorKind, RateLimitSnapshot, ResponseMeta,
    StreamRequest, TimeoutKind,
};
use http::HeaderMap;
use http::header::{ACCEPT, HeaderValue, LOCATION};
use reqwest_middleware::ClientWithMiddleware;
use tokio::time::Instant;

use crate::body;
use crate::config::{
    HttpTransportBuilder, MAX_REDIRECTS, is_sensitive, same_origin, warn_cleartext_credentials,
};

/// The innermost service of a chatstack stack: sends requests over HTTP.
///
/// It implements `tower::Service<ChatRequest>` (unary, answered with a [`ChatResponse`]) and
/// `tower::Service<StreamRequest>` (answered with a [`ChatStream`]). It is always ready and
/// cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: ClientWithMiddleware,
    pub(crate) url: reqwest::Url,
    pub(crate) headers: HeaderMap,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_response_bytes: usize,
    /// The host, when requests go over plain `http` to another machine.
    pub(crate) cleartext_host: Option<String>,
    /// Whether sending credentials to `cleartext_host` was warned about already.
    pub(crate) warned: AtomicBool,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("url", &self.inner.url.as_str())
            .field("headers", &self.inner.headers)
            .field("timeout", &self.inner.timeout)
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A builder with the defaults (OpenAI's base URL, 10 s connect and 600 s total timeout,
    /// 16 MiB body cap).
    pub fn builder() -> HttpTransportBuilder {
        HttpTransportBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The full URL requests are sent to.
    pub fn url(&self) -> &str {
        self.inner.url.as_str()
    }

    /// Sends a unary request and reads the whole response.
    pub async fn send(&self, request: ChatRequest) -> Result<ChatResponse, Error> {
        let http_request = self.prepare(request, false)?;
        let started = Instant::now();
        let exchange = async {
            let mut response = self.execute(http_request).await?;
            let meta = response_meta(&response, started);
            let status = response.status();
            // Taken, not cloned: the body read below needs only the response's body.
            let headers = std::mem::take(response.headers_mut());
            body::check_encoding(status, &headers)?;
            let body = body::read_capped(response, self.inner.max_response_bytes).await?;
            body::decode_unary(status, &headers, &body, self.inner.max_response_bytes).map(
                |mut chat| {
                    chat.meta = meta;
                    chat.meta.latency = started.elapsed();
                    chat
                },
            )
        };
        let result = match self.inner.timeout {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .unwrap_or_else(|_| Err(total_timeout(limit))),
            None => exchange.await,
        };
        result.map_err(|error| error.with_attempts(1))
    }

    /// Sends a streaming request; returns once the response headers arrived, the status is a
    /// success and the body can be an event stream. The chunks follow on the returned stream.
    ///
    /// A success that cannot be a stream fails here with [`ErrorKind::Decode`]: a compressed
    /// body, or one labelled neither `text/event-stream` nor JSON whose first bytes are not
    /// an event stream either (a proxy's HTML page); the message names the content type.
    pub async fn stream(&self, request: StreamRequest) -> Result<ChatStream, Error> {
        let http_request = self.prepare(request.0, true)?;
        let started = Instant::now();
        let opened = async {
            let response = self.execute(http_request).await?;
            let meta = response_meta(&response, started);
            let body = body::open_stream(response, self.inner.max_response_bytes).await?;
            Ok((body, meta))
        };
        let (body, meta) = match self.inner.timeout {
            Some(limit) => tokio::time::timeout(limit, opened)
                .await
                .unwrap_or_else(|_| Err(total_timeout(limit))),
            None => opened.await,
        }
        .map_err(|error| error.with_attempts(1))?;
        Ok(ChatStream::new(body, meta))
    }

    fn prepare(&self, mut request: ChatRequest, stream: bool) -> Result<reqwest::Request, Error> {
        request.stream = stream.then_some(true);
        let extra_headers = std::mem::take(&mut request.meta.headers);
        // Most requests fit in 1 KiB: one allocation instead of serde_json's growth from 128 B.
        let mut body = Vec::with_capacity(1024);
        serde_json::to_writer(&mut body, &request).map_err(|error| {
            Error::new(
                ErrorKind::InvalidRequest,
                format!("the request cannot be serialized: {error}"),
            )
            .with_source(error)
        })?;
        let mut http_request = reqwest::Request::new(reqwest::Method::POST, self.inner.url.clone());
        let headers = http_request.headers_mut();
        headers.clone_from(&self.inner.headers);
        if stream {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        for (name, mut value) in extra_headers {
            if let Some(name) = name {
                if is_sensitive(&name) {
                    value.set_sensitive(true);
                    self.warn_if_cleartext();
                }
                headers.insert(name, value);
            }
        }
        *http_request.body_mut() = Some(Bytes::from(body).into());
        Ok(http_request)
    }

    /// Warns, once per transport, that a credential is about to go over plain `http` to
    /// another machine.
    fn warn_if_cleartext(&self) {
        if let Some(host) = &self.inner.cleartext_host {
            // A load first: once warned, a keyed request writes nothing shared.
            if !self.inner.warned.load(Relaxed) && !self.inner.warned.swap(true, Relaxed) {
                warn_cleartext_credentials(host);
            }
        }
    }

    /// Sends the request; a non-success status becomes an error built from its body.
    async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, Error> {
        let mut response = self
            .inner
            .client
            .execute(request)
            .await
            .map_err(body::map_middleware_error)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = std::mem::take(response.headers_mut());
        let url = response.url().clone();
        let body = body::read_error_body(response).await;
        let error = Error::from_response(status, &headers, &body);
        if status.is_redirection() {
            return Err(redirect_not_followed(error, &url, &headers));
        }
        Err(error)
    }
}

/// Says why a 3xx came back instead of being followed. Names only the origin it pointed to:
/// a path or a query may carry a token.
fn redirect_not_followed(error: Error, from: &reqwest::Url, headers: &HeaderMap) -> Error {
    let target = headers
        .get(LOCATION)
        .and_then(|location| location.to_str().ok())
        .and_then(|location| from.join(location).ok());
    let note = match target {
        Some(target) if same_origin(from, &target) => format!(
            "a redirect within the origin was not followed (at most {MAX_REDIRECTS} in a row are)"
        ),
        Some(target) => format!(
            "the redirect to {} was not followed: it leaves {}, and credentials never follow \
             a redirect to another origin",
            target.origin().ascii_serialization(),
            from.origin().ascii_serialization()
        ),
        None => "a redirect without a usable Location was not followed".to_owned(),
    };
    error.with_context(&note.clone(), |_| RedirectNotFollowed(note))
}

/// The cause of an error for a redirect the transport did not follow.
#[derive(Debug)]
struct RedirectNotFollowed(String);

impl fmt::Display for RedirectNotFollowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectNotFollowed {}

fn total_timeout(limit: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout(TimeoutKind::Total),
        format!("no complete response within {limit:?}"),
    )
}

fn response_meta(response: &reqwest::Response, started: Instant) -> ResponseMeta {
    let headers = response.headers();
    ResponseMeta {
        status: response.status(),
        request_id: chatstack_proto::request_id(headers),
        rate_limit: RateLimitSnapshot::from_headers(headers),
        attempts: 1,
        latency: started.elapsed(),
        ..ResponseMeta::default()
    }
}

/// The future of a transport call.
pub struct ResponseFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>,
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl tower::Service<ChatRequest> for HttpTransport {
    type Response = ChatResponse;
    type Error = Error;
    type Future = ResponseFuture<ChatResponse>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let transport = self.clone();
        ResponseFuture {
            inner: Box::pin(async move { transport.send(request).await }),
        }
    }
}

impl tower::Service<StreamRequest> for HttpTransport {
    type Response = ChatStream;
    type Error = Error;
    type Future = ResponseFuture<ChatStream>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: StreamRequest) -> Self::Future {
        let transport = self.clone();
        ResponseFuture {
            inner: Box::pin(async move { transport.stream(request).await }),
        }
    }
}

//! [`MockServer`]: the listener, the accept loop and the connections.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::Service;

use crate::config::MockConfig;
use crate::counters::Counters;
use crate::service::{ConnControl, Shared, envelope_413, router};

/// The request headers that carry a key, for [`Counters::with_credentials`].
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// A running mock provider on 127.0.0.1.
///
/// It serves on a task of the Tokio runtime it was started in. Dropping it stops the server
/// and closes every connection; [`shutdown`](Self::shutdown) does the same and waits until it
/// is done.
pub struct MockServer {
    addr: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("url", &self.url)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds 127.0.0.1 on `config.port` (0: a free port) and starts serving on a spawned task.
    ///
    /// Binding happens at once; the future resolves as soon as the server listens. It must run
    /// on a Tokio runtime with I/O and time enabled (any `#[tokio::test]` or `#[tokio::main]`
    /// runtime): on another executor it returns an error, and, as with every Tokio socket, a
    /// runtime without the I/O driver panics.
    pub async fn start(config: MockConfig) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other("MockServer::start must be called within a Tokio runtime")
        })?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener)?
        };
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, Counters::new()));
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = runtime.spawn(accept_loop(
            listener,
            router(shared.clone()),
            shared.clone(),
            shutdown_rx,
        ));
        tracing::debug!(%addr, "chatstack-mock listening");
        Ok(Self {
            addr,
            url: format!("http://{addr}/v1"),
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT/v1`: what an OpenAI client takes as `base_url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The full URL of the chat completions endpoint.
    pub fn chat_completions_url(&self) -> String {
        format!("{}/chat/completions", self.url)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's request counters (a shared handle: it stays live).
    pub fn counters(&self) -> Counters {
        self.shared.counters.clone()
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Stops accepting, closes every connection (streams and stalls included), and waits
    /// until the server task has finished.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Aborting the accept loop drops its JoinSet, which aborts every connection task.
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Small SSE writes must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(
                        stream,
                        builder.clone(),
                        router.clone(),
                        shared.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::debug!(%error, "chatstack-mock: accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    shared: Arc<Shared>,
) {
    let control = Arc::new(ConnControl::default());
    let io = TokioIo::new(ConnIo {
        stream,
        control: control.clone(),
        counters: shared.counters.clone(),
    });
    let request_control = control.clone();
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        let counters = &shared.counters;
        counters.count_request();
        if request.version() == http::Version::HTTP_2 {
            counters.count_http2();
        }
        if CREDENTIAL_HEADERS
            .iter()
            .any(|name| request.headers().contains_key(*name))
        {
            counters.count_with_credentials();
        }
        request.extensions_mut().insert(request_control.clone());
        let mut router = router.clone();
        let shared = shared.clone();
        async move {
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            shared.counters.count_status(response.status());
            Ok::<_, Infallible>(envelope_413(response))
        }
    });
    let connection = builder.serve_connection(io, service);
    tokio::select! {
        biased;
        () = control.drop_requested() => {
            // Dropping the connection drops `ConnIo`: a plain close (FIN), or, when a reset
            // was asked for, SO_LINGER 0 first and so RST.
        }
        result = connection => {
            if let Err(error) = result {
                tracing::trace!(%error, "chatstack-mock: connection ended with an error");
            }
        }
    }
}

/// A TCP stream that is reset (SO_LINGER 0, so `close` sends RST) instead of closed when its
/// connection asked for a reset, and that counts the bytes written to it.
struct ConnIo {
    stream: TcpStream,
    control: Arc<ConnControl>,
    counters: Counters,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.control.reset_requested() {
            if let Err(error) = self.stream.set_zero_linger() {
                tracing::debug!(%error, "chatstack-mock: could not set SO_LINGER 0");
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(bytes)) = written {
            self.counters.count_bytes_written(bytes);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(bytes)) = written {
            self.counters.count_bytes_written(bytes);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

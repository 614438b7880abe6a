//! [`Auth`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatstack_proto::{Error, LlmRequest};
use tower::Service;

use super::future::ResponseFuture;
use super::pool::KeyPool;

/// Puts an API key on every request; see [`AuthLayer`](super::AuthLayer) and the
/// [module docs](super).
///
/// Made by [`AuthLayer`](super::AuthLayer). Clones share the layer's pool of keys.
/// `poll_ready` is the inner service's; a request with no key to send fails in its response
/// future without reaching the inner service.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    pool: Arc<KeyPool>,
}

impl<S> Auth<S> {
    pub(crate) fn from_parts(inner: S, pool: Arc<KeyPool>) -> Self {
        Self { inner, pool }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, to change.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Auth");
        debug.field("inner", &self.inner);
        self.pool.debug_fields(&mut debug);
        debug.finish()
    }
}

impl<S, R> Service<R> for Auth<S>
where
    S: Service<R, Error = Error>,
    R: LlmRequest,
{
    type Response = S::Response;
    type Error = Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: R) -> Self::Future {
        let header = self.pool.header();
        if request.meta().headers.contains_key(header) {
            // The request brought its own key: send it untouched, and never blame a pool
            // key for what that key meets.
            return ResponseFuture::sent(self.inner.call(request), None);
        }
        match self.pool.choose() {
            Ok((value, ticket)) => {
                request.meta_mut().headers.insert(header.clone(), value);
                let key = (Arc::clone(&self.pool), ticket);
                ResponseFuture::sent(self.inner.call(request), Some(key))
            }
            Err(error) => ResponseFuture::refused(error),
        }
    }
}

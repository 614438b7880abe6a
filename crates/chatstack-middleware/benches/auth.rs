//! What the auth layer adds to a call: a no-op inner service alone, then wrapped with one
//! key, a pool of three, a callback source, and a pool whose keys are all out of rotation
//! (the refusal path). The difference between `inner_alone` and `one_key` is the cost per
//! call on the hot path: choosing the key, cloning its ready-made header value, and
//! inserting it into the request's (empty) header map, which allocates the map's storage.

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use chatstack_middleware::auth::{ApiKey, AuthLayer, KeySource};
use chatstack_middleware::{Error, LlmRequest};
use chatstack_proto::RequestMeta;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use tower::{Layer, Service};

const KEYS: [&str; 3] = [
    "sk-bench-alpha-0123456789abcdefAAAA",
    "sk-bench-bravo-0123456789abcdefBBBB",
    "sk-bench-charlie-0123456789abcdCCCC",
];

/// A request that costs nothing to make.
#[derive(Default)]
struct Request {
    meta: RequestMeta,
}

impl LlmRequest for Request {
    fn model(&self) -> &str {
        "gpt-4.1"
    }
    fn meta(&self) -> &RequestMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut RequestMeta {
        &mut self.meta
    }
}

/// Answers at once (with the number of headers it got), or fails with a 401.
#[derive(Clone, Copy)]
struct NoOp {
    fail: bool,
}

impl Service<Request> for NoOp {
    type Response = usize;
    type Error = Error;
    type Future = Ready<Result<usize, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        ready(if self.fail {
            Err(Error::from_response(
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
                b"",
            ))
        } else {
            Ok(request.meta.headers.len())
        })
    }
}

/// One call, polled to its end (every future here is ready at once).
fn call<S>(service: &mut S) -> Result<usize, Error>
where
    S: Service<Request, Response = usize, Error = Error>,
{
    service
        .call(black_box(Request::default()))
        .now_or_never()
        .expect("ready at once")
}

fn key(text: &str) -> ApiKey {
    ApiKey::new(text).expect("a valid key")
}

fn auth(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth");

    let mut inner = NoOp { fail: false };
    group.bench_function("inner_alone", |b| b.iter(|| call(&mut inner).is_ok()));

    let mut one_key = AuthLayer::new(key(KEYS[0])).layer(NoOp { fail: false });
    group.bench_function("one_key", |b| b.iter(|| call(&mut one_key).is_ok()));

    let mut pool = AuthLayer::pool(KEYS.map(key)).layer(NoOp { fail: false });
    group.bench_function("pool_of_three", |b| b.iter(|| call(&mut pool).is_ok()));

    let source = KeySource::callback(|| Ok(SecretString::from(KEYS[1])));
    let mut callback = AuthLayer::new(source).layer(NoOp { fail: false });
    group.bench_function("callback", |b| b.iter(|| call(&mut callback).is_ok()));

    let mut refused = AuthLayer::pool(KEYS.map(key)).layer(NoOp { fail: true });
    for _ in KEYS {
        let _ = call(&mut refused); // every key meets a 401 and leaves the rotation
    }
    group.bench_function("all_out_refused", |b| {
        b.iter(|| call(&mut refused).is_err())
    });
    group.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);

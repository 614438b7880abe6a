//! Request counters: lock-free on the hot path, readable at any time as a snapshot.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use crate::fault::{FAULT_COUNT, FAULT_NAMES, Fault};

/// The most distinct model names counted one by one; requests for further models are counted
/// under [`OTHER_MODELS`], so a client cannot grow the map without bound.
const MAX_MODELS: usize = 1024;

/// The `by_model` key for requests past the first 1,024 distinct model names.
pub const OTHER_MODELS: &str = "(other)";

/// The request counters of a [`MockServer`](crate::MockServer).
///
/// A cheap handle (an `Arc`): clone it, keep it after the server is gone, read it from any
/// thread. Counting uses atomics (and, for a model name not seen before, a short write lock),
/// so it costs the server almost nothing.
///
/// - `total`: every HTTP request received, on any path.
/// - `by_status`: the status of every response the mock sent (for a stream or a broken body:
///   the status of its head). A [`Fault::Reset`] sends no response: it counts in `resets`.
/// - `by_model`: chat completions whose key was accepted and whose body parsed, by `model`.
/// - `by_fault`: faults injected, by canonical name (header and configured ones alike).
/// - `streams`: streamed (SSE) responses started.
/// - `in_flight_requests` / `in_flight_streams`: gauges of requests being answered (a
///   response counts until its body is fully sent or dropped) and of SSE bodies being sent.
///   They settle a moment after the client has read the end of a response.
/// - `with_credentials`: requests, on any path, that carried a credential header
///   (`authorization`, `api-key` or `x-api-key`, whatever its value), so a test can tell
///   whether a key reached this server (say, after a redirect from another one). The values
///   are never kept.
/// - `http2_requests`: requests that arrived over HTTP/2.
/// - `bytes_written`: bytes written to client connections (heads and bodies, every path), so
///   a test can tell how much of a large body a client read before it stopped. It grows as
///   the kernel accepts the bytes, so it runs ahead of the client by the socket buffers.
#[derive(Clone, Default)]
pub struct Counters {
    inner: Arc<Inner>,
}

struct Inner {
    total: AtomicU64,
    statuses: Box<[AtomicU64]>,
    models: RwLock<HashMap<String, AtomicU64>>,
    faults: [AtomicU64; FAULT_COUNT],
    resets: AtomicU64,
    streams: AtomicU64,
    in_flight_requests: AtomicU64,
    in_flight_streams: AtomicU64,
    with_credentials: AtomicU64,
    http2_requests: AtomicU64,
    bytes_written: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            total: AtomicU64::new(0),
            statuses: (0..1000).map(|_| AtomicU64::new(0)).collect(),
            models: RwLock::new(HashMap::new()),
            faults: Default::default(),
            resets: AtomicU64::new(0),
            streams: AtomicU64::new(0),
            in_flight_requests: AtomicU64::new(0),
            in_flight_streams: AtomicU64::new(0),
            with_credentials: AtomicU64::new(0),
            http2_requests: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

impl Counters {
    /// New, zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// A consistent-enough copy of every counter (each one is read atomically; the set is not
    /// read at one instant).
    pub fn snapshot(&self) -> CounterSnapshot {
        let inner = &*self.inner;
        let by_status = inner
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(code, count)| {
                let count = count.load(Relaxed);
                (count > 0).then_some((code as u16, count))
            })
            .collect();
        let by_model = inner
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(model, count)| {
                let count = count.load(Relaxed);
                (count > 0).then(|| (model.clone(), count))
            })
            .collect();
        let by_fault = FAULT_NAMES
            .iter()
            .zip(&inner.faults)
            .filter_map(|(name, count)| {
                let count = count.load(Relaxed);
                (count > 0).then(|| ((*name).to_owned(), count))
            })
            .collect();
        CounterSnapshot {
            total: inner.total.load(Relaxed),
            by_status,
            by_model,
            by_fault,
            resets: inner.resets.load(Relaxed),
            streams: inner.streams.load(Relaxed),
            in_flight_requests: inner.in_flight_requests.load(Relaxed),
            in_flight_streams: inner.in_flight_streams.load(Relaxed),
            with_credentials: inner.with_credentials.load(Relaxed),
            http2_requests: inner.http2_requests.load(Relaxed),
            bytes_written: inner.bytes_written.load(Relaxed),
        }
    }

    /// Zeroes every counter except the two in-flight gauges, which track live state.
    /// Not atomic with respect to requests being counted meanwhile.
    pub fn reset(&self) {
        let inner = &*self.inner;
        inner.total.store(0, Relaxed);
        for count in inner.statuses.iter().chain(&inner.faults) {
            count.store(0, Relaxed);
        }
        inner
            .models
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for count in [
            &inner.resets,
            &inner.streams,
            &inner.with_credentials,
            &inner.http2_requests,
            &inner.bytes_written,
        ] {
            count.store(0, Relaxed);
        }
    }

    /// Requests received in total.
    pub fn total(&self) -> u64 {
        self.inner.total.load(Relaxed)
    }

    /// Responses sent with this status.
    pub fn status(&self, status: u16) -> u64 {
        self.inner
            .statuses
            .get(usize::from(status))
            .map_or(0, |count| count.load(Relaxed))
    }

    /// Chat completions for this model.
    pub fn model(&self, model: &str) -> u64 {
        self.inner
            .models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .map_or(0, |count| count.load(Relaxed))
    }

    /// Times this kind of fault was injected (the argument of `fault` is ignored).
    pub fn fault(&self, fault: Fault) -> u64 {
        self.inner.faults[fault.index()].load(Relaxed)
    }

    /// Connections reset by [`Fault::Reset`].
    pub fn resets(&self) -> u64 {
        self.inner.resets.load(Relaxed)
    }

    /// Requests being answered now.
    pub fn in_flight_requests(&self) -> u64 {
        self.inner.in_flight_requests.load(Relaxed)
    }

    /// SSE bodies being sent now.
    pub fn in_flight_streams(&self) -> u64 {
        self.inner.in_flight_streams.load(Relaxed)
    }

    /// Requests that carried `authorization`, `api-key` or `x-api-key`.
    pub fn with_credentials(&self) -> u64 {
        self.inner.with_credentials.load(Relaxed)
    }

    /// Requests that arrived over HTTP/2.
    pub fn http2_requests(&self) -> u64 {
        self.inner.http2_requests.load(Relaxed)
    }

    /// Bytes written to client connections so far.
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes_written.load(Relaxed)
    }

    pub(crate) fn count_request(&self) {
        self.inner.total.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_with_credentials(&self) {
        self.inner.with_credentials.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_http2(&self) {
        self.inner.http2_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_bytes_written(&self, bytes: usize) {
        self.inner.bytes_written.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn count_status(&self, status: http::StatusCode) {
        if let Some(count) = self.inner.statuses.get(usize::from(status.as_u16())) {
            count.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn count_model(&self, model: &str) {
        let models = &self.inner.models;
        {
            let map = models.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = map.get(model) {
                count.fetch_add(1, Relaxed);
                return;
            }
        }
        let mut map = models.write().unwrap_or_else(PoisonError::into_inner);
        let key = if map.len() < MAX_MODELS || map.contains_key(model) {
            model
        } else {
            OTHER_MODELS
        };
        match map.get(key) {
            Some(count) => {
                count.fetch_add(1, Relaxed);
            }
            None => {
                map.insert(key.to_owned(), AtomicU64::new(1));
            }
        }
    }

    pub(crate) fn count_fault(&self, fault: &Fault) {
        self.inner.faults[fault.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn count_reset(&self) {
        self.inner.resets.fetch_add(1, Relaxed);
    }

    /// Counts a request in flight until the guard drops.
    pub(crate) fn request_guard(&self) -> InFlight {
        self.inner.in_flight_requests.fetch_add(1, Relaxed);
        InFlight {
            counters: self.clone(),
            stream: false,
        }
    }

    /// Counts a stream (started, and in flight until the guard drops).
    pub(crate) fn stream_guard(&self) -> InFlight {
        self.inner.streams.fetch_add(1, Relaxed);
        self.inner.in_flight_streams.fetch_add(1, Relaxed);
        InFlight {
            counters: self.clone(),
            stream: true,
        }
    }
}

/// Decrements an in-flight gauge on drop.
pub(crate) struct InFlight {
    counters: Counters,
    stream: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let inner = &self.counters.inner;
        let gauge = if self.stream {
            &inner.in_flight_streams
        } else {
            &inner.in_flight_requests
        };
        gauge.fetch_sub(1, Relaxed);
    }
}

/// A copy of the [`Counters`] at one moment. Maps hold only non-zero entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterSnapshot {
    /// Requests received in total.
    pub total: u64,
    /// Responses sent, by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Chat completions, by model.
    pub by_model: BTreeMap<String, u64>,
    /// Faults injected, by canonical fault name.
    pub by_fault: BTreeMap<String, u64>,
    /// Connections reset by the `reset` fault (they have no status).
    pub resets: u64,
    /// Streamed responses started.
    pub streams: u64,
    /// Requests being answered.
    pub in_flight_requests: u64,
    /// SSE bodies being sent.
    pub in_flight_streams: u64,
    /// Requests that carried `authorization`, `api-key` or `x-api-key`.
    pub with_credentials: u64,
    /// Requests that arrived over HTTP/2.
    pub http2_requests: u64,
    /// Bytes written to client connections.
    pub bytes_written: u64,
}

impl CounterSnapshot {
    /// Responses sent with this status.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Chat completions for this model.
    pub fn model(&self, model: &str) -> u64 {
        self.by_model.get(model).copied().unwrap_or(0)
    }

    /// Times the fault with this canonical name was injected.
    pub fn fault(&self, name: &str) -> u64 {
        self.by_fault.get(name).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_resets() {
        let counters = Counters::new();
        counters.count_request();
        counters.count_request();
        counters.count_status(http::StatusCode::OK);
        counters.count_status(http::StatusCode::from_u16(529).unwrap());
        counters.count_model("a");
        counters.count_model("a");
        counters.count_model("b");
        counters.count_fault(&Fault::stall(3));
        counters.count_reset();
        counters.count_with_credentials();
        counters.count_http2();
        counters.count_bytes_written(100);
        counters.count_bytes_written(23);
        {
            let _request = counters.request_guard();
            let _stream = counters.stream_guard();
            let snapshot = counters.snapshot();
            assert_eq!(snapshot.in_flight_requests, 1);
            assert_eq!(snapshot.in_flight_streams, 1);
        }
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.total, 2);
        assert_eq!(snapshot.status(200), 1);
        assert_eq!(snapshot.status(529), 1);
        assert_eq!(snapshot.model("a"), 2);
        assert_eq!(snapshot.fault("stall"), 1);
        assert_eq!(counters.fault(Fault::stall(0)), 1);
        assert_eq!(snapshot.resets, 1);
        assert_eq!(snapshot.streams, 1);
        assert_eq!(snapshot.in_flight_requests, 0);
        assert_eq!(snapshot.with_credentials, 1);
        assert_eq!(snapshot.http2_requests, 1);
        assert_eq!(snapshot.bytes_written, 123);
        assert_eq!(counters.bytes_written(), 123);
        counters.reset();
        assert_eq!(counters.snapshot(), CounterSnapshot::default());
    }

    #[test]
    fn model_names_are_bounded() {
        let counters = Counters::new();
        for i in 0..MAX_MODELS + 10 {
            counters.count_model(&format!("m{i}"));
        }
        counters.count_model("m0");
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.by_model.len(), MAX_MODELS + 1);
        assert_eq!(snapshot.model(OTHER_MODELS), 10);
        assert_eq!(snapshot.model("m0"), 2);
    }
}

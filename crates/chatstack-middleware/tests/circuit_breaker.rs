//! The circuit breaker: alone over a scripted `service_fn` on tokio's paused clock, and over
//! real loopback HTTP through `HttpTransport` against chatstack-mock (real time, short waits).
#![cfg(feature = "circuit-breaker")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatstack_middleware::circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, CircuitState, StateChange,
};
use chatstack_middleware::{ChatRequest, ChatStream, Error, ErrorKind, Message, StreamRequest};
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use support::{Answer, Ask, Script, Step};
use tower::{Layer, Service, ServiceExt};

use CircuitState::{Closed, HalfOpen, Open};

const OPEN_FOR: Duration = Duration::from_secs(30);

/// Window 10, minimum 10 calls, 50 %, 30 s open, 2 probes.
fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
        .sliding_window_size(10)
        .minimum_calls(10)
        .failure_rate_threshold(50.0)
        .open_duration(OPEN_FOR)
        .half_open_probes(2)
}

/// A 503: the provider's fault.
fn unavailable() -> Error {
    Error::from_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"")
}

/// A 400: the caller's fault.
fn bad_request() -> Error {
    Error::from_response(StatusCode::BAD_REQUEST, &HeaderMap::new(), b"")
}

fn fails(n: usize) -> impl Iterator<Item = Step> {
    (0..n).map(|_| Step::fail(unavailable))
}

fn answers(n: usize) -> impl Iterator<Item = Step> {
    (0..n).map(|_| Step::ok())
}

async fn send<S>(service: &mut S, model: &str) -> Result<Answer, Error>
where
    S: Service<Ask, Response = Answer, Error = Error>,
{
    service.ready().await?.call(Ask::new(model)).await
}

/// Sends `n` requests one after the other and returns how many failed.
async fn send_n<S>(service: &mut S, model: &str, n: usize) -> usize
where
    S: Service<Ask, Response = Answer, Error = Error>,
{
    let mut failed = 0;
    for _ in 0..n {
        failed += usize::from(send(service, model).await.is_err());
    }
    failed
}

/// A layer whose callback records every change.
fn recorded(config: CircuitBreakerConfig) -> (CircuitBreakerLayer, Arc<Mutex<Vec<StateChange>>>) {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&changes);
    let layer = CircuitBreakerLayer::new(config)
        .on_state_change(move |change| sink.lock().unwrap().push(change.clone()));
    (layer, changes)
}

fn transitions(changes: &Mutex<Vec<StateChange>>) -> Vec<(CircuitState, CircuitState)> {
    changes
        .lock()
        .unwrap()
        .iter()
        .map(|change| (change.from, change.to))
        .collect()
}

/// Opens the circuit of `model` with 10 failures (the script must fail them).
async fn trip<S>(service: &mut S, model: &str)
where
    S: Service<Ask, Response = Answer, Error = Error>,
{
    assert_eq!(send_n(service, model, 10).await, 10);
}

#[tokio::test(start_paused = true)]
async fn opens_on_the_outcome_that_reaches_the_failure_rate() {
    // Failures and successes alternate: 5 of each.
    let script = Script::new(fails(5).zip(answers(5)).flat_map(|(f, a)| [f, a]));
    let (layer, changes) = recorded(config());
    let mut service = layer.layer(script.service());
    for call in 1..=9 {
        let _ = send(&mut service, "m").await;
        assert_eq!(service.state("m"), Closed, "after outcome {call}");
    }
    let _ = send(&mut service, "m").await;
    assert_eq!(service.state("m"), Open, "5 failures of 10 reach 50 %");

    let changes = changes.lock().unwrap();
    assert_eq!(changes.len(), 1);
    let change = &changes[0];
    assert_eq!((change.from, change.to), (Closed, Open));
    assert_eq!(&*change.key, "m");
    assert_eq!(change.calls, 10);
    assert_eq!(change.failure_rate, Some(50.0));
    assert_eq!(change.slow_call_rate, Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn stays_closed_under_the_threshold_and_before_the_minimum_calls() {
    // 4 failures of 10: 40 % < 50 %.
    let script = Script::new(fails(4).chain(answers(6)));
    let mut service = CircuitBreakerLayer::new(config()).layer(script.service());
    assert_eq!(send_n(&mut service, "m", 10).await, 4);
    assert_eq!(service.state("m"), Closed);

    // Nine failures are 100 %, but fewer than the minimum of 10 calls.
    let script = Script::new(fails(10));
    let mut service = CircuitBreakerLayer::new(config()).layer(script.service());
    assert_eq!(send_n(&mut service, "m", 9).await, 9);
    assert_eq!(service.state("m"), Closed);
    let _ = send(&mut service, "m").await;
    assert_eq!(service.state("m"), Open);
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_over_the_last_outcomes() {
    // 4 failures, then successes: the failures leave the window and later ones count.
    let script = Script::new(fails(4).chain(answers(10)).chain(fails(5)));
    let mut service = CircuitBreakerLayer::new(config()).layer(script.service());
    send_n(&mut service, "m", 14).await;
    assert_eq!(service.state("m"), Closed);
    // The window is now 10 successes: 4 failures make 40 %, the 5th 50 %.
    send_n(&mut service, "m", 4).await;
    assert_eq!(service.state("m"), Closed);
    send_n(&mut service, "m", 1).await;
    assert_eq!(service.state("m"), Open);
}

#[tokio::test(start_paused = true)]
async fn a_minimum_above_the_window_counts_as_the_window() {
    let script = Script::new(fails(4));
    let config = config().sliding_window_size(4).minimum_calls(100);
    let mut service = CircuitBreakerLayer::new(config).layer(script.service());
    send_n(&mut service, "m", 4).await;
    assert_eq!(service.state("m"), Open);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_rejects_without_calling_the_inner_service() {
    let script = Script::new(fails(10).chain(answers(1)));
    let mut service = CircuitBreakerLayer::new(config()).layer(script.service());
    trip(&mut service, "gpt-4.1").await;
    assert_eq!(script.calls(), 10);

    tokio::time::advance(Duration::from_secs(10)).await;
    let error = send(&mut service, "gpt-4.1").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    assert!(error.is_circuit_open() && !error.is_retryable());
    assert_eq!(
        error.retry_after(),
        Some(Duration::from_secs(20)),
        "the wait left until it half-opens"
    );
    assert!(error.to_string().contains("`gpt-4.1`"), "{error}");
    assert_eq!(script.calls(), 10, "the inner service was not called");

    // Just before the wait is over it still rejects; then it half-opens.
    tokio::time::advance(Duration::from_secs(20) - Duration::from_millis(1)).await;
    let error = send(&mut service, "gpt-4.1").await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_millis(1)));
    assert_eq!(service.state("gpt-4.1"), Open);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(service.state("gpt-4.1"), HalfOpen);
    assert_eq!(script.calls(), 10);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_configured_probes_and_closes_when_they_succeed() {
    let probe_time = Duration::from_secs(1);
    let script = Script::new(fails(10).chain([Step::Answer(probe_time)]));
    let (layer, changes) = recorded(config());
    let mut service = layer.layer(script.service());
    trip(&mut service, "m").await;
    tokio::time::advance(OPEN_FOR).await;

    // Two probes are admitted and stay in flight; the third call is rejected.
    let first = service.ready().await.unwrap().call(Ask::new("m"));
    let second = service.ready().await.unwrap().call(Ask::new("m"));
    let third = send(&mut service, "m").await.unwrap_err();
    assert_eq!(third.kind(), ErrorKind::CircuitOpen);
    assert!(third.to_string().contains("half-open"), "{third}");
    assert_eq!(third.retry_after(), None, "when the probes end is unknown");
    assert_eq!(service.state("m"), HalfOpen);

    let (first, second) = tokio::join!(first, second);
    assert!(first.is_ok() && second.is_ok());
    assert_eq!(script.calls(), 12, "exactly two probes reached the service");
    assert_eq!(service.state("m"), Closed);
    assert_eq!(
        transitions(&changes),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
    assert_eq!(changes.lock().unwrap()[2].failure_rate, Some(0.0));
    assert!(send(&mut service, "m").await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_reopens_the_circuit_at_once() {
    // With 2 probes and a 50 % threshold, one failed probe decides: the other, still in
    // flight, cannot bring the rate under 50 %.
    let script = Script::new(
        fails(10)
            .chain([Step::Answer(Duration::from_secs(5))])
            .chain(fails(1)),
    );
    let (layer, changes) = recorded(config());
    let mut service = layer.layer(script.service());
    trip(&mut service, "m").await;
    tokio::time::advance(OPEN_FOR).await;

    let mut slow = Box::pin(service.ready().await.unwrap().call(Ask::new("m")));
    let failing = service.ready().await.unwrap().call(Ask::new("m"));
    // Start the slow probe (the script answers it in 5 s), then let the other one fail.
    assert!(
        tokio::time::timeout(Duration::from_millis(1), &mut slow)
            .await
            .is_err()
    );
    assert!(failing.await.is_err());
    assert_eq!(service.state("m"), Open);
    let rejected = send(&mut service, "m").await.unwrap_err();
    assert!(rejected.retry_after().unwrap() <= OPEN_FOR);

    // The other probe's success comes too late to count.
    assert!(slow.await.is_ok());
    assert_eq!(service.state("m"), Open);
    assert_eq!(
        transitions(&changes),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn probes_close_when_their_failure_rate_is_under_the_threshold() {
    // 3 probes: one failure is 33 % < 50 %, so the circuit closes once all three counted.
    let script = Script::new(fails(10).chain(fails(1)).chain(answers(2)));
    let config = config().half_open_probes(3);
    let (layer, changes) = recorded(config);
    let mut service = layer.layer(script.service());
    trip(&mut service, "m").await;
    tokio::time::advance(OPEN_FOR).await;

    assert!(send(&mut service, "m").await.is_err());
    assert_eq!(service.state("m"), HalfOpen);
    assert!(send(&mut service, "m").await.is_ok());
    assert_eq!(
        service.state("m"),
        HalfOpen,
        "closes only once every probe counted"
    );
    assert!(send(&mut service, "m").await.is_ok());
    assert_eq!(service.state("m"), Closed);
    let last = changes.lock().unwrap().last().cloned().unwrap();
    assert_eq!((last.from, last.to, last.calls), (HalfOpen, Closed, 3));
    assert!((last.failure_rate.unwrap() - 100.0 / 3.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_circuit_when_slow_call_detection_is_on() {
    let steps = || [1, 3, 1, 3].map(|seconds| Step::Answer(Duration::from_secs(seconds)));
    let window = config().sliding_window_size(4).minimum_calls(4);

    // Off by default: slow successes are plain successes.
    let script = Script::new(steps());
    let mut service = CircuitBreakerLayer::new(window).layer(script.service());
    assert_eq!(send_n(&mut service, "m", 4).await, 0);
    assert_eq!(service.state("m"), Closed);

    // On: 2 calls of 4 took longer than 2 s, which reaches a 50 % slow-call threshold.
    let script = Script::new(steps());
    let (layer, changes) = recorded(
        window
            .slow_call_duration(Duration::from_secs(2))
            .slow_call_rate_threshold(50.0),
    );
    let mut service = layer.layer(script.service());
    assert_eq!(send_n(&mut service, "m", 3).await, 0);
    assert_eq!(service.state("m"), Closed);
    assert_eq!(send_n(&mut service, "m", 1).await, 0);
    assert_eq!(service.state("m"), Open);
    let change = changes.lock().unwrap()[0].clone();
    assert_eq!(change.failure_rate, Some(0.0));
    assert_eq!(change.slow_call_rate, Some(50.0));
}

#[tokio::test(start_paused = true)]
async fn caller_faults_count_as_neither_success_nor_failure() {
    // Had the 400s counted as successes, 9 failures in a window of 10 would open the
    // circuit; as it is, the window holds only the 9 failures, under the minimum of 10.
    let script = Script::new((0..20).map(|_| Step::fail(bad_request)).chain(fails(10)));
    let mut service = CircuitBreakerLayer::new(config()).layer(script.service());
    let error = send(&mut service, "m").await.unwrap_err();
    assert!(error.is_invalid_request() && !error.is_provider_fault());
    send_n(&mut service, "m", 19).await;
    assert_eq!(service.state("m"), Closed);
    send_n(&mut service, "m", 9).await;
    assert_eq!(service.state("m"), Closed);
    send_n(&mut service, "m", 1).await;
    assert_eq!(service.state("m"), Open);
}

#[tokio::test(start_paused = true)]
async fn the_failure_predicate_can_be_replaced() {
    let script = Script::new((0..4).map(|_| Step::fail(bad_request)));
    let layer = CircuitBreakerLayer::new(config().sliding_window_size(4).minimum_calls(4))
        .count_as_failure(|error| error.is_invalid_request());
    let mut service = layer.layer(script.service());
    send_n(&mut service, "m", 4).await;
    assert_eq!(service.state("m"), Open);
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_circuit() {
    let script = Script::new(fails(10).chain(answers(1)));
    let layer = CircuitBreakerLayer::new(config());
    let mut service = layer.layer(script.service());
    trip(&mut service, "model-a").await;
    assert_eq!(layer.state("model-a"), Open);
    assert_eq!(layer.state("model-b"), Closed);

    assert!(send(&mut service, "model-b").await.is_ok());
    assert!(
        send(&mut service, "model-a")
            .await
            .unwrap_err()
            .is_circuit_open()
    );
    assert_eq!(script.calls(), 11);
    assert_eq!(layer.state("model-b"), Closed);
}

#[tokio::test(start_paused = true)]
async fn keys_can_be_per_endpoint_or_a_function_of_the_request() {
    // One circuit for the endpoint, whatever the model.
    let script = Script::new(fails(10));
    let layer = CircuitBreakerLayer::new(config()).per_endpoint("primary");
    let mut service = layer.layer(script.service());
    for model in ["a", "b"].into_iter().cycle().take(10) {
        let _ = send(&mut service, model).await;
    }
    assert_eq!(layer.state("primary"), Open);
    let error = send(&mut service, "c").await.unwrap_err();
    assert!(error.to_string().contains("`primary`"), "{error}");

    // A key of the caller's choosing: here the request's tag.
    let script = Script::new(fails(10));
    let layer = CircuitBreakerLayer::new(config())
        .key_fn(|request| request.meta().tag.as_deref().unwrap_or("untagged").into());
    let mut service = layer.layer(script.service());
    for _ in 0..10 {
        let mut ask = Ask::new("m");
        ask.meta.tag = Some("batch".into());
        let _ = service.ready().await.unwrap().call(ask).await;
    }
    assert_eq!(layer.state("batch"), Open);
    assert_eq!(layer.state("untagged"), Closed);
    assert_eq!(layer.state("m"), Closed);
}

#[tokio::test(start_paused = true)]
async fn clones_share_their_circuits() {
    let script = Script::new(fails(10).chain(answers(1)));
    let layer = CircuitBreakerLayer::new(config());
    let mut first = layer.layer(script.service());
    let mut second = first.clone();
    let mut third = layer.layer(script.service());
    trip(&mut first, "m").await;
    assert_eq!(second.state("m"), Open);
    assert!(send(&mut second, "m").await.unwrap_err().is_circuit_open());
    assert!(send(&mut third, "m").await.unwrap_err().is_circuit_open());
    assert_eq!(script.calls(), 10);

    // A layer reconfigured by a builder method has circuits of its own.
    let other = layer.clone().per_endpoint("m");
    assert_eq!(other.state("m"), Closed);
}

#[tokio::test(start_paused = true)]
async fn the_callback_sees_every_transition_in_order() {
    let script = Script::new(fails(10).chain(fails(1)).chain(answers(2)));
    let (layer, changes) = recorded(config());
    let mut service = layer.layer(script.service());
    trip(&mut service, "m").await;
    tokio::time::advance(OPEN_FOR).await;
    assert!(send(&mut service, "m").await.is_err()); // a probe fails: open again
    tokio::time::advance(OPEN_FOR).await;
    assert_eq!(send_n(&mut service, "m", 2).await, 0); // both probes succeed: closed

    assert_eq!(
        transitions(&changes),
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
        ]
    );
    let changes = changes.lock().unwrap();
    let rates: Vec<_> = changes.iter().map(|c| (c.calls, c.failure_rate)).collect();
    assert_eq!(
        rates,
        [
            (10, Some(100.0)),
            (0, None),
            (1, Some(100.0)),
            (0, None),
            (2, Some(0.0)),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_callback_may_read_the_breaker() {
    let script = Script::new(fails(10));
    let layer_slot: Arc<Mutex<Option<CircuitBreakerLayer>>> = Arc::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (slot, sink) = (Arc::clone(&layer_slot), Arc::clone(&seen));
    let layer = CircuitBreakerLayer::new(config()).on_state_change(move |change| {
        let layer = slot.lock().unwrap().clone().unwrap();
        sink.lock().unwrap().push(layer.state(&change.key));
    });
    *layer_slot.lock().unwrap() = Some(layer.clone());
    let mut service = layer.layer(script.service());
    trip(&mut service, "m").await;
    assert_eq!(*seen.lock().unwrap(), [Open]);
    layer_slot.lock().unwrap().take();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_probe_future_releases_its_permit() {
    let script = Script::new(
        fails(10)
            .chain([Step::Answer(Duration::from_secs(10))])
            .chain(answers(1)),
    );
    let config = config().half_open_probes(1);
    let mut service = CircuitBreakerLayer::new(config).layer(script.service());
    trip(&mut service, "m").await;
    tokio::time::advance(OPEN_FOR).await;

    // The only probe is in flight (the inner service is working on it) ...
    let mut probe = Box::pin(service.ready().await.unwrap().call(Ask::new("m")));
    assert!(
        tokio::time::timeout(Duration::from_millis(1), &mut probe)
            .await
            .is_err()
    );
    assert_eq!(script.calls(), 11);
    assert!(send(&mut service, "m").await.unwrap_err().is_circuit_open());

    // ... and is dropped: the next call is admitted as the probe, and closes the circuit.
    drop(probe);
    assert_eq!(service.state("m"), HalfOpen);
    assert!(send(&mut service, "m").await.is_ok());
    assert_eq!(script.calls(), 12);
    assert_eq!(service.state("m"), Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_ends_in_a_caller_fault_frees_its_slot() {
    let script = Script::new(fails(10).chain([Step::fail(bad_request)]).chain(answers(1)));
    let config = config().half_open_probes(1);
    let mut service = CircuitBreakerLayer::new(config).layer(script.service());
    trip(&mut service, "m").await;
    tokio::time::advance(OPEN_FOR).await;
    assert!(
        send(&mut service, "m")
            .await
            .unwrap_err()
            .is_invalid_request()
    );
    assert_eq!(
        service.state("m"),
        HalfOpen,
        "a 400 says nothing about the provider"
    );
    assert!(send(&mut service, "m").await.is_ok());
    assert_eq!(service.state("m"), Closed);
}

#[tokio::test(start_paused = true)]
async fn the_wrapped_service_stays_reachable() {
    let script = Script::new(answers(1));
    let layer = CircuitBreakerLayer::default();
    let mut service: CircuitBreaker<_> = layer.layer(script.service());
    let _ = service.get_ref();
    let _ = service.get_mut();
    let mut inner = service.into_inner();
    assert!(send(&mut inner, "m").await.is_ok());
}

// Over the wire: real sockets, real time, short waits.

mod wire {
    use super::*;
    use chatstack_mock::{MockConfig, MockServer};
    use chatstack_transport::HttpTransport;

    const WIRE_OPEN_FOR: Duration = Duration::from_millis(200);

    async fn setup(config: CircuitBreakerConfig) -> (MockServer, CircuitBreaker<HttpTransport>) {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let transport = HttpTransport::builder()
            .base_url(mock.url())
            .build()
            .unwrap();
        let config = config.open_duration(WIRE_OPEN_FOR);
        (mock, CircuitBreakerLayer::new(config).layer(transport))
    }

    fn request(fault: Option<&str>) -> ChatRequest {
        let mut request = ChatRequest::new("gpt-4.1", [Message::user("Name three rivers.")]);
        if let Some(fault) = fault {
            request
                .meta
                .headers
                .insert("x-mock-fault", fault.parse().unwrap());
        }
        request
    }

    async fn unary(
        service: &mut CircuitBreaker<HttpTransport>,
        fault: Option<&str>,
    ) -> Result<chatstack_middleware::ChatResponse, Error> {
        ServiceExt::<ChatRequest>::ready(service)
            .await?
            .call(request(fault))
            .await
    }

    async fn stream(
        service: &mut CircuitBreaker<HttpTransport>,
        fault: Option<&str>,
    ) -> Result<ChatStream, Error> {
        ServiceExt::<StreamRequest>::ready(service)
            .await?
            .call(StreamRequest(request(fault)))
            .await
    }

    /// Reads a stream to its end; the error it ended with, if any.
    async fn drain(mut stream: ChatStream) -> Option<Error> {
        while let Some(item) = stream.next().await {
            if let Err(error) = item {
                return Some(error);
            }
        }
        None
    }

    fn small_window() -> CircuitBreakerConfig {
        config()
            .sliding_window_size(4)
            .minimum_calls(4)
            .half_open_probes(1)
    }

    #[tokio::test]
    async fn an_open_circuit_keeps_requests_off_the_wire_until_it_half_opens() {
        let (mock, mut service) = setup(small_window()).await;
        for _ in 0..4 {
            let error = unary(&mut service, Some("503")).await.unwrap_err();
            assert!(error.is_server(), "{error:?}");
        }
        assert_eq!(service.state("gpt-4.1"), Open);
        assert_eq!(mock.counters().total(), 4);

        let error = unary(&mut service, None).await.unwrap_err();
        assert!(error.is_circuit_open());
        let wait = error.retry_after().unwrap();
        assert!(wait > Duration::ZERO && wait <= WIRE_OPEN_FOR, "{wait:?}");
        assert_eq!(mock.counters().total(), 4, "no request reached the mock");

        tokio::time::sleep(wait).await;
        assert!(
            unary(&mut service, None).await.is_ok(),
            "the probe goes through"
        );
        assert_eq!(mock.counters().total(), 5);
        assert_eq!(service.state("gpt-4.1"), Closed);
    }

    #[tokio::test]
    async fn a_failed_probe_over_the_wire_reopens_the_circuit() {
        let (mock, mut service) = setup(small_window()).await;
        for _ in 0..4 {
            let _ = unary(&mut service, Some("overloaded")).await;
        }
        tokio::time::sleep(WIRE_OPEN_FOR).await;
        let error = unary(&mut service, Some("500")).await.unwrap_err();
        assert!(error.is_server());
        assert_eq!(service.state("gpt-4.1"), Open);
        assert!(
            unary(&mut service, None)
                .await
                .unwrap_err()
                .is_circuit_open()
        );
        assert_eq!(mock.counters().total(), 5);
    }

    #[tokio::test]
    async fn caller_faults_over_the_wire_do_not_count() {
        let (mock, mut service) = setup(small_window()).await;
        for _ in 0..6 {
            let error = unary(&mut service, Some("context_length_exceeded"))
                .await
                .unwrap_err();
            assert!(error.is_context_length_exceeded(), "{error:?}");
        }
        assert_eq!(service.state("gpt-4.1"), Closed);
        assert_eq!(mock.counters().status(400), 6);
    }

    #[tokio::test]
    async fn a_stream_that_fails_after_its_first_chunk_counts_as_a_failure_when_it_ends() {
        let config = config().sliding_window_size(2).minimum_calls(2);
        let (_mock, mut service) = setup(config).await;

        // A stream that completes counts as a success at its end.
        let ok = stream(&mut service, None).await.unwrap();
        assert!(drain(ok).await.is_none());
        assert_eq!(service.state("gpt-4.1"), Closed);

        // One that fails mid-way: nothing is known when its headers arrive ...
        let mut failing = stream(&mut service, Some("mid_stream_error:2"))
            .await
            .unwrap();
        let first = failing.next().await.unwrap();
        assert!(first.is_ok(), "{first:?}");
        assert_eq!(service.state("gpt-4.1"), Closed);
        // ... and it counts as a failure when it ends: 1 of 2 reaches 50 %.
        let error = drain(failing).await.expect("the stream fails");
        assert!(error.is_provider_fault(), "{error:?}");
        assert_eq!(service.state("gpt-4.1"), Open);
    }

    #[tokio::test]
    async fn a_dropped_stream_counts_as_neither_and_gives_its_probe_slot_back() {
        let config = config()
            .sliding_window_size(2)
            .minimum_calls(2)
            .half_open_probes(1);
        let (mock, mut service) = setup(config).await;

        // Dropped mid-way in the closed state: not counted (else 1 failure of 2 would open
        // the circuit).
        let mut dropped = stream(&mut service, None).await.unwrap();
        assert!(dropped.next().await.unwrap().is_ok());
        drop(dropped);
        let _ = unary(&mut service, Some("503")).await;
        assert_eq!(service.state("gpt-4.1"), Closed);
        let _ = unary(&mut service, Some("503")).await;
        assert_eq!(service.state("gpt-4.1"), Open);

        // Half-open: the probe is a stream, held open, so other calls are rejected ...
        tokio::time::sleep(WIRE_OPEN_FOR).await;
        let mut probe = stream(&mut service, None).await.unwrap();
        assert!(probe.next().await.unwrap().is_ok());
        assert!(
            unary(&mut service, None)
                .await
                .unwrap_err()
                .is_circuit_open()
        );
        let sent = mock.counters().total();

        // ... until it is dropped: the next call is the probe, and closes the circuit.
        drop(probe);
        assert_eq!(service.state("gpt-4.1"), HalfOpen);
        assert!(unary(&mut service, None).await.is_ok());
        assert_eq!(mock.counters().total(), sent + 1);
        assert_eq!(service.state("gpt-4.1"), Closed);
    }
}

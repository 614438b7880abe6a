//! The fallback layer: which failures fall back, to what, what the response and the error
//! say; with scripted services on tokio's paused clock, and over real loopback HTTP.
#![cfg(feature = "fallback")]

mod capture;
mod support;

use std::sync::{Arc, Mutex};

use capture::Capture;
use chatstack_middleware::fallback::{Alternative, AnsweredBy, FallbackLayer, SetModel};
use chatstack_proto::{Error, ErrorKind, LlmResponse, TimeoutKind};
use http::{HeaderMap, StatusCode};
use support::{Answer, Ask, Script, Step};
use tower::{Layer, Service, ServiceExt};

impl SetModel for Ask {
    fn set_model(&mut self, model: &str) {
        self.model = model.to_owned();
    }
}

fn answered_by(answer: &impl LlmResponse) -> (usize, String) {
    let answered = answer
        .meta()
        .extensions
        .get::<AnsweredBy>()
        .expect("every response through the layer says who answered");
    (answered.index(), answered.name().to_owned())
}

fn status_error(status: u16) -> Error {
    Error::from_response(
        StatusCode::from_u16(status).unwrap(),
        &HeaderMap::new(),
        b"",
    )
    .with_attempts(1)
}

/// A service that answers or fails by the request's model, and records the models asked for.
#[derive(Clone, Default)]
struct ByModel {
    models: Arc<Mutex<Vec<String>>>,
}

impl ByModel {
    fn service(
        &self,
        outcome: fn(&str) -> Result<(), Error>,
    ) -> impl Service<Ask, Response = Answer, Error = Error, Future: Send> + Clone + Send + Sync + 'static
    {
        let models = self.models.clone();
        tower::service_fn(move |request: Ask| {
            models.lock().unwrap().push(request.model.clone());
            let result = outcome(&request.model).map(|()| Answer::ok(&request.model));
            async move { result }
        })
    }

    fn models(&self) -> Vec<String> {
        self.models.lock().unwrap().clone()
    }
}

// ---- scripted services, paused clock ----

#[tokio::test(start_paused = true)]
async fn the_primary_answers_as_index_0_named_after_the_model() {
    let script = Script::new([Step::ok()]);
    let service = FallbackLayer::new().model("b").layer(script.service());
    let answer = service.oneshot(Ask::new("a")).await.unwrap();
    assert_eq!(answered_by(&answer), (0, "a".to_owned()));
    assert_eq!(answer.meta.attempts, 0, "untouched without a fallback");
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_falls_back_to_the_next_model() {
    let recorder = ByModel::default();
    let inner = recorder.service(|model| match model {
        "a" => Err(status_error(503)),
        _ => Ok(()),
    });
    let service = FallbackLayer::new().model("b").model("c").layer(inner);
    let answer = service.oneshot(Ask::new("a")).await.unwrap();
    assert_eq!(recorder.models(), ["a", "b"]);
    assert_eq!(answer.text, "b");
    assert_eq!(answered_by(&answer), (1, "b".to_owned()));
    assert_eq!(answer.meta.attempts, 2, "the failed attempt counts");
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_falls_back() {
    let script = Script::new([
        Step::fail(|| Error::new(ErrorKind::CircuitOpen, "the circuit of model a is open")),
        Step::ok(),
    ]);
    let service = FallbackLayer::new().model("b").layer(script.service());
    let answer = service.oneshot(Ask::new("a")).await.unwrap();
    assert_eq!(answered_by(&answer), (1, "b".to_owned()));
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_retryable_kind_falls_back() {
    let failures: [fn() -> Error; 6] = [
        || status_error(429),
        || status_error(500),
        || status_error(529),
        || Error::new(ErrorKind::Timeout(TimeoutKind::FirstChunk), "slow"),
        || Error::new(ErrorKind::Connection, "reset"),
        || Error::new(ErrorKind::Incomplete, "cut short"),
    ];
    for failure in failures {
        let script = Script::new([Step::fail(failure), Step::ok()]);
        let service = FallbackLayer::new().model("b").layer(script.service());
        let answer = service.oneshot(Ask::new("a")).await.unwrap();
        assert_eq!(answered_by(&answer).0, 1, "{}", failure());
    }
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_failure_does_not_fall_back() {
    let failures: [fn() -> Error; 6] = [
        || status_error(400),
        || status_error(401),
        || status_error(403),
        || Error::new(ErrorKind::BudgetExceeded, "over budget"),
        || Error::new(ErrorKind::ContextLengthExceeded, "too long"),
        || {
            let mut headers = HeaderMap::new();
            headers.insert("x-should-retry", "false".parse().unwrap());
            Error::from_response(StatusCode::SERVICE_UNAVAILABLE, &headers, b"")
        },
    ];
    for failure in failures {
        let script = Script::new([Step::fail(failure), Step::ok()]);
        let service = FallbackLayer::new().model("b").layer(script.service());
        let error = service.oneshot(Ask::new("a")).await.unwrap_err();
        assert_eq!(error.kind(), failure().kind());
        assert_eq!(error.attempts(), failure().attempts(), "unchanged");
        assert_eq!(script.calls(), 1, "no fallback for {error}");
    }
}

#[tokio::test(start_paused = true)]
async fn when_all_fail_the_last_error_comes_back_with_every_attempt() {
    let script = Script::new([
        Step::fail(|| status_error(503)),
        // A retry layer beneath made three attempts at the first alternative.
        Step::fail(|| {
            Error::new(ErrorKind::Timeout(TimeoutKind::Total), "no response").with_attempts(3)
        }),
        Step::fail(|| status_error(529)),
    ]);
    let service = FallbackLayer::new()
        .model("b")
        .model("c")
        .layer(script.service());
    let error = service.oneshot(Ask::new("a")).await.unwrap_err();
    assert_eq!(
        error.kind(),
        ErrorKind::Overloaded,
        "the last error: {error}"
    );
    assert_eq!(error.status(), Some(StatusCode::from_u16(529).unwrap()));
    assert_eq!(error.attempts(), 1 + 3 + 1);
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_failure_of_an_alternative_ends_the_search() {
    let recorder = ByModel::default();
    let inner = recorder.service(|model| match model {
        "a" => Err(status_error(503)),
        "b" => Err(status_error(400)),
        _ => Ok(()),
    });
    let service = FallbackLayer::new().model("b").model("c").layer(inner);
    let error = service.oneshot(Ask::new("a")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    assert_eq!(error.attempts(), 2);
    assert_eq!(recorder.models(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_service_alternative_gets_the_request_unchanged_or_with_its_model() {
    let primary = ByModel::default();
    let backup = ByModel::default();
    let layer = FallbackLayer::new()
        .service("backup", backup.service(|_| Ok(())))
        .alternative(Alternative::service("renamed", backup.service(|_| Ok(()))).with_model("z"));
    let service = layer.layer(primary.service(|_| Err(status_error(502))));
    let answer = service.clone().oneshot(Ask::new("a")).await.unwrap();
    assert_eq!(answered_by(&answer), (1, "backup".to_owned()));
    assert_eq!(backup.models(), ["a"]);

    let failing_backup = FallbackLayer::new()
        .service("backup", backup.service(|_| Err(status_error(500))))
        .alternative(Alternative::service("renamed", backup.service(|_| Ok(()))).with_model("z"))
        .layer(primary.service(|_| Err(status_error(502))));
    let answer = failing_backup.oneshot(Ask::new("a")).await.unwrap();
    assert_eq!(answered_by(&answer), (2, "renamed".to_owned()));
    assert_eq!(backup.models(), ["a", "a", "z"]);
    assert_eq!(primary.models(), ["a", "a"]);
}

#[tokio::test(start_paused = true)]
async fn without_alternatives_the_error_passes_unchanged() {
    let script = Script::new([Step::fail(|| status_error(503))]);
    let service = FallbackLayer::<Ask, Answer>::new().layer(script.service());
    let error = service.oneshot(Ask::new("a")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Server);
    assert_eq!(error.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_model_setter_function_serves_any_request_type() {
    #[derive(Clone)]
    struct Plain(Ask);
    impl chatstack_proto::LlmRequest for Plain {
        fn model(&self) -> &str {
            &self.0.model
        }
        fn meta(&self) -> &chatstack_proto::RequestMeta {
            &self.0.meta
        }
        fn meta_mut(&mut self) -> &mut chatstack_proto::RequestMeta {
            &mut self.0.meta
        }
    }
    let inner = tower::service_fn(|request: Plain| async move {
        match request.0.model.as_str() {
            "a" => Err(status_error(503)),
            model => Ok(Answer::ok(model)),
        }
    });
    let service = FallbackLayer::with_model_setter(|request: &mut Plain, model| {
        request.0.model = model.to_owned();
    })
    .model("b")
    .layer(inner);
    let answer = service.oneshot(Plain(Ask::new("a"))).await.unwrap();
    assert_eq!(answer.text, "b");
}

#[tokio::test(start_paused = true)]
async fn each_fallback_is_a_tracing_event() {
    let capture = Capture::default();
    let _installed = capture.install();
    let script = Script::new([
        Step::fail(|| status_error(503)),
        Step::fail(|| status_error(429)),
        Step::ok(),
    ]);
    let service = FallbackLayer::new()
        .model("b")
        .model("c")
        .layer(script.service());
    service.oneshot(Ask::new("a")).await.unwrap();
    let events = capture.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    for (event, (from, to, kind)) in events.iter().zip([
        (("0", "a"), ("1", "b"), "server error"),
        (("1", "b"), ("2", "c"), "rate limited"),
    ]) {
        assert_eq!(event.level, tracing::Level::WARN);
        assert_eq!(event.field("from.index"), Some(from.0), "{event:?}");
        assert_eq!(event.field("from.name"), Some(from.1), "{event:?}");
        assert_eq!(event.field("to.index"), Some(to.0), "{event:?}");
        assert_eq!(event.field("to.name"), Some(to.1), "{event:?}");
        assert_eq!(event.field("error.kind"), Some(kind), "{event:?}");
        assert_eq!(
            event.field("message"),
            Some("falling back to the next alternative"),
            "{event:?}"
        );
    }
}

#[test]
fn accessors() {
    let layer: FallbackLayer<Ask, Answer> = FallbackLayer::default().model("b");
    let mut service = layer.layer(7_u8);
    assert_eq!(service.alternatives().len(), 1);
    assert_eq!(service.alternatives()[0].name(), "b");
    assert_eq!(service.alternatives()[0].target_model(), Some("b"));
    assert!(!service.alternatives()[0].is_service());
    *service.get_mut() += 1;
    assert_eq!(*service.get_ref(), 8);
    assert_eq!(service.clone().into_inner(), 8);
    let debug = format!("{layer:?}");
    assert!(debug.contains("\"b\""), "{debug}");
}

// ---- over real loopback HTTP ----

mod http_tests {
    use super::*;
    use chatstack_mock::{Fault, MockConfig, MockServer};
    use chatstack_proto::{ChatRequest, ChatResponse, Message};
    use chatstack_transport::HttpTransport;
    use tower::ServiceBuilder;

    fn transport(mock: &MockServer) -> HttpTransport {
        HttpTransport::builder()
            .base_url(mock.url())
            .build()
            .unwrap()
    }

    fn request(model: &str) -> ChatRequest {
        ChatRequest::new(model, [Message::user("Hello")])
    }

    /// Adds the fault to requests for `gpt-4o` only, so the primary fails and the other
    /// models, on the same endpoint, do not.
    fn fault_on_gpt_4o(
        fault: &'static str,
    ) -> impl Fn(ChatRequest) -> ChatRequest + Clone + Send + Sync + 'static {
        move |mut request: ChatRequest| {
            if request.model == "gpt-4o" {
                request
                    .meta
                    .headers
                    .insert("x-mock-fault", fault.parse().unwrap());
            }
            request
        }
    }

    #[tokio::test]
    async fn a_503_from_the_primary_falls_back_to_the_second_model() {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let service = ServiceBuilder::new()
            .layer(FallbackLayer::new().model("gpt-4o-mini").model("gpt-4.1"))
            .map_request(fault_on_gpt_4o("503"))
            .service(transport(&mock));

        let response: ChatResponse = service.oneshot(request("gpt-4o")).await.unwrap();
        assert_eq!(response.model, "gpt-4o-mini");
        assert_eq!(answered_by(&response), (1, "gpt-4o-mini".to_owned()));
        assert_eq!(response.meta.attempts, 2);
        let counters = mock.counters().snapshot();
        assert_eq!(counters.model("gpt-4o"), 1);
        assert_eq!(counters.model("gpt-4o-mini"), 1);
        assert_eq!(counters.model("gpt-4.1"), 0);
        assert_eq!(counters.status(503), 1);
        assert_eq!(counters.status(200), 1);
    }

    #[tokio::test]
    async fn a_400_does_not_fall_back() {
        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let service = FallbackLayer::new()
            .model("gpt-4o-mini")
            .layer(transport(&mock));
        let mut request = request("gpt-4o");
        request
            .meta
            .headers
            .insert("x-mock-fault", "context_length_exceeded".parse().unwrap());
        let error = service.oneshot(request).await.unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
        assert!(error.is_context_length_exceeded(), "{error}");
        let counters = mock.counters().snapshot();
        assert_eq!(counters.total, 1);
        assert_eq!(counters.model("gpt-4o-mini"), 0);
    }

    #[tokio::test]
    async fn when_every_model_fails_the_last_error_comes_back() {
        let mock = MockServer::start(MockConfig::default().fault(Fault::ServiceUnavailable, 1.0))
            .await
            .unwrap();
        let service = FallbackLayer::new()
            .model("gpt-4o-mini")
            .model("gpt-4.1")
            .layer(transport(&mock));
        let error = service.oneshot(request("gpt-4o")).await.unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(error.attempts(), 3);
        assert_eq!(mock.counters().status(503), 3);
    }

    #[tokio::test]
    async fn another_endpoint_answers_when_the_first_fails_every_request() {
        let broken = MockServer::start(MockConfig::default().fault(Fault::ServiceUnavailable, 1.0))
            .await
            .unwrap();
        let healthy = MockServer::start(MockConfig::default()).await.unwrap();
        let service = FallbackLayer::new()
            .service("second-endpoint", transport(&healthy))
            .layer(transport(&broken));

        for _ in 0..3 {
            let response = service.clone().oneshot(request("gpt-4o")).await.unwrap();
            assert_eq!(answered_by(&response), (1, "second-endpoint".to_owned()));
            assert!(response.text().is_some());
        }
        assert_eq!(broken.counters().status(503), 3);
        assert_eq!(healthy.counters().model("gpt-4o"), 3);
        assert_eq!(healthy.counters().status(200), 3);
    }

    #[cfg(feature = "timeout")]
    #[tokio::test]
    async fn a_stream_silent_before_its_first_chunk_falls_back_over_a_timeout_layer() {
        use chatstack_middleware::timeout::TimeoutLayer;
        use chatstack_proto::{ChatStream, StreamRequest};
        use std::time::Duration;

        let mock = MockServer::start(MockConfig::default()).await.unwrap();
        let service = ServiceBuilder::new()
            .layer(FallbackLayer::new().model("gpt-4o-mini"))
            // Real time over loopback: 1 s leaves the answering model room on a loaded
            // machine, and the primary stays silent for far longer.
            .layer(TimeoutLayer::new().first_chunk(Duration::from_secs(1)))
            .map_request(|mut request: StreamRequest| {
                request.0 = fault_on_gpt_4o("slow_first_chunk:30000")(request.0);
                request
            })
            .service(transport(&mock));

        let stream: ChatStream = service
            .oneshot(StreamRequest::from(request("gpt-4o")))
            .await
            .unwrap();
        assert_eq!(answered_by(&stream), (1, "gpt-4o-mini".to_owned()));
        let response = stream.collect_response().await.unwrap();
        assert_eq!(response.model, "gpt-4o-mini");
        assert!(response.text().is_some());
        assert_eq!(mock.counters().model("gpt-4o"), 1);
        assert_eq!(mock.counters().model("gpt-4o-mini"), 1);
    }
}

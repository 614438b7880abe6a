//! The trace layer: the span of each request and its OpenTelemetry GenAI attributes, over
//! real loopback HTTP through `HttpTransport` against chatstack-mock (unary, streams, errors)
//! and over scripted services; with the `metrics` feature, the histograms.
#![cfg(feature = "trace")]

mod capture;
mod support;

use std::time::Duration;

use chatstack_middleware::trace::{Trace, TraceLayer};
use chatstack_middleware::{ChatRequest, ChatStream, Error, Message, StreamRequest};
use chatstack_mock::{MockConfig, MockServer};
use chatstack_proto::{ChatChunk, ChunkChoice, Delta};
use chatstack_transport::HttpTransport;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};
use support::{Answer, Ask, Script, Step, chat, stream};
use tower::{Layer, ServiceExt};

use capture::{Capture, SpanRecord};

const MODEL: &str = "gpt-4o-mini";
const SPAN: &str = "gen_ai.chat";

async fn mock() -> (MockServer, Trace<HttpTransport>) {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let transport = HttpTransport::builder()
        .base_url(server.url())
        .build()
        .unwrap();
    let service = TraceLayer::new()
        .provider("openai")
        .server_address("127.0.0.1")
        .server_port(server.addr().port())
        .layer(transport);
    (server, service)
}

fn request() -> ChatRequest {
    ChatRequest::new(MODEL, [Message::user("Hello there")])
}

fn with_header(mut request: ChatRequest, name: &'static str, value: &str) -> ChatRequest {
    request
        .meta
        .headers
        .insert(name, HeaderValue::from_str(value).unwrap());
    request
}

/// The one `gen_ai.chat` span the test made.
fn the_span(capture: &Capture) -> SpanRecord {
    let spans = capture.spans_named(SPAN);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    spans.into_iter().next().unwrap()
}

/// Asserts the fields of a span, `None` meaning "not recorded".
fn assert_fields(span: &SpanRecord, expected: &[(&str, Option<&str>)]) {
    for (name, value) in expected {
        assert_eq!(span.field(name), *value, "{name} in {span:#?}");
    }
}

#[tokio::test]
async fn a_unary_span_carries_the_genai_attributes_and_closes_with_the_call() {
    let capture = Capture::default();
    let _installed = capture.install();
    let (server, mut service) = mock().await;
    let request = request().max_tokens(64);
    let prompt_tokens = request.estimate_prompt_tokens().to_string();

    let response = chat(&mut service, request).await.unwrap();

    let span = the_span(&capture);
    let port = server.addr().port().to_string();
    assert_fields(
        &span,
        &[
            ("otel.name", Some("chat gpt-4o-mini")),
            ("otel.kind", Some("client")),
            ("otel.status_code", None),
            ("gen_ai.operation.name", Some("chat")),
            ("gen_ai.provider.name", Some("openai")),
            ("gen_ai.request.model", Some(MODEL)),
            ("gen_ai.request.max_tokens", Some("64")),
            ("gen_ai.response.model", Some(MODEL)),
            ("gen_ai.response.id", Some(response.id.as_str())),
            ("gen_ai.response.finish_reasons", Some(r#"["stop"]"#)),
            ("gen_ai.usage.input_tokens", Some(prompt_tokens.as_str())),
            ("gen_ai.usage.output_tokens", Some("16")),
            ("error.type", None),
            ("server.address", Some("127.0.0.1")),
            ("server.port", Some(port.as_str())),
        ],
    );
    assert!(response.id.starts_with("chatcmpl-mock"));
    assert_eq!(
        response.usage.unwrap().prompt_tokens.to_string(),
        prompt_tokens
    );
    assert!(span.closed, "the span closes when the unary call completes");
}

#[tokio::test]
async fn a_stream_span_stays_open_until_the_stream_ends() {
    let capture = Capture::default();
    let _installed = capture.install();
    let (_server, mut service) = mock().await;
    let request = with_header(request().include_usage(), "x-mock-reply-tokens", "5");
    let prompt_tokens = request.estimate_prompt_tokens().to_string();

    let mut chunks = stream(&mut service, request).await.unwrap();
    let open = the_span(&capture);
    assert!(
        !open.closed,
        "the response future is done, the stream is not"
    );
    assert_fields(
        &open,
        &[
            ("gen_ai.request.model", Some(MODEL)),
            ("gen_ai.request.max_tokens", None),
            ("gen_ai.usage.output_tokens", None),
        ],
    );

    let mut id = String::new();
    let mut text = String::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        id.clone_from(&chunk.id);
        text.extend(chunk.text());
        assert!(!the_span(&capture).closed, "open while chunks flow");
    }
    let span = the_span(&capture);
    assert!(
        span.closed,
        "closed at the end of the stream, before the stream is dropped"
    );
    assert_fields(
        &span,
        &[
            ("gen_ai.response.model", Some(MODEL)),
            ("gen_ai.response.id", Some(id.as_str())),
            ("gen_ai.response.finish_reasons", Some(r#"["stop"]"#)),
            ("gen_ai.usage.input_tokens", Some(prompt_tokens.as_str())),
            ("gen_ai.usage.output_tokens", Some("5")),
            ("error.type", None),
        ],
    );
    assert_eq!(text.split(' ').count(), 5);
    drop(chunks);
}

#[tokio::test]
async fn errors_set_error_type_and_the_error_status() {
    for (fault, error_type) in [
        ("503", "server_error"),
        ("insufficient_quota", "insufficient_quota"),
        ("401", "auth_error"),
        ("context_length_exceeded", "context_length_exceeded"),
    ] {
        let capture = Capture::default();
        let _installed = capture.install();
        let (_server, mut service) = mock().await;
        let error = chat(&mut service, with_header(request(), "x-mock-fault", fault))
            .await
            .unwrap_err();
        let span = the_span(&capture);
        assert_fields(
            &span,
            &[
                ("error.type", Some(error_type)),
                ("otel.status_code", Some("ERROR")),
                ("gen_ai.response.model", None),
                ("gen_ai.usage.input_tokens", None),
            ],
        );
        assert!(span.closed, "{fault}: {error}");
    }
}

#[tokio::test]
async fn a_stream_that_fails_midway_or_is_dropped_records_it_at_its_end() {
    let capture = Capture::default();
    let _installed = capture.install();
    let (_server, mut service) = mock().await;
    let mut failing = stream(
        &mut service,
        with_header(request(), "x-mock-fault", "mid_stream_error:2"),
    )
    .await
    .unwrap();
    let mut failure = None;
    while let Some(chunk) = failing.next().await {
        if let Err(error) = chunk {
            failure = Some(error);
        }
    }
    let failure = failure.expect("the stream fails");
    let spans = capture.spans_named(SPAN);
    assert_fields(
        &spans[0],
        &[
            (
                "error.type",
                Some(chatstack_middleware::trace::error_type(&failure).as_ref()),
            ),
            ("otel.status_code", Some("ERROR")),
        ],
    );
    assert!(spans[0].closed);

    let mut dropped = stream(&mut service, request()).await.unwrap();
    dropped.next().await.unwrap().unwrap();
    assert!(!capture.spans_named(SPAN)[1].closed);
    drop(dropped);
    let spans = capture.spans_named(SPAN);
    assert_fields(&spans[1], &[("error.type", Some("cancelled"))]);
    assert!(spans[1].closed);
}

#[cfg(feature = "retry")]
#[tokio::test(start_paused = true)]
async fn events_of_inner_layers_and_services_belong_to_the_span() {
    use chatstack_middleware::retry::RetryLayer;
    use http::HeaderMap;
    use tracing::Instrument;

    let capture = Capture::default();
    let _installed = capture.install();
    let script = Script::new([
        Step::fail(|| {
            Error::from_response(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"")
        }),
        Step::ok(),
    ]);
    let inner = script.service();
    let noisy = tower::service_fn(move |request: Ask| {
        tracing::info!("inner call");
        inner.clone().oneshot(request)
    });
    let service = TraceLayer::new().layer(RetryLayer::new().layer(noisy));

    let outer = tracing::info_span!("batch");
    service
        .oneshot(Ask::new(MODEL))
        .instrument(outer)
        .await
        .unwrap();

    let spans = capture.spans();
    let chat = spans.iter().position(|span| span.name == SPAN).unwrap();
    let batch = spans.iter().position(|span| span.name == "batch").unwrap();
    assert_eq!(
        spans[chat].parent,
        Some(batch),
        "a child of the current span"
    );
    let events = capture.events();
    let inner_calls: Vec<_> = events
        .iter()
        .filter(|event| event.field("message") == Some("inner call"))
        .collect();
    assert_eq!(inner_calls.len(), 2, "the first attempt and the retry");
    assert!(inner_calls.iter().all(|event| event.span == Some(chat)));
    let retry = events
        .iter()
        .find(|event| event.target.contains("retry") && event.level == tracing::Level::WARN)
        .expect("the retry layer logged its retry");
    assert_eq!(retry.span, Some(chat), "the retry event is inside the span");
    assert_eq!(script.calls(), 2);
}

#[tokio::test]
async fn chunks_are_read_inside_the_span() {
    let capture = Capture::default();
    let _installed = capture.install();
    let provider = tower::service_fn(|_: StreamRequest| async {
        let chunks = (0..3).map(|i| {
            Ok::<_, Error>(ChatChunk {
                id: "c1".into(),
                model: "m-2025".into(),
                choices: vec![ChunkChoice {
                    delta: Delta {
                        content: Some(i.to_string()),
                        ..Delta::default()
                    },
                    ..ChunkChoice::default()
                }],
                ..ChatChunk::default()
            })
        });
        let logged = futures_util::stream::iter(chunks).inspect(|_| tracing::info!("chunk read"));
        Ok::<_, Error>(ChatStream::new(logged, Default::default()))
    });
    let service = TraceLayer::new().layer(provider);
    let mut chunks = service
        .oneshot(StreamRequest::from(request()))
        .await
        .unwrap();
    while let Some(chunk) = chunks.next().await {
        chunk.unwrap();
    }
    let span = the_span(&capture);
    assert!(span.closed);
    assert_fields(
        &span,
        &[
            ("gen_ai.response.model", Some("m-2025")),
            ("gen_ai.response.id", Some("c1")),
            ("gen_ai.usage.input_tokens", None),
        ],
    );
    let reads: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|event| event.field("message") == Some("chunk read"))
        .collect();
    assert_eq!(reads.len(), 3);
    assert!(
        reads.iter().all(|event| event.span == Some(0)),
        "{reads:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_before_it_completes_is_cancelled() {
    let capture = Capture::default();
    let _installed = capture.install();
    let script = Script::new([Step::Answer(Duration::from_secs(10))]);
    let service = TraceLayer::new().layer(script.service());
    let timed_out =
        tokio::time::timeout(Duration::from_secs(1), service.oneshot(Ask::new(MODEL))).await;
    assert!(timed_out.is_err());
    let span = the_span(&capture);
    assert_fields(
        &span,
        &[
            ("error.type", Some("cancelled")),
            ("otel.status_code", Some("ERROR")),
        ],
    );
    assert!(span.closed);
}

#[tokio::test]
async fn foreign_request_and_response_types_are_traced() {
    let capture = Capture::default();
    let _installed = capture.install();
    let script = Script::new([Step::ok()]);
    let service = TraceLayer::new().provider("my-llm").layer(script.service());
    let mut ask = Ask::new("local-model");
    ask.max_tokens = Some(7);
    let answer: Answer = service.oneshot(ask).await.unwrap();
    assert_eq!(answer.text, "done");
    let span = the_span(&capture);
    assert_fields(
        &span,
        &[
            ("otel.name", Some("chat local-model")),
            ("gen_ai.provider.name", Some("my-llm")),
            ("gen_ai.request.model", Some("local-model")),
            ("gen_ai.request.max_tokens", Some("7")),
            ("gen_ai.usage.input_tokens", Some("10")),
            ("gen_ai.usage.output_tokens", Some("5")),
            ("gen_ai.response.model", None),
            ("server.address", None),
            ("server.port", None),
        ],
    );
    assert!(span.closed);
}

#[tokio::test]
async fn without_a_subscriber_calls_and_streams_pass_unchanged() {
    let (_server, mut service) = mock().await;
    let response = chat(&mut service, request()).await.unwrap();
    assert_eq!(response.meta.status, StatusCode::OK);
    let mut chunks = stream(&mut service, request()).await.unwrap();
    let mut count = 0;
    while let Some(chunk) = chunks.next().await {
        chunk.unwrap();
        count += 1;
    }
    assert!(count > 0);
    let error = chat(&mut service, with_header(request(), "x-mock-fault", "503"))
        .await
        .unwrap_err();
    assert!(error.is_server());
}

#[cfg(feature = "metrics")]
mod histograms {
    //! The histograms, seen by a recorder local to the test's thread (the test runs its own
    //! current-thread runtime inside `metrics::with_local_recorder`).

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString,
        Unit,
    };

    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    #[derive(Default, Clone)]
    struct TestRecorder {
        samples: Arc<Mutex<Vec<Sample>>>,
        units: Arc<Mutex<BTreeMap<String, Option<Unit>>>>,
    }

    struct Handle {
        key: Key,
        samples: Arc<Mutex<Vec<Sample>>>,
    }

    impl HistogramFn for Handle {
        fn record(&self, value: f64) {
            self.samples.lock().unwrap().push(Sample {
                name: self.key.name().to_owned(),
                labels: self
                    .key
                    .labels()
                    .map(|label| (label.key().to_owned(), label.value().to_owned()))
                    .collect(),
                value,
            });
        }
    }

    impl Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
            self.units
                .lock()
                .unwrap()
                .insert(key.as_str().to_owned(), unit);
        }
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Handle {
                key: key.clone(),
                samples: Arc::clone(&self.samples),
            }))
        }
    }

    impl TestRecorder {
        fn take(&self) -> Vec<Sample> {
            std::mem::take(&mut *self.samples.lock().unwrap())
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn histograms_of_unary_calls_streams_and_errors() {
        let recorder = TestRecorder::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let (server, mut service) = mock().await;
                let port = server.addr().port().to_string();
                let base = [
                    ("gen_ai.operation.name", "chat"),
                    ("gen_ai.provider.name", "openai"),
                    ("gen_ai.request.model", MODEL),
                    ("server.address", "127.0.0.1"),
                    ("server.port", port.as_str()),
                ];
                let with = |extra: &[(&'static str, &'static str)]| {
                    let mut all = labels(&base);
                    all.extend(labels(extra));
                    all
                };
                let units = recorder.units.lock().unwrap().clone();
                assert_eq!(
                    units["gen_ai.client.operation.duration"],
                    Some(Unit::Seconds)
                );
                assert_eq!(units["gen_ai.client.token.usage"], Some(Unit::Count));

                // A unary call: tokens in and out, and a duration.
                let request = request();
                let prompt = request.estimate_prompt_tokens() as f64;
                chat(&mut service, request).await.unwrap();
                let samples = recorder.take();
                assert_eq!(samples.len(), 3, "{samples:#?}");
                let response_model = [("gen_ai.response.model", MODEL)];
                assert_eq!(
                    samples[0],
                    Sample {
                        name: "gen_ai.client.token.usage".into(),
                        labels: with(&[response_model[0], ("gen_ai.token.type", "input")]),
                        value: prompt,
                    }
                );
                assert_eq!(
                    samples[1],
                    Sample {
                        name: "gen_ai.client.token.usage".into(),
                        labels: with(&[response_model[0], ("gen_ai.token.type", "output")]),
                        value: 16.0,
                    }
                );
                assert_eq!(samples[2].name, "gen_ai.client.operation.duration");
                assert_eq!(samples[2].labels, with(&response_model));
                assert!(samples[2].value > 0.0 && samples[2].value < 10.0);

                // A stream: nothing until it ends, then the same three.
                let mut chunks = stream(
                    &mut service,
                    with_header(super::request().include_usage(), "x-mock-reply-tokens", "3"),
                )
                .await
                .unwrap();
                assert!(
                    recorder.take().is_empty(),
                    "recorded at the end of the stream"
                );
                while let Some(chunk) = chunks.next().await {
                    chunk.unwrap();
                }
                let samples = recorder.take();
                assert_eq!(samples.len(), 3, "{samples:#?}");
                assert_eq!(samples[1].value, 3.0);
                assert_eq!(samples[2].name, "gen_ai.client.operation.duration");
                drop(chunks);
                assert!(recorder.take().is_empty(), "recorded once");

                // An error: a duration with error.type, no tokens.
                chat(
                    &mut service,
                    with_header(super::request(), "x-mock-fault", "503"),
                )
                .await
                .unwrap_err();
                let samples = recorder.take();
                assert_eq!(samples.len(), 1, "{samples:#?}");
                assert_eq!(samples[0].name, "gen_ai.client.operation.duration");
                assert_eq!(samples[0].labels, with(&[("error.type", "server_error")]));
            });
        });
    }

    #[tokio::test(start_paused = true)]
    async fn durations_run_on_tokios_clock_to_the_end_of_the_response() {
        let recorder = TestRecorder::default();
        let script = Script::new([Step::Answer(Duration::from_millis(1500))]);
        let service = TraceLayer::new().layer(script.service());
        let future = service.oneshot(Ask::new(MODEL));
        tokio::pin!(future);
        // Poll with the recorder in place; the paused clock moves while the future waits.
        let answer = loop {
            let polled = metrics::with_local_recorder(&recorder, || {
                futures_util::FutureExt::now_or_never(future.as_mut())
            });
            match polled {
                Some(result) => break result.unwrap(),
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        assert_eq!(answer.text, "done");
        let samples = recorder.take();
        let duration = samples
            .iter()
            .find(|sample| sample.name == "gen_ai.client.operation.duration")
            .unwrap();
        assert!(
            (1.5..1.7).contains(&duration.value),
            "1.5 s of paused time, give or take the polling step: {}",
            duration.value
        );
    }
}

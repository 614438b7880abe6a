//! Test support shared by the middleware tests: a request and a response type that are not
//! chatstack's (so every layer is shown to work on foreign services), and a scripted inner
//! service built with `tower::service_fn`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chatstack_proto::{
    Completion, Error, LlmRequest, LlmResponse, RequestMeta, ResponseMeta, Usage,
};
use tokio::time::{Duration, Instant};

/// A request type of the test's own.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub model: String,
    pub prompt: String,
    pub max_tokens: Option<u64>,
    pub meta: RequestMeta,
}

impl Ask {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            prompt: "hello".to_owned(),
            ..Self::default()
        }
    }
}

impl LlmRequest for Ask {
    fn model(&self) -> &str {
        &self.model
    }
    fn meta(&self) -> &RequestMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut RequestMeta {
        &mut self.meta
    }
    fn estimated_prompt_tokens(&self) -> u64 {
        self.prompt.len().div_ceil(4) as u64
    }
    fn max_output_tokens(&self) -> Option<u64> {
        self.max_tokens
    }
}

/// A response type of the test's own.
#[derive(Debug, Default)]
pub struct Answer {
    pub text: String,
    pub usage: Option<Usage>,
    pub meta: ResponseMeta,
}

impl Answer {
    pub fn ok(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            usage: Some(Usage::new(10, 5)),
            ..Self::default()
        }
    }
}

impl LlmResponse for Answer {
    fn meta(&self) -> &ResponseMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ResponseMeta {
        &mut self.meta
    }
    fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }
    fn on_complete<F>(self, hook: F) -> Self
    where
        F: FnOnce(&Completion<'_>) + Send + 'static,
    {
        hook(&Completion::unary(self.usage.as_ref(), ""));
        self
    }
}

/// What one call of a [`Script`]ed service does.
pub enum Step {
    /// Answer after the given delay.
    Answer(Duration),
    /// Fail with this error after the given delay.
    Fail(Duration, Box<dyn Fn() -> Error + Send + Sync>),
}

impl Step {
    pub fn ok() -> Self {
        Self::Answer(Duration::ZERO)
    }
    pub fn fail(make: impl Fn() -> Error + Send + Sync + 'static) -> Self {
        Self::Fail(Duration::ZERO, Box::new(make))
    }
}

/// A scripted inner service: each call takes the next step (the last one repeats), and
/// records when it was called, on tokio's clock.
#[derive(Clone)]
pub struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    last: Arc<Mutex<Option<Step>>>,
    calls: Arc<AtomicU32>,
    call_times: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: Arc::new(Mutex::new(steps.into_iter().collect())),
            last: Arc::new(Mutex::new(None)),
            calls: Arc::new(AtomicU32::new(0)),
            call_times: Arc::default(),
        }
    }

    /// How many times the service was called.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The gaps between consecutive calls.
    pub fn gaps(&self) -> Vec<Duration> {
        let times = self.call_times.lock().unwrap();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// The service, as a `tower::service_fn`.
    pub fn service(
        &self,
    ) -> impl tower::Service<
        Ask,
        Response = Answer,
        Error = Error,
        Future = impl std::future::Future<Output = Result<Answer, Error>> + Send,
    > + Clone
    + Send {
        let script = self.clone();
        tower::service_fn(move |_request: Ask| {
            let script = script.clone();
            async move {
                script.calls.fetch_add(1, Ordering::SeqCst);
                script.call_times.lock().unwrap().push(Instant::now());
                let (delay, outcome) = {
                    let mut steps = script.steps.lock().unwrap();
                    let mut last = script.last.lock().unwrap();
                    if let Some(step) = steps.pop_front() {
                        *last = Some(step);
                    }
                    match last.as_ref() {
                        Some(Step::Answer(delay)) => (*delay, Ok(())),
                        Some(Step::Fail(delay, make)) => (*delay, Err(make())),
                        None => (Duration::ZERO, Ok(())),
                    }
                };
                tokio::time::sleep(delay).await;
                outcome.map(|()| Answer::ok("done"))
            }
        })
    }
}

/// Sends a unary request through a service that answers both kinds of request.
pub async fn chat<S>(
    service: &mut S,
    request: chatstack_proto::ChatRequest,
) -> Result<chatstack_proto::ChatResponse, Error>
where
    S: tower::Service<
            chatstack_proto::ChatRequest,
            Response = chatstack_proto::ChatResponse,
            Error = Error,
        >,
{
    use tower::ServiceExt;
    ServiceExt::<chatstack_proto::ChatRequest>::ready(service)
        .await?
        .call(request)
        .await
}

/// Sends a streaming request through a service that answers both kinds of request.
pub async fn stream<S>(
    service: &mut S,
    request: chatstack_proto::ChatRequest,
) -> Result<chatstack_proto::ChatStream, Error>
where
    S: tower::Service<
            chatstack_proto::StreamRequest,
            Response = chatstack_proto::ChatStream,
            Error = Error,
        >,
{
    use tower::ServiceExt;
    ServiceExt::<chatstack_proto::StreamRequest>::ready(service)
        .await?
        .call(chatstack_proto::StreamRequest::from(request))
        .await
}

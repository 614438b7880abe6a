//! What a request can fall back to ([`Alternative`]), how its model is changed
//! ([`SetModel`]), and the record of who answered ([`AnsweredBy`]).

use std::fmt;
use std::sync::Arc;

use chatstack_proto::{ChatRequest, Error, StreamRequest};
use tower::Service;
use tower::util::BoxCloneSyncService;

/// A request whose model can be changed: what a model [`Alternative`] needs.
///
/// Implemented for [`ChatRequest`] and [`StreamRequest`]; implement it for a request type
/// of your own, or give the layer a function instead
/// ([`FallbackLayer::with_model_setter`](super::FallbackLayer::with_model_setter)).
///
/// ```
/// use chatstack_middleware::fallback::SetModel;
/// use chatstack_middleware::{ChatRequest, Message};
///
/// let mut request = ChatRequest::new("gpt-4o", [Message::user("Hi")]);
/// request.set_model("gpt-4o-mini");
/// assert_eq!(request.model, "gpt-4o-mini");
/// ```
pub trait SetModel {
    /// Makes the request ask for `model`.
    fn set_model(&mut self, model: &str);
}

impl SetModel for ChatRequest {
    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }
}

impl SetModel for StreamRequest {
    fn set_model(&mut self, model: &str) {
        self.0.set_model(model);
    }
}

/// One alternative of a [`FallbackLayer`](super::FallbackLayer): another model on the same
/// inner service, or another service (another endpoint, another provider).
///
/// `R` is the request type, `T` the response type.
///
/// ```
/// use chatstack_middleware::fallback::Alternative;
/// use chatstack_middleware::{ChatRequest, ChatResponse, Error};
///
/// let cheaper: Alternative<ChatRequest, ChatResponse> = Alternative::model("gpt-4o-mini");
/// assert_eq!(cheaper.name(), "gpt-4o-mini");
///
/// // Any `Service + Clone + Send + Sync` does, an `HttpTransport` to another endpoint say.
/// let backup = tower::service_fn(|_: ChatRequest| async { Ok::<_, Error>(ChatResponse::default()) });
/// let other = Alternative::service("backup", backup).with_model("llama-3.3-70b");
/// assert_eq!(other.target_model(), Some("llama-3.3-70b"));
/// ```
pub struct Alternative<R, T> {
    name: Arc<str>,
    model: Option<String>,
    service: Option<BoxCloneSyncService<R, T, Error>>,
}

impl<R, T> Alternative<R, T> {
    /// The same inner service as the primary, with the request's model changed to `model`;
    /// named after the model.
    pub fn model(model: impl Into<String>) -> Self {
        let model = model.into();
        Self {
            name: Arc::from(model.as_str()),
            model: Some(model),
            service: None,
        }
    }

    /// Another service, named `name`, sent the request unchanged (unless
    /// [`with_model`](Self::with_model) says otherwise).
    pub fn service<S>(name: impl Into<String>, service: S) -> Self
    where
        S: Service<R, Response = T, Error = Error> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self {
            name: Arc::from(name.into()),
            model: None,
            service: Some(BoxCloneSyncService::new(service)),
        }
    }

    /// Also changes the request's model to `model` when sending it to this alternative.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The name [`AnsweredBy`] and the tracing events give this alternative.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model the request is changed to, if any.
    pub fn target_model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether this alternative is another service (not the primary's).
    pub fn is_service(&self) -> bool {
        self.service.is_some()
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn boxed_service(&self) -> Option<&BoxCloneSyncService<R, T, Error>> {
        self.service.as_ref()
    }
}

impl<R, T> Clone for Alternative<R, T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            model: self.model.clone(),
            service: self.service.clone(),
        }
    }
}

impl<R, T> fmt::Debug for Alternative<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alternative")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("service", &self.service.is_some())
            .finish()
    }
}

/// Which one answered a request sent through a [`Fallback`](super::Fallback): found in
/// `ResponseMeta::extensions` of every response that passed the layer.
///
/// Index 0 is the primary (the inner service with the request as it came), named after the
/// request's model; index `i` is the `i`-th [`Alternative`], by its
/// [`name`](Alternative::name).
///
/// ```no_run
/// # use chatstack_middleware::{ChatResponse, LlmResponse};
/// use chatstack_middleware::fallback::AnsweredBy;
/// # let response = ChatResponse::default();
/// if let Some(answered) = response.meta().extensions.get::<AnsweredBy>() {
///     if answered.is_fallback() {
///         println!("answered by fallback {} ({})", answered.index(), answered.name());
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredBy {
    index: usize,
    name: Arc<str>,
}

impl AnsweredBy {
    pub(crate) fn new(index: usize, name: Arc<str>) -> Self {
        Self { index, name }
    }

    /// 0 for the primary, `i` for the `i`-th alternative.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The primary's model, or the alternative's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether an alternative answered, not the primary.
    pub fn is_fallback(&self) -> bool {
        self.index > 0
    }
}

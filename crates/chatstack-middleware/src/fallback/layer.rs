//! [`FallbackLayer`]: the ordered list of alternatives.

use std::fmt;
use std::sync::Arc;

use chatstack_proto::Error;
use tower::{Layer, Service};

use super::alternative::{Alternative, SetModel};
use super::service::Fallback;

/// How a request's model is changed for a model [`Alternative`].
pub(crate) type ModelSetter<R> = fn(&mut R, &str);

/// Applies [`Fallback`] to a service: on a retryable failure or an open circuit, the request
/// goes to the next of an ordered list of [`Alternative`]s. See the [module docs](super).
///
/// `R` is the request type, `T` the response type. Cheap to clone: the alternatives are
/// shared behind an `Arc`.
///
/// ```
/// use chatstack_middleware::fallback::FallbackLayer;
/// use chatstack_middleware::{ChatRequest, ChatResponse};
///
/// let layer: FallbackLayer<ChatRequest, ChatResponse> =
///     FallbackLayer::new().model("gpt-4o-mini").model("gpt-4.1-nano");
/// let names: Vec<&str> = layer.alternatives().iter().map(|a| a.name()).collect();
/// assert_eq!(names, ["gpt-4o-mini", "gpt-4.1-nano"]);
/// ```
pub struct FallbackLayer<R, T> {
    alternatives: Arc<Vec<Alternative<R, T>>>,
    set_model: ModelSetter<R>,
}

impl<R: SetModel, T> FallbackLayer<R, T> {
    /// A layer without alternatives yet, for a request type that can [`SetModel`].
    pub fn new() -> Self {
        Self::with_model_setter(R::set_model)
    }
}

impl<R: SetModel, T> Default for FallbackLayer<R, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R, T> FallbackLayer<R, T> {
    /// A layer without alternatives yet, for any request type: `set_model` changes a
    /// request's model for a model [`Alternative`].
    ///
    /// ```
    /// use chatstack_middleware::fallback::FallbackLayer;
    ///
    /// #[derive(Clone)]
    /// struct MyRequest { model: String }
    /// # struct MyResponse;
    ///
    /// let layer: FallbackLayer<MyRequest, MyResponse> =
    ///     FallbackLayer::with_model_setter(|request: &mut MyRequest, model: &str| {
    ///         request.model = model.to_owned();
    ///     })
    ///     .model("backup-model");
    /// # let _ = layer;
    /// ```
    pub fn with_model_setter(set_model: fn(&mut R, &str)) -> Self {
        Self {
            alternatives: Arc::new(Vec::new()),
            set_model,
        }
    }

    /// Adds an alternative at the end of the list.
    pub fn alternative(mut self, alternative: Alternative<R, T>) -> Self {
        Arc::make_mut(&mut self.alternatives).push(alternative);
        self
    }

    /// Adds another model on the same inner service; see [`Alternative::model`].
    pub fn model(self, model: impl Into<String>) -> Self {
        self.alternative(Alternative::model(model))
    }

    /// Adds another service, named `name`; see [`Alternative::service`].
    pub fn service<S>(self, name: impl Into<String>, service: S) -> Self
    where
        S: Service<R, Response = T, Error = Error> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        self.alternative(Alternative::service(name, service))
    }

    /// The alternatives, in the order they are tried.
    pub fn alternatives(&self) -> &[Alternative<R, T>] {
        &self.alternatives
    }
}

impl<R, T> Clone for FallbackLayer<R, T> {
    fn clone(&self) -> Self {
        Self {
            alternatives: self.alternatives.clone(),
            set_model: self.set_model,
        }
    }
}

impl<R, T> fmt::Debug for FallbackLayer<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("alternatives", &self.alternatives)
            .finish_non_exhaustive()
    }
}

impl<S, R, T> Layer<S> for FallbackLayer<R, T> {
    type Service = Fallback<S, R, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback::new(inner, self.alternatives.clone(), self.set_model)
    }
}

//! [`TraceLayer`].

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::service::Trace;

/// What every span of a layer says about where the requests go.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) provider: Arc<str>,
    pub(crate) server_address: Option<Arc<str>>,
    pub(crate) server_port: Option<u16>,
    /// The metric labels made of the above.
    #[cfg(feature = "metrics")]
    pub(crate) base_labels: Arc<[metrics::Label]>,
}

impl Settings {
    fn new(provider: Arc<str>, server_address: Option<Arc<str>>, server_port: Option<u16>) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            base_labels: super::metrics::base_labels(
                &provider,
                server_address.as_ref(),
                server_port,
            ),
            provider,
            server_address,
            server_port,
        }
    }
}

/// A [`Layer`] that wraps a service in [`Trace`]: one `gen_ai.chat` span per request, with
/// the OpenTelemetry GenAI attributes, and (with the `metrics` feature) the
/// `gen_ai.client.*` histograms. See the [module docs](super).
///
/// ```
/// use chatstack_middleware::trace::TraceLayer;
///
/// let layer = TraceLayer::new()
///     .provider("azure.ai.openai")
///     .server_address("my-resource.openai.azure.com")
///     .server_port(443);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct TraceLayer {
    settings: Arc<Settings>,
}

impl TraceLayer {
    /// A layer for the provider `openai`, with no server address.
    pub fn new() -> Self {
        #[cfg(feature = "metrics")]
        super::metrics::describe();
        Self {
            settings: Arc::new(Settings::new(Arc::from("openai"), None, None)),
        }
    }

    /// `gen_ai.provider.name`: who serves the requests, as OpenTelemetry names providers
    /// (`openai`, `azure.ai.openai`, `anthropic`, `gcp.gemini`, `deepseek`, `groq`,
    /// `mistral_ai`, `x_ai`, ...; for others, a lowercase name of your choice). Default
    /// `openai`.
    pub fn provider(self, name: impl Into<Arc<str>>) -> Self {
        let provider = name.into();
        self.with_settings(|settings| settings.provider = provider)
    }

    /// `server.address`: the host name (or IP address) requests go to. Unset by default.
    pub fn server_address(self, address: impl Into<Arc<str>>) -> Self {
        let address = address.into();
        self.with_settings(|settings| settings.server_address = Some(address))
    }

    /// `server.port`: the port requests go to. Unset by default.
    pub fn server_port(self, port: u16) -> Self {
        self.with_settings(|settings| settings.server_port = Some(port))
    }

    fn with_settings(self, change: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::clone(&self.settings);
        change(&mut settings);
        let Settings {
            provider,
            server_address,
            server_port,
            ..
        } = settings;
        Self {
            settings: Arc::new(Settings::new(provider, server_address, server_port)),
        }
    }
}

impl Default for TraceLayer {
    /// Same as [`TraceLayer::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TraceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceLayer")
            .field("provider", &self.settings.provider)
            .field("server_address", &self.settings.server_address)
            .field("server_port", &self.settings.server_port)
            .finish()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace::from_parts(inner, Arc::clone(&self.settings))
    }
}

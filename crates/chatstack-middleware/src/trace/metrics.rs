//! The `gen_ai.client.*` histograms, through the `metrics` facade.

use std::sync::Arc;

use chatstack_proto::Usage;
use metrics::{Label, SharedString, Unit};
use tokio::time::Instant;

use super::layer::Settings;

/// `gen_ai.client.token.usage`: tokens per call, by `gen_ai.token.type`.
pub(crate) const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// `gen_ai.client.operation.duration`: seconds per call.
pub(crate) const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";

/// Describes the histograms to the recorder installed now.
pub(crate) fn describe() {
    metrics::describe_histogram!(
        TOKEN_USAGE,
        Unit::Count,
        "Number of input and output tokens used, per chat call"
    );
    metrics::describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Duration of chat calls, to the end of the response (of the stream, for a stream)"
    );
}

/// The labels every call of a layer shares, made once per layer: cloning them per call
/// copies no strings.
pub(crate) fn base_labels(
    provider: &Arc<str>,
    server_address: Option<&Arc<str>>,
    server_port: Option<u16>,
) -> Arc<[Label]> {
    let mut labels = vec![
        Label::from_static_parts("gen_ai.operation.name", "chat"),
        Label::new("gen_ai.provider.name", shared(provider)),
    ];
    if let Some(address) = server_address {
        labels.push(Label::new("server.address", shared(address)));
    }
    if let Some(port) = server_port {
        labels.push(Label::new(
            "server.port",
            SharedString::from(Arc::<str>::from(port.to_string())),
        ));
    }
    labels.into()
}

fn shared(text: &Arc<str>) -> SharedString {
    SharedString::from(Arc::clone(text))
}

/// What a call's metrics need: its labels so far, and when it started (on tokio's clock, so
/// tests on a paused clock see exact durations).
pub(crate) struct CallMetrics {
    started: Instant,
    labels: Vec<Label>,
    model: Arc<str>,
}

impl CallMetrics {
    pub(crate) fn start(settings: &Settings, model: &str) -> Self {
        let model: Arc<str> = Arc::from(model);
        // Room for the labels added later, so that no push reallocates.
        let mut labels = Vec::with_capacity(settings.base_labels.len() + 3);
        labels.extend_from_slice(&settings.base_labels);
        labels.push(Label::new("gen_ai.request.model", shared(&model)));
        Self {
            started: Instant::now(),
            labels,
            model,
        }
    }

    /// Records the duration, labelled with `error.type` when the call failed, and the token
    /// usage when it is known.
    pub(crate) fn finish(
        mut self,
        response_model: &str,
        usage: Option<&Usage>,
        error_type: Option<&str>,
    ) {
        let elapsed = self.started.elapsed();
        if !response_model.is_empty() {
            // Usually the model asked for, or a dated snapshot of it. Shared either way:
            // the token usage labels clone it.
            let value = if response_model == &*self.model {
                shared(&self.model)
            } else {
                SharedString::from(Arc::<str>::from(response_model))
            };
            self.labels.push(Label::new("gen_ai.response.model", value));
        }
        if let Some(usage) = usage {
            for (token_type, tokens) in [
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
            ] {
                let mut labels = Vec::with_capacity(self.labels.len() + 1);
                labels.extend_from_slice(&self.labels);
                labels.push(Label::from_static_parts("gen_ai.token.type", token_type));
                metrics::histogram!(TOKEN_USAGE, labels).record(tokens as f64);
            }
        }
        if let Some(error_type) = error_type {
            self.labels
                .push(Label::new("error.type", error_type.to_owned()));
        }
        metrics::histogram!(OPERATION_DURATION, self.labels).record(elapsed.as_secs_f64());
    }
}

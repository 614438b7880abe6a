//! The request body of `POST /chat/completions`, with builder methods.
//!
//! Field names and shapes follow `CreateChatCompletionRequest` of the OpenAI API description.
//! Unset fields are omitted from the JSON; provider-specific fields go in
//! [`ChatRequest::extra`], which is merged into the top level.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::JsonMap;
use crate::lenient::string_enum;
use crate::meta::RequestMeta;
use crate::response::ToolCall;

string_enum! {
    /// The author of a message.
    pub enum Role {
        /// Instructions from the application (older models).
        System => "system",
        /// Instructions from the application (newer models).
        Developer => "developer",
        /// The end user.
        User => "user",
        /// The model.
        Assistant => "assistant",
        /// The result of a tool call.
        Tool => "tool",
        /// The result of a legacy function call.
        Function => "function",
    }
}

string_enum! {
    /// The processing tier a request asks for, or the one that served it.
    pub enum ServiceTier {
        /// Let the project settings decide.
        Auto => "auto",
        /// Standard pricing and performance.
        Default => "default",
        /// Flex processing: cheaper, slower.
        Flex => "flex",
        /// Scale tier.
        Scale => "scale",
        /// Priority processing.
        Priority => "priority",
        /// Fast mode.
        Fast => "fast",
    }
}

string_enum! {
    /// How much a reasoning model should think.
    pub enum ReasoningEffort {
        /// No reasoning.
        None => "none",
        /// Minimal reasoning.
        Minimal => "minimal",
        /// Low effort.
        Low => "low",
        /// Medium effort (the API's default).
        Medium => "medium",
        /// High effort.
        High => "high",
        /// Extra high effort.
        XHigh => "xhigh",
        /// Maximum effort.
        Max => "max",
    }
}

string_enum! {
    /// How verbose the model's answer should be.
    pub enum Verbosity {
        /// Terse.
        Low => "low",
        /// The default.
        Medium => "medium",
        /// Detailed.
        High => "high",
    }
}

string_enum! {
    /// The resolution an image input is read at.
    pub enum ImageDetail {
        /// Let the model choose.
        Auto => "auto",
        /// Low resolution, fewer tokens.
        Low => "low",
        /// High resolution.
        High => "high",
    }
}

/// The body of a Chat Completions request.
///
/// Build one with [`ChatRequest::new`] and the builder methods; every field is public too.
// Serialize is written by hand (below) so that `extra` can replace a typed field.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ChatRequest {
    /// The model id, such as `gpt-4.1`.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Sampling temperature, 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Legacy cap on generated tokens; newer models take `max_completion_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Cap on generated tokens, reasoning tokens included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Up to four sequences where generation stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// How many choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Seed for best-effort deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Penalty for tokens by how often they already appeared, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Penalty for tokens that already appeared at all, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Bias per token id (as a string key), -100 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<BTreeMap<String, i32>>,
    /// Whether to return log probabilities of the output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many most likely tokens to return at each position, 0 to 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u8>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Which tool, if any, the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The output format: text, any JSON object, or JSON matching a schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Whether to stream the answer as server-sent events. The transport sets this from the
    /// kind of call (unary or streaming), so callers rarely touch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Options for streaming, such as a final usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// A stable end-user identifier (deprecated by OpenAI in favour of `safety_identifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A stable, hashed end-user identifier for abuse detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<String>,
    /// A key that groups requests with a shared prompt prefix for caching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    /// Up to 16 key-value pairs stored with the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Whether the provider stores the completion for later retrieval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// The processing tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<ServiceTier>,
    /// Reasoning effort for reasoning models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Verbosity of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<Verbosity>,
    /// Output modalities, such as `["text", "audio"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<String>>,
    /// Audio output parameters, when `modalities` includes `audio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioOutput>,
    /// Predicted output, to speed up regeneration of mostly known content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// Web search options, for search models; kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_options: Option<Value>,
    /// Provider-specific fields, merged into the top level of the JSON body. A key here
    /// replaces the typed field of the same name (the body never repeats a key).
    ///
    /// On decoding, every top-level field this type does not know lands here.
    #[serde(flatten)]
    pub extra: JsonMap,
    /// Per-request data that is not body: headers, cost tag, deadline, id, extensions.
    #[serde(skip)]
    pub meta: RequestMeta,
}

/// Writes the typed fields that are set, in declaration order, then `extra`. A key in
/// `extra` replaces the typed field of the same name instead of repeating it: a JSON object
/// with a repeated key is read differently by different parsers (serde refuses it), and
/// `extra` is the escape hatch, so it wins.
impl Serialize for ChatRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // Destructured so that a new field fails to compile until it is written here.
        let Self {
            model,
            messages,
            temperature,
            top_p,
            max_tokens,
            max_completion_tokens,
            stop,
            n,
            seed,
            frequency_penalty,
            presence_penalty,
            logit_bias,
            logprobs,
            top_logprobs,
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
            stream,
            stream_options,
            user,
            safety_identifier,
            prompt_cache_key,
            metadata,
            store,
            service_tier,
            reasoning_effort,
            verbosity,
            modalities,
            audio,
            prediction,
            web_search_options,
            extra,
            meta: _,
        } = self;
        let mut map = serializer.serialize_map(None)?;
        macro_rules! required {
            ($($name:ident),*) => {$(
                if !extra.contains_key(stringify!($name)) {
                    map.serialize_entry(stringify!($name), $name)?;
                }
            )*};
        }
        macro_rules! optional {
            ($($name:ident),* $(,)?) => {$(
                if let Some(value) = $name {
                    if !extra.contains_key(stringify!($name)) {
                        map.serialize_entry(stringify!($name), value)?;
                    }
                }
            )*};
        }
        required!(model, messages);
        optional!(
            temperature,
            top_p,
            max_tokens,
            max_completion_tokens,
            stop,
            n,
            seed,
            frequency_penalty,
            presence_penalty,
            logit_bias,
            logprobs,
            top_logprobs,
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
            stream,
            stream_options,
            user,
            safety_identifier,
            prompt_cache_key,
            metadata,
            store,
            service_tier,
            reasoning_effort,
            verbosity,
            modalities,
            audio,
            prediction,
            web_search_options,
        );
        for (key, value) in extra {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl ChatRequest {
    /// A request for `model` with the given messages and every option unset.
    pub fn new(model: impl Into<String>, messages: impl IntoIterator<Item = Message>) -> Self {
        Self {
            model: model.into(),
            messages: messages.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Appends a message.
    pub fn message(mut self, message: Message) -> Self {
        self.messages.push(message);
        self
    }

    /// Sets the sampling temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets nucleus sampling.
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.top_p = Some(top_p);
        self
    }

    /// Sets the legacy `max_tokens` cap.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets `max_completion_tokens`.
    pub fn max_completion_tokens(mut self, max: u32) -> Self {
        self.max_completion_tokens = Some(max);
        self
    }

    /// Sets the stop sequences.
    pub fn stop(mut self, stop: impl Into<Stop>) -> Self {
        self.stop = Some(stop.into());
        self
    }

    /// Sets how many choices to generate.
    pub fn n(mut self, n: u32) -> Self {
        self.n = Some(n);
        self
    }

    /// Sets the sampling seed.
    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Adds a tool the model may call.
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.get_or_insert_with(Vec::new).push(tool);
        self
    }

    /// Sets the tool choice.
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }

    /// Sets the response format.
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(format);
        self
    }

    /// Asks for log probabilities, with `top` alternatives per position.
    pub fn logprobs(mut self, top: u8) -> Self {
        self.logprobs = Some(true);
        self.top_logprobs = Some(top);
        self
    }

    /// Sets the service tier.
    pub fn service_tier(mut self, tier: ServiceTier) -> Self {
        self.service_tier = Some(tier);
        self
    }

    /// Sets the reasoning effort.
    pub fn reasoning_effort(mut self, effort: ReasoningEffort) -> Self {
        self.reasoning_effort = Some(effort);
        self
    }

    /// Sets the end-user identifier.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets a provider-specific top-level field.
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// Tags the request for cost attribution (see [`RequestMeta::tag`]).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.meta.tag = Some(tag.into());
        self
    }

    /// Requests a final usage chunk when streaming (`stream_options.include_usage`).
    pub fn include_usage(mut self) -> Self {
        self.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
        self
    }

    /// The most output tokens this request may produce: `max_completion_tokens`, else
    /// `max_tokens`, times `n`; `None` when neither cap is set.
    pub fn max_output_tokens(&self) -> Option<u64> {
        let per_choice = self.max_completion_tokens.or(self.max_tokens)?;
        Some(u64::from(per_choice) * u64::from(self.n.unwrap_or(1).max(1)))
    }

    /// A fast estimate of the prompt's token count: about four characters a token for text,
    /// plus a per-message overhead, a fixed charge per image, and the serialized size of
    /// tool definitions. Good enough for rate limits and budgets, which reconcile with the
    /// real usage afterwards; use an exact tokenizer where it must be exact.
    pub fn estimate_prompt_tokens(&self) -> u64 {
        const PER_MESSAGE: u64 = 4;
        const PRIMING: u64 = 3;
        let mut chars: u64 = 0;
        let mut fixed: u64 = PRIMING;
        for message in &self.messages {
            fixed += PER_MESSAGE;
            if let Some(name) = &message.name {
                chars += name.len() as u64;
            }
            match &message.content {
                Some(Content::Text(text)) => chars += text.len() as u64,
                Some(Content::Parts(parts)) => {
                    for part in parts {
                        match part {
                            ContentPart::Text { text } => chars += text.len() as u64,
                            ContentPart::Refusal { refusal } => chars += refusal.len() as u64,
                            ContentPart::ImageUrl { image_url } => {
                                fixed += match image_url.detail {
                                    Some(ImageDetail::Low) => 85,
                                    _ => 765,
                                }
                            }
                            ContentPart::InputAudio { input_audio } => {
                                // Base64 audio: about 4/3 bytes per byte, ~10 tokens a second.
                                chars += input_audio.data.len() as u64 / 64
                            }
                            ContentPart::File { .. } | ContentPart::Unknown => fixed += 256,
                        }
                    }
                }
                None => {}
            }
            for call in message.tool_calls.iter().flatten() {
                chars += (call.function.name.len() + call.function.arguments.len()) as u64;
            }
        }
        if let Some(tools) = &self.tools {
            chars += serde_json::to_string(tools).map_or(0, |s| s.len() as u64);
        }
        fixed + chars.div_ceil(4)
    }
}

/// One message of the conversation.
///
/// One flat type serves every role: unset fields are omitted on the wire, so a system
/// message serializes as `{"role":"system","content":"..."}` and an assistant message with
/// tool calls as `{"role":"assistant","tool_calls":[...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Text or content parts. Optional for assistant messages that only call tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// A participant name, to tell apart participants of the same role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls the assistant made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `tool` messages: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For assistant messages: a refusal the model gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// For assistant messages: a previous audio answer, by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioRef>,
}

impl Message {
    /// A message with the given role and text.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            audio: None,
        }
    }

    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::new(Role::System, text)
    }

    /// A developer message.
    pub fn developer(text: impl Into<String>) -> Self {
        Self::new(Role::Developer, text)
    }

    /// A user message with text.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, text)
    }

    /// A user message with content parts (text, images, audio, files).
    pub fn user_parts(parts: impl IntoIterator<Item = ContentPart>) -> Self {
        Self {
            content: Some(Content::Parts(parts.into_iter().collect())),
            ..Self::new(Role::User, "")
        }
    }

    /// An assistant message with text.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new(Role::Assistant, text)
    }

    /// The answer to a tool call.
    pub fn tool(tool_call_id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, text)
        }
    }

    /// The text of the message: the string content, or its text parts joined.
    pub fn text(&self) -> Option<String> {
        match self.content.as_ref()? {
            Content::Text(text) => Some(text.clone()),
            Content::Parts(parts) => Some(
                parts
                    .iter()
                    .filter_map(|part| match part {
                        ContentPart::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect(),
            ),
        }
    }
}

/// The content of a message: plain text or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Text, images, audio and files.
    Parts(Vec<ContentPart>),
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL or `data:` URL.
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
    /// Base64 audio.
    InputAudio {
        /// The audio.
        input_audio: InputAudio,
    },
    /// A file, inline or by id.
    File {
        /// The file.
        file: FileInput,
    },
    /// A refusal (assistant messages only).
    Refusal {
        /// The refusal text.
        refusal: String,
    },
    /// A part of a type this version does not know. It is dropped when re-serialized.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// An image part.
    pub fn image_url(url: impl Into<String>, detail: Option<ImageDetail>) -> Self {
        Self::ImageUrl {
            image_url: ImageUrl {
                url: url.into(),
                detail,
            },
        }
    }
}

/// An image input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// An `https:` or `data:` URL.
    pub url: String,
    /// The resolution to read it at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
}

/// An audio input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputAudio {
    /// Base64-encoded audio.
    pub data: String,
    /// `wav` or `mp3`.
    pub format: String,
}

/// A file input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileInput {
    /// The file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Base64-encoded file data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    /// The id of an uploaded file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
}

/// A reference to an earlier audio answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioRef {
    /// Its id.
    pub id: String,
}

/// Audio output parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioOutput {
    /// The voice.
    pub voice: String,
    /// The format: `wav`, `mp3`, `flac`, `opus`, `pcm16`, ...
    pub format: String,
}

/// Predicted output content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Always `content`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The predicted content.
    pub content: Content,
}

/// Stop sequences: one string or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several sequences.
    Many(Vec<String>),
}

impl From<&str> for Stop {
    fn from(value: &str) -> Self {
        Self::One(value.to_owned())
    }
}

impl From<Vec<String>> for Stop {
    fn from(value: Vec<String>) -> Self {
        Self::Many(value)
    }
}

/// Options for streaming.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with the usage of the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Pad chunks with random characters against side-channel attacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_obfuscation: Option<bool>,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
}

impl Tool {
    /// A function tool whose arguments follow the JSON schema `parameters`.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: "function".to_owned(),
            function: FunctionDefinition {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
                strict: None,
            },
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// Its name: letters, digits, underscores and dashes, at most 64.
    pub name: String,
    /// What it does, for the model to decide when to call it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Whether the arguments must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Which tool, if any, the model must call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ToolChoice {
    /// Call no tool.
    None,
    /// Call a tool or answer, as the model decides.
    Auto,
    /// Call one or more tools.
    Required,
    /// Call this function.
    Function(String),
    /// Another shape (such as `allowed_tools`), kept as JSON.
    Other(Value),
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::None => serializer.serialize_str("none"),
            Self::Auto => serializer.serialize_str("auto"),
            Self::Required => serializer.serialize_str("required"),
            Self::Function(name) => serde_json::json!({
                "type": "function",
                "function": { "name": name }
            })
            .serialize(serializer),
            Self::Other(value) => value.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(match value.as_str() {
            Some("none") => Self::None,
            Some("auto") => Self::Auto,
            Some("required") => Self::Required,
            _ => match value
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) if value.get("type").and_then(Value::as_str) == Some("function") => {
                    Self::Function(name.to_owned())
                }
                _ => Self::Other(value),
            },
        })
    }
}

/// The format of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any valid JSON object.
    JsonObject,
    /// JSON that follows a schema (Structured Outputs).
    JsonSchema {
        /// The schema.
        json_schema: JsonSchemaFormat,
    },
}

impl ResponseFormat {
    /// A strict JSON-schema format.
    pub fn json_schema(name: impl Into<String>, schema: Value) -> Self {
        Self::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: name.into(),
                description: None,
                schema: Some(schema),
                strict: Some(true),
            },
        }
    }
}

/// A JSON schema the answer must follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema's name.
    pub name: String,
    /// What the format is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Whether to follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

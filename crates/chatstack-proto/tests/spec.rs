//! Request serialization against the official OpenAI API description
//! (`shared/spec/openapi.yaml`): every top-level key of a [`ChatRequest`] with every field set
//! is a property of `CreateChatCompletionRequest` (or of the schemas it takes in with
//! `allOf`), `extra` is merged at the top level, nested values (messages per role, content
//! parts, tools, tool choice, response format, stream options, prediction, audio, stop) have
//! the spec's shapes and tags, unset fields are omitted, the body round-trips, and the spec
//! properties chatstack does not model as typed fields are listed (and still sendable through
//! `extra`).
//!
//! The spec is read with a small line-based scanner (no YAML crate): it tracks the path of
//! mapping keys and list items by indentation and skips scalar continuation lines, which is
//! all these schemas need. The file is found at `$CHATSTACK_SHARED_DIR/spec/openapi.yaml`, or
//! by default at `$CARGO_MANIFEST_DIR/../../../shared/spec/openapi.yaml`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use chatstack_proto::{
    AudioOutput, AudioRef, ChatRequest, Content, ContentPart, FileInput, FunctionCall,
    FunctionDefinition, ImageDetail, InputAudio, JsonSchemaFormat, Message, Prediction,
    ReasoningEffort, RequestMeta, ResponseFormat, Role, ServiceTier, Stop, StreamOptions, Tool,
    ToolCall, ToolChoice, Verbosity,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// A line-based scanner for the parts of the OpenAPI YAML these tests read
// ---------------------------------------------------------------------------------------------

/// One mapping key (`path` ends with the key) or one scalar list item (`path` ends with
/// `"-"`), with its inline value (empty when the value is a nested block).
struct Entry {
    path: Vec<String>,
    value: String,
}

struct Spec {
    entries: Vec<Entry>,
}

/// Splits `key: value` (or `key:`); `None` when the line is not a mapping key.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let (key, rest) = if let Some(quoted) = text.strip_prefix('"') {
        let end = quoted.find('"')?;
        (&quoted[..end], &quoted[end + 1..])
    } else {
        let end = text.find(':')?;
        let key = &text[..end];
        let valid = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_$.-/".contains(c));
        if !valid {
            return None;
        }
        (key, &text[end..])
    };
    let value = rest.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with(' ')) {
        return None;
    }
    Some((key, value.trim()))
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value)
}

impl Spec {
    fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        // (indent, segment): the keys and list items enclosing the current line.
        let mut stack: Vec<(usize, String)> = Vec::new();
        // Lines indented deeper than this continue a scalar (block, folded or plain).
        let mut skip_deeper_than: Option<usize> = None;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut indent = line.len() - trimmed.len();
            if let Some(limit) = skip_deeper_than {
                if indent > limit {
                    continue;
                }
                skip_deeper_than = None;
            }
            let mut rest = trimmed;
            let mut scalar_item = false;
            while rest == "-" || rest.starts_with("- ") {
                while stack
                    .last()
                    .is_some_and(|(i, s)| *i > indent || (*i == indent && s == "-"))
                {
                    stack.pop();
                }
                stack.push((indent, "-".to_owned()));
                let after = rest[1..].trim_start();
                indent += rest.len() - after.len();
                rest = after;
                scalar_item = true;
            }
            if rest.is_empty() {
                continue; // an item whose content starts on the next line
            }
            match split_key(rest) {
                Some((key, value)) => {
                    while stack.last().is_some_and(|(i, _)| *i >= indent) {
                        stack.pop();
                    }
                    stack.push((indent, key.to_owned()));
                    entries.push(Entry {
                        path: stack.iter().map(|(_, s)| s.clone()).collect(),
                        value: unquote(value).to_owned(),
                    });
                    if !value.is_empty() && !value.starts_with('#') {
                        skip_deeper_than = Some(indent);
                    }
                }
                None if scalar_item => {
                    entries.push(Entry {
                        path: stack.iter().map(|(_, s)| s.clone()).collect(),
                        value: unquote(rest).to_owned(),
                    });
                    skip_deeper_than = Some(indent);
                }
                None => skip_deeper_than = Some(indent.saturating_sub(1)),
            }
        }
        Self { entries }
    }

    fn starts_with(path: &[String], prefix: &[&str]) -> bool {
        path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
    }

    /// The keys directly under `prefix` (a `"-"` segment matches every list item).
    fn children(&self, prefix: &[&str]) -> BTreeSet<String> {
        self.entries
            .iter()
            .filter(|e| e.path.len() == prefix.len() + 1 && Self::starts_with(&e.path, prefix))
            .map(|e| e.path.last().unwrap().clone())
            .filter(|key| key != "-")
            .collect()
    }

    /// The inline values at exactly `path` (several when `path` goes through list items).
    fn values(&self, path: &[&str]) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.path.len() == path.len() && Self::starts_with(&e.path, path))
            .map(|e| e.value.clone())
            .collect()
    }

    /// The schema names of the `$ref`s at exactly `path`.
    fn refs(&self, path: &[&str]) -> Vec<String> {
        self.values(path)
            .into_iter()
            .filter_map(|v| v.rsplit('/').next().map(str::to_owned))
            .collect()
    }

    /// The schema names of every `$ref` anywhere below `prefix`.
    fn refs_below(&self, prefix: &[&str]) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| Self::starts_with(&e.path, prefix) && e.path.last().unwrap() == "$ref")
            .filter_map(|e| e.value.rsplit('/').next().map(str::to_owned))
            .collect()
    }

    fn has_schema(&self, name: &str) -> bool {
        !self.children(&["components", "schemas", name]).is_empty()
    }

    /// The property names of a schema, including those of its `allOf` parts, inline or
    /// referenced.
    fn properties(&self, schema: &str) -> BTreeSet<String> {
        assert!(self.has_schema(schema), "schema {schema} not in the spec");
        let base = ["components", "schemas", schema];
        let mut properties = self.children(&[&base[..], &["properties"]].concat());
        properties.extend(self.children(&[&base[..], &["allOf", "-", "properties"]].concat()));
        for part in self.refs(&[&base[..], &["allOf", "-", "$ref"]].concat()) {
            properties.extend(self.properties(&part));
        }
        properties
    }

    /// The `oneOf` alternatives of a schema, by reference.
    fn one_of(&self, schema: &str) -> Vec<String> {
        self.refs(&["components", "schemas", schema, "oneOf", "-", "$ref"])
    }

    /// The `enum` of a property of a schema.
    fn enum_of(&self, schema: &str, property: &str) -> Vec<String> {
        self.values(&[
            "components",
            "schemas",
            schema,
            "properties",
            property,
            "enum",
            "-",
        ])
    }

    /// Expands `oneOf` wrappers down to concrete schemas.
    fn concrete(&self, schema: &str) -> Vec<String> {
        let alternatives = self.one_of(schema);
        if alternatives.is_empty() {
            vec![schema.to_owned()]
        } else {
            alternatives.iter().flat_map(|s| self.concrete(s)).collect()
        }
    }
}

fn spec_path() -> PathBuf {
    match std::env::var_os("CHATSTACK_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir).join("spec/openapi.yaml"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/openapi.yaml"),
    }
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = spec_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!(
                "cannot read the OpenAI spec at {}: {error}. These tests need \
                 shared/spec/openapi.yaml; set CHATSTACK_SHARED_DIR to the directory that \
                 holds spec/openapi.yaml",
                path.display()
            )
        });
        Spec::parse(&text)
    })
}

/// The request properties of `CreateChatCompletionRequest`, with its `allOf` parts.
fn request_properties() -> BTreeSet<String> {
    spec().properties("CreateChatCompletionRequest")
}

// ---------------------------------------------------------------------------------------------
// A request with every field set
// ---------------------------------------------------------------------------------------------

const EXTRA_KEYS: [&str; 2] = ["top_k", "provider_options"];

/// The top-level keys of `ChatRequest`'s typed fields, all set by `full_request`.
const TYPED_FIELDS: [&str; 32] = [
    "audio",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "messages",
    "metadata",
    "modalities",
    "model",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": false
    })
}

fn full_request() -> ChatRequest {
    let assistant = Message {
        role: Role::Assistant,
        content: Some(Content::Text("Let me check.".to_owned())),
        name: Some("helper".to_owned()),
        tool_calls: Some(vec![ToolCall {
            id: "call_1".to_owned(),
            kind: "function".to_owned(),
            function: FunctionCall {
                name: "get_weather".to_owned(),
                arguments: r#"{"city":"Paris"}"#.to_owned(),
            },
        }]),
        tool_call_id: None,
        refusal: Some("I can't say more.".to_owned()),
        audio: Some(AudioRef {
            id: "audio_1".to_owned(),
        }),
    };
    let user = Message {
        name: Some("alice".to_owned()),
        ..Message::user_parts([
            ContentPart::text("What is in these?"),
            ContentPart::image_url("https://example.com/cat.png", Some(ImageDetail::High)),
            ContentPart::InputAudio {
                input_audio: InputAudio {
                    data: "UklGRg==".to_owned(),
                    format: "wav".to_owned(),
                },
            },
            ContentPart::File {
                file: FileInput {
                    filename: Some("notes.pdf".to_owned()),
                    file_data: Some("data:application/pdf;base64,JVBERi0=".to_owned()),
                    file_id: None,
                },
            },
            ContentPart::File {
                file: FileInput {
                    file_id: Some("file-abc123".to_owned()),
                    ..FileInput::default()
                },
            },
        ])
    };
    let assistant_parts = Message {
        content: Some(Content::Parts(vec![
            ContentPart::text("Partly"),
            ContentPart::Refusal {
                refusal: "no more".to_owned(),
            },
        ])),
        ..Message::assistant("")
    };
    ChatRequest {
        model: "gpt-4o".to_owned(),
        messages: vec![
            Message {
                name: Some("ops".to_owned()),
                ..Message::system("Be brief.")
            },
            Message::developer("Answer in French."),
            user,
            assistant,
            Message::tool("call_1", r#"{"temperature":18}"#),
            assistant_parts,
        ],
        temperature: Some(0.7),
        top_p: Some(0.9),
        max_tokens: Some(256),
        max_completion_tokens: Some(512),
        stop: Some(Stop::Many(vec!["END".to_owned(), "STOP".to_owned()])),
        n: Some(2),
        seed: Some(42),
        frequency_penalty: Some(0.5),
        presence_penalty: Some(-0.5),
        logit_bias: Some(BTreeMap::from([("50256".to_owned(), -100)])),
        logprobs: Some(true),
        top_logprobs: Some(3),
        tools: Some(vec![Tool {
            kind: "function".to_owned(),
            function: FunctionDefinition {
                name: "get_weather".to_owned(),
                description: Some("Current weather".to_owned()),
                parameters: Some(weather_schema()),
                strict: Some(true),
            },
        }]),
        tool_choice: Some(ToolChoice::Function("get_weather".to_owned())),
        parallel_tool_calls: Some(false),
        response_format: Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: "weather".to_owned(),
                description: Some("A weather report".to_owned()),
                schema: Some(weather_schema()),
                strict: Some(true),
            },
        }),
        stream: Some(true),
        stream_options: Some(StreamOptions {
            include_usage: Some(true),
            include_obfuscation: Some(false),
        }),
        user: Some("user-1234".to_owned()),
        safety_identifier: Some("hash-5678".to_owned()),
        prompt_cache_key: Some("cache-key".to_owned()),
        metadata: Some(BTreeMap::from([("team".to_owned(), "search".to_owned())])),
        store: Some(true),
        service_tier: Some(ServiceTier::Flex),
        reasoning_effort: Some(ReasoningEffort::Low),
        verbosity: Some(Verbosity::High),
        modalities: Some(vec!["text".to_owned(), "audio".to_owned()]),
        audio: Some(AudioOutput {
            voice: "alloy".to_owned(),
            format: "mp3".to_owned(),
        }),
        prediction: Some(Prediction {
            kind: "content".to_owned(),
            content: Content::Text("The weather is".to_owned()),
        }),
        web_search_options: Some(json!({"search_context_size": "low"})),
        extra: serde_json::Map::from_iter([
            ("top_k".to_owned(), json!(40)),
            ("provider_options".to_owned(), json!({"safe_mode": true})),
        ]),
        meta: RequestMeta::default(),
    }
}

fn full_body() -> serde_json::Map<String, Value> {
    match serde_json::to_value(full_request()).unwrap() {
        Value::Object(map) => map,
        other => panic!("a request serializes to an object, not {other}"),
    }
}

/// The top-level keys `ChatRequest` writes from typed fields.
fn typed_keys() -> BTreeSet<String> {
    full_body()
        .keys()
        .filter(|k| !EXTRA_KEYS.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// Asserts that every key of `value` is a property of `schema` (at `path` below it).
fn assert_keys_in(value: &Value, schema_path: &[&str], what: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is an object"));
    let allowed = spec().children(schema_path);
    assert!(
        !allowed.is_empty(),
        "{what}: no properties at {schema_path:?} in the spec"
    );
    for key in object.keys() {
        assert!(
            allowed.contains(key),
            "{what}: key {key:?} is not in the spec (allowed: {allowed:?})"
        );
    }
}

fn props<'a>(schema: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    [&["components", "schemas", schema][..], rest].concat()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn scanner_reads_the_request_schema() {
    let properties = request_properties();
    // From CreateChatCompletionRequest itself, from CreateModelResponseProperties and from
    // ModelResponseProperties: if the scanner missed an allOf part, one of these is missing.
    for expected in [
        "messages",
        "model",
        "tools",
        "stream_options",
        "top_logprobs",
        "prompt_cache_options",
        "temperature",
        "metadata",
        "safety_identifier",
    ] {
        assert!(
            properties.contains(expected),
            "{expected} missing from {properties:?}"
        );
    }
    // Words from descriptions and nested schemas are not properties.
    for not_a_property in ["type", "properties", "description", "url", "include_usage"] {
        assert!(!properties.contains(not_a_property), "{not_a_property}");
    }
    assert_eq!(
        spec().enum_of("ChatCompletionRequestMessageContentPartImage", "type"),
        ["image_url"]
    );
    assert_eq!(
        spec().children(&props(
            "ChatCompletionRequestMessageContentPartImage",
            &["properties", "image_url", "properties"]
        )),
        BTreeSet::from(["url".to_owned(), "detail".to_owned()])
    );
    assert_eq!(
        spec().concrete("ChatCompletionRequestUserMessageContentPart"),
        [
            "ChatCompletionRequestMessageContentPartText",
            "ChatCompletionRequestMessageContentPartImage",
            "ChatCompletionRequestMessageContentPartAudio",
            "ChatCompletionRequestMessageContentPartFile",
        ]
    );
    // A block-scalar description whose lines look like list items and keys is skipped.
    let parsed = Spec::parse(
        "a:\n  properties:\n    x:\n      description: >\n        - item: not a key\n        y: nor this\n    z:\n      type: string\n",
    );
    assert_eq!(
        parsed.children(&["a", "properties"]),
        BTreeSet::from(["x".to_owned(), "z".to_owned()])
    );
}

#[test]
fn every_field_is_set_and_every_key_is_a_spec_property() {
    let body = full_body();
    let properties = request_properties();
    for (key, value) in &body {
        assert!(!value.is_null(), "{key} is set, so it is not null");
        if EXTRA_KEYS.contains(&key.as_str()) {
            continue;
        }
        assert!(
            properties.contains(key),
            "top-level key {key:?} is not a property of CreateChatCompletionRequest"
        );
    }
    // Every typed field of ChatRequest is set in `full_request` (it names them all without
    // `..Default::default()`, so a new field breaks the build here), and each shows up.
    let expected: BTreeSet<String> = TYPED_FIELDS.iter().map(|k| k.to_string()).collect();
    assert_eq!(typed_keys(), expected);
}

#[test]
fn extra_is_merged_at_the_top_level() {
    let body = full_body();
    assert_eq!(body["top_k"], 40);
    assert_eq!(body["provider_options"], json!({"safe_mode": true}));
    assert!(
        !body.contains_key("extra"),
        "extra is flattened, not nested"
    );
    assert!(!body.contains_key("meta"), "meta is not body");
}

#[test]
fn extra_key_naming_a_typed_field_replaces_it_once() {
    // A provider-specific shape for a typed field, or a layer and a caller setting the same
    // key: the body must carry the key once (a repeated key is read differently by different
    // JSON parsers, and serde refuses it), and `extra`, the escape hatch, wins.
    let request = ChatRequest::new("gpt-4o", [Message::user("Hi")])
        .temperature(0.5)
        .include_usage()
        .extra("temperature", 1)
        .extra(
            "stream_options",
            json!({"include_usage": true, "continuous_usage_stats": true}),
        );
    let text = serde_json::to_string(&request).unwrap();
    assert_eq!(text.matches("\"temperature\"").count(), 1, "{text}");
    assert_eq!(text.matches("\"stream_options\"").count(), 1, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["temperature"], 1);
    assert_eq!(body["stream_options"]["continuous_usage_stats"], true);
    let back: ChatRequest = serde_json::from_str(&text).expect("the body decodes again");
    assert_eq!(back.temperature, Some(1.0));
}

#[test]
fn messages_match_their_role_schemas() {
    let spec = spec();
    let body = full_body();
    let message_schemas = spec.one_of("ChatCompletionRequestMessage");
    assert_eq!(message_schemas.len(), 6);
    let messages = body["messages"].as_array().unwrap();
    let mut roles_seen = BTreeSet::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap();
        roles_seen.insert(role.to_owned());
        let schema = message_schemas
            .iter()
            .find(|s| spec.enum_of(s, "role") == [role])
            .unwrap_or_else(|| panic!("no message schema for role {role}"));
        assert_keys_in(
            message,
            &props(schema, &["properties"]),
            &format!("message {i} ({role})"),
        );
        let Some(parts) = message["content"].as_array() else {
            assert!(message["content"].is_string() || message.get("content").is_none());
            continue;
        };
        // The part schemas this role allows: below its `content` property.
        let part_schemas: Vec<String> = spec
            .refs_below(&props(schema, &["properties", "content"]))
            .iter()
            .flat_map(|s| spec.concrete(s))
            .collect();
        for part in parts {
            let tag = part["type"].as_str().expect("every part has a type tag");
            let part_schema = part_schemas
                .iter()
                .find(|s| spec.enum_of(s, "type") == [tag])
                .unwrap_or_else(|| {
                    panic!("part type {tag:?} is not allowed in a {role} message: {part_schemas:?}")
                });
            let what = format!("{role} part {tag}");
            assert_keys_in(part, &props(part_schema, &["properties"]), &what);
            // The nested object of the part (image_url, input_audio, file).
            if let Some(inner) = part.get(tag).filter(|v| v.is_object()) {
                assert_keys_in(
                    inner,
                    &props(part_schema, &["properties", tag, "properties"]),
                    &what,
                );
            }
        }
    }
    assert_eq!(
        roles_seen,
        BTreeSet::from(["system", "developer", "user", "assistant", "tool"].map(String::from))
    );

    // The exact shapes of the user parts.
    let user = &messages[2]["content"];
    assert_eq!(
        user[0],
        json!({"type": "text", "text": "What is in these?"})
    );
    assert_eq!(
        user[1],
        json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}})
    );
    assert_eq!(
        user[2],
        json!({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}})
    );
    assert_eq!(
        user[3],
        json!({"type": "file", "file": {"filename": "notes.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}})
    );
    assert_eq!(
        user[4],
        json!({"type": "file", "file": {"file_id": "file-abc123"}})
    );

    // An assistant message with tool calls.
    let calls = &messages[3]["tool_calls"];
    assert_keys_in(
        &calls[0],
        &props("ChatCompletionMessageToolCall", &["properties"]),
        "tool call",
    );
    assert_keys_in(
        &calls[0]["function"],
        &props(
            "ChatCompletionMessageToolCall",
            &["properties", "function", "properties"],
        ),
        "tool call function",
    );
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(messages[3]["audio"], json!({"id": "audio_1"}));
    assert_eq!(messages[4]["tool_call_id"], "call_1");
}

#[test]
fn tools_and_tool_choice_have_spec_shapes() {
    let body = full_body();
    let tool = &body["tools"][0];
    assert_keys_in(tool, &props("ChatCompletionTool", &["properties"]), "tool");
    assert_eq!(
        spec().enum_of("ChatCompletionTool", "type"),
        [tool["type"].as_str().unwrap()]
    );
    assert_keys_in(
        &tool["function"],
        &props("FunctionObject", &["properties"]),
        "function",
    );
    assert_eq!(tool["function"]["strict"], true);
    assert_eq!(tool["function"]["parameters"], weather_schema());

    let choice = &body["tool_choice"];
    assert_eq!(
        *choice,
        json!({"type": "function", "function": {"name": "get_weather"}}),
        "a named tool choice is an object"
    );
    assert_keys_in(
        choice,
        &props("ChatCompletionNamedToolChoice", &["properties"]),
        "tool_choice",
    );
    assert_keys_in(
        &choice["function"],
        &props(
            "ChatCompletionNamedToolChoice",
            &["properties", "function", "properties"],
        ),
        "tool_choice.function",
    );
    // The modes are plain strings from the spec's enum.
    let modes = spec().values(&[
        "components",
        "schemas",
        "ChatCompletionToolChoiceOption",
        "oneOf",
        "-",
        "enum",
        "-",
    ]);
    assert_eq!(modes, ["none", "auto", "required"]);
    for (choice, mode) in [
        (ToolChoice::None, "none"),
        (ToolChoice::Auto, "auto"),
        (ToolChoice::Required, "required"),
    ] {
        assert_eq!(serde_json::to_value(choice).unwrap(), json!(mode));
    }
}

#[test]
fn response_format_json_schema_has_spec_shape() {
    let body = full_body();
    let format = &body["response_format"];
    assert_eq!(
        spec().enum_of("ResponseFormatJsonSchema", "type"),
        [format["type"].as_str().unwrap()]
    );
    assert_keys_in(
        format,
        &props("ResponseFormatJsonSchema", &["properties"]),
        "response_format",
    );
    assert_keys_in(
        &format["json_schema"],
        &props(
            "ResponseFormatJsonSchema",
            &["properties", "json_schema", "properties"],
        ),
        "response_format.json_schema",
    );
    assert_eq!(
        format["json_schema"],
        json!({"name": "weather", "description": "A weather report", "schema": weather_schema(), "strict": true})
    );
    for (format, schema) in [
        (ResponseFormat::Text, "ResponseFormatText"),
        (ResponseFormat::JsonObject, "ResponseFormatJsonObject"),
    ] {
        let value = serde_json::to_value(format).unwrap();
        assert_eq!(
            spec().enum_of(schema, "type"),
            [value["type"].as_str().unwrap()]
        );
        assert_eq!(value.as_object().unwrap().len(), 1, "only the type tag");
    }
}

#[test]
fn other_nested_values_have_spec_shapes() {
    let body = full_body();
    assert_keys_in(
        &body["stream_options"],
        &props("ChatCompletionStreamOptions", &["anyOf", "-", "properties"]),
        "stream_options",
    );
    assert_eq!(
        body["stream_options"],
        json!({"include_usage": true, "include_obfuscation": false})
    );
    assert_keys_in(
        &body["prediction"],
        &props("PredictionContent", &["properties"]),
        "prediction",
    );
    assert_eq!(spec().enum_of("PredictionContent", "type"), ["content"]);
    assert_eq!(body["prediction"]["type"], "content");
    assert_keys_in(
        &body["audio"],
        &props(
            "CreateChatCompletionRequest",
            &["allOf", "-", "properties", "audio", "properties"],
        ),
        "audio",
    );
    assert_eq!(body["logit_bias"], json!({"50256": -100}));
    assert_eq!(body["metadata"], json!({"team": "search"}));
    assert_eq!(body["service_tier"], "flex");
    assert_eq!(body["reasoning_effort"], "low");
    assert_eq!(body["verbosity"], "high");
    assert_eq!(body["modalities"], json!(["text", "audio"]));
    assert_eq!(body["seed"], 42);
    assert_eq!(body["max_completion_tokens"], 512);
}

#[test]
fn stop_is_a_string_or_an_array() {
    let one = ChatRequest::new("m", [Message::user("x")]).stop("END");
    assert_eq!(serde_json::to_value(&one).unwrap()["stop"], json!("END"));
    let many =
        ChatRequest::new("m", [Message::user("x")]).stop(vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(
        serde_json::to_value(&many).unwrap()["stop"],
        json!(["a", "b"])
    );
    // Both shapes are the spec's.
    let shapes = spec().values(&[
        "components",
        "schemas",
        "StopConfiguration",
        "oneOf",
        "-",
        "type",
    ]);
    assert_eq!(shapes, ["string", "array"]);
}

#[test]
fn unset_fields_are_omitted() {
    let request = ChatRequest::new("gpt-4o", [Message::user("Hi")]);
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]})
    );
    assert_eq!(
        serde_json::to_string(&request).unwrap(),
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#
    );
}

#[test]
fn full_request_round_trips() {
    let request = full_request();
    let text = serde_json::to_string(&request).unwrap();
    let back: ChatRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(back, request);
    assert_eq!(serde_json::to_string(&back).unwrap(), text, "stable bytes");
}

/// The spec properties that `ChatRequest` has no typed field for. Each is still sendable
/// through `extra` (see `unmodelled_properties_are_sendable_through_extra`).
const NOT_MODELLED: [&str; 5] = [
    "function_call",
    "functions",
    "moderation",
    "prompt_cache_options",
    "prompt_cache_retention",
];

#[test]
fn spec_properties_not_modelled_as_typed_fields() {
    let typed = typed_keys();
    let missing: Vec<String> = request_properties()
        .into_iter()
        .filter(|p| !typed.contains(p))
        .collect();
    println!("spec properties ChatRequest does not model as typed fields: {missing:?}");
    assert_eq!(missing, NOT_MODELLED);
    // And nothing typed is outside the spec.
    let properties = request_properties();
    let outside: Vec<&String> = typed.iter().filter(|k| !properties.contains(*k)).collect();
    assert!(
        outside.is_empty(),
        "typed keys outside the spec: {outside:?}"
    );
}

#[test]
fn unmodelled_properties_are_sendable_through_extra() {
    let values = [
        ("function_call", json!("auto")),
        (
            "functions",
            json!([{"name": "legacy", "parameters": {"type": "object"}}]),
        ),
        ("moderation", json!({"model": "omni-moderation-latest"})),
        ("prompt_cache_options", json!({"ttl": "1h"})),
        ("prompt_cache_retention", json!("24h")),
    ];
    let keys: Vec<&str> = values.iter().map(|(key, _)| *key).collect();
    assert_eq!(keys, NOT_MODELLED);
    let mut request = ChatRequest::new("gpt-4o", [Message::user("Hi")]);
    for (key, value) in &values {
        request = request.extra(*key, value.clone());
    }
    let body = serde_json::to_value(&request).unwrap();
    for (key, value) in &values {
        assert_eq!(&body[*key], value, "{key} is sent at the top level");
    }
    let back: ChatRequest = serde_json::from_value(body).unwrap();
    assert_eq!(back, request, "decoded, they land in extra again");
    assert_eq!(back.extra.len(), values.len());
}

/// The wire values of a string enum, as serialized.
fn wire<T: serde::Serialize>(values: impl IntoIterator<Item = T>) -> BTreeSet<String> {
    values
        .into_iter()
        .map(|v| match serde_json::to_value(v).unwrap() {
            Value::String(s) => s,
            other => panic!("a string enum serializes to a string, not {other}"),
        })
        .collect()
}

fn spec_enum(path: &[&str]) -> BTreeSet<String> {
    let values: BTreeSet<String> = spec().values(path).into_iter().collect();
    assert!(!values.is_empty(), "no enum at {path:?}");
    values
}

#[test]
fn string_enums_match_the_spec_enums() {
    use ServiceTier as T;
    assert_eq!(
        wire([T::Auto, T::Default, T::Flex, T::Scale, T::Priority, T::Fast]),
        spec_enum(&props("ServiceTier", &["anyOf", "-", "enum", "-"]))
    );
    use ReasoningEffort as R;
    assert_eq!(
        wire([
            R::None,
            R::Minimal,
            R::Low,
            R::Medium,
            R::High,
            R::XHigh,
            R::Max
        ]),
        spec_enum(&props("ReasoningEffort", &["anyOf", "-", "enum", "-"]))
    );
    assert_eq!(
        wire([Verbosity::Low, Verbosity::Medium, Verbosity::High]),
        spec_enum(&props("Verbosity", &["anyOf", "-", "enum", "-"]))
    );
    assert_eq!(
        wire([ImageDetail::Auto, ImageDetail::Low, ImageDetail::High]),
        spec_enum(&props(
            "ChatCompletionRequestMessageContentPartImage",
            &[
                "properties",
                "image_url",
                "properties",
                "detail",
                "enum",
                "-"
            ]
        ))
    );
    // An unknown value is sent as given.
    assert_eq!(
        serde_json::to_value(ServiceTier::Other("on_demand".to_owned())).unwrap(),
        "on_demand"
    );
}

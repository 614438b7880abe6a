//! Deterministic replies: what the mock answers is a pure function of the request.
//!
//! The messages (and `seed`, when set) are hashed with FNV-1a over their JSON; the hash seeds
//! one small RNG per choice, which picks words from a fixed list. Each word is one token. Tool
//! calls and JSON answers (`response_format`) are generated from the tool's parameter schema
//! or the response schema with the same RNG, and split into pieces of about four bytes, one
//! token each.

use std::io;

use chatstack_proto::{
    ChatRequest, ChatResponse, Choice, CompletionTokensDetails, FinishReason, FunctionCall,
    PromptTokensDetails, ResponseFormat, ResponseMessage, Role, ServiceTier, ToolCall, ToolChoice,
    Usage,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The words replies are made of. A few carry non-ASCII text and characters JSON must escape,
/// so clients' UTF-8 and escape handling get exercised.
pub(crate) const WORDS: [&str; 64] = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "river",
    "stone",
    "cloud",
    "light",
    "north",
    "south",
    "east",
    "west",
    "apple",
    "lemon",
    "cherry",
    "olive",
    "copper",
    "silver",
    "amber",
    "indigo",
    "quiet",
    "rapid",
    "gentle",
    "bright",
    "signal",
    "vector",
    "kernel",
    "packet",
    "thread",
    "buffer",
    "socket",
    "token",
    "model",
    "prompt",
    "answer",
    "mirror",
    "stream",
    "chunk",
    "mock",
    "reply",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "café",
    "naïve",
    "über",
    "日本語",
    "🦀",
    "\"quoted\"",
    "back\\slash",
    "tab\there",
];

/// The `system_fingerprint` of every reply.
pub(crate) const FINGERPRINT: &str = "fp_chatstack_mock";

/// FNV-1a, 64 bits: stable across platforms and Rust versions, unlike `DefaultHasher`.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl io::Write for Fnv {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A well-mixed 64-bit function, to derive independent seeds from one hash.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hash of a request's messages (and `seed`).
pub(crate) fn request_hash(request: &ChatRequest) -> u64 {
    let mut hasher = Fnv::new();
    // Writing to `Fnv` cannot fail, and neither can serializing messages.
    let _ = serde_json::to_writer(&mut hasher, &request.messages);
    if let Some(seed) = request.seed {
        let _ = io::Write::write(&mut hasher, &seed.to_le_bytes());
    }
    hasher.0
}

/// Extra usage to report, from the `x-mock-usage` header: a flat JSON object. Every field is
/// optional; unknown fields are an error, to catch typos.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageOverride {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    prompt_audio_tokens: Option<u64>,
    completion_audio_tokens: Option<u64>,
    image_tokens: Option<u64>,
    accepted_prediction_tokens: Option<u64>,
    rejected_prediction_tokens: Option<u64>,
}

/// What the reply to one request is made of.
#[derive(Debug)]
pub(crate) struct ReplyPlan {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub service_tier: ServiceTier,
    pub choices: Vec<ChoicePlan>,
    pub usage: Usage,
}

/// One choice of a reply.
#[derive(Debug)]
pub(crate) struct ChoicePlan {
    pub body: ChoiceBody,
    /// Tokens emitted (after the cut at the output cap).
    pub tokens: u32,
    pub finish: FinishReason,
}

/// The content of a choice.
#[derive(Debug)]
pub(crate) enum ChoiceBody {
    /// `tokens` words drawn from an RNG with this seed.
    Words { seed: u64 },
    /// Text (a JSON answer), in pieces ending at these byte offsets, already cut.
    Json { text: String, ends: Vec<usize> },
    /// A tool call whose arguments come in pieces ending at these byte offsets, already cut.
    Tool {
        id: String,
        name: String,
        arguments: String,
        ends: Vec<usize>,
    },
}

/// Yields the words of a [`ChoiceBody::Words`] choice, each with its leading space.
pub(crate) struct WordTokens {
    rng: fastrand::Rng,
    first: bool,
}

impl WordTokens {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            first: true,
        }
    }

    /// Appends the next token (" word", or "word" for the first) to `out`.
    pub(crate) fn push_next(&mut self, out: &mut String) {
        if !std::mem::take(&mut self.first) {
            out.push(' ');
        }
        out.push_str(WORDS[self.rng.usize(..WORDS.len())]);
    }
}

impl ChoiceBody {
    /// The text of piece `index` of a JSON or tool choice.
    pub(crate) fn piece(&self, index: usize) -> &str {
        let (text, ends) = match self {
            Self::Json { text, ends } => (text, ends),
            Self::Tool {
                arguments, ends, ..
            } => (arguments, ends),
            Self::Words { .. } => return "",
        };
        let start = if index == 0 { 0 } else { ends[index - 1] };
        &text[start..ends[index]]
    }
}

/// A request the mock refuses with a 400.
#[derive(Debug)]
pub(crate) struct PlanError {
    pub message: String,
    pub param: &'static str,
}

/// What the reply depends on besides the request.
pub(crate) struct PlanInput<'a> {
    pub reply_tokens: u32,
    pub max_choices: u32,
    pub created: u64,
    pub prompt_tokens: u64,
    pub usage: Option<&'a UsageOverride>,
}

/// Plans the reply to `request`.
pub(crate) fn plan(request: &ChatRequest, input: &PlanInput<'_>) -> Result<ReplyPlan, PlanError> {
    let hash = request_hash(request);
    let n = request.n.unwrap_or(1).clamp(1, input.max_choices.max(1));
    let cap = request.max_completion_tokens.or(request.max_tokens);
    let tool = pick_tool(request)?;
    let mut choices = Vec::with_capacity(n as usize);
    for index in 0..n {
        let seed = splitmix64(hash ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut body, natural) = if let Some(tool) = tool {
            let arguments = match &tool.function.parameters {
                Some(schema) => sample(schema, &mut rng, 0).to_string(),
                None => "{}".to_owned(),
            };
            let ends = piece_ends(&arguments);
            let tokens = ends.len() as u32;
            let body = ChoiceBody::Tool {
                id: format!("call_{:016x}", splitmix64(seed)),
                name: tool.function.name.clone(),
                arguments,
                ends,
            };
            (body, tokens)
        } else if let Some(schema) = json_answer_schema(request) {
            let text = sample(&schema, &mut rng, 0).to_string();
            let ends = piece_ends(&text);
            let tokens = ends.len() as u32;
            (ChoiceBody::Json { text, ends }, tokens)
        } else {
            (ChoiceBody::Words { seed }, input.reply_tokens)
        };
        let (tokens, finish) = match cap {
            Some(cap) if cap < natural => (cap, FinishReason::Length),
            _ if tool.is_some() => (natural, FinishReason::ToolCalls),
            _ => (natural, FinishReason::Stop),
        };
        cut(&mut body, tokens as usize);
        choices.push(ChoicePlan {
            body,
            tokens,
            finish,
        });
    }
    let generated = choices.iter().map(|c| u64::from(c.tokens)).sum();
    let service_tier = match &request.service_tier {
        None | Some(ServiceTier::Auto) => ServiceTier::Default,
        Some(tier) => tier.clone(),
    };
    Ok(ReplyPlan {
        id: format!("chatcmpl-mock{hash:016x}"),
        model: request.model.clone(),
        created: input.created,
        service_tier,
        choices,
        usage: usage(input.prompt_tokens, generated, input.usage),
    })
}

/// The usage to report. Without an override: the prompt estimate, and the generated tokens.
/// With one: its counts replace the computed ones; `prompt_tokens` is at least cached plus
/// cache-write tokens, and `completion_tokens` includes the reasoning tokens.
fn usage(estimate: u64, generated: u64, usage: Option<&UsageOverride>) -> Usage {
    let over = usage.cloned().unwrap_or_default();
    let cached = over.cached_tokens.unwrap_or(0);
    let cache_write = over.cache_write_tokens.unwrap_or(0);
    let reasoning = over.reasoning_tokens.unwrap_or(0);
    let prompt = over
        .prompt_tokens
        .unwrap_or_else(|| estimate.max(cached.saturating_add(cache_write)));
    let completion = over
        .completion_tokens
        .unwrap_or_else(|| generated.saturating_add(reasoning));
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: cached,
            cache_write_tokens: cache_write,
            audio_tokens: over.prompt_audio_tokens.unwrap_or(0),
            image_tokens: over.image_tokens.unwrap_or(0),
        },
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: reasoning,
            audio_tokens: over.completion_audio_tokens.unwrap_or(0),
            accepted_prediction_tokens: over.accepted_prediction_tokens.unwrap_or(0),
            rejected_prediction_tokens: over.rejected_prediction_tokens.unwrap_or(0),
        },
    }
}

/// The tool the reply calls: none without tools or with `tool_choice: "none"`; the named one
/// for a named choice; else the first.
fn pick_tool(request: &ChatRequest) -> Result<Option<&chatstack_proto::Tool>, PlanError> {
    let Some(tools) = request.tools.as_deref().filter(|tools| !tools.is_empty()) else {
        return Ok(None);
    };
    match &request.tool_choice {
        Some(ToolChoice::None) => Ok(None),
        Some(ToolChoice::Function(name)) => tools
            .iter()
            .find(|tool| tool.function.name == *name)
            .map(Some)
            .ok_or_else(|| PlanError {
                message: format!(
                    "Invalid value for 'tool_choice': function '{name}' is not among the tools."
                ),
                param: "tool_choice",
            }),
        _ => Ok(tools.first()),
    }
}

/// The schema of a JSON answer, when `response_format` asks for one.
fn json_answer_schema(request: &ChatRequest) -> Option<Value> {
    match request.response_format.as_ref()? {
        ResponseFormat::JsonSchema { json_schema } => Some(
            json_schema
                .schema
                .clone()
                .unwrap_or_else(|| Value::Object(Map::new())),
        ),
        ResponseFormat::JsonObject => Some(serde_json::json!({
            "type": "object",
            "properties": { "answer": { "type": "string" } }
        })),
        _ => None,
    }
}

/// A deterministic value that fits `schema` (a practical subset of JSON Schema).
fn sample(schema: &Value, rng: &mut fastrand::Rng, depth: u32) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|values| values.first())
    {
        return first.clone();
    }
    if let Some(first) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
        .and_then(|schemas| schemas.first())
    {
        return sample(first, rng, depth + 1);
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("items").is_some() => "array",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    object.insert(name.clone(), sample(property, rng, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            Value::Array(vec![sample(items, rng, depth + 1)])
        }
        "integer" => Value::from(rng.u32(0..100)),
        "number" => Value::from(f64::from(rng.u32(0..1000)) / 10.0),
        "boolean" => Value::Bool(rng.bool()),
        "null" => Value::Null,
        _ => Value::from(WORDS[rng.usize(..WORDS.len())]),
    }
}

/// Splits text into pieces of at least four bytes (the last may be shorter), on character
/// boundaries; returns the end offset of each piece.
fn piece_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::with_capacity(text.len() / 4 + 1);
    let mut start = 0;
    for (offset, ch) in text.char_indices() {
        let end = offset + ch.len_utf8();
        if end - start >= 4 {
            ends.push(end);
            start = end;
        }
    }
    if start < text.len() {
        ends.push(text.len());
    }
    ends
}

/// Cuts a JSON or tool body to its first `tokens` pieces.
fn cut(body: &mut ChoiceBody, tokens: usize) {
    let (text, ends) = match body {
        ChoiceBody::Json { text, ends } => (text, ends),
        ChoiceBody::Tool {
            arguments, ends, ..
        } => (arguments, ends),
        ChoiceBody::Words { .. } => return,
    };
    if tokens < ends.len() {
        ends.truncate(tokens);
        text.truncate(ends.last().copied().unwrap_or(0));
    }
}

/// The unary response to a plan.
pub(crate) fn unary_response(plan: &ReplyPlan) -> ChatResponse {
    let choices = plan
        .choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            let mut message = ResponseMessage {
                role: Role::Assistant,
                ..ResponseMessage::default()
            };
            match &choice.body {
                ChoiceBody::Words { seed } => {
                    let mut text = String::with_capacity(choice.tokens as usize * 7);
                    let mut words = WordTokens::new(*seed);
                    for _ in 0..choice.tokens {
                        words.push_next(&mut text);
                    }
                    message.content = Some(text);
                }
                ChoiceBody::Json { text, .. } => message.content = Some(text.clone()),
                ChoiceBody::Tool {
                    id,
                    name,
                    arguments,
                    ..
                } => message.tool_calls.push(ToolCall {
                    id: id.clone(),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: name.clone(),
                        arguments: arguments.clone(),
                    },
                }),
            }
            Choice {
                index: index as u32,
                message,
                finish_reason: Some(choice.finish.clone()),
                logprobs: None,
            }
        })
        .collect();
    ChatResponse {
        id: plan.id.clone(),
        object: "chat.completion".to_owned(),
        created: plan.created,
        model: plan.model.clone(),
        choices,
        usage: Some(plan.usage),
        system_fingerprint: Some(FINGERPRINT.to_owned()),
        service_tier: Some(plan.service_tier.clone()),
        ..ChatResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use chatstack_proto::{Message, Tool};
    use serde_json::json;

    use super::*;

    fn input() -> PlanInput<'static> {
        PlanInput {
            reply_tokens: 16,
            max_choices: 16,
            created: 1,
            prompt_tokens: 10,
            usage: None,
        }
    }

    fn text(plan: &ReplyPlan, index: usize) -> String {
        unary_response(plan).choices[index]
            .message
            .content
            .clone()
            .unwrap()
    }

    #[test]
    fn replies_are_a_function_of_the_messages() {
        let a = ChatRequest::new("m", [Message::user("hello")]);
        let b = ChatRequest::new("other-model", [Message::user("hello")]).temperature(1.0);
        let c = ChatRequest::new("m", [Message::user("hello!")]);
        let plan_a = plan(&a, &input()).unwrap();
        assert_eq!(text(&plan_a, 0), text(&plan(&b, &input()).unwrap(), 0));
        assert_ne!(text(&plan_a, 0), text(&plan(&c, &input()).unwrap(), 0));
        assert_eq!(text(&plan_a, 0).split(' ').count(), 16);
        assert_eq!(plan_a.usage.completion_tokens, 16);
        assert_eq!(plan_a.choices[0].finish, FinishReason::Stop);
        let seeded = a.clone().seed(3);
        assert_ne!(text(&plan_a, 0), text(&plan(&seeded, &input()).unwrap(), 0));
    }

    #[test]
    fn cap_and_choices() {
        let request = ChatRequest::new("m", [Message::user("hi")])
            .max_tokens(5)
            .n(3);
        let plan = plan(&request, &input()).unwrap();
        assert_eq!(plan.choices.len(), 3);
        assert!(plan.choices.iter().all(|c| c.tokens == 5));
        assert!(
            plan.choices
                .iter()
                .all(|c| c.finish == FinishReason::Length)
        );
        assert_eq!(plan.usage.completion_tokens, 15);
        assert_ne!(text(&plan, 0), text(&plan, 1));
        let capped = ChatRequest::new("m", [Message::user("hi")]).n(500);
        assert_eq!(super::plan(&capped, &input()).unwrap().choices.len(), 16);
    }

    #[test]
    fn tool_calls_follow_the_schema() {
        let tool = Tool::function(
            "get_weather",
            "Weather",
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                    "days": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["city"]
            }),
        );
        let request = ChatRequest::new("m", [Message::user("weather?")]).tool(tool.clone());
        let plan = plan(&request, &input()).unwrap();
        let response = unary_response(&plan);
        let call = &response.tool_calls()[0];
        assert_eq!(call.function.name, "get_weather");
        let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
        assert_eq!(args["unit"], "c");
        assert!(args["city"].is_string() && args["days"].is_u64() && args["tags"].is_array());
        assert_eq!(plan.choices[0].finish, FinishReason::ToolCalls);
        let pieces: String = (0..plan.choices[0].tokens as usize)
            .map(|i| plan.choices[0].body.piece(i))
            .collect();
        assert_eq!(pieces, call.function.arguments);

        let none = request.clone().tool_choice(ToolChoice::None);
        assert!(
            unary_response(&super::plan(&none, &input()).unwrap())
                .tool_calls()
                .is_empty()
        );
        let missing = request
            .clone()
            .tool_choice(ToolChoice::Function("nope".into()));
        assert_eq!(
            super::plan(&missing, &input()).unwrap_err().param,
            "tool_choice"
        );
        let cut = request.max_tokens(2);
        let plan = super::plan(&cut, &input()).unwrap();
        assert_eq!(plan.choices[0].finish, FinishReason::Length);
        let ChoiceBody::Tool { arguments, .. } = &plan.choices[0].body else {
            panic!()
        };
        assert!(arguments.len() <= 8 && serde_json::from_str::<Value>(arguments).is_err());
    }

    #[test]
    fn json_answers_parse() {
        let request = ChatRequest::new("m", [Message::user("json")]).response_format(
            ResponseFormat::json_schema(
                "answer",
                json!({"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":["number","null"]}}}),
            ),
        );
        let answer = text(&plan(&request, &input()).unwrap(), 0);
        let value: Value = serde_json::from_str(&answer).unwrap();
        assert!(value["ok"].is_boolean() && value["n"].is_number());
        let object = ChatRequest::new("m", [Message::user("json")])
            .response_format(ResponseFormat::JsonObject);
        let answer = text(&plan(&object, &input()).unwrap(), 0);
        assert!(serde_json::from_str::<Value>(&answer).unwrap()["answer"].is_string());
    }

    #[test]
    fn usage_overrides() {
        let over: UsageOverride =
            serde_json::from_str(r#"{"cached_tokens":100,"reasoning_tokens":7}"#).unwrap();
        let usage = usage(10, 16, Some(&over));
        assert_eq!(usage.prompt_tokens, 100);
        assert_eq!(usage.completion_tokens, 23);
        assert_eq!(usage.total_tokens, 123);
        assert_eq!(usage.prompt_tokens_details.cached_tokens, 100);
        assert_eq!(usage.completion_tokens_details.reasoning_tokens, 7);
        let huge: UsageOverride =
            serde_json::from_str(r#"{"prompt_tokens":18446744073709551615,"completion_tokens":5}"#)
                .unwrap();
        assert_eq!(super::usage(1, 1, Some(&huge)).total_tokens, u64::MAX);
        assert!(serde_json::from_str::<UsageOverride>(r#"{"cachd_tokens":1}"#).is_err());
    }

    #[test]
    fn pieces_respect_char_boundaries() {
        let text = "ab日本語🦀x";
        let ends = piece_ends(text);
        let mut start = 0;
        for end in ends {
            assert!(text.is_char_boundary(end));
            start = end;
        }
        assert_eq!(start, text.len());
        assert!(piece_ends("").is_empty());
    }
}

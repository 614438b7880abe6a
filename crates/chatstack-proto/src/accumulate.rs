//! Folding streamed chunks into one [`ChatResponse`].

use crate::request::Role;
use crate::response::{ChatResponse, Choice, FinishReason, Logprobs, ResponseMessage, ToolCall};
use crate::stream::{ChatChunk, ChunkChoice, ToolCallDelta};

/// Folds the chunks of a stream into the [`ChatResponse`] a unary call would have returned.
///
/// - Choices are kept apart by `index`, whether they arrive interleaved or one after another.
/// - Tool calls are assembled by their `index` within the choice: the first piece gives id
///   and name, later pieces append argument text. Servers that repeat the id and the name in
///   every piece are handled (a repeated name is not appended again); a piece whose id differs
///   from the call already at its index starts a new call.
/// - Text, refusal and reasoning text are appended; logprobs are concatenated.
/// - The finish reason is the last one a choice received; a choice that never gets one
///   keeps `None`.
/// - Usage is the last non-empty usage seen: servers that send usage on every chunk send it
///   cumulatively, so the last one is the total.
///
/// ```
/// use chatstack_proto::{ChatAccumulator, ChatChunk};
///
/// let mut accumulator = ChatAccumulator::new();
/// for data in [
///     r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
///     r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
///     r#"{"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
/// ] {
///     accumulator.push(&serde_json::from_str::<ChatChunk>(data).unwrap());
/// }
/// let response = accumulator.finish();
/// assert_eq!(response.text(), Some("Hello"));
/// assert_eq!(response.usage.unwrap().total_tokens, 7);
/// ```
#[derive(Debug, Default)]
pub struct ChatAccumulator {
    response: ChatResponse,
    choices: Vec<ChoiceState>,
}

#[derive(Debug)]
struct ChoiceState {
    index: u32,
    role: Option<Role>,
    content: String,
    saw_content: bool,
    refusal: Option<String>,
    reasoning: Option<String>,
    tool_calls: Vec<(u32, ToolCall)>,
    finish_reason: Option<FinishReason>,
    logprobs: Option<Logprobs>,
}

impl ChoiceState {
    fn new(index: u32) -> Self {
        Self {
            index,
            role: None,
            content: String::new(),
            saw_content: false,
            refusal: None,
            reasoning: None,
            tool_calls: Vec::new(),
            finish_reason: None,
            logprobs: None,
        }
    }

    fn apply(&mut self, choice: &ChunkChoice) {
        let delta = &choice.delta;
        if self.role.is_none() {
            self.role.clone_from(&delta.role);
        }
        if let Some(text) = &delta.content {
            self.content.push_str(text);
            self.saw_content = true;
        }
        if let Some(text) = &delta.refusal {
            self.refusal.get_or_insert_with(String::new).push_str(text);
        }
        if let Some(text) = &delta.reasoning_content {
            self.reasoning
                .get_or_insert_with(String::new)
                .push_str(text);
        }
        for piece in &delta.tool_calls {
            self.apply_tool_call(piece);
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
        if let Some(logprobs) = &choice.logprobs {
            let merged = self.logprobs.get_or_insert_with(Logprobs::default);
            if let Some(tokens) = &logprobs.content {
                merged
                    .content
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(tokens);
            }
            if let Some(tokens) = &logprobs.refusal {
                merged
                    .refusal
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(tokens);
            }
        }
    }

    fn apply_tool_call(&mut self, piece: &ToolCallDelta) {
        let new_id = piece.id.as_deref().filter(|id| !id.is_empty());
        // The last call at this index, unless the piece names a different id: then it is
        // a new call that a server sent with a reused index.
        let position = self
            .tool_calls
            .iter()
            .rposition(|(index, _)| *index == piece.index)
            .filter(|&position| {
                let existing = &self.tool_calls[position].1.id;
                new_id.is_none_or(|id| existing.is_empty() || existing == id)
            });
        let call = match position {
            Some(position) => &mut self.tool_calls[position].1,
            None => {
                self.tool_calls.push((piece.index, ToolCall::default()));
                let last = self.tool_calls.len() - 1;
                &mut self.tool_calls[last].1
            }
        };
        if let Some(id) = new_id {
            if call.id.is_empty() {
                call.id = id.to_owned();
            }
        }
        if let Some(kind) = piece.kind.as_deref().filter(|k| !k.is_empty()) {
            kind.clone_into(&mut call.kind);
        }
        if let Some(function) = &piece.function {
            if let Some(name) = function.name.as_deref().filter(|n| !n.is_empty()) {
                if call.function.name != name {
                    call.function.name.push_str(name);
                }
            }
            if let Some(arguments) = &function.arguments {
                call.function.arguments.push_str(arguments);
            }
        }
    }

    fn finish(mut self) -> Choice {
        self.tool_calls.sort_by_key(|(index, _)| *index);
        let tool_calls: Vec<ToolCall> = self
            .tool_calls
            .into_iter()
            .map(|(_, mut call)| {
                if call.kind.is_empty() {
                    call.kind = "function".to_owned();
                }
                call
            })
            .collect();
        let content = if !self.content.is_empty() || (self.saw_content && tool_calls.is_empty()) {
            Some(self.content)
        } else {
            None
        };
        Choice {
            index: self.index,
            message: ResponseMessage {
                role: self.role.unwrap_or(Role::Assistant),
                content,
                refusal: self.refusal,
                tool_calls,
                reasoning_content: self.reasoning,
            },
            finish_reason: self.finish_reason,
            logprobs: self.logprobs,
        }
    }
}

impl ChatAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds in one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        let response = &mut self.response;
        if response.id.is_empty() && !chunk.id.is_empty() {
            response.id.clone_from(&chunk.id);
        }
        if response.model.is_empty() && !chunk.model.is_empty() {
            response.model.clone_from(&chunk.model);
        }
        if response.created == 0 {
            response.created = chunk.created;
        }
        if response.system_fingerprint.is_none() {
            response
                .system_fingerprint
                .clone_from(&chunk.system_fingerprint);
        }
        if chunk.service_tier.is_some() {
            response.service_tier.clone_from(&chunk.service_tier);
        }
        if chunk.usage.is_some() {
            response.usage = chunk.usage;
        }
        for choice in &chunk.choices {
            let state = match self.choices.iter().position(|c| c.index == choice.index) {
                Some(position) => &mut self.choices[position],
                None => {
                    self.choices.push(ChoiceState::new(choice.index));
                    let last = self.choices.len() - 1;
                    &mut self.choices[last]
                }
            };
            state.apply(choice);
        }
    }

    /// The response assembled so far.
    pub fn finish(self) -> ChatResponse {
        let mut response = self.response;
        response.object = "chat.completion".to_owned();
        let mut choices: Vec<Choice> = self.choices.into_iter().map(ChoiceState::finish).collect();
        choices.sort_by_key(|choice| choice.index);
        response.choices = choices;
        response
    }
}

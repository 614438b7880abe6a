//! Response bodies that are written over time: SSE streams, stalls, drips, truncations and
//! oversized bodies. A [`Script`] says what comes next; [`PacedBody`] turns it into a stream of
//! byte frames, sleeping on tokio's clock where the script pauses.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chatstack_proto::{
    ChatChunk, ChunkChoice, Delta, FunctionCallDelta, Role, ToolCallDelta, Usage,
};
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

use crate::counters::InFlight;
use crate::reply::{ChoiceBody, FINGERPRINT, ReplyPlan, WordTokens};

/// Bytes collected before a frame is handed to hyper, when nothing pauses in between.
const FLUSH_AT: usize = 32 * 1024;

/// One instruction of a [`Script`].
pub(crate) enum Step {
    /// Something was written to the buffer.
    Wrote,
    /// Send these bytes as they are.
    Bytes(Bytes),
    /// Send what is buffered, then wait.
    Pause(Duration),
    /// Send what is buffered, then break the connection.
    Abort,
    /// The body is complete.
    End,
}

/// What a [`PacedBody`] sends.
pub(crate) trait Script: Send + Unpin + 'static {
    /// The next step; may write into `buf`.
    fn next_step(&mut self, buf: &mut BytesMut) -> Step;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Give hyper one turn to flush what was sent, then fail.
    AbortAfterFlush,
    AbortNow,
    Done,
}

/// A response body driven by a [`Script`], holding the in-flight guards of its request.
pub(crate) struct PacedBody<S> {
    script: S,
    buf: BytesMut,
    pending: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    sleeping: bool,
    state: State,
    _guards: (Option<InFlight>, Option<InFlight>),
}

impl<S: Script> PacedBody<S> {
    pub(crate) fn new(script: S, request: Option<InFlight>, stream: Option<InFlight>) -> Self {
        Self {
            script,
            buf: BytesMut::new(),
            pending: None,
            sleep: None,
            sleeping: false,
            state: State::Running,
            _guards: (request, stream),
        }
    }

    fn arm(&mut self, duration: Duration) {
        let deadline = deadline_after(duration);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.sleeping = true;
    }
}

/// `now + duration`, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

impl<S: Script> Stream for PacedBody<S> {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.sleeping {
                if let Some(sleep) = &mut this.sleep {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                this.sleeping = false;
            }
            if let Some(bytes) = this.pending.take() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            match this.state {
                State::Running => {}
                State::Done => return Poll::Ready(None),
                State::AbortAfterFlush => {
                    this.state = State::AbortNow;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                State::AbortNow => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "chatstack-mock: fault injected, connection dropped mid-body",
                    ))));
                }
            }
            while this.buf.len() < FLUSH_AT && this.state == State::Running && !this.sleeping {
                match this.script.next_step(&mut this.buf) {
                    Step::Wrote => {}
                    Step::Bytes(bytes) => {
                        if this.buf.is_empty() {
                            return Poll::Ready(Some(Ok(bytes)));
                        }
                        this.pending = Some(bytes);
                        break;
                    }
                    Step::Pause(duration) => this.arm(duration),
                    Step::Abort => this.state = State::AbortAfterFlush,
                    Step::End => this.state = State::Done,
                }
            }
            if !this.buf.is_empty() {
                return Poll::Ready(Some(Ok(this.buf.split().freeze())));
            }
        }
    }
}

/// A fixed list of segments (for unary faults).
pub(crate) struct Segments(VecDeque<Segment>);

/// One segment of [`Segments`].
pub(crate) enum Segment {
    Data(Bytes),
    Pause(Duration),
    Abort,
}

impl Segments {
    pub(crate) fn new(segments: impl IntoIterator<Item = Segment>) -> Self {
        Self(segments.into_iter().collect())
    }
}

impl Script for Segments {
    fn next_step(&mut self, _buf: &mut BytesMut) -> Step {
        match self.0.pop_front() {
            Some(Segment::Data(bytes)) => Step::Bytes(bytes),
            Some(Segment::Pause(duration)) => Step::Pause(duration),
            Some(Segment::Abort) => Step::Abort,
            None => Step::End,
        }
    }
}

/// Filler of oversized bodies, shared by every response.
static PADDING: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A prefix, `padding` filler bytes, and a suffix, without holding the filler in memory.
pub(crate) struct Oversized {
    prefix: Option<Bytes>,
    padding: u64,
    suffix: Option<Bytes>,
}

impl Oversized {
    /// A body of exactly `total` bytes (or prefix plus suffix, if that is longer).
    pub(crate) fn new(prefix: Bytes, suffix: Bytes, total: u64) -> Self {
        let fixed = (prefix.len() + suffix.len()) as u64;
        Self {
            prefix: Some(prefix),
            padding: total.saturating_sub(fixed),
            suffix: Some(suffix),
        }
    }

    /// The body's length.
    pub(crate) fn len(&self) -> u64 {
        let fixed =
            self.prefix.as_ref().map_or(0, Bytes::len) + self.suffix.as_ref().map_or(0, Bytes::len);
        fixed as u64 + self.padding
    }
}

impl Script for Oversized {
    fn next_step(&mut self, _buf: &mut BytesMut) -> Step {
        if let Some(prefix) = self.prefix.take() {
            return Step::Bytes(prefix);
        }
        if self.padding > 0 {
            let n = self.padding.min(PADDING.len() as u64) as usize;
            self.padding -= n as u64;
            return Step::Bytes(Bytes::from_static(&PADDING[..n]));
        }
        match self.suffix.take() {
            Some(suffix) => Step::Bytes(suffix),
            None => Step::End,
        }
    }
}

/// What a [`Trickle`] without interval writes per step.
static SPACES: [u8; 4096] = [b' '; 4096];

/// A unary body that never ends: one space every `interval` (none when it is zero), until
/// `cap` has passed since the first one; then the connection drops.
pub(crate) struct Trickle {
    interval: Duration,
    cap: Duration,
    until: Option<Instant>,
    wrote: bool,
}

impl Trickle {
    pub(crate) fn new(interval: Duration, cap: Duration) -> Self {
        Self {
            interval,
            cap,
            until: None,
            wrote: false,
        }
    }
}

impl Script for Trickle {
    fn next_step(&mut self, buf: &mut BytesMut) -> Step {
        let cap = self.cap;
        let until = *self.until.get_or_insert_with(|| deadline_after(cap));
        if Instant::now() >= until {
            return Step::Abort;
        }
        if std::mem::take(&mut self.wrote) && !self.interval.is_zero() {
            return Step::Pause(self.interval);
        }
        // One space per interval; without one, spaces as fast as the client reads, into the
        // buffer so that they go out in large frames.
        if self.interval.is_zero() {
            buf.put_slice(&SPACES);
        } else {
            buf.put_u8(b' ');
        }
        self.wrote = true;
        Step::Wrote
    }
}

/// The bytes [`with_invalid_utf8`] puts into a JSON string: never valid UTF-8 anywhere.
const INVALID_UTF8: &[u8] = &[0xFF, 0xFE];

/// `json` with [`INVALID_UTF8`] at the start of its first `content` string (or, when it has
/// none, its first `id` string).
pub(crate) fn with_invalid_utf8(json: &[u8]) -> Bytes {
    let at = [&b"\"content\":\""[..], b"\"id\":\""]
        .iter()
        .find_map(|needle| {
            json.windows(needle.len())
                .position(|window| window == *needle)
                .map(|at| at + needle.len())
        })
        .unwrap_or(0);
    let mut out = BytesMut::with_capacity(json.len() + INVALID_UTF8.len());
    out.put_slice(&json[..at]);
    out.put_slice(INVALID_UTF8);
    out.put_slice(&json[at..]);
    out.freeze()
}

/// How a stream deviates from a normal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamMode {
    Normal,
    /// After `after` content chunks, silence for `cap`, then the connection drops.
    Stall {
        after: u32,
        cap: Duration,
    },
    /// After `after` content chunks, an error event and the end, without `[DONE]`.
    MidStreamError {
        after: u32,
    },
    /// After `after` content chunks, the connection drops.
    Truncate {
        after: u32,
    },
    /// After the role chunks, an event with broken JSON, then `[DONE]`.
    Malformed,
    /// Content chunk number `chunk` (1-based; 0 counts as 1) has invalid UTF-8 in its
    /// content; the stream then goes on normally.
    InvalidUtf8 {
        chunk: u32,
    },
    /// After the role chunks, a comment and an empty content chunk in turn, each after
    /// `interval`, until `cap` has passed; then the connection drops.
    Drip {
        interval: Duration,
        cap: Duration,
    },
}

/// Where a [`SseScript`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    FirstDelay,
    Roles(usize),
    Content,
    Finish(usize),
    Usage,
    Done,
    Stalled,
    /// Dripping until `until`; `comment`: whether the next event is the comment.
    Drip {
        interval: Duration,
        until: Instant,
        comment: bool,
    },
    End,
}

/// Options of a [`SseScript`].
pub(crate) struct SseOptions {
    pub mode: StreamMode,
    pub include_usage: bool,
    pub first_delay: Duration,
    pub token_interval: Duration,
}

/// The SSE events of a streamed reply, generated lazily: one role chunk per choice, one chunk
/// per token (choices interleaved by index), one finish chunk per choice, an optional usage
/// chunk, and `data: [DONE]`.
pub(crate) struct SseScript {
    plan: ReplyPlan,
    options: SseOptions,
    template: ChatChunk,
    words: Vec<WordTokens>,
    text: String,
    phase: Phase,
    round: u32,
    choice: usize,
    emitted: u32,
    interval_taken: bool,
    /// Whether the invalid UTF-8 of [`StreamMode::InvalidUtf8`] was sent.
    injected: bool,
}

/// The error event of [`StreamMode::MidStreamError`].
pub(crate) const MID_STREAM_ERROR: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;

/// The body (unary) or first event (stream) of the `error_in_200` fault.
pub(crate) const ERROR_IN_200: &str = r#"{"error":{"message":"The server had an error processing your request. Sorry about that! You can retry your request, or contact us through our help center if you keep seeing this error.","type":"server_error","param":null,"code":"internal_error"}}"#;

impl SseScript {
    pub(crate) fn new(plan: ReplyPlan, options: SseOptions) -> Self {
        let template = ChatChunk {
            id: plan.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: plan.created,
            model: plan.model.clone(),
            choices: vec![ChunkChoice::default()],
            usage: None,
            system_fingerprint: Some(FINGERPRINT.to_owned()),
            service_tier: Some(plan.service_tier.clone()),
        };
        let words = plan
            .choices
            .iter()
            .map(|choice| match choice.body {
                ChoiceBody::Words { seed } => WordTokens::new(seed),
                _ => WordTokens::new(0),
            })
            .collect();
        Self {
            plan,
            options,
            template,
            words,
            text: String::new(),
            phase: Phase::FirstDelay,
            round: 0,
            choice: 0,
            emitted: 0,
            interval_taken: false,
            injected: false,
        }
    }

    /// How many content chunks a normal stream of this plan has.
    pub(crate) fn content_chunks(plan: &ReplyPlan) -> u32 {
        plan.choices
            .iter()
            .fold(0u32, |sum, choice| sum.saturating_add(choice.tokens))
    }

    /// The next (choice, round) that has a token, normalising the position.
    fn peek(&mut self) -> Option<(usize, u32)> {
        let max = self
            .plan
            .choices
            .iter()
            .map(|c| c.tokens)
            .max()
            .unwrap_or(0);
        loop {
            if self.round >= max {
                return None;
            }
            if self.choice >= self.plan.choices.len() {
                self.choice = 0;
                self.round += 1;
                continue;
            }
            if self.plan.choices[self.choice].tokens > self.round {
                return Some((self.choice, self.round));
            }
            self.choice += 1;
        }
    }

    fn write_template(&self, buf: &mut BytesMut) {
        buf.put_slice(b"data: ");
        // Serializing proto types into memory cannot fail.
        let _ = serde_json::to_writer(buf.writer(), &self.template);
        buf.put_slice(b"\n\n");
    }

    fn set_choice(&mut self, index: usize, delta: Delta, finish: bool) {
        let choice = &mut self.template.choices[0];
        choice.index = index as u32;
        choice.delta = delta;
        choice.finish_reason = finish.then(|| self.plan.choices[index].finish.clone());
    }

    fn role_event(&mut self, index: usize, buf: &mut BytesMut) {
        let mut delta = Delta {
            role: Some(Role::Assistant),
            ..Delta::default()
        };
        match &self.plan.choices[index].body {
            ChoiceBody::Tool { id, name, .. } => delta.tool_calls.push(ToolCallDelta {
                index: 0,
                id: Some(id.clone()),
                kind: Some("function".to_owned()),
                function: Some(FunctionCallDelta {
                    name: Some(name.clone()),
                    arguments: Some(String::new()),
                }),
            }),
            _ => delta.content = Some(String::new()),
        }
        self.set_choice(index, delta, false);
        self.write_template(buf);
    }

    fn content_event(&mut self, index: usize, round: u32, buf: &mut BytesMut) {
        let mut delta = Delta::default();
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let body = &self.plan.choices[index].body;
        match body {
            ChoiceBody::Words { .. } => {
                self.words[index].push_next(&mut text);
                delta.content = Some(text);
            }
            ChoiceBody::Json { .. } => {
                text.push_str(body.piece(round as usize));
                delta.content = Some(text);
            }
            ChoiceBody::Tool { .. } => {
                text.push_str(body.piece(round as usize));
                delta.tool_calls.push(ToolCallDelta {
                    index: 0,
                    function: Some(FunctionCallDelta {
                        name: None,
                        arguments: Some(text),
                    }),
                    ..ToolCallDelta::default()
                });
            }
        }
        self.set_choice(index, delta, false);
        self.write_template(buf);
        // Keep the string's allocation for the next token.
        let delta = &mut self.template.choices[0].delta;
        if let Some(text) = delta.content.take().or_else(|| {
            delta
                .tool_calls
                .pop()
                .and_then(|call| call.function?.arguments)
        }) {
            self.text = text;
        }
    }

    /// A content chunk for choice 0 whose content is [`INVALID_UTF8`].
    fn invalid_utf8_event(&mut self, buf: &mut BytesMut) {
        let delta = Delta {
            content: Some(String::new()),
            ..Delta::default()
        };
        self.set_choice(0, delta, false);
        // Serializing proto types into memory cannot fail.
        let json = serde_json::to_vec(&self.template).unwrap_or_default();
        buf.put_slice(b"data: ");
        buf.put_slice(&with_invalid_utf8(&json));
        buf.put_slice(b"\n\n");
    }

    /// An empty content chunk for choice 0, or a comment.
    fn drip_event(&mut self, comment: bool, buf: &mut BytesMut) {
        if comment {
            buf.put_slice(b": keep-alive\n\n");
            return;
        }
        let delta = Delta {
            content: Some(String::new()),
            ..Delta::default()
        };
        self.set_choice(0, delta, false);
        self.write_template(buf);
    }

    fn usage_event(&mut self, usage: Usage, buf: &mut BytesMut) {
        let choices = std::mem::take(&mut self.template.choices);
        self.template.usage = Some(usage);
        self.write_template(buf);
        self.template.usage = None;
        self.template.choices = choices;
    }

    /// The step a fault mode takes now, if it is due.
    fn fault_step(&mut self, content_left: bool, buf: &mut BytesMut) -> Option<Step> {
        let emitted = self.emitted;
        let due = |after: u32| emitted >= after || !content_left;
        match self.options.mode {
            StreamMode::Stall { after, cap } if due(after) => {
                self.phase = Phase::Stalled;
                Some(Step::Pause(cap))
            }
            StreamMode::MidStreamError { after } if due(after) => {
                buf.put_slice(b"data: ");
                buf.put_slice(MID_STREAM_ERROR.as_bytes());
                buf.put_slice(b"\n\n");
                self.phase = Phase::End;
                Some(Step::Wrote)
            }
            StreamMode::Truncate { after } if due(after) => {
                self.phase = Phase::End;
                Some(Step::Abort)
            }
            StreamMode::InvalidUtf8 { chunk } if !self.injected && due(chunk.saturating_sub(1)) => {
                self.injected = true;
                self.invalid_utf8_event(buf);
                Some(Step::Wrote)
            }
            _ => None,
        }
    }
}

impl Script for SseScript {
    fn next_step(&mut self, buf: &mut BytesMut) -> Step {
        loop {
            match self.phase {
                Phase::FirstDelay => {
                    self.phase = Phase::Roles(0);
                    if !self.options.first_delay.is_zero() {
                        return Step::Pause(self.options.first_delay);
                    }
                }
                Phase::Roles(index) if index < self.plan.choices.len() => {
                    self.role_event(index, buf);
                    self.phase = Phase::Roles(index + 1);
                    return Step::Wrote;
                }
                Phase::Roles(_) if self.options.mode == StreamMode::Malformed => {
                    buf.put_slice(b"data: {\"id\":\"");
                    buf.put_slice(self.plan.id.as_bytes());
                    buf.put_slice(
                        b"\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"trunc\n\n",
                    );
                    self.phase = Phase::Done;
                    return Step::Wrote;
                }
                Phase::Roles(_) => {
                    self.phase = match self.options.mode {
                        StreamMode::Drip { interval, cap } => Phase::Drip {
                            interval,
                            until: deadline_after(cap),
                            comment: true,
                        },
                        _ => Phase::Content,
                    };
                }
                Phase::Drip {
                    interval,
                    until,
                    comment,
                } => {
                    if Instant::now() >= until {
                        self.phase = Phase::End;
                        return Step::Abort;
                    }
                    if !interval.is_zero() && !self.interval_taken {
                        self.interval_taken = true;
                        return Step::Pause(interval);
                    }
                    self.interval_taken = false;
                    self.drip_event(comment, buf);
                    self.phase = Phase::Drip {
                        interval,
                        until,
                        comment: !comment,
                    };
                    return Step::Wrote;
                }
                Phase::Content => {
                    let next = self.peek();
                    if let Some(step) = self.fault_step(next.is_some(), buf) {
                        return step;
                    }
                    let Some((index, round)) = next else {
                        self.phase = Phase::Finish(0);
                        continue;
                    };
                    if !self.options.token_interval.is_zero() && !self.interval_taken {
                        self.interval_taken = true;
                        return Step::Pause(self.options.token_interval);
                    }
                    self.interval_taken = false;
                    self.content_event(index, round, buf);
                    self.emitted += 1;
                    self.choice += 1;
                    return Step::Wrote;
                }
                Phase::Finish(index) if index < self.plan.choices.len() => {
                    self.set_choice(index, Delta::default(), true);
                    self.write_template(buf);
                    self.phase = Phase::Finish(index + 1);
                    return Step::Wrote;
                }
                Phase::Finish(_) => self.phase = Phase::Usage,
                Phase::Usage => {
                    self.phase = Phase::Done;
                    if self.options.include_usage {
                        self.usage_event(self.plan.usage, buf);
                        return Step::Wrote;
                    }
                }
                Phase::Done => {
                    buf.put_slice(b"data: [DONE]\n\n");
                    self.phase = Phase::End;
                    return Step::Wrote;
                }
                Phase::Stalled => {
                    self.phase = Phase::End;
                    return Step::Abort;
                }
                Phase::End => return Step::End,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_goes_into_the_content_string_or_else_the_id() {
        let with = with_invalid_utf8(br#"{"id":"x","message":{"content":"hi"}}"#);
        assert_eq!(
            &with[..],
            b"{\"id\":\"x\",\"message\":{\"content\":\"\xff\xfehi\"}}"
        );
        let tool_call = with_invalid_utf8(br#"{"id":"x","message":{"content":null}}"#);
        assert_eq!(
            &tool_call[..],
            b"{\"id\":\"\xff\xfex\",\"message\":{\"content\":null}}"
        );
    }
}

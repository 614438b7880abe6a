//! A sans-I/O decoder for Server-Sent Events (`text/event-stream`).
//!
//! Streaming chat completions arrive as an SSE stream: `data: {json}` events, an optional
//! `event: error`, and a final `data: [DONE]`. [`SseDecoder`] turns the raw bytes of such a
//! stream into [`SseEvent`]s without doing any I/O itself: feed it whatever the transport read
//! with [`SseDecoder::feed`], then pull complete events with [`SseDecoder::next_event`] until it
//! returns `None`, and call [`SseDecoder::finish`] once the body has ended.
//!
//! Parsing follows the WHATWG EventSource rules, tolerantly: lines may end in LF, CRLF or a lone
//! CR (also when the CR and LF arrive in different reads), a leading UTF-8 BOM is skipped,
//! multi-byte UTF-8 characters may be split across reads, invalid UTF-8 is replaced rather than
//! rejected, and an event that would exceed a size limit is reported once as
//! [`SseError::EventTooLarge`] and skipped, so a hostile or broken server cannot make the
//! decoder buffer without bound.
//!
//! ```
//! use chatstack_proto::sse::SseDecoder;
//!
//! let mut decoder = SseDecoder::new();
//! // A read may end anywhere, even inside a line or a UTF-8 character.
//! decoder.feed(b"data: {\"delta\":\"h\xC3");
//! assert!(decoder.next_event().is_none());
//! decoder.feed(b"\xA9\"}\r\n\r\nevent: error\ndata: oops\n\ndata: [DONE]");
//!
//! let first = decoder.next_event().unwrap().unwrap();
//! assert_eq!(first.data, "{\"delta\":\"hé\"}");
//! let second = decoder.next_event().unwrap().unwrap();
//! assert_eq!(second.event.as_deref(), Some("error"));
//! assert_eq!(second.data, "oops");
//! assert!(decoder.next_event().is_none());
//!
//! // The server closed the stream without the final blank line.
//! let last = decoder.finish().unwrap();
//! assert!(last.is_done());
//! assert_eq!(decoder.events_dispatched(), 3);
//! ```

use std::borrow::Cow;
use std::fmt;

/// The UTF-8 byte order mark, skipped at the very start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Above this capacity an almost empty input buffer is shrunk again, so one large event does not
/// pin its memory for the rest of a long stream.
const SHRINK_ABOVE: usize = 64 * 1024;

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The event type from the `event:` field; `None` when absent or empty (the default
    /// type, `message`).
    pub event: Option<String>,
    /// The data: the values of the event's `data:` lines joined with `'\n'`.
    pub data: String,
    /// The last event id seen on the stream so far (it persists across events, as in the
    /// spec); `None` if no id was set or the last `id:` field was empty.
    pub id: Option<String>,
    /// The reconnection time in milliseconds, if this event carried a valid `retry:` field.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// Whether this is the OpenAI-style end-of-stream marker: data `[DONE]`, ignoring
    /// surrounding ASCII whitespace.
    pub fn is_done(&self) -> bool {
        self.data.trim_ascii() == "[DONE]"
    }
}

/// Errors the decoder reports (it never panics).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// An event (its data so far plus the line being read) grew past the decoder's limit; see
    /// [`SseDecoder::with_max_event_size`]. The event was discarded; decoding resumes after the
    /// next blank line.
    EventTooLarge {
        /// The limit in bytes that was exceeded.
        limit: usize,
    },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => {
                write!(
                    f,
                    "server-sent event exceeds the size limit of {limit} bytes"
                )
            }
        }
    }
}

impl std::error::Error for SseError {}

/// Whether the decoder is skipping input after an [`SseError::EventTooLarge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Decoding normally.
    Normal,
    /// Inside an over-long line: drop bytes up to the next line end, then skip the event.
    DiscardLine,
    /// Ignore lines up to the next blank line, then decode normally again.
    DiscardEvent,
}

/// `bytes` as text, with U+FFFD for invalid UTF-8 as the SSE spec says. Valid text (nearly
/// every line) is borrowed after `str::from_utf8`'s fast check; `String::from_utf8_lossy`
/// alone walks it chunk by chunk, several times slower.
fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The fields of the event being assembled, and what persists between events.
#[derive(Debug, Default)]
struct Pending {
    /// Data lines so far, joined with `'\n'`.
    data: String,
    /// Whether any `data` line was seen (an empty `data:` still dispatches an event).
    data_seen: bool,
    /// The event type, if an `event:` field with a non-empty value was seen.
    event_type: Option<String>,
    /// A valid `retry:` value seen in this event.
    retry: Option<u64>,
    /// The last event id of the stream; persists across events.
    last_id: Option<String>,
    /// The last valid `retry:` value of the stream; persists across events.
    last_retry: Option<u64>,
}

impl Pending {
    /// Applies one non-blank line (without its terminator). Returns `false`, changing nothing,
    /// if the data would grow past `limit` bytes (invalid UTF-8 can triple in size when it is
    /// replaced, so the raw line length alone does not bound the data).
    fn field(&mut self, line: &[u8], limit: usize) -> bool {
        let (name, value) = match memchr::memchr(b':', line) {
            Some(0) => return true, // a comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                let value = utf8_lossy(value);
                let separator = usize::from(self.data_seen);
                if self.data.len() + separator + value.len() > limit {
                    return false;
                }
                if self.data_seen {
                    self.data.push('\n');
                }
                self.data_seen = true;
                self.data.push_str(&value);
            }
            b"event" => {
                self.event_type = if value.is_empty() {
                    None
                } else {
                    Some(utf8_lossy(value).into_owned())
                };
            }
            // An id containing NUL is ignored, as the spec says.
            b"id" if memchr::memchr(0, value).is_none() => {
                self.last_id = if value.is_empty() {
                    None
                } else {
                    Some(utf8_lossy(value).into_owned())
                };
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // All digits, so this is valid UTF-8; only an overflow can fail, and an absurd
                // value is ignored like any other invalid one.
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    self.retry = Some(ms);
                    self.last_retry = Some(ms);
                }
            }
            _ => {}
        }
        true
    }

    /// Handles a blank line: returns the event if any data line was seen, and resets the
    /// per-event fields either way.
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event_type.take();
        let retry = self.retry.take();
        if !self.data_seen {
            self.data.clear();
            return None;
        }
        self.data_seen = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
            retry,
        })
    }

    /// Drops the per-event fields without dispatching (the id persists).
    fn discard(&mut self) {
        self.data.clear();
        self.data_seen = false;
        self.event_type = None;
        self.retry = None;
    }
}

/// A sans-I/O Server-Sent-Events decoder: bytes in, [`SseEvent`]s out.
///
/// Feed it bytes as they are read with [`feed`](Self::feed), then call
/// [`next_event`](Self::next_event) until it returns `None`; at the end of the body call
/// [`finish`](Self::finish) (repeatedly, until `None`). Memory is bounded: with the events
/// drained after each feed, [`buffered_len`](Self::buffered_len) never exceeds the size limit
/// plus the size of one feed. Each byte is scanned once, so feeding one byte at a time costs
/// the same as feeding a whole body.
#[derive(Debug)]
pub struct SseDecoder {
    /// Input bytes; `buf[..start]` is consumed and waiting to be compacted away.
    buf: Vec<u8>,
    /// Start of the first unconsumed line in `buf`.
    start: usize,
    /// Where the search for the next line end resumes: `buf[start..scan]` holds no CR or LF.
    scan: usize,
    /// The last line ended with a CR that was the last byte fed; a following LF belongs to it.
    pending_cr: bool,
    /// Whether the start of the stream was checked for a BOM.
    bom_checked: bool,
    /// End of input was signalled by [`SseDecoder::finish`] (cleared by the next feed).
    eof: bool,
    /// Skipping an over-long event?
    mode: Mode,
    /// The event being assembled.
    pending: Pending,
    /// The size limit for one event.
    max_event_size: usize,
    /// Events returned so far.
    dispatched: u64,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// The default limit on the size of one event: 16 MiB.
    pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;

    /// A decoder with the [default size limit](Self::DEFAULT_MAX_EVENT_SIZE).
    pub fn new() -> Self {
        Self::with_max_event_size(Self::DEFAULT_MAX_EVENT_SIZE)
    }

    /// A decoder that rejects events larger than `limit` bytes: an event is too large when its
    /// data accumulated so far plus the raw line being read (field name included) exceed the
    /// limit, or when its decoded data would.
    pub fn with_max_event_size(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            pending_cr: false,
            bom_checked: false,
            eof: false,
            mode: Mode::Normal,
            pending: Pending::default(),
            max_event_size: limit,
            dispatched: 0,
        }
    }

    /// Appends bytes read from the wire. Call [`next_event`](Self::next_event) until it returns
    /// `None` afterwards; that is what keeps the buffer bounded.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.eof = false;
        let mut bytes = bytes;
        if self.mode == Mode::DiscardLine {
            // Everything up to the end of the over-long line is dropped anyway: don't store it.
            match memchr::memchr2(b'\n', b'\r', bytes) {
                Some(end) => bytes = &bytes[end..],
                None => return,
            }
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scan = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Takes back the data of an event its caller is done with: the next event's data is
    /// written into its buffer, not a new one (a stream of small events then allocates no
    /// data buffer after its first). Ignored if the next event has begun, and for a buffer
    /// above the shrink threshold, so that one large event does not pin its memory.
    pub(crate) fn recycle(&mut self, mut data: String) {
        if self.pending.data.capacity() == 0 && data.capacity() <= SHRINK_ABOVE {
            data.clear();
            self.pending.data = data;
        }
    }

    /// Returns the next complete event, `Some(Err(_))` once for an event over the size limit
    /// (which is then skipped), or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, SseError>> {
        loop {
            if self.pending_cr && self.start < self.buf.len() {
                self.pending_cr = false;
                if self.buf[self.start] == b'\n' {
                    self.start += 1;
                    self.scan = self.scan.max(self.start);
                }
            }
            if !self.bom_checked {
                let rest = &self.buf[self.start..];
                if rest.len() < BOM.len() && !self.eof && BOM.starts_with(rest) {
                    // At most two bytes: wait to see whether they start a BOM.
                    return None;
                }
                if rest.starts_with(BOM) {
                    self.start += BOM.len();
                    self.scan = self.scan.max(self.start);
                }
                self.bom_checked = true;
            }
            let line_start = self.start;
            let line_end = match memchr::memchr2(b'\n', b'\r', &self.buf[self.scan..]) {
                Some(offset) => {
                    let end = self.scan + offset;
                    self.consume_line_end(end);
                    end
                }
                None if self.eof => {
                    // End of input: an unterminated last line still counts as a line, and is
                    // followed by a virtual blank line that dispatches the pending event.
                    let end = self.buf.len();
                    self.start = end;
                    self.scan = end;
                    if line_start == end {
                        let event = self.line(end, end);
                        self.compact();
                        return event;
                    }
                    end
                }
                None => return self.need_more(),
            };
            if let Some(result) = self.line(line_start, line_end) {
                return Some(result);
            }
        }
    }

    /// Signals the end of input and returns what is left: an unterminated last line is taken as
    /// a line, and a pending event with data is dispatched even without its closing blank line
    /// (many servers omit it). Call it after [`next_event`](Self::next_event) has returned
    /// `None`, and again until it returns `None`; size errors found here are dropped.
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.eof = true;
        loop {
            match self.next_event()? {
                Ok(event) => return Some(event),
                Err(_) => continue,
            }
        }
    }

    /// How many events this decoder has returned.
    pub fn events_dispatched(&self) -> u64 {
        self.dispatched
    }

    /// Bytes held for the event in progress: unconsumed input plus the data gathered so far.
    /// With the events drained after each feed this stays at most the size limit plus the size
    /// of one feed (and at most the limit once drained), even when a server sends an endless
    /// line.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start + self.pending.data.len()
    }

    /// The limit on the size of one event, in bytes.
    pub fn max_event_size(&self) -> usize {
        self.max_event_size
    }

    /// The last event id seen on the stream (what a client sends as `Last-Event-ID` when it
    /// reconnects), also when no event carrying it was dispatched.
    pub fn last_event_id(&self) -> Option<&str> {
        self.pending.last_id.as_deref()
    }

    /// The last valid `retry:` value seen on the stream, in milliseconds.
    pub fn last_retry(&self) -> Option<u64> {
        self.pending.last_retry
    }

    /// Moves `start` past the line end at `end` (a CR or LF), treating CRLF as one line end.
    fn consume_line_end(&mut self, end: usize) {
        let mut next = end + 1;
        if self.buf[end] == b'\r' {
            match self.buf.get(next) {
                Some(b'\n') => next += 1,
                Some(_) => {}
                None => self.pending_cr = true,
            }
        }
        self.start = next;
        self.scan = next;
    }

    /// Handles the line `buf[from..to]`, already consumed.
    fn line(&mut self, from: usize, to: usize) -> Option<Result<SseEvent, SseError>> {
        let line = &self.buf[from..to];
        match self.mode {
            Mode::DiscardLine => {
                self.mode = Mode::DiscardEvent;
                None
            }
            Mode::DiscardEvent => {
                if line.is_empty() {
                    self.mode = Mode::Normal;
                }
                None
            }
            Mode::Normal if line.is_empty() => {
                let event = self.pending.dispatch()?;
                self.dispatched += 1;
                Some(Ok(event))
            }
            Mode::Normal => {
                let limit = self.max_event_size;
                if self.pending.data.len().saturating_add(line.len()) > limit
                    || !self.pending.field(line, limit)
                {
                    self.pending.discard();
                    self.mode = Mode::DiscardEvent;
                    return Some(Err(self.too_large()));
                }
                None
            }
        }
    }

    /// No complete line is buffered: enforce the size limit on the partial line, compact the
    /// buffer, and ask for more bytes.
    fn need_more(&mut self) -> Option<Result<SseEvent, SseError>> {
        let partial = self.buf.len() - self.start;
        let mut result = None;
        if self.mode == Mode::DiscardLine {
            self.buf.truncate(self.start);
        } else if self.pending.data.len().saturating_add(partial) > self.max_event_size {
            self.buf.truncate(self.start);
            if self.mode == Mode::Normal {
                self.pending.discard();
                result = Some(Err(self.too_large()));
            }
            self.mode = Mode::DiscardLine;
        }
        self.scan = self.buf.len();
        self.compact();
        result
    }

    /// Drops the consumed prefix of the buffer. Only the partial line is moved, and it is moved
    /// at most once, so compaction costs O(1) amortized per byte.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.scan -= self.start;
        self.start = 0;
        if self.buf.capacity() > SHRINK_ABOVE && self.buf.len() < self.buf.capacity() / 4 {
            self.buf.shrink_to(self.buf.len().max(SHRINK_ABOVE / 4));
        }
    }

    fn too_large(&self) -> SseError {
        SseError::EventTooLarge {
            limit: self.max_event_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` one by one, draining events after each, then finishes.
    fn decode_chunks<'a>(
        decoder: &mut SseDecoder,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Result<SseEvent, SseError>> {
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk);
            while let Some(result) = decoder.next_event() {
                out.push(result);
            }
        }
        while let Some(event) = decoder.finish() {
            out.push(Ok(event));
        }
        out
    }

    fn decode(input: &[u8]) -> Vec<Result<SseEvent, SseError>> {
        decode_chunks(&mut SseDecoder::new(), [input])
    }

    fn decode_bytewise(input: &[u8]) -> Vec<Result<SseEvent, SseError>> {
        decode_chunks(&mut SseDecoder::new(), input.chunks(1))
    }

    fn data(d: &str) -> SseEvent {
        SseEvent {
            data: d.to_owned(),
            ..SseEvent::default()
        }
    }

    fn ok_data(results: &[Result<SseEvent, SseError>]) -> Vec<&str> {
        results
            .iter()
            .map(|r| match r {
                Ok(e) => e.data.as_str(),
                Err(e) => panic!("unexpected error {e}"),
            })
            .collect()
    }

    #[test]
    fn line_endings_lf_crlf_cr_and_mixed() {
        for input in [
            &b"data: a\n\ndata: b\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\r\rdata: b\r\r",
            b"data: a\r\n\rdata: b\n\r\n",
        ] {
            assert_eq!(
                decode(input),
                vec![Ok(data("a")), Ok(data("b"))],
                "{input:?}"
            );
            assert_eq!(decode_bytewise(input), decode(input), "{input:?}");
        }
    }

    #[test]
    fn cr_lf_split_across_feeds_is_one_line_end() {
        // Were "\r" | "\n" two line ends, the first event would be dispatched early and
        // "data: b" would form a second one.
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: a\r");
        assert_eq!(decoder.next_event(), None);
        decoder.feed(b"\ndata: b\r");
        assert_eq!(decoder.next_event(), None);
        decoder.feed(b"\n\r");
        assert_eq!(decoder.next_event(), Some(Ok(data("a\nb"))));
        decoder.feed(b"\n");
        assert_eq!(decoder.next_event(), None);
        decoder.feed(b"data: c\r");
        decoder.feed(b"");
        assert_eq!(decoder.next_event(), None);
        decoder.feed(b"\r");
        assert_eq!(decoder.next_event(), Some(Ok(data("c"))));
    }

    #[test]
    fn comments_are_ignored() {
        let input = b": keep-alive\n:\ndata: a\n: inside\ndata: b\n\n:only a comment\n\n";
        assert_eq!(decode(input), vec![Ok(data("a\nb"))]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let input = b"data: {\"a\":\ndata:  1}\ndata\ndata:x:y\n\n";
        assert_eq!(decode(input), vec![Ok(data("{\"a\":\n 1}\n\nx:y"))]);
    }

    #[test]
    fn event_type_is_per_event() {
        let input = b"event: error\ndata: {\"error\":{}}\n\ndata: next\n\nevent: x\n\ndata: y\n\n";
        let events = decode(input);
        assert_eq!(
            events,
            vec![
                Ok(SseEvent {
                    event: Some("error".into()),
                    data: "{\"error\":{}}".into(),
                    ..SseEvent::default()
                }),
                Ok(data("next")),
                // An event type without data dispatches nothing and does not leak forward.
                Ok(data("y")),
            ]
        );
        assert_eq!(decode(b"event:\ndata: z\n\n"), vec![Ok(data("z"))]);
    }

    #[test]
    fn done_marker() {
        let events = decode(b"data: {}\n\ndata: [DONE]\n\ndata:[DONE] \t\n\n");
        let done: Vec<bool> = events
            .iter()
            .map(|e| e.as_ref().unwrap().is_done())
            .collect();
        assert_eq!(done, [false, true, true]);
        assert!(!data("[DONE]x").is_done());
        assert!(!data("").is_done());
    }

    #[test]
    fn empty_data_line_dispatches_empty_event() {
        assert_eq!(decode(b"data:\n\n"), vec![Ok(data(""))]);
        assert_eq!(decode(b"data\n\n"), vec![Ok(data(""))]);
        assert_eq!(decode(b"data: \n\n"), vec![Ok(data(""))]);
        assert_eq!(decode(b"data:\ndata:\n\n"), vec![Ok(data("\n"))]);
        // Only a blank line without data lines dispatches nothing.
        assert_eq!(decode(b"\n\n\nid: 1\n\nretry: 5\n\nfoo: bar\n\n"), vec![]);
    }

    #[test]
    fn id_persists_and_resets() {
        let input =
            b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 2\n\ndata: d\n\nid: x\0y\ndata: e\n\n";
        let ids: Vec<Option<String>> = decode(input).into_iter().map(|e| e.unwrap().id).collect();
        assert_eq!(
            ids,
            [
                Some("1".into()),
                Some("1".into()),
                None,
                Some("2".into()),
                Some("2".into())
            ]
        );
        let mut decoder = SseDecoder::new();
        decoder.feed(b"id: 7\n\n");
        assert_eq!(decoder.next_event(), None);
        assert_eq!(decoder.last_event_id(), Some("7"));
    }

    #[test]
    fn retry_parsing() {
        let input = b"retry: 1500\ndata: a\n\ndata: b\n\nretry: 12a\ndata: c\n\nretry: -1\nretry:\nretry: 99999999999999999999999\ndata: d\n\nretry:20\nretry: 30\ndata: e\n\n";
        let retries: Vec<Option<u64>> = decode(input)
            .into_iter()
            .map(|e| e.unwrap().retry)
            .collect();
        assert_eq!(retries, [Some(1500), None, None, None, Some(30)]);
        let mut decoder = SseDecoder::new();
        decoder.feed(b"retry: 42\n\n: no event\n\n");
        assert_eq!(decoder.next_event(), None);
        assert_eq!(decoder.last_retry(), Some(42));
    }

    #[test]
    fn field_syntax() {
        // Only one space after the colon is stripped; field names are case-sensitive;
        // unknown fields are ignored.
        let input = b"data:  two\nDATA: upper\nfoo: bar\ndata :x\ndata:\tt\n\n";
        assert_eq!(decode(input), vec![Ok(data(" two\n\tt"))]);
    }

    #[test]
    fn bom_skipped_only_at_start() {
        let input = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n";
        assert_eq!(decode(input), vec![Ok(data("a")), Ok(data("c"))]);
        assert_eq!(decode_bytewise(input), decode(input));
        // A BOM-like prefix that is not a BOM is kept (and replaced, being invalid UTF-8).
        assert_eq!(decode(b"\xEF\xBBdata: a\n\n"), vec![]);
        assert_eq!(decode(b"\xEF\xBB"), vec![]);
        assert_eq!(decode(b"data:\xEF\xBB\n\n"), vec![Ok(data("\u{FFFD}"))]);
    }

    #[test]
    fn utf8_split_at_every_offset() {
        let input = "data: héllo 😀 世界\r\nevent: ñ\r\n\r\ndata: [DONE]\n\n".as_bytes();
        let expected = decode(input);
        assert_eq!(ok_data(&expected), ["héllo 😀 世界", "[DONE]"]);
        assert_eq!(expected[0].as_ref().unwrap().event.as_deref(), Some("ñ"));
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                decode_chunks(&mut SseDecoder::new(), [a, b]),
                expected,
                "cut at {cut}"
            );
        }
        assert_eq!(decode_bytewise(input), expected);
    }

    #[test]
    fn a_recycled_buffer_takes_the_next_events_data() {
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: first\n\n");
        let first = decoder.next_event().unwrap().unwrap().data;
        let buffer = first.as_ptr();
        decoder.recycle(first);
        decoder.feed(b"data: second\n\n");
        let second = decoder.next_event().unwrap().unwrap().data;
        assert_eq!(second, "second");
        assert_eq!(
            second.as_ptr(),
            buffer,
            "written into the buffer handed back"
        );

        // Once the next event has begun, a buffer handed back changes nothing.
        decoder.feed(b"data: par");
        assert!(decoder.next_event().is_none());
        decoder.recycle(String::from("stale"));
        decoder.feed(b"tial\n\n");
        assert_eq!(decoder.next_event().unwrap().unwrap().data, "partial");

        // A large buffer is not kept, so one large event does not pin its memory.
        decoder.recycle(String::with_capacity(SHRINK_ABOVE + 1));
        decoder.feed(b"data: small\n\n");
        let small = decoder.next_event().unwrap().unwrap().data;
        assert!(small.capacity() <= SHRINK_ABOVE, "{}", small.capacity());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(
            decode(b"data: a\xFFb\xC3\n\n"),
            vec![Ok(data("a\u{FFFD}b\u{FFFD}"))]
        );
    }

    #[test]
    fn finish_dispatches_unterminated_event() {
        assert_eq!(
            decode(b"data: a\n\ndata: b"),
            vec![Ok(data("a")), Ok(data("b"))]
        );
        assert_eq!(decode(b"data: a\ndata: b\n"), vec![Ok(data("a\nb"))]);
        assert_eq!(decode(b"data: a\r"), vec![Ok(data("a"))]);
        assert_eq!(decode(b"event: x\n"), vec![]);
        assert_eq!(decode(b": comment"), vec![]);
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: x");
        assert_eq!(decoder.next_event(), None);
        assert_eq!(decoder.finish(), Some(data("x")));
        assert_eq!(decoder.finish(), None);
        assert_eq!(decoder.buffered_len(), 0);
        assert_eq!(decoder.events_dispatched(), 1);
    }

    #[test]
    fn finish_drains_events_left_unread() {
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: a\n\ndata: b\n\ndata: c");
        assert_eq!(decoder.finish(), Some(data("a")));
        assert_eq!(decoder.finish(), Some(data("b")));
        assert_eq!(decoder.finish(), Some(data("c")));
        assert_eq!(decoder.finish(), None);
    }

    #[test]
    fn event_too_large_then_recovery() {
        let too_large = Err(SseError::EventTooLarge { limit: 16 });
        // One over-long line, whole or split into reads.
        let input = b"data: ok\n\ndata: 0123456789abcdef\ndata: more\nid: 9\n\ndata: after\n\n";
        for chunk in [input.len(), 7, 1] {
            let mut decoder = SseDecoder::with_max_event_size(16);
            let events = decode_chunks(&mut decoder, input.chunks(chunk));
            assert_eq!(
                events,
                vec![Ok(data("ok")), too_large.clone(), Ok(data("after"))],
                "chunk {chunk}"
            );
            assert_eq!(decoder.last_event_id(), None);
        }
        // Many short lines that add up: the error comes once, then the rest is skipped.
        let input = b"event: e\ndata: 0123\ndata: 4567\ndata: 89ab\ndata: cdef\n\ndata: fine\n\n";
        let events = decode_chunks(&mut SseDecoder::with_max_event_size(16), [&input[..]]);
        assert_eq!(events, vec![too_large.clone(), Ok(data("fine"))]);
        // At the limit is fine.
        let input = b"data: 0123456789\n\n";
        assert_eq!(
            decode_chunks(&mut SseDecoder::with_max_event_size(16), [&input[..]]),
            vec![Ok(data("0123456789"))]
        );
        // Invalid UTF-8 grows threefold when replaced; the limit holds for the decoded data.
        let input = b"data: \x80\x80\x80\x80\x80\x80\n\ndata: \x80\x80\x80\n\n";
        assert_eq!(
            decode_chunks(&mut SseDecoder::with_max_event_size(16), [&input[..]]),
            vec![too_large.clone(), Ok(data("\u{FFFD}\u{FFFD}\u{FFFD}"))]
        );
        assert_eq!(
            SseError::EventTooLarge { limit: 16 }.to_string(),
            "server-sent event exceeds the size limit of 16 bytes"
        );
    }

    #[test]
    fn endless_line_keeps_memory_bounded() {
        const LIMIT: usize = 1024;
        const CHUNK: usize = 100;
        let mut decoder = SseDecoder::with_max_event_size(LIMIT);
        let chunk = [b'a'; CHUNK];
        let mut errors = 0;
        decoder.feed(b"data: ");
        for _ in 0..20_000 {
            decoder.feed(&chunk);
            assert!(decoder.buffered_len() <= LIMIT + CHUNK);
            while let Some(result) = decoder.next_event() {
                assert_eq!(result, Err(SseError::EventTooLarge { limit: LIMIT }));
                errors += 1;
            }
            assert!(decoder.buffered_len() <= LIMIT);
            assert!(decoder.buf.capacity() <= 4 * (LIMIT + CHUNK));
        }
        assert_eq!(errors, 1);
        decoder.feed(b"aaa\ndata: still skipped\n\ndata: ok\n\n");
        assert_eq!(decoder.next_event(), Some(Ok(data("ok"))));
        assert_eq!(decoder.next_event(), None);
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn endless_line_bounded_even_without_draining() {
        // Once the decoder is skipping a line, feed() stops storing it.
        let mut decoder = SseDecoder::with_max_event_size(64);
        decoder.feed(&[b'x'; 100]);
        assert!(matches!(decoder.next_event(), Some(Err(_))));
        for _ in 0..1000 {
            decoder.feed(&[b'x'; 100]);
        }
        assert_eq!(decoder.buffered_len(), 0);
        decoder.feed(b"\r");
        decoder.feed(b"\n\ndata: y\n\n");
        assert_eq!(decoder.next_event(), Some(Ok(data("y"))));
    }

    #[test]
    fn byte_at_a_time_is_linear() {
        // A 1 MiB single-line event fed one byte at a time: a rescanning decoder would do
        // ~10^12 byte comparisons here and never finish.
        let mut decoder = SseDecoder::new();
        decoder.feed(b"data: ");
        for _ in 0..(1 << 20) {
            decoder.feed(b"z");
            assert_eq!(decoder.next_event(), None);
        }
        decoder.feed(b"\n\n");
        let event = decoder.next_event().unwrap().unwrap();
        assert_eq!(event.data.len(), 1 << 20);
    }

    /// One event of a generated stream: (event type, data lines, id, retry, comments).
    #[derive(Debug, Clone)]
    struct GenEvent {
        event: Option<String>,
        data: Vec<String>,
        id: Option<String>,
        retry: Option<u64>,
        comments: Vec<String>,
    }

    fn gen_event() -> impl Strategy<Value = GenEvent> {
        // Values never contain CR or LF; they may contain colons, spaces, NUL and non-ASCII.
        let value = "[^\r\n]{0,12}";
        (
            proptest::option::of("[a-z]{1,8}"),
            proptest::collection::vec(value, 0..4),
            proptest::option::of("[a-z0-9]{0,5}"),
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(value, 0..2),
        )
            .prop_map(|(event, data, id, retry, comments)| GenEvent {
                event,
                data,
                id,
                retry: retry.map(u64::from),
                comments,
            })
    }

    /// Serializes events with the given line endings; returns the bytes and the events a
    /// conforming decoder must produce.
    fn render(
        events: &[GenEvent],
        bom: bool,
        endings: &[u8],
        omit_final_blank: bool,
    ) -> (Vec<u8>, Vec<SseEvent>) {
        let mut lines: Vec<String> = Vec::new();
        let mut expected = Vec::new();
        let mut last_id: Option<String> = None;
        for e in events {
            for c in &e.comments {
                lines.push(format!(":{c}"));
            }
            if let Some(t) = &e.event {
                lines.push(format!("event: {t}"));
            }
            if let Some(id) = &e.id {
                lines.push(format!("id: {id}"));
                last_id = Some(id.clone()).filter(|id| !id.is_empty());
            }
            if let Some(r) = e.retry {
                lines.push(format!("retry: {r}"));
            }
            for d in &e.data {
                if d.starts_with(' ') || d.len() % 2 == 0 {
                    lines.push(format!("data: {d}"));
                } else {
                    lines.push(format!("data:{d}"));
                }
            }
            lines.push(String::new());
            if !e.data.is_empty() {
                expected.push(SseEvent {
                    event: e.event.clone(),
                    data: e.data.join("\n"),
                    id: last_id.clone(),
                    retry: e.retry,
                });
            }
        }
        if omit_final_blank && lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(BOM);
        }
        let mut prev_cr = false;
        for (i, line) in lines.iter().enumerate() {
            out.extend_from_slice(line.as_bytes());
            let ending: &[u8] = match endings[i % endings.len()] % 3 {
                // An LF right after a lone CR would merge into one CRLF line end.
                0 if prev_cr && line.is_empty() => b"\r\n",
                0 => b"\n",
                1 => b"\r\n",
                _ => b"\r",
            };
            prev_cr = ending == b"\r";
            out.extend_from_slice(ending);
        }
        (out, expected)
    }

    /// Splits `bytes` at the given cut points.
    fn split<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points {
            chunks.push(&bytes[from..p]);
            from = p;
        }
        chunks.push(&bytes[from..]);
        chunks
    }

    /// Bytes that are mostly SSE syntax, to reach the interesting states.
    fn gen_noise() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data:".to_vec()),
            Just(b"data: ".to_vec()),
            Just(b"event:".to_vec()),
            Just(b"id:".to_vec()),
            Just(b"retry: 1".to_vec()),
            Just(b":".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(BOM.to_vec()),
            Just("é😀".as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_split_yields_the_same_events(
            events in proptest::collection::vec(gen_event(), 0..8),
            bom in any::<bool>(),
            endings in proptest::collection::vec(any::<u8>(), 1..8),
            omit_final_blank in any::<bool>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let (bytes, expected) = render(&events, bom, &endings, omit_final_blank);
            let expected: Vec<Result<SseEvent, SseError>> = expected.into_iter().map(Ok).collect();
            let whole = decode(&bytes);
            prop_assert_eq!(&whole, &expected);
            let mut decoder = SseDecoder::new();
            let pieces = decode_chunks(&mut decoder, split(&bytes, &cuts));
            prop_assert_eq!(&pieces, &expected);
            prop_assert_eq!(decoder.events_dispatched(), expected.len() as u64);
            prop_assert_eq!(decoder.buffered_len(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            bytes in gen_noise(),
            limit in 0usize..64,
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
        ) {
            let chunks = split(&bytes, &cuts);
            let max_feed = chunks.iter().map(|c| c.len()).max().unwrap_or(0);
            // The first two bytes may be held back to see whether they start a BOM, which
            // matters only for absurdly small limits.
            let held = limit.max(BOM.len() - 1);
            let mut decoder = SseDecoder::with_max_event_size(limit);
            for chunk in &chunks {
                decoder.feed(chunk);
                prop_assert!(decoder.buffered_len() <= held + max_feed);
                while let Some(result) = decoder.next_event() {
                    prop_assert!(decoder.buffered_len() <= held + max_feed);
                    if let Ok(event) = result {
                        prop_assert!(event.data.len() <= limit);
                    }
                }
                prop_assert!(decoder.buffered_len() <= held);
            }
            while let Some(event) = decoder.finish() {
                prop_assert!(event.data.len() <= limit);
            }
            prop_assert_eq!(decoder.buffered_len(), 0);
            // Decoding the same bytes in one read gives the same events.
            let whole = decode_chunks(&mut SseDecoder::with_max_event_size(limit), [&bytes[..]]);
            let pieces =
                decode_chunks(&mut SseDecoder::with_max_event_size(limit), split(&bytes, &cuts));
            prop_assert_eq!(whole, pieces);
        }
    }
}

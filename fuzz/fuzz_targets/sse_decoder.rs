//! Fuzzes the sans-I/O stream decoders of `chatstack-proto` with hostile bytes, read in
//! fuzzer-chosen pieces.
//!
//! Input layout: byte 0 picks the event size limit (from `LIMITS`), byte 1 how many of the
//! following bytes are read sizes (0 to 15; a size may be 0, an empty read), and the rest is
//! the body. The body is decoded three times — in one read, in reads of the chosen sizes
//! (cycled), and one byte at a time — by [`SseDecoder`] and by [`StreamDecoder`].
//!
//! It checks that:
//! - nothing panics (the decoders, [`ChatAccumulator`] folding the decoded chunks);
//! - the events decoded from the whole body equal those decoded from any split of it, for
//!   both decoders, and `last_event_id`/`last_retry` agree too;
//! - the `SseDecoder` holds at most `max(limit, 2) + read size` bytes right after a read and
//!   at most `max(limit, 2)` once drained (two bytes may be held to see whether they start a
//!   BOM), no event's data is over the limit, and after `finish()` nothing is buffered, a
//!   second `finish()` gives nothing and `events_dispatched()` counts the events returned;
//! - after `finish()` the `StreamDecoder` is terminated with exactly one terminal event
//!   (`Done` or an error), the last one; `Done` comes exactly when `is_done()`; the chunk
//!   count matches `chunks_decoded()`; and nothing more comes out whatever is fed after.
#![no_main]

use chatstack_proto::sse::{SseDecoder, SseError, SseEvent};
use chatstack_proto::{ChatAccumulator, ChatChunk, StreamDecoder, StreamEvent};
use libfuzzer_sys::fuzz_target;

/// Event size limits byte 0 picks from: tiny ones reach the over-limit paths, the default
/// the normal ones.
const LIMITS: [usize; 12] = [
    0,
    1,
    2,
    3,
    5,
    8,
    16,
    33,
    64,
    256,
    4096,
    SseDecoder::DEFAULT_MAX_EVENT_SIZE,
];

/// A fuzz case: the limit, the read sizes and the body.
struct Case<'a> {
    limit: usize,
    sizes: Vec<usize>,
    body: &'a [u8],
}

impl<'a> Case<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (&limit, rest) = data.split_first()?;
        let (&count, rest) = rest.split_first()?;
        let count = usize::from(count % 16).min(rest.len());
        let (sizes, body) = rest.split_at(count);
        Some(Self {
            limit: LIMITS[usize::from(limit) % LIMITS.len()],
            sizes: sizes.iter().map(|&s| usize::from(s)).collect(),
            body,
        })
    }

    /// The body cut into reads of the chosen sizes, cycled; an empty read is kept as one
    /// (the decoders must take it), but a cycle of empty reads does not stall.
    fn reads(&self) -> Vec<&'a [u8]> {
        let mut reads = Vec::new();
        let mut rest = self.body;
        if self.sizes.iter().all(|&s| s == 0) {
            reads.extend(self.sizes.iter().map(|_| &rest[..0]));
            reads.push(rest);
            return reads;
        }
        for &size in self.sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (read, tail) = rest.split_at(size.min(rest.len()));
            reads.push(read);
            rest = tail;
        }
        reads
    }
}

/// What an `SseDecoder` made of a body.
#[derive(Debug, PartialEq)]
struct SseRun {
    events: Vec<Result<SseEvent, SseError>>,
    last_event_id: Option<String>,
    last_retry: Option<u64>,
}

fn decode_sse<'a>(limit: usize, reads: impl IntoIterator<Item = &'a [u8]>) -> SseRun {
    let mut decoder = SseDecoder::with_max_event_size(limit);
    assert_eq!(decoder.max_event_size(), limit);
    // Up to two bytes are held back until it is clear whether they start a BOM.
    let held = limit.max(2);
    let mut events = Vec::new();
    let check_event = |result: &Result<SseEvent, SseError>| match result {
        Ok(event) => assert!(
            event.data.len() <= limit,
            "an event of {} bytes passed the limit of {limit}",
            event.data.len()
        ),
        Err(SseError::EventTooLarge { limit: reported }) => assert_eq!(*reported, limit),
        Err(other) => panic!("unexpected SSE error {other:?}"),
    };
    for read in reads {
        decoder.feed(read);
        assert!(
            decoder.buffered_len() <= held + read.len(),
            "{} bytes buffered after a read of {} (limit {limit})",
            decoder.buffered_len(),
            read.len()
        );
        while let Some(result) = decoder.next_event() {
            assert!(decoder.buffered_len() <= held + read.len());
            check_event(&result);
            events.push(result);
        }
        assert!(
            decoder.buffered_len() <= held,
            "{} bytes buffered once drained (limit {limit})",
            decoder.buffered_len()
        );
    }
    while let Some(event) = decoder.finish() {
        let result = Ok(event);
        check_event(&result);
        events.push(result);
    }
    assert_eq!(decoder.buffered_len(), 0, "nothing is left after finish()");
    assert_eq!(
        decoder.finish(),
        None,
        "finish() is over once it returned None"
    );
    assert_eq!(decoder.next_event(), None);
    let returned = events.iter().filter(|result| result.is_ok()).count() as u64;
    assert_eq!(decoder.events_dispatched(), returned);
    SseRun {
        events,
        last_event_id: decoder.last_event_id().map(str::to_owned),
        last_retry: decoder.last_retry(),
    }
}

/// A `StreamEvent`, comparable.
#[derive(Debug, PartialEq)]
enum Seen {
    Chunk(Box<ChatChunk>),
    Done,
    Error(String),
}

fn decode_stream<'a>(limit: usize, reads: impl IntoIterator<Item = &'a [u8]>) -> Vec<Seen> {
    let mut decoder = if limit == SseDecoder::DEFAULT_MAX_EVENT_SIZE {
        StreamDecoder::new()
    } else {
        StreamDecoder::with_max_event_size(limit)
    };
    let mut seen = Vec::new();
    let drain = |decoder: &mut StreamDecoder, seen: &mut Vec<Seen>| {
        while let Some(event) = decoder.next_event() {
            seen.push(match event {
                StreamEvent::Chunk(chunk) => Seen::Chunk(Box::new(chunk)),
                StreamEvent::Done => Seen::Done,
                StreamEvent::Error(error) => {
                    // Display and Debug of an error must not panic either.
                    let _ = format!("{error:?}");
                    Seen::Error(format!("{:?}|{error}", error.kind()))
                }
            });
        }
    };
    for read in reads {
        decoder.feed(read);
        drain(&mut decoder, &mut seen);
    }
    decoder.finish();
    drain(&mut decoder, &mut seen);

    assert!(decoder.is_terminated(), "finish() terminates the decoder");
    let terminals: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Seen::Done | Seen::Error(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        terminals,
        [seen.len() - 1],
        "one terminal event, the last: {seen:?}"
    );
    assert_eq!(decoder.is_done(), matches!(seen.last(), Some(Seen::Done)));
    let chunks = seen.iter().filter(|e| matches!(e, Seen::Chunk(_))).count() as u64;
    assert_eq!(decoder.chunks_decoded(), chunks);

    // Nothing comes out after the end, whatever is fed.
    decoder.feed(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
    decoder.finish();
    assert!(decoder.next_event().is_none(), "an event after the end");
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = Case::parse(data) else {
        return;
    };
    let reads = case.reads();
    assert_eq!(reads.concat(), case.body);

    let whole = decode_sse(case.limit, [case.body]);
    let split = decode_sse(case.limit, reads.iter().copied());
    assert_eq!(split, whole, "SseDecoder: reads of {:?}", case.sizes);
    let bytewise = decode_sse(case.limit, case.body.chunks(1));
    assert_eq!(bytewise, whole, "SseDecoder: one byte at a time");

    let whole = decode_stream(case.limit, [case.body]);
    let split = decode_stream(case.limit, reads.iter().copied());
    assert_eq!(split, whole, "StreamDecoder: reads of {:?}", case.sizes);
    let bytewise = decode_stream(case.limit, case.body.chunks(1));
    assert_eq!(bytewise, whole, "StreamDecoder: one byte at a time");

    // Whatever chunks came out fold into a response without panicking.
    let mut accumulator = ChatAccumulator::new();
    for event in &whole {
        if let Seen::Chunk(chunk) = event {
            accumulator.push(chunk);
        }
    }
    let response = accumulator.finish();
    let _ = response.text();
    let _ = response.finish_reasons();
    serde_json::to_vec(&response).expect("an accumulated response serializes");
});

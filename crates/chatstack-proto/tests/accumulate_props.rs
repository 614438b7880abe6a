//! Property tests of streaming: (a) any response streamed as chunks — text and tool-call
//! arguments split into random pieces, several choices interleaved in random order, ids and
//! names sent once or repeated in every piece — folds back through [`ChatAccumulator`] into
//! the same text, tool calls and finish reasons; (b) those chunks written as an SSE body
//! (LF or CRLF, with or without comments and the space after `data:`) decode through
//! [`StreamDecoder`] to the same chunks however the body is split; (c) arbitrary bytes in
//! arbitrary splits never panic the decoder, decode the same whatever the split, and after
//! `finish()` leave it terminated with exactly one terminal event, the last.

use chatstack_proto::{
    ChatAccumulator, ChatChunk, ChunkChoice, Delta, FinishReason, FunctionCallDelta, Role,
    StreamDecoder, StreamEvent, ToolCallDelta, Usage,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// A generated response and the chunks that stream it
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct GenCall {
    id: String,
    name: String,
    /// The arguments, already split into the pieces that are streamed.
    arguments: Vec<String>,
}

#[derive(Debug, Clone)]
struct GenChoice {
    /// The text, already split into the pieces that are streamed.
    text: Vec<String>,
    calls: Vec<GenCall>,
    /// Which call each tool-call delta extends, in stream order (a shuffle that keeps each
    /// call's own pieces in order).
    call_order: Vec<usize>,
    finish_reason: Option<FinishReason>,
}

impl GenChoice {
    fn deltas(&self) -> usize {
        1 + self.text.len() + self.call_order.len() + usize::from(self.finish_reason.is_some())
    }
}

#[derive(Debug, Clone)]
struct GenStream {
    choices: Vec<GenChoice>,
    /// Which choice each delta belongs to, in stream order (per-choice order preserved).
    order: Vec<usize>,
    /// How many consecutive deltas go in one chunk, cycled.
    group_sizes: Vec<usize>,
    /// llama-cpp-python style: every tool-call piece repeats id, type and name.
    repeat_id_and_name: bool,
    usage: Option<Usage>,
}

/// Text pieces: printable Unicode and the characters JSON and SSE care about.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{0,8}",
        1 => "[\\n\\r\\t\"\\\\{}:, ]{0,4}",
        1 => Just("data: [DONE]\n\n".to_owned()),
    ]
}

fn finish_reason() -> impl Strategy<Value = Option<FinishReason>> {
    prop_oneof![
        Just(None),
        Just(Some(FinishReason::Stop)),
        Just(Some(FinishReason::Length)),
        Just(Some(FinishReason::ToolCalls)),
        Just(Some(FinishReason::ContentFilter)),
        Just(Some(FinishReason::Other("eos".to_owned()))),
    ]
}

fn gen_call() -> impl Strategy<Value = GenCall> {
    (
        // Ids in any format: OpenAI, Anthropic, Mistral, Kimi, UUIDs, bare numbers.
        prop_oneof![
            "call_[A-Za-z0-9]{8,24}",
            "toolu_[A-Za-z0-9]{10}",
            "[A-Za-z0-9]{9}",
            "[0-9]{1,3}",
            "functions\\.[a-z_]{1,8}:[0-9]",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ],
        "[a-z_][a-z0-9_]{0,15}",
        prop::collection::vec(piece(), 0..5),
    )
        .prop_map(|(id, name, arguments)| GenCall {
            id,
            name,
            arguments,
        })
}

fn gen_choice() -> impl Strategy<Value = GenChoice> {
    (
        prop::collection::vec(piece(), 0..6),
        prop::collection::vec(gen_call(), 0..4),
        finish_reason(),
    )
        .prop_flat_map(|(text, calls, finish_reason)| {
            // The first piece of a call carries its id and name, so every call has at least one.
            let order: Vec<usize> = calls
                .iter()
                .enumerate()
                .flat_map(|(i, call)| std::iter::repeat_n(i, call.arguments.len().max(1)))
                .collect();
            (
                Just(text),
                Just(calls),
                Just(order).prop_shuffle(),
                Just(finish_reason),
            )
        })
        .prop_map(|(text, calls, call_order, finish_reason)| GenChoice {
            text,
            calls,
            call_order,
            finish_reason,
        })
}

fn gen_stream() -> impl Strategy<Value = GenStream> {
    (
        prop::collection::vec(gen_choice(), 1..4),
        any::<bool>(),
        prop::option::of((1u64..10_000, 0u64..10_000)),
    )
        .prop_flat_map(|(choices, repeat_id_and_name, usage)| {
            let order: Vec<usize> = choices
                .iter()
                .enumerate()
                .flat_map(|(i, choice)| std::iter::repeat_n(i, choice.deltas()))
                .collect();
            (
                Just(choices),
                Just(order).prop_shuffle(),
                prop::collection::vec(1usize..4, 1..8),
                Just(repeat_id_and_name),
                Just(usage.map(|(prompt, completion)| Usage::new(prompt, completion))),
            )
        })
        .prop_map(
            |(choices, order, group_sizes, repeat_id_and_name, usage)| GenStream {
                choices,
                order,
                group_sizes,
                repeat_id_and_name,
                usage,
            },
        )
}

/// The deltas of one choice, in order.
fn choice_deltas(index: u32, choice: &GenChoice, repeat: bool) -> Vec<ChunkChoice> {
    let mut deltas = vec![ChunkChoice {
        index,
        delta: Delta {
            role: Some(Role::Assistant),
            ..Delta::default()
        },
        ..ChunkChoice::default()
    }];
    for text in &choice.text {
        deltas.push(ChunkChoice {
            index,
            delta: Delta {
                content: Some(text.clone()),
                ..Delta::default()
            },
            ..ChunkChoice::default()
        });
    }
    let mut sent = vec![0usize; choice.calls.len()];
    for &call_index in &choice.call_order {
        let call = &choice.calls[call_index];
        let first = sent[call_index] == 0;
        let arguments = call
            .arguments
            .get(sent[call_index])
            .cloned()
            .unwrap_or_default();
        sent[call_index] += 1;
        let identify = first || repeat;
        deltas.push(ChunkChoice {
            index,
            delta: Delta {
                tool_calls: vec![ToolCallDelta {
                    index: call_index as u32,
                    id: identify.then(|| call.id.clone()),
                    kind: identify.then(|| "function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: identify.then(|| call.name.clone()),
                        arguments: Some(arguments),
                    }),
                }],
                ..Delta::default()
            },
            ..ChunkChoice::default()
        });
    }
    if let Some(reason) = &choice.finish_reason {
        deltas.push(ChunkChoice {
            index,
            finish_reason: Some(reason.clone()),
            ..ChunkChoice::default()
        });
    }
    deltas
}

/// The chunks that stream `stream`.
fn chunks_of(stream: &GenStream) -> Vec<ChatChunk> {
    let mut per_choice: Vec<std::vec::IntoIter<ChunkChoice>> = stream
        .choices
        .iter()
        .enumerate()
        .map(|(i, c)| choice_deltas(i as u32, c, stream.repeat_id_and_name).into_iter())
        .collect();
    let blank = ChatChunk {
        id: "chatcmpl-prop".to_owned(),
        object: "chat.completion.chunk".to_owned(),
        created: 1_700_000_000,
        model: "gpt-prop".to_owned(),
        ..ChatChunk::default()
    };
    let mut chunks = Vec::new();
    let mut order = stream.order.iter();
    let mut group = 0;
    loop {
        let size = stream.group_sizes[group % stream.group_sizes.len()];
        group += 1;
        let choices: Vec<ChunkChoice> = order
            .by_ref()
            .take(size)
            .map(|&i| per_choice[i].next().expect("one delta per pick"))
            .collect();
        if choices.is_empty() {
            break;
        }
        chunks.push(ChatChunk {
            choices,
            ..blank.clone()
        });
    }
    if let Some(usage) = stream.usage {
        chunks.push(ChatChunk {
            usage: Some(usage),
            ..blank
        });
    }
    chunks
}

// ---------------------------------------------------------------------------------------------
// SSE bodies and decoding
// ---------------------------------------------------------------------------------------------

/// How an SSE body is written.
#[derive(Debug, Clone)]
struct Framing {
    crlf: bool,
    comments: bool,
    space_after_colon: bool,
}

fn framing() -> impl Strategy<Value = Framing> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(crlf, comments, space_after_colon)| {
        Framing {
            crlf,
            comments,
            space_after_colon,
        }
    })
}

fn sse_body(chunks: &[ChatChunk], framing: &Framing) -> Vec<u8> {
    let eol = if framing.crlf { "\r\n" } else { "\n" };
    let prefix = if framing.space_after_colon {
        "data: "
    } else {
        "data:"
    };
    let mut body = String::new();
    for chunk in chunks {
        if framing.comments {
            body.push_str(&format!(": keep-alive{eol}{eol}"));
        }
        let json = serde_json::to_string(chunk).unwrap();
        body.push_str(&format!("{prefix}{json}{eol}{eol}"));
    }
    body.push_str(&format!("{prefix}[DONE]{eol}{eol}"));
    body.into_bytes()
}

/// An event, comparable across runs.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Chunk(Box<ChatChunk>),
    Done,
    Error(String),
}

/// Feeds `body` cut at `cuts` (offsets, any order, out-of-range ones ignored), then finishes.
/// Checks the decoder's invariants on the way.
fn decode_split(decoder: StreamDecoder, body: &[u8], cuts: &[usize]) -> Vec<Seen> {
    let mut decoder = decoder;
    let mut offsets: Vec<usize> = cuts.iter().copied().filter(|&c| c <= body.len()).collect();
    offsets.push(0);
    offsets.push(body.len());
    offsets.sort_unstable();
    offsets.dedup();
    let mut seen = Vec::new();
    let drain = |decoder: &mut StreamDecoder, seen: &mut Vec<Seen>| {
        while let Some(event) = decoder.next_event() {
            seen.push(match event {
                StreamEvent::Chunk(chunk) => Seen::Chunk(Box::new(chunk)),
                StreamEvent::Done => Seen::Done,
                StreamEvent::Error(error) => {
                    Seen::Error(format!("{:?}: {}", error.kind(), error.message()))
                }
            });
        }
    };
    for pair in offsets.windows(2) {
        decoder.feed(&body[pair[0]..pair[1]]);
        drain(&mut decoder, &mut seen);
    }
    decoder.finish();
    drain(&mut decoder, &mut seen);
    assert!(decoder.is_terminated(), "finish() terminates the decoder");

    // Exactly one terminal event, and it is the last.
    let terminals = seen
        .iter()
        .filter(|e| matches!(e, Seen::Done | Seen::Error(_)))
        .count();
    assert_eq!(terminals, 1, "one terminal event: {seen:?}");
    assert!(matches!(seen.last(), Some(Seen::Done | Seen::Error(_))));

    // Nothing more comes out after the end, whatever is fed.
    decoder.feed(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
    decoder.finish();
    assert!(decoder.next_event().is_none(), "no event after the end");
    seen
}

fn chunks_in(seen: &[Seen]) -> Vec<ChatChunk> {
    seen.iter()
        .filter_map(|e| match e {
            Seen::Chunk(chunk) => Some((**chunk).clone()),
            _ => None,
        })
        .collect()
}

/// Bytes that look enough like SSE to reach every branch of the decoder.
fn sse_noise() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: error\n".to_vec()),
        Just(b": comment\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(b"{\"error\":{\"message\":\"x\",\"type\":\"server_error\"}}".to_vec()),
        Just(b"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}".to_vec()),
        Just(br#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}"#.to_vec()),
        Just(br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"content":"x"}}]}"#.to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just("é€😀".as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) Accumulating the chunks of a response gives back its text, tool calls and finish
    /// reasons, whatever the interleaving and however the pieces were cut.
    #[test]
    fn accumulating_chunks_restores_the_response(stream in gen_stream()) {
        let mut accumulator = ChatAccumulator::new();
        for chunk in chunks_of(&stream) {
            accumulator.push(&chunk);
        }
        let response = accumulator.finish();
        prop_assert_eq!(response.id.as_str(), "chatcmpl-prop");
        prop_assert_eq!(response.usage, stream.usage);
        prop_assert_eq!(response.choices.len(), stream.choices.len());
        for (i, (choice, expected)) in response.choices.iter().zip(&stream.choices).enumerate() {
            prop_assert_eq!(choice.index as usize, i, "choices in index order");
            let text: String = expected.text.concat();
            prop_assert_eq!(choice.message.content.as_deref().unwrap_or(""), text.as_str());
            if !text.is_empty() {
                prop_assert!(choice.message.content.is_some());
            }
            prop_assert_eq!(choice.message.role.as_str(), "assistant");
            prop_assert_eq!(&choice.finish_reason, &expected.finish_reason);
            prop_assert_eq!(choice.message.tool_calls.len(), expected.calls.len());
            for (call, want) in choice.message.tool_calls.iter().zip(&expected.calls) {
                prop_assert_eq!(&call.id, &want.id);
                prop_assert_eq!(&call.function.name, &want.name, "the name is not repeated");
                let arguments = want.arguments.concat();
                prop_assert_eq!(&call.function.arguments, &arguments);
                prop_assert_eq!(call.kind.as_str(), "function");
            }
        }
    }

    /// (b) The chunks written as SSE decode back to themselves, whole or in any split.
    #[test]
    fn sse_body_decodes_the_same_in_any_split(
        stream in gen_stream(),
        framing in framing(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let chunks = chunks_of(&stream);
        let body = sse_body(&chunks, &framing);
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        let whole = decode_split(StreamDecoder::new(), &body, &[]);
        let split = decode_split(StreamDecoder::new(), &body, &cuts);
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(whole.last(), Some(&Seen::Done));
        prop_assert_eq!(chunks_in(&whole), chunks, "the chunks survive the wire");
        let bytewise: Vec<usize> = (0..=body.len()).collect();
        prop_assert_eq!(&decode_split(StreamDecoder::new(), &body, &bytewise), &whole);
    }

    /// (c) Arbitrary bytes never panic, decode the same in any split, and end with exactly
    /// one terminal event.
    #[test]
    fn arbitrary_bytes_never_panic_and_end_once(
        body in prop_oneof![sse_noise(), prop::collection::vec(any::<u8>(), 0..512)],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        small_limit in any::<bool>(),
    ) {
        let decoder = || if small_limit {
            StreamDecoder::with_max_event_size(48)
        } else {
            StreamDecoder::new()
        };
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        let whole = decode_split(decoder(), &body, &[]);
        let split = decode_split(decoder(), &body, &cuts);
        prop_assert_eq!(split, whole);
    }
}

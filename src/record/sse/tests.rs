//! Unit tests of the SSE parser: the spec's framing rules, byte ranges, the
//! size cap, and equality of events under every split of recorded streams.

use super::*;
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/");
    std::fs::read(format!("{dir}{name}")).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn parse_chunks(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseTail) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        parser.push(chunk, &mut events).expect("fixture parses");
    }
    let tail = parser.finish(&mut events);
    (events, tail)
}

fn whole(body: &[u8]) -> (Vec<SseEvent>, SseTail) {
    parse_chunks(&[body])
}

#[test]
fn fields_comments_and_multiline_data() {
    let body =
        b": hi\nevent: add\nid: 7\nretry: 10\nfoo: bar\ndata: a\ndata:b\ndata\n\ndata: c\n\n";
    let (events, tail) = whole(body);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.as_deref(), Some("add"));
    assert_eq!(events[0].data, "a\nb\n");
    assert_eq!(events[0].id.as_deref(), Some("7"));
    assert_eq!(events[0].comments, 1);
    assert_eq!(events[1].name(), "message");
    assert_eq!(events[1].id.as_deref(), Some("7"), "last event id persists");
    assert!(!tail.unterminated);
}

#[test]
fn blank_line_without_data_dispatches_nothing_and_resets_event() {
    let (events, _) = whole(b"event: x\n\n: ping\n\ndata: y\n\n");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].event, None,
        "event type was reset by the blank line"
    );
    assert_eq!(events[0].comments, 1);
    assert_eq!(
        events[0].start, 0,
        "comments and the empty block travel with the event"
    );
}

#[test]
fn id_with_nul_is_ignored_and_empty_event_means_message() {
    let (events, _) = whole(b"id: a\0b\nevent:\ndata: z\n\n");
    assert_eq!(events[0].id, None);
    assert_eq!(events[0].event, None);
}

#[test]
fn cr_alone_and_crlf_line_ends() {
    let (cr, _) = whole(b"data: a\rdata: b\r\rdata: c\r\r");
    assert_eq!(cr.len(), 2);
    assert_eq!(cr[0].data, "a\nb");
    assert_eq!((cr[1].start, cr[1].end), (17, 26));
    let (crlf, _) = whole(b"data: a\r\n\r\ndata: b\r\n\r\n");
    assert_eq!(crlf.len(), 2);
    assert_eq!((crlf[0].end, crlf[1].end), (11, 22));
}

#[test]
fn cr_at_chunk_end_waits_for_a_possible_lf() {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.push(b"data: a\r\n\r", &mut events).unwrap();
    assert!(events.is_empty(), "the end offset is not known yet");
    parser.push(b"\ndata: b\r\r", &mut events).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].end, 11, "the LF belongs to the first event");
    let tail = parser.finish(&mut events);
    assert_eq!(events.len(), 2, "finish dispatches the deferred event");
    assert_eq!((events[1].start, events[1].end), (11, 20));
    assert_eq!((tail.start, tail.end), (20, 20));
}

#[test]
fn bom_is_stripped_once_even_when_split() {
    let body = b"\xEF\xBB\xBFdata: x\n\n";
    let (events, _) = parse_chunks(&[&body[..1], &body[1..2], &body[2..]]);
    assert_eq!(events[0].data, "x");
    assert_eq!(
        (events[0].start, events[0].end),
        (0, 12),
        "the BOM is inside the first range"
    );
    let (not_bom, _) = whole(b"\xEF\xBBdata: x\n\n");
    assert!(
        not_bom.is_empty(),
        "a partial BOM is part of the field name"
    );
}

#[test]
fn unterminated_tail_is_reported() {
    let (events, tail) = whole(b"data: a\n\ndata: b\n");
    assert_eq!(events.len(), 1);
    assert!(tail.unterminated, "data without its blank line");
    assert_eq!((tail.start, tail.end), (9, 17));
    let (_, tail) = whole(b"data: a\n\n: ping");
    assert!(tail.unterminated, "partial line");
    assert_eq!(tail.comments, 0, "a partial comment line is not counted");
    let (_, tail) = whole(b"data: a\n\n: ping\n");
    assert!(!tail.unterminated);
    assert_eq!(tail.comments, 1);
}

#[test]
fn multibyte_split_inside_code_point() {
    let body = "data: caf\u{e9} \u{1F600}\n\n".as_bytes();
    for cut in 0..=body.len() {
        let (events, _) = parse_chunks(&[&body[..cut], &body[cut..]]);
        assert_eq!(events[0].data, "caf\u{e9} \u{1F600}", "cut at {cut}");
    }
}

#[test]
fn pending_event_over_the_cap_errors_and_stays_failed() {
    let mut parser = SseParser::with_limit(32);
    let mut events = Vec::new();
    parser.push(b"data: small\n\n", &mut events).unwrap();
    let err = parser.push(&[b'x'; 40], &mut events).unwrap_err();
    assert_eq!(
        err,
        SseError::EventTooLarge {
            start: 13,
            limit: 32
        }
    );
    assert_eq!(events.len(), 1, "events before the error are kept");
    assert!(
        parser.push(b"\n\n", &mut events).is_err(),
        "the parser stays failed"
    );
    let mut lines = SseParser::with_limit(32);
    let many = b"data: 0123456789\n".repeat(3);
    assert!(
        lines.push(&many, &mut Vec::new()).is_err(),
        "many short lines count too"
    );
}

#[test]
fn ranges_tile_the_stream() {
    for name in [
        "openrouter-chat-error_chunk-1.sse",
        "gemini-native-text_crlf-1.sse",
    ] {
        let body = fixture(name);
        let (events, tail) = whole(&body);
        let mut at = 0;
        for ev in &events {
            assert_eq!(ev.start, at, "{name}: ranges are contiguous");
            at = ev.end;
        }
        assert_eq!((tail.start, tail.end), (at, body.len() as u64), "{name}");
        let last = &body[events[1].start as usize..events[1].end as usize];
        assert!(
            last.ends_with(b"\n\n") || last.ends_with(b"\r\n\r\n"),
            "{name}"
        );
    }
}

/// Fixtures small enough to split at every byte in a debug build.
const SMALL: &[&str] = &[
    "gemini-native-text_crlf-1.sse",
    "openrouter-chat-error_chunk-1.sse",
    "openrouter-chat-reasoning_comments-1.sse",
    "openrouter-responses-reasoning_text-1.sse",
    "anthropic-messages-parallel_tool_use-1.sse",
    "anthropic-messages-redacted_thinking-1.sse",
    "openai-chat-parallel_tools-1.sse",
    "openai-responses-text-1.sse",
    "mistral-chat-parallel_tools_noindex-1.sse",
    "ollama-chat-tool_call_noindex-1.sse",
    "gemini-openai-chat-tool_call-1.sse",
    "groq-chat-reasoning_tool_call-1.sse",
    "vllm-chat-usage-1.sse",
];

/// Large fixtures with multi-byte UTF-8: only the events around the first
/// non-ASCII byte are split at every position.
const MULTIBYTE: &[&str] = &[
    "deepseek-chat-reasoning_content-1.sse",
    "together-chat-think_inline-1.sse",
    "openai-responses-reasoning_summary-1.sse",
];

fn assert_every_split_matches(name: &str, body: &[u8]) {
    let want = whole(body);
    for cut in 0..=body.len() {
        let got = parse_chunks(&[&body[..cut], &body[cut..]]);
        assert_eq!(got, want, "{name}: split at byte {cut}");
    }
}

#[test]
fn every_split_point_of_small_fixtures() {
    for name in SMALL {
        assert_every_split_matches(name, &fixture(name));
    }
}

#[test]
fn every_split_point_around_multibyte_text() {
    for name in MULTIBYTE {
        let body = fixture(name);
        let first = body.iter().position(|b| *b >= 0x80).expect("has non-ASCII");
        let (events, _) = whole(&body);
        let hit = events
            .iter()
            .position(|e| e.end > first as u64)
            .expect("inside an event");
        let from = events[hit.saturating_sub(2)].start as usize;
        let to = events[(hit + 2).min(events.len() - 1)].end as usize;
        assert_every_split_matches(name, &body[from..to]);
    }
}

fn all_fixture_names() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sse"))
        .collect();
    names.sort();
    names
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_multiway_splits(pick in 0usize..31, cuts in proptest::collection::vec(0.0f64..1.0, 0..40)) {
        let names = all_fixture_names();
        let name = &names[pick % names.len()];
        let body = fixture(name);
        let mut points: Vec<usize> = cuts.iter().map(|f| (f * body.len() as f64) as usize).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for p in points {
            chunks.push(&body[at..p]);
            at = p;
        }
        chunks.push(&body[at..]);
        prop_assert_eq!(parse_chunks(&chunks), whole(&body), "{}", name);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_invariant(body in proptest::collection::vec(
        prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), Just(b'd'), any::<u8>()], 0..200),
        cut in 0usize..200) {
        let cut = cut.min(body.len());
        prop_assert_eq!(parse_chunks(&[&body[..cut], &body[cut..]]), whole(&body));
    }
}

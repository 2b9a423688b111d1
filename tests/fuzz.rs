//! Fuzzing, in the test suite: each target feeds tether's parsers inputs
//! made by mutating a corpus of real inputs (the recorded provider streams
//! and request bodies, plus `tests/fuzz/corpus/`) for a fixed time, and
//! fails on any panic, saving the input that caused it into the corpus.
//!
//! This is the stable-toolchain equivalent of a `cargo fuzz` target (which
//! needs nightly): no coverage feedback, but structure-aware mutations of
//! real traffic. `TETHER_FUZZ_SECS` sets the time per target (default 3).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tether::record::{Api, Assembler, Decoder, Encoding, Reply, SseParser, request};
use tether::session::{SessionId, has_dot_segments, split_session_prefix};
use tether::tenant::Tenant;

const APIS: [Api; 5] = [
    Api::ChatCompletions,
    Api::Completions,
    Api::Responses,
    Api::AnthropicMessages,
    Api::Gemini,
];

fn budget() -> Duration {
    let secs = std::env::var("TETHER_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// A small deterministic generator (xorshift), seeded per run and printed,
/// so a failure can be replayed with `TETHER_FUZZ_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("TETHER_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("fuzz seed {seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that matter to the parsers, to splice in.
const TOKENS: [&[u8]; 14] = [
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"data: ",
    b"event: ",
    b": comment",
    b"id: 7",
    b"{",
    b"}",
    b"\"",
    b"[DONE]",
    b"\xff",
    b"\xe2\x82",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            1 => {
                let end = (at + rng.below(64)).min(out.len());
                out.drain(at..end);
            }
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            3 => {
                let end = (at + rng.below(256)).min(out.len());
                let copy = out[at..end].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, copy);
            }
            4 => out.truncate(at),
            _ => {}
        }
    }
    out
}

fn corpus(suffixes: &[&str]) -> Vec<(String, Vec<u8>)> {
    let dirs = [
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/streams"
        )),
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/corpus")),
    ];
    let mut out = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if suffixes.iter().any(|s| name.ends_with(s)) {
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    assert!(!out.is_empty(), "a corpus for {suffixes:?}");
    out
}

/// Runs `target` on mutations of the corpus until the time is up.
fn fuzz(name: &str, suffixes: &[&str], target: impl Fn(&mut Rng, &[u8])) {
    let corpus = corpus(suffixes);
    let mut rng = Rng::new();
    let deadline = Instant::now() + budget();
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let (_, seed) = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, seed);
        let mut case_rng = Rng(rng.next() | 1);
        if catch_unwind(AssertUnwindSafe(|| target(&mut case_rng, &input))).is_err() {
            let saved = format!(
                "{}/tests/fuzz/corpus/crash-{name}-{runs}.{}",
                env!("CARGO_MANIFEST_DIR"),
                suffixes[0].trim_start_matches('.')
            );
            std::fs::write(&saved, &input).unwrap();
            panic!("{name}: a panic on input saved to {saved}");
        }
        runs += 1;
    }
    println!("{name}: {runs} inputs, no panic");
    assert!(
        runs > 100,
        "{name} ran too few inputs ({runs}) to mean anything"
    );
}

/// SSE parsing in random chunks, then every assembler, then decoders.
#[test]
fn fuzz_sse_parser_and_assemblers() {
    fuzz("sse", &[".sse"], |rng, input| {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let end = (at + 1 + rng.below(97)).min(input.len());
            if parser.push(&input[at..end], &mut events).is_err() {
                break;
            }
            at = end;
        }
        let tail = parser.finish(&mut events);
        for api in APIS.iter().copied().map(Some).chain([None]) {
            let mut assembler = Assembler::new(api);
            for event in &events {
                assembler.push(event);
            }
            if let Ok(reply) = assembler.finish(&tail) {
                let _ = reply.to_message();
            }
        }
        for encoding in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Brotli,
            Encoding::Zstd,
        ] {
            let mut decoder = Decoder::new(encoding, 1 << 20).unwrap();
            let mut out = Vec::new();
            let _ = decoder
                .push(input, &mut out)
                .and_then(|()| decoder.finish(&mut out));
        }
    });
}

/// Request bodies of every API, and non-streamed reply bodies.
#[test]
fn fuzz_request_and_reply_bodies() {
    fuzz("bodies", &[".request.json", ".json"], |_, input| {
        for api in APIS {
            if let Ok(parsed) = request::parse(api, input) {
                let _ = tether::record::turn::new_messages(&parsed, true);
            }
            if let Ok(reply) = Reply::from_body(Some(api), input) {
                let _ = reply.to_message();
            }
        }
    });
}

/// Session ids, path prefixes, dot segments, API paths and tenant ids.
#[test]
fn fuzz_session_ids_and_paths() {
    fuzz("paths", &[".path"], |_, input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(id) = SessionId::parse(&text) {
            assert!(
                id.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)),
                "{id}"
            );
            assert!(id.as_str().len() <= 128);
        }
        if let Some((session, rest)) = split_session_prefix(&text) {
            assert!(rest.starts_with('/') && !session.contains('/'), "{text}");
        }
        let _ = has_dot_segments(&text);
        let _ = Api::from_path(&text);
        if let Some(tenant) = Tenant::parse(&text) {
            assert!(!tenant.as_str().contains('/'));
        }
        let _ = SessionId::from_user(&text);
    });
}

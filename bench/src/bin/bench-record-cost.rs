//! tether's recording work without the network, for counting its
//! instructions under callgrind (`bench/record_cost.sh` runs this twice and
//! prints the difference per item, so start-up cancels out):
//!
//!   bench-record-cost chunks N            fold N chunks of the benchmark's stream
//!   bench-record-cost body N              assemble N non-streamed answers
//!   bench-record-cost request N EARLIER   read N requests of a chat's turn after
//!                                         EARLIER turns (as the chat run sends)
//!   bench-record-cost anthropic N EARLIER the same as Anthropic Messages requests
//!   bench-record-cost responses N EARLIER the same as Responses requests
//!
//! End to end figures come from `bench/callgrind.sh`; this isolates the
//! parsing, where a change is too small to see through the proxy around it.

use std::hint::black_box;
use std::process::ExitCode;

use bench::wire;
use tether::record::{Api, Assembler, Reply, SseParser, request};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
    match (args.first().map(String::as_str), number(1)) {
        (Some("chunks"), Some(n)) => fold_chunks(n),
        (Some("body"), Some(n)) => assemble_bodies(n),
        (Some("request"), Some(n)) => read_requests(
            Api::ChatCompletions,
            wire::chat_turn_request(number(2).unwrap_or(0)),
            n,
        ),
        (Some("anthropic"), Some(n)) => read_requests(
            Api::AnthropicMessages,
            wire::anthropic_turn_request(number(2).unwrap_or(0)),
            n,
        ),
        (Some("responses"), Some(n)) => read_requests(
            Api::Responses,
            wire::responses_turn_request(number(2).unwrap_or(0)),
            n,
        ),
        _ => {
            eprintln!(
                "usage: bench-record-cost chunks N | body N | (request | anthropic | responses) N EARLIER"
            );
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// What the recorder does with each chunk: SSE framing, then the fold.
fn fold_chunks(n: usize) {
    let mut parser = SseParser::new();
    let mut assembler = Assembler::new(Some(Api::ChatCompletions));
    let mut events = Vec::new();
    for i in 1..=n as u64 {
        let chunk = wire::stream_event(i, n as u64 + 1);
        parser.push(black_box(&chunk), &mut events).expect("SSE");
        for event in events.drain(..) {
            assembler.push(&event);
        }
    }
    black_box(assembler);
}

/// What the recorder does with a non-streamed answer.
fn assemble_bodies(n: usize) {
    let body = wire::completion();
    for _ in 0..n {
        let reply =
            Reply::from_body(Some(Api::ChatCompletions), black_box(&body)).expect("a reply");
        black_box(reply);
    }
}

fn read_requests(api: Api, body: bytes::Bytes, n: usize) {
    for _ in 0..n {
        let parsed = request::parse(api, black_box(&body)).expect("a conversation");
        black_box(parsed);
    }
}

//! The recorded streams against `expected.json`, the reference assembler's
//! output: every key it emits must match, for every stream, whether the API
//! is given or detected, and through the gzip wire bodies too.

use serde_json::Value;

use super::{Api, Assembler};
use crate::record::decode::{Decoder, Encoding};
use crate::record::sse::SseParser;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/");

/// Every event's data of every recorded stream, whatever its API.
pub(super) fn recorded_data() -> Vec<String> {
    let mut data = Vec::new();
    for entry in std::fs::read_dir(DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sse") {
            let body = std::fs::read(&path).unwrap();
            let (events, _) = crate::record::sse::parse_all(&body).unwrap();
            data.extend(events.into_iter().map(|e| e.data));
        }
    }
    data
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}{name}")).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn expected() -> serde_json::Map<String, Value> {
    match serde_json::from_slice(&read("expected.json")) {
        Ok(Value::Object(map)) => map,
        other => panic!("expected.json: {other:?}"),
    }
}

fn api_named(name: &str) -> Api {
    [
        Api::ChatCompletions,
        Api::Completions,
        Api::Responses,
        Api::AnthropicMessages,
        Api::Gemini,
    ]
    .into_iter()
    .find(|api| api.as_str() == name)
    .unwrap_or_else(|| panic!("unknown api {name}"))
}

/// Parses `body` in chunks of `chunk` bytes and assembles it.
fn assemble(body: &[u8], chunk: usize, api: Option<Api>) -> Value {
    let mut parser = SseParser::new();
    let mut assembler = Assembler::new(api);
    let mut events = Vec::new();
    for piece in body.chunks(chunk) {
        parser.push(piece, &mut events).expect("fixture parses");
        events.drain(..).for_each(|e| assembler.push(&e));
    }
    let tail = parser.finish(&mut events);
    events.iter().for_each(|e| assembler.push(e));
    assembler.finish(&tail).expect("api known").to_json()
}

/// Every difference between `got` and `want`, key by key.
fn differences(name: &str, got: &Value, want: &Value) -> Vec<String> {
    let (Value::Object(got), Value::Object(want)) = (got, want) else {
        return vec![format!("{name}: not objects")];
    };
    let mut out: Vec<String> = want
        .iter()
        .filter(|(key, value)| got.get(*key) != Some(value))
        .map(|(key, value)| format!("{name}.{key}: got {:?}, want {value}", got.get(key)))
        .collect();
    out.extend(
        got.keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| format!("{name}.{k}: not in expected")),
    );
    out
}

#[test]
fn all_streams_match_the_reference() {
    let expected = expected();
    assert_eq!(expected.len(), 31, "expected.json covers 31 streams");
    let mut problems = Vec::new();
    for (name, want) in &expected {
        let body = read(name);
        let api = api_named(want["api"].as_str().expect("api is a string"));
        problems.extend(differences(
            name,
            &assemble(&body, body.len().max(1), None),
            want,
        ));
        problems.extend(differences(name, &assemble(&body, 97, Some(api)), want));
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn gzip_wire_bodies_assemble_like_their_sse() {
    let expected = expected();
    for name in [
        "anthropic-messages-tool_use_gzip-1.sse",
        "gemini-openai-chat-text-1.sse",
        "gemini-openai-chat-tool_call-1.sse",
    ] {
        let wire = read(&format!("{name}.gz"));
        let mut decoder = Decoder::new(Encoding::Gzip, 1 << 20).expect("gzip decoder");
        let mut body = Vec::new();
        for piece in wire.chunks(5) {
            decoder.push(piece, &mut body).expect("decodes");
        }
        decoder.finish(&mut body).expect("complete");
        let got = assemble(&body, 13, None);
        assert_eq!(
            differences(name, &got, &expected[name]),
            Vec::<String>::new()
        );
    }
}

#[test]
fn history_messages_of_a_few_streams() {
    let parallel = read("openai-chat-parallel_tools-1.sse");
    let (events, tail) = crate::record::sse::parse_all(&parallel).expect("parses");
    let mut assembler = Assembler::new(Some(Api::ChatCompletions));
    events.iter().for_each(|e| assembler.push(e));
    let message = assembler.finish(&tail).expect("reply").to_message();
    assert_eq!(message["role"], "assistant");
    assert!(
        message.get("content").is_none(),
        "null content omitted: {message}"
    );
    let calls = message["tool_calls"].as_array().expect("tool calls");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["id"], "call_JMW1whyEaYG438VE1OIflxA2");
    assert_eq!(calls[1]["function"]["name"], "get_stock_price");
    assert_eq!(
        calls[1]["function"]["arguments"],
        "{\"ticker\": \"AAPL\", \"exchange\": \"NASDAQ\"}"
    );
}

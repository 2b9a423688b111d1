//! The bytes of the benchmark's conversation: what the driver sends and what
//! the mock upstream answers. Both sides build them from the same functions,
//! so the driver knows the exact bytes every answer must have.

use bytes::Bytes;

/// The bearer key every request carries (tether derives the tenant from it).
pub const API_KEY: &str = "bench-key";
/// The model named in requests and answers.
pub const MODEL: &str = "bench-model";
/// Request header: how many chunks a streamed answer has (one token each).
pub const CHUNKS_HEADER: &str = "x-bench-chunks";
/// Request header: milliseconds between two chunks of a streamed answer.
pub const DELAY_HEADER: &str = "x-bench-delay-ms";
/// The chat completions path, recorded by tether.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// A small chat request: one user message (plus `extra` more, for the
/// history workload that writes many messages per turn).
pub fn chat_request(stream: bool, extra_messages: usize) -> Bytes {
    let mut messages = String::from(r#"{"role":"system","content":"You are a benchmark."}"#);
    for i in 0..extra_messages {
        messages.push_str(&format!(
            r#",{{"role":"user","content":"earlier message number {i}"}}"#
        ));
    }
    messages.push_str(r#",{"role":"user","content":"Say something short."}"#);
    Bytes::from(format!(
        r#"{{"model":"{MODEL}","stream":{stream},"messages":[{messages}]}}"#
    ))
}

/// The request of a chat's turn after `earlier` turns: a client sends the
/// whole conversation every time (the system prompt, each earlier question
/// and answer, about 350 bytes a turn), and history stores only what
/// follows the last answer.
pub fn chat_turn_request(earlier: usize) -> Bytes {
    let mut messages = String::from(r#"{"role":"system","content":"You are a benchmark."}"#);
    for k in 0..earlier {
        messages.push_str(&format!(
            r#",{{"role":"user","content":"Question {k}: tell me about topic {k}, briefly please."}}"#
        ));
        messages.push_str(&format!(
            r#",{{"role":"assistant","content":"{}"}}"#,
            format!("Topic {k} is a broad one. ").repeat(12)
        ));
    }
    messages.push_str(r#",{"role":"user","content":"Say something short."}"#);
    Bytes::from(format!(
        r#"{{"model":"{MODEL}","stream":false,"messages":[{messages}]}}"#
    ))
}

/// The same conversation as an Anthropic Messages request (its
/// instructions in `system`, as that API has them).
pub fn anthropic_turn_request(earlier: usize) -> Bytes {
    let mut messages = String::new();
    for k in 0..earlier {
        messages.push_str(&format!(
            r#"{{"role":"user","content":"Question {k}: tell me about topic {k}, briefly please."}},"#
        ));
        messages.push_str(&format!(
            r#"{{"role":"assistant","content":[{{"type":"text","text":"{}"}}]}},"#,
            format!("Topic {k} is a broad one. ").repeat(12)
        ));
    }
    messages.push_str(r#"{"role":"user","content":"Say something short."}"#);
    Bytes::from(format!(
        r#"{{"model":"{MODEL}","max_tokens":256,"system":"You are a benchmark.","messages":[{messages}]}}"#
    ))
}

/// The same conversation as a Responses request (its instructions in
/// `instructions`, the conversation as input items).
pub fn responses_turn_request(earlier: usize) -> Bytes {
    let mut items = String::new();
    for k in 0..earlier {
        items.push_str(&format!(
            r#"{{"type":"message","role":"user","content":"Question {k}: tell me about topic {k}, briefly please."}},"#
        ));
        items.push_str(&format!(
            r#"{{"type":"message","role":"assistant","content":[{{"type":"output_text","text":"{}"}}]}},"#,
            format!("Topic {k} is a broad one. ").repeat(12)
        ));
    }
    items.push_str(r#"{"type":"message","role":"user","content":"Say something short."}"#);
    Bytes::from(format!(
        r#"{{"model":"{MODEL}","instructions":"You are a benchmark.","input":[{items}]}}"#
    ))
}

/// The non-streamed completion the upstream answers with.
pub fn completion() -> Bytes {
    Bytes::from(format!(
        concat!(
            r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":0,"model":"{}","#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":"A short answer."}},"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":12,"completion_tokens":4,"total_tokens":16}}}}"#
        ),
        MODEL
    ))
}

/// SSE event `i` of a streamed answer of `n` chunks; event `n` is `[DONE]`.
/// The first chunk carries the role, the last the finish reason.
pub fn stream_event(i: u64, n: u64) -> Bytes {
    if i == n {
        return Bytes::from_static(b"data: [DONE]\n\n");
    }
    let role = if i == 0 { r#""role":"assistant","# } else { "" };
    let finish = if i + 1 == n { r#""stop""# } else { "null" };
    Bytes::from(format!(
        concat!(
            r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"{}","#,
            r#""choices":[{{"index":0,"delta":{{{}"content":"tok{} "}},"finish_reason":{}}}]}}"#,
            "\n\n"
        ),
        MODEL, role, i, finish
    ))
}

/// Every byte of a streamed answer of `n` chunks, from event `from` on.
pub fn stream_bytes(n: u64, from: u64) -> Vec<u8> {
    (from..=n).flat_map(|i| stream_event(i, n)).collect()
}

/// The assistant text a streamed answer of `n` chunks assembles to.
pub fn stream_answer(n: u64) -> String {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json() {
        for body in [
            chat_request(true, 3),
            completion(),
            stream_event(0, 2).slice(6..),
        ] {
            let text = std::str::from_utf8(&body).unwrap().trim();
            serde_json::from_str::<serde_json::Value>(text).expect(text);
        }
    }

    #[test]
    fn a_stream_ends_with_done() {
        let all = stream_bytes(3, 0);
        assert!(all.ends_with(b"data: [DONE]\n\n"), "last event is [DONE]");
        assert_eq!(all.iter().filter(|&&b| b == b'\n').count(), 8, "4 events");
    }
}

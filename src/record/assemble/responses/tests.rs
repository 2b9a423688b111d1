//! Responses fold tests beyond the recorded streams: non-streamed bodies,
//! failures, interleaved items and the delta/final consistency check.

use super::*;
use serde_json::json;

fn fold(events: &[Value]) -> Reply {
    let mut fold = ResponsesFold::default();
    for event in events {
        let raw = event.to_string();
        fold.push(&Payload {
            event: "message",
            json: Some(event.clone()),
            raw: &raw,
        });
    }
    fold.finish()
}

fn added(index: i64, item: Value) -> Value {
    json!({"type": "response.output_item.added", "output_index": index, "item": item})
}

fn args_delta(index: i64, delta: &str) -> Value {
    json!({"type": "response.function_call_arguments.delta", "output_index": index, "delta": delta})
}

#[test]
fn interleaved_function_call_items_stay_separate() {
    let reply = fold(&[
        added(
            0,
            json!({"type": "function_call", "id": "fc_a", "call_id": "call_a", "name": "f", "arguments": ""}),
        ),
        added(
            1,
            json!({"type": "function_call", "id": "fc_b", "call_id": "call_b", "name": "g", "arguments": ""}),
        ),
        args_delta(0, "{\"x\":"),
        args_delta(1, "{\"y\":"),
        args_delta(0, "1}"),
        args_delta(1, "2}"),
        json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed", "output": [
            {"type": "function_call", "arguments": "{\"x\":1}"},
            {"type": "function_call", "arguments": "{\"y\":3}"}]}}),
    ]);
    let calls = &reply.message().unwrap().tool_calls;
    assert_eq!(calls[0].arguments, "{\"x\":1}");
    assert_eq!(calls[1].arguments, "{\"y\":2}");
    assert_eq!(calls[1].item_id.as_deref(), Some("fc_b"));
    let checks = reply.checks.unwrap();
    assert_eq!(checks.problems, ["item 1 differs from terminal output"]);
}

#[test]
fn failed_response_carries_its_error_and_status() {
    let reply = fold(&[
        json!({"type": "response.created", "response": {"id": "resp_2", "model": "gpt-5", "status": "in_progress"}}),
        added(0, json!({"type": "message", "id": "msg_1"})),
        json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Hal"}),
        json!({"type": "response.failed", "response": {"id": "resp_2", "model": "gpt-5", "status": "failed",
            "error": {"code": "server_error", "message": "boom"}, "usage": null}}),
    ]);
    assert_eq!(reply.finish_reason(), Some("failed"));
    assert_eq!(
        reply.error,
        Some(json!({"code": "server_error", "message": "boom"}))
    );
    assert_eq!(reply.message().unwrap().content.as_deref(), Some("Hal"));
    assert_eq!(reply.usage, None);
}

#[test]
fn cut_short_stream_has_no_status_and_keeps_text() {
    let reply = fold(&[
        json!({"type": "response.created", "response": {"id": "resp_3", "model": "m", "status": "in_progress"}}),
        json!({"type": "response.output_text.delta", "output_index": 0, "delta": "unannounced item"}),
        json!({"type": "error", "code": "rate_limit", "message": "slow down"}),
    ]);
    assert_eq!(reply.finish_reason(), None);
    assert_eq!(reply.id.as_deref(), Some("resp_3"));
    assert_eq!(
        reply.message().unwrap().content.as_deref(),
        Some("unannounced item")
    );
    assert_eq!(reply.error.unwrap()["code"], "rate_limit");
}

#[test]
fn non_streamed_response_body() {
    let body = json!({"id": "resp_4", "object": "response", "model": "gpt-4o", "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "a"},
                                                          {"type": "summary_text", "text": "b"}]},
            {"type": "message", "id": "msg_1", "content": [{"type": "output_text", "text": "Hello"}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"}],
        "usage": {"input_tokens": 1, "output_tokens": 2}});
    let reply = ResponsesFold::from_body(body.as_object().unwrap());
    let message = reply.message().unwrap();
    assert_eq!(message.reasoning.as_deref(), Some("a\n\nb"));
    assert_eq!(message.content.as_deref(), Some("Hello"));
    assert_eq!(message.tool_calls[0].id.as_deref(), Some("call_1"));
    assert_eq!(
        reply.incomplete_reason.as_deref(),
        Some("max_output_tokens")
    );
    assert_eq!(reply.finish_reason(), Some("incomplete"));
    assert!(reply.checks.unwrap().deltas_match_final);
}

//! Every API's request becomes OpenAI-shaped messages.

use serde_json::json;

use crate::record::message::Role;

use super::*;

#[test]
fn chat_requests_keep_their_messages_and_name_their_session() {
    let body = json!({
        "model": "gpt-4o", "stream": true, "user": "alice",
        "metadata": {"session_id": "chat-9"},
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    });
    let request = parse(Api::ChatCompletions, body.to_string().as_bytes()).unwrap();
    assert_eq!(request.model.as_deref(), Some("gpt-4o"));
    assert!(request.stream);
    assert_eq!(request.messages.len(), 2);
    assert_eq!(request.metadata_session.as_deref(), Some("chat-9"));
    assert_eq!(request.user.as_deref(), Some("alice"));
}

#[test]
fn responses_input_items_become_messages() {
    let body = json!({
        "model": "gpt-5", "instructions": "be kind",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather in "}, {"type": "input_text", "text": "Paris?"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "reasoning", "id": "rs_1", "summary": []}
        ]
    });
    let (system, messages) = conversation_of(Api::Responses, &body);
    assert_eq!(system, [json!({"role": "system", "content": "be kind"})]);
    assert_eq!(
        messages[0],
        json!({"role": "user", "content": "weather in Paris?"})
    );
    assert_eq!(messages[1]["tool_calls"][0]["function"]["name"], "weather");
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
    );
    assert_eq!(messages.len(), 3, "reasoning items are not conversation");

    let plain = parse(Api::Responses, br#"{"model":"m","input":"hello"}"#).unwrap();
    assert_eq!(
        plain.messages,
        vec![json!({"role": "user", "content": "hello"})]
    );
}

#[test]
fn anthropic_blocks_become_openai_messages() {
    let body = json!({
        "model": "claude", "system": "terse",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "tu1", "name": "weather", "input": {"city": "Oslo"}}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "snow"}]}
        ]
    });
    let (system, messages) = conversation_of(Api::AnthropicMessages, &body);
    assert_eq!(system, [json!({"role": "system", "content": "terse"})]);
    assert_eq!(messages[0], json!({"role": "user", "content": "weather?"}));
    assert_eq!(messages[1]["content"], "Checking.");
    assert_eq!(
        messages[1]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Oslo\"}"
    );
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "tu1", "content": "snow"})
    );
    // A request keeps what history may: the last assistant message on.
    let request = parse(Api::AnthropicMessages, body.to_string().as_bytes()).unwrap();
    assert_eq!(request.system, system);
    assert_eq!(request.messages, messages[1..]);
}

#[test]
fn legacy_prompts_and_gemini_contents_become_messages() {
    let completion = parse(Api::Completions, br#"{"model":"m","prompt":"Once upon"}"#).unwrap();
    assert_eq!(
        completion.messages,
        vec![json!({"role": "user", "content": "Once upon"})]
    );
    let gemini = json!({"contents": [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "yo"}]}
    ]});
    let (_, messages) = conversation_of(Api::Gemini, &gemini);
    assert_eq!(
        messages,
        [
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "yo"})
        ]
    );
}

/// The conversation of a body, every message of it (`parse` keeps only
/// what history may).
fn conversation_of(api: Api, body: &Value) -> (Vec<Value>, Vec<Value>) {
    let Value::Object(obj) = body else {
        panic!("not an object: {body}")
    };
    conversation(api, obj, Converted::All).unwrap()
}

#[test]
fn a_responses_input_converts_what_history_may_keep_as_a_whole_one_keeps() {
    let call = json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"});
    let output = json!({"type": "function_call_output", "call_id": "c", "output": "r"});
    let message =
        |role: &str, text: &str| json!({"type": "message", "role": role, "content": text});
    let inputs = [
        json!([
            message("user", "a"),
            message("assistant", "b"),
            message("user", "c")
        ]),
        json!([message("developer", "d"), message("user", "a"), call, output,
               {"type": "reasoning", "id": "r"}, message("user", "c")]),
        // An assistant message without content gives no message; items
        // without a type are messages, without a role the user's.
        json!([{"content": "a"}, message("system", "s"), message("assistant", "b"),
               {"type": "message", "role": "assistant"}, {"role": "developer", "content": "d"},
               message("user", "c")]),
        json!([message("user", "only")]),
        json!([]),
    ];
    for input in inputs {
        let body = json!({"model": "gpt-5", "instructions": "i", "input": input});
        assert_converts_what_history_keeps(Api::Responses, &body);
    }
}

/// What history keeps of the messages a conversion gives for it is what
/// history keeps of all of them.
fn assert_converts_what_history_keeps(api: Api, body: &Value) {
    let Value::Object(obj) = body else {
        panic!("not an object: {body}")
    };
    let (all_system, all) = conversation(api, obj, Converted::All).unwrap();
    let (system, some) = conversation(api, obj, Converted::HistoryMayKeep).unwrap();
    assert_eq!(system, all_system);
    assert_eq!(
        history_may_keep(some, Role::of_value),
        history_may_keep(all, Role::of_value),
        "{body}"
    );
}

#[test]
fn an_anthropic_conversation_converts_what_history_may_keep_as_a_whole_one_keeps() {
    let tool_use = json!({"type": "tool_use", "id": "t", "name": "f", "input": {}});
    let tool_result = json!({"type": "tool_result", "tool_use_id": "t", "content": "r"});
    let text = |t: &str| json!({"type": "text", "text": t});
    let bodies = [
        json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]),
        // The last assistant message gives no assistant message (only a
        // tool result, or no blocks): the one before it counts.
        json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": [text("b"), tool_use]},
               {"role": "user", "content": [tool_result]}, {"role": "assistant", "content": [tool_result]},
               {"role": "assistant", "content": []}, {"role": "user", "content": [text("c")]}]),
        // Instructions among the messages, and messages without a role.
        json!([{"role": "system", "content": "s"}, {"content": "x"}, {"role": "developer", "content": [text("d")]},
               {"role": "assistant", "content": [text("b")]}, {"role": "assistant", "content": 7}, {"content": "y"}]),
        json!([{"role": "user", "content": "only"}]),
        json!([]),
    ];
    for messages in bodies {
        let body = json!({"model": "claude", "system": "sys", "messages": messages});
        assert_converts_what_history_keeps(Api::AnthropicMessages, &body);
    }
}

#[test]
fn what_cannot_be_recorded_says_why() {
    assert_eq!(
        parse(Api::ChatCompletions, b"{not json")
            .unwrap_err()
            .reason(),
        "invalid_json"
    );
    assert_eq!(
        parse(Api::ChatCompletions, b"[1]").unwrap_err().reason(),
        "not_an_object"
    );
    assert_eq!(
        parse(Api::ChatCompletions, b"{\"model\":\"m\"}")
            .unwrap_err()
            .reason(),
        "no_conversation"
    );
}

#[test]
fn a_chat_body_read_as_text_says_what_a_parsed_one_says() {
    for body in [
        json!({"model": "m", "stream": true, "user": "u", "metadata": {"session_id": "s-1"},
               "messages": [{"role": "user", "content": "hi"}, 3, null, {"role": "assistant", "content": "yo"}]}),
        json!({"model": 7, "stream": "yes", "user": null, "metadata": {"session_id": 5}, "messages": []}),
        json!({"model": "m\u{e9}\"", "stream": false, "metadata": [], "messages": [{}], "tools": [{"x": {"y": [1]}}]}),
        json!({"messages": [{"role": "system", "content": "s", "model": "kept?"}]}),
    ] {
        let text = serde_json::to_string_pretty(&body).unwrap();
        let fast = super::parse_chat(text.as_bytes()).unwrap();
        let Value::Object(obj) = &body else {
            unreachable!()
        };
        let messages = history_may_keep(super::chat_messages(obj).unwrap(), Role::of_value);
        assert_eq!(fast.messages, messages, "{text}");
        assert_eq!(
            fast.model,
            obj.get("model").and_then(Value::as_str).map(str::to_owned)
        );
        assert_eq!(
            fast.stream,
            obj.get("stream").and_then(Value::as_bool).unwrap_or(false)
        );
        assert_eq!(
            fast.user,
            obj.get("user").and_then(Value::as_str).map(str::to_owned)
        );
        assert_eq!(
            fast.metadata_session,
            obj.get("metadata")
                .and_then(|m| m.get("session_id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        );
    }
    // A member given twice: the last one counts, as in a parsed body.
    let twice = parse(
        Api::ChatCompletions,
        br#"{"model":"a","messages":[],"model":"b"}"#,
    )
    .unwrap();
    assert_eq!(twice.model.as_deref(), Some("b"));
}

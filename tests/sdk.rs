//! The official OpenAI Python SDK through tether: each script in
//! `tests/sdk/` holds a conversation through tether (streamed and not, chat
//! completions and the Responses API, tool calls) and prints the
//! conversation exactly as the SDK saw it; the stored history must be that
//! conversation, message for message, on the memory store and on a real
//! Redis. The interpreter is `TETHER_SDK_PYTHON`, else
//! `target/sdk-venv/bin/python`; `scripts/test.sh` sets both up.

mod common;

use common::history::{KEY, conversation, wait_for_messages};
use common::sdk::run_sdk;
use common::{MockUpstream, RedisServer, Tether, both_stores, mock_upstream};
use serde_json::{Value, json};

/// A tether on each store kind: the embedded one and a real redis-server.
fn store_name(redis: &Option<RedisServer>) -> &'static str {
    if redis.is_some() { "redis" } else { "memory" }
}

/// The messages the SDK saw, as a JSON array.
fn sdk_messages(sdk: &Value) -> Vec<Value> {
    sdk["messages"].as_array().expect("messages").clone()
}

fn replies(sdk: &Value) -> Vec<Value> {
    sdk["replies"].as_array().expect("replies").clone()
}

/// The stored history must be the conversation the SDK saw, message for
/// message (role, content, tool calls, tool call id), and each stored reply
/// must be complete and carry the model the SDK saw. Returns the history.
async fn assert_history_is_what_the_sdk_saw(
    tether: &Tether,
    store: &str,
    session: &str,
    sdk: &Value,
) -> Vec<Value> {
    let seen = sdk_messages(sdk);
    let stored = wait_for_messages(tether, KEY, session, seen.len()).await;
    let (stored_conversation, seen_conversation) = (conversation(&stored), conversation(&seen));
    for (i, (stored, seen)) in stored_conversation
        .iter()
        .zip(&seen_conversation)
        .enumerate()
    {
        assert_eq!(
            stored, seen,
            "{store}/{session}: stored message {i} differs from what the SDK saw"
        );
    }
    let stored_replies: Vec<&Value> = stored.iter().filter(|m| m["role"] == "assistant").collect();
    let sdk_replies = replies(sdk);
    assert_eq!(
        stored_replies.len(),
        sdk_replies.len(),
        "{store}/{session}: one stored assistant message per reply the SDK got"
    );
    for (i, (message, reply)) in stored_replies.iter().zip(&sdk_replies).enumerate() {
        assert_eq!(
            message["complete"], true,
            "{store}/{session}: reply {i} is stored as complete: {message}"
        );
        assert_eq!(
            message["model"], reply["model"],
            "{store}/{session}: reply {i} is stored with the model the SDK saw"
        );
        if let Some(finish) = reply.get("finish_reason").filter(|f| !f.is_null()) {
            assert_eq!(
                &message["finish_reason"], finish,
                "{store}/{session}: reply {i} has the SDK's finish reason"
            );
        }
    }
    stored
}

/// Every reply the SDK read headers of carried `x-session-id: {session}`.
fn assert_session_header(sdk: &Value, store: &str, session: &str) {
    for (i, reply) in replies(sdk).iter().enumerate() {
        assert_eq!(
            reply["x_session_id"], session,
            "{store}: reply {i} answered x-session-id {session}"
        );
    }
}

/// The assembled replies of the recorded streams in `tests/fixtures/streams`.
fn expected(fixture: &str) -> Value {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/streams/expected.json"
        ))
        .unwrap(),
    )
    .unwrap();
    all[fixture].clone()
}

/// expected.json's flat tool calls in the OpenAI message shape.
fn expected_tool_calls(fixture: &str) -> Value {
    let calls = expected(fixture)["tool_calls"].as_array().unwrap().clone();
    Value::Array(
        calls
            .iter()
            .map(|c| {
                json!({"id": c["id"], "type": "function",
                       "function": {"name": c["name"], "arguments": c["arguments"]}})
            })
            .collect(),
    )
}

#[tokio::test]
async fn a_streamed_chat_with_the_session_in_the_base_url_is_stored_as_the_sdk_saw_it() {
    let mock = MockUpstream::start().await;
    for (tether, redis) in both_stores(&mock.url(), |_| {}).await {
        let store = store_name(&redis);
        let sdk = run_sdk("chat_stream.py", &tether, "sdk-chat-stream").await;
        let seen = sdk_messages(&sdk);
        assert_eq!(
            seen.len(),
            7,
            "{store}: system + 3 user + 3 assistant: {sdk}"
        );
        for (reply, chunks) in replies(&sdk).iter().zip([3u64, 4, 5]) {
            let deltas: Vec<String> = (0..chunks).map(mock_upstream::token).collect();
            assert_eq!(
                reply["deltas"],
                json!(deltas),
                "{store}: the SDK yielded the mock's {chunks} chunks one by one"
            );
        }
        assert_eq!(
            seen[6]["content"],
            mock_upstream::answer(5),
            "{store}: the last reply the SDK assembled"
        );
        assert_session_header(&sdk, store, "sdk-chat-stream");
        assert_history_is_what_the_sdk_saw(&tether, store, "sdk-chat-stream", &sdk).await;
    }
}

#[tokio::test]
async fn a_non_streamed_chat_with_the_session_in_a_default_header_is_stored_as_the_sdk_saw_it() {
    let mock = MockUpstream::start().await;
    for (tether, redis) in both_stores(&mock.url(), |_| {}).await {
        let store = store_name(&redis);
        let sdk = run_sdk("chat_nonstream.py", &tether, "sdk-chat-plain").await;
        let seen = sdk_messages(&sdk);
        assert_eq!(seen.len(), 7, "{store}: system + 3 turns: {sdk}");
        for (turn, chunks) in [2u64, 3, 4].into_iter().enumerate() {
            assert_eq!(
                seen[2 + 2 * turn]["content"],
                mock_upstream::answer(chunks),
                "{store}: reply {turn} as the SDK parsed it"
            );
        }
        assert_session_header(&sdk, store, "sdk-chat-plain");
        let stored =
            assert_history_is_what_the_sdk_saw(&tether, store, "sdk-chat-plain", &sdk).await;
        assert_eq!(
            stored[6]["usage"],
            replies(&sdk)[2]["usage"],
            "{store}: the stored usage is the one the SDK got"
        );
    }
}

#[tokio::test]
async fn a_streamed_tool_call_round_trip_is_stored_with_the_tool_calls_the_sdk_accumulated() {
    let mock = MockUpstream::start().await;
    let fixture = "openai-chat-parallel_tools-1.sse";
    for (tether, redis) in both_stores(&mock.url(), |_| {}).await {
        let store = store_name(&redis);
        let sdk = run_sdk("chat_tools.py", &tether, "sdk-chat-tools").await;
        let seen = sdk_messages(&sdk);
        let roles: Vec<&str> = seen.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "tool", "assistant"],
            "{store}: question, 2 parallel calls, 2 results, answer: {sdk}"
        );
        assert_eq!(
            seen[1]["tool_calls"],
            expected_tool_calls(fixture),
            "{store}: the SDK accumulated the recorded stream's two tool calls"
        );
        assert_eq!(
            seen[4]["content"],
            mock_upstream::answer(4),
            "{store}: the final answer the SDK assembled"
        );
        assert_eq!(
            replies(&sdk)[0]["model"],
            expected(fixture)["model"],
            "{store}: the recording's model"
        );
        let stored =
            assert_history_is_what_the_sdk_saw(&tether, store, "sdk-chat-tools", &sdk).await;
        assert_eq!(
            stored[1]["tool_calls"], seen[1]["tool_calls"],
            "{store}: history keeps the tool calls the SDK accumulated"
        );
        assert_eq!(
            stored[1]["finish_reason"], "tool_calls",
            "{store}: the tool-call turn's finish reason"
        );
    }
}

#[tokio::test]
async fn a_streamed_responses_turn_is_stored_as_the_text_the_sdk_assembled() {
    let mock = MockUpstream::start().await;
    let fixture = "openai-responses-text-1.sse";
    let want = expected(fixture);
    for (tether, redis) in both_stores(&mock.url(), |_| {}).await {
        let store = store_name(&redis);
        let sdk = run_sdk("responses_stream.py", &tether, "sdk-responses-stream").await;
        let reply = &replies(&sdk)[0];
        assert_eq!(
            reply["output_text"], want["content"],
            "{store}: the SDK's output_text is the recorded stream's text"
        );
        let joined: String = reply["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(
            joined, want["content"],
            "{store}: the deltas the SDK yielded add up to the same text"
        );
        assert_eq!(reply["status"], "completed", "{store}");
        assert_eq!(
            reply["model"], want["model"],
            "{store}: the recording's model"
        );
        assert_session_header(&sdk, store, "sdk-responses-stream");
        let stored =
            assert_history_is_what_the_sdk_saw(&tether, store, "sdk-responses-stream", &sdk).await;
        assert_eq!(
            stored[1]["usage"], want["usage"],
            "{store}: the usage of response.completed"
        );
    }
}

#[tokio::test]
async fn a_responses_function_call_round_trip_is_stored_as_the_sdk_saw_it() {
    let mock = MockUpstream::start().await;
    let fixture = "openai-responses-function_call-1.sse";
    for (tether, redis) in both_stores(&mock.url(), |_| {}).await {
        let store = store_name(&redis);
        let sdk = run_sdk("responses_tools.py", &tether, "sdk-responses-tools").await;
        let seen = sdk_messages(&sdk);
        let roles: Vec<&str> = seen.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "assistant"],
            "{store}: question, function call, its output, answer: {sdk}"
        );
        assert_eq!(
            seen[1]["tool_calls"],
            expected_tool_calls(fixture),
            "{store}: the SDK's function_call item is the recorded one"
        );
        assert_eq!(
            seen[3]["content"],
            mock_upstream::answer(3),
            "{store}: the non-streamed answer's output_text"
        );
        assert_session_header(&sdk, store, "sdk-responses-tools");
        assert_history_is_what_the_sdk_saw(&tether, store, "sdk-responses-tools", &sdk).await;
    }
}

#[tokio::test]
async fn a_non_streamed_responses_conversation_is_stored_with_its_instructions() {
    let mock = MockUpstream::start().await;
    for (tether, redis) in both_stores(&mock.url(), |_| {}).await {
        let store = store_name(&redis);
        let sdk = run_sdk("responses_nonstream.py", &tether, "sdk-responses-plain").await;
        let seen = sdk_messages(&sdk);
        assert_eq!(seen.len(), 5, "{store}: instructions + 2 turns: {sdk}");
        for (turn, (reply, chunks)) in replies(&sdk).iter().zip([2u64, 3]).enumerate() {
            assert_eq!(
                reply["output_text"],
                mock_upstream::answer(chunks),
                "{store}: reply {turn}'s output_text"
            );
            assert_eq!(reply["status"], "completed", "{store}: reply {turn}");
        }
        assert_session_header(&sdk, store, "sdk-responses-plain");
        let stored =
            assert_history_is_what_the_sdk_saw(&tether, store, "sdk-responses-plain", &sdk).await;
        assert_eq!(
            stored.iter().filter(|m| m["role"] == "system").count(),
            1,
            "{store}: the instructions, sent every turn, are stored once"
        );
    }
}

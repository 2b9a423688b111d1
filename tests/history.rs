//! Recording: every conversation through tether becomes chat history, kept
//! once per message, per session and tenant, readable through the history
//! routes. Each scenario runs on the in-memory store and on a real Redis.

mod common;

use std::time::Duration;

use common::history::{KEY, conversation, get, metrics, wait_for_messages};
use common::{MockUpstream, Tether, both_stores, client, mock_upstream};
use serde_json::{Value, json};

/// A tether on each store kind: the embedded one and a real redis-server.
async fn chat(
    tether: &Tether,
    key: &str,
    session: &str,
    messages: &Value,
    stream: bool,
) -> reqwest::Response {
    client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-session-id", session)
        .header("x-mock-chunks", "3")
        .json(&json!({"model": "mock-model", "stream": stream, "messages": messages}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_ten_turn_conversation_is_stored_as_its_21_messages() {
    let mock = MockUpstream::start().await;
    for (tether, _redis) in both_stores(&mock.url(), |_| {}).await {
        let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
        for turn in 0..10 {
            messages.push(json!({"role": "user", "content": format!("question {turn}")}));
            let response = chat(
                &tether,
                KEY,
                "ten-turns",
                &Value::Array(messages.clone()),
                turn % 2 == 0,
            )
            .await;
            assert_eq!(response.headers()["x-session-id"], "ten-turns");
            let body = response.text().await.unwrap();
            assert!(body.contains("tok0"), "{body}");
            messages.push(json!({"role": "assistant", "content": mock_upstream::answer(3)}));
            wait_for_messages(&tether, KEY, "ten-turns", messages.len()).await;
        }
        let stored = wait_for_messages(&tether, KEY, "ten-turns", 21).await;
        assert_eq!(
            conversation(&stored),
            messages,
            "history is the conversation, each message once"
        );
        let reply = &stored[2];
        assert_eq!(reply["model"], "mock-model");
        assert_eq!(reply["finish_reason"], "stop");
        assert_eq!(reply["complete"], true);
        assert!(reply["timestamp"].as_str().unwrap().ends_with('Z'));
        let (_, info) = get(&tether, KEY, "/sessions/ten-turns").await;
        assert_eq!(info["message_count"], 21);
        assert_eq!(info["models"], json!(["mock-model"]));
        assert_eq!(
            info["usage"]["completion_tokens"], 15,
            "5 non-streamed replies report usage: {info}"
        );
    }
}

#[tokio::test]
async fn the_session_comes_from_header_path_metadata_user_or_is_generated() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.sessions.from_user = true).await;
    let ask = |path: &'static str, header: Option<&'static str>, extra: Value| {
        let tether = &tether;
        async move {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let mut request = client().post(tether.url(path)).bearer_auth(KEY).json(&body);
            if let Some(session) = header {
                request = request.header("x-session-id", session);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-session-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(
        ask("/v1/chat/completions", Some("from-header"), json!({})).await,
        "from-header"
    );
    assert_eq!(
        ask("/s/from-path/v1/chat/completions", None, json!({})).await,
        "from-path"
    );
    assert_eq!(
        ask(
            "/v1/chat/completions",
            None,
            json!({"metadata": {"session_id": "from-metadata"}, "user": "u"})
        )
        .await,
        "from-metadata"
    );
    assert_eq!(
        ask("/v1/chat/completions", None, json!({"user": "alice"})).await,
        "alice"
    );
    let hashed = ask(
        "/v1/chat/completions",
        None,
        json!({"user": "alice@example.com"}),
    )
    .await;
    assert!(hashed.starts_with("user-"), "{hashed}");
    let generated = ask("/v1/chat/completions", None, json!({})).await;
    assert_eq!(generated.len(), 36, "a generated id: {generated}");
    wait_for_messages(&tether, KEY, &generated, 2).await;
    let bad = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "m", "metadata": {"session_id": "bad id!"}, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad.status(),
        400,
        "an invalid session id in the body is refused"
    );
}

/// Real provider streams, replayed: the reply is rebuilt for each API,
/// tool calls in the OpenAI message shape.
#[tokio::test]
async fn replies_of_every_api_are_assembled_from_real_streams() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let cases = [
        (
            "/v1/chat/completions",
            "openai-chat-parallel_tools-1.sse",
            json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "weather and stock"}]}),
        ),
        (
            "/v1/responses",
            "openai-responses-function_call-1.sse",
            json!({"model": "gpt-4o", "stream": true, "input": "capital of France?"}),
        ),
        (
            "/v1/messages",
            "anthropic-messages-parallel_tool_use-1.sse",
            json!({"model": "claude", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "secrets"}]}),
        ),
        (
            "/v1/messages",
            "anthropic-messages-tool_use_gzip-1.sse.gz",
            json!({"model": "claude", "stream": true, "max_tokens": 100, "messages": [{"role": "user", "content": "pelican"}]}),
        ),
    ];
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/streams/expected.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for (i, (path, fixture, body)) in cases.iter().enumerate() {
        let session = format!("replay-{i}");
        let response = client()
            .post(tether.url(path))
            .bearer_auth(KEY)
            .header("x-session-id", &session)
            .header("x-mock-replay", *fixture)
            .json(body)
            .send()
            .await
            .unwrap();
        response.bytes().await.unwrap();
        let stored = wait_for_messages(&tether, KEY, &session, 2).await;
        let reply = &stored[1];
        let want = &expected[fixture.trim_end_matches(".gz")];
        assert_eq!(reply["role"], "assistant", "{fixture}");
        assert_eq!(reply["content"], want["content"], "{fixture}");
        let calls = reply["tool_calls"].as_array().cloned().unwrap_or_default();
        let want_calls = want["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), want_calls.len(), "{fixture}: {reply}");
        for (call, want) in calls.iter().zip(want_calls) {
            assert_eq!(call["type"], "function");
            assert_eq!(call["id"], want["id"], "{fixture}");
            assert_eq!(call["function"]["name"], want["name"], "{fixture}");
            assert_eq!(
                call["function"]["arguments"], want["arguments"],
                "{fixture}"
            );
        }
        assert_eq!(reply["complete"], true, "{fixture}");
    }
}

#[tokio::test]
async fn what_cannot_be_parsed_or_is_declined_is_forwarded_and_not_recorded() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let broken = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", "broken")
        .body("{this is not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        broken.status(),
        200,
        "the mock answered: the request was forwarded"
    );
    assert_eq!(
        mock.last_request().body,
        "{this is not json",
        "forwarded byte for byte"
    );
    let declined = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", "declined")
        .header("x-tether-record", "off")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "secret"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 200);
    declined.bytes().await.unwrap();
    let failed = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", "failed")
        .header("x-mock-status", "429")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 429);
    assert_eq!(failed.headers()["x-session-id"], "failed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for session in ["broken", "declined", "failed"] {
        let (status, _) = get(&tether, KEY, &format!("/history/{session}")).await;
        assert_eq!(status, 404, "{session} was not recorded");
    }
    let metrics = metrics(&tether, KEY).await;
    assert!(
        metrics.contains("tether_recording_skipped_total{reason=\"invalid_json\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tether_recording_skipped_total{reason=\"upstream_status\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_reply_larger_than_the_recording_limit_reaches_the_client_whole_and_is_stored_as_incomplete()
 {
    let mock = MockUpstream::start().await;
    for (tether, _redis) in both_stores(&mock.url(), |s| s.record.max_response_bytes = 4096).await {
        let question = json!([{"role": "user", "content": "a long answer, please"}]);
        let response = client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", "long-answer")
            .header("x-mock-chunks", "2000")
            .json(&json!({"model": "mock-model", "messages": question}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.len() > 8192, "the reply is over the limit");
        assert_eq!(
            content,
            mock_upstream::answer(2000),
            "the client got it whole"
        );

        let stored = wait_for_messages(&tether, KEY, "long-answer", 2).await;
        assert_eq!(stored[0]["content"], "a long answer, please");
        assert_eq!(stored[1]["role"], "assistant");
        assert_eq!(stored[1]["complete"], false, "{}", stored[1]);
        let metrics = metrics(&tether, KEY).await;
        assert!(
            metrics.contains("tether_recording_incomplete_total{reason=\"too_large\"} 1"),
            "{metrics}"
        );

        // A stream over the limit: the client gets every event, history the
        // part of the answer that came before the limit.
        let response = client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", "long-stream")
            .header("x-mock-chunks", "2000")
            .json(&json!({"model": "mock-model", "stream": true, "messages": question}))
            .send()
            .await
            .unwrap();
        let streamed = response.text().await.unwrap();
        assert_eq!(
            streamed.matches("tok1999").count(),
            1,
            "every event arrived"
        );
        assert!(streamed.ends_with("data: [DONE]\n\n"));
        let stored = wait_for_messages(&tether, KEY, "long-stream", 2).await;
        let kept = stored[1]["content"].as_str().unwrap();
        assert!(!kept.is_empty() && kept.len() < 4096, "{kept}");
        assert!(mock_upstream::answer(2000).starts_with(kept), "{kept}");
        assert_eq!(stored[1]["complete"], false);
    }
}

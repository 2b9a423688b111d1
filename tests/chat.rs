//! Stateful chat over a stateless upstream: `/tether/chat` and
//! `/tether/simple-chat` prepend the stored history, call the upstream with
//! the caller's key, record both sides, and answer in the seed service's
//! shape once the turn is stored.

mod common;

use common::history::{KEY, get};
use common::{MockUpstream, Tether, client, mock_upstream};
use serde_json::{Value, json};

async fn chat(tether: &Tether, body: Value) -> (u16, Value) {
    let response = client()
        .post(tether.url("/tether/chat"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_conversation_over_tether_chat_keeps_its_history_and_sends_it_as_context() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let (status, first) = chat(
        &tether,
        json!({"message": "What is Rust?", "model": "mock-model", "session_id": "stateful", "system": "Be brief."}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["message"], mock_upstream::answer(5));
    assert_eq!(first["model"], "mock-model");
    assert_eq!(first["finish_reason"], "stop");
    assert_eq!(first["tokens_used"], 8);
    assert_eq!(first["session_id"], "stateful");
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));

    // Stored before the answer came back: no waiting needed.
    let (_, history) = get(&tether, KEY, "/history/stateful").await;
    let roles: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant"], "{history}");

    let (status, _) = chat(
        &tether,
        json!({"message": "And Go?", "model": "mock-model", "session_id": "stateful"}),
    )
    .await;
    assert_eq!(status, 200);
    let sent: Value = serde_json::from_slice(&mock.last_request().body).unwrap();
    let contents: Vec<_> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        contents,
        [
            "Be brief.",
            "What is Rust?",
            &mock_upstream::answer(5),
            "And Go?"
        ],
        "the history goes along as context"
    );
    assert!(
        sent["messages"][1].get("timestamp").is_none(),
        "only the OpenAI message fields go upstream"
    );
    assert_eq!(
        mock.last_request().headers["authorization"],
        format!("Bearer {KEY}"),
        "with the caller's own key"
    );
    let (_, history) = get(&tether, KEY, "/history/stateful").await;
    assert_eq!(history["message_count"], 5);
}

#[tokio::test]
async fn long_histories_are_cut_from_the_oldest_turns_keeping_the_system_message() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.chat.max_context_messages = 2).await;
    for question in ["one", "two", "three"] {
        let (status, _) = chat(
            &tether,
            json!({"message": question, "model": "m", "session_id": "trimmed", "system": "sys"}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let sent: Value = serde_json::from_slice(&mock.last_request().body).unwrap();
    let contents: Vec<_> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(contents, ["sys", "two", &mock_upstream::answer(5), "three"]);
}

#[tokio::test]
async fn simple_chat_takes_the_query_string_and_a_stream_is_resumable() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let response = client()
        .post(tether.url("/tether/simple-chat?message=Hello&session_id=simple&model=mock-model"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-session-id"], "simple");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["message"], mock_upstream::answer(5));

    let streamed = client()
        .post(tether.url("/tether/chat"))
        .bearer_auth(KEY)
        .json(&json!({"message": "stream it", "model": "mock-model", "session_id": "simple", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.headers()["content-type"], "text/event-stream");
    let id = streamed.headers()["x-stream-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = streamed.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"));
    let replay = client()
        .get(tether.url(&format!("/tether/streams/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        replay.text().await.unwrap(),
        body,
        "the chat stream resumes like any other"
    );
    common::history::wait_for_messages(&tether, KEY, "simple", 4).await;
}

#[tokio::test]
async fn bad_chat_requests_and_upstream_failures_are_clear_errors() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    for (body, why) in [
        (json!({"model": "m"}), "no message"),
        (
            json!({"message": "hi"}),
            "no model and no chat.default_model",
        ),
        (json!({"message": "", "model": "m"}), "empty message"),
        (
            json!({"message": "hi", "model": "m", "session_id": "bad id"}),
            "bad session id",
        ),
        (
            json!({"message": "hi", "model": "m", "unknown": 1}),
            "unknown field",
        ),
    ] {
        let (status, error) = chat(&tether, body).await;
        assert_eq!(status, 400, "{why}: {error}");
        assert!(error["error"]["message"].is_string(), "{why}");
    }
    let anonymous = client()
        .post(tether.url("/tether/chat"))
        .json(&json!({"message": "hi", "model": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = Tether::start(&format!("http://127.0.0.1:{port}")).await;
    let (status, error) = chat(&down, json!({"message": "hi", "model": "m"})).await;
    assert_eq!(status, 502, "{error}");
    let defaulted = Tether::start_with(&mock.url(), |s| {
        s.chat.default_model = "fallback-model".into()
    })
    .await;
    let (status, answer) = chat(&defaulted, json!({"message": "hi"})).await;
    assert_eq!(status, 200);
    assert_eq!(answer["model"], "fallback-model");
}

//! `record.include_usage = true`: a streamed chat that does not ask for
//! usage is sent upstream asking for it; the client gets the upstream's
//! stream without the usage chunk (byte for byte otherwise, live and on
//! resume); history has the usage. A client that asks for usage itself,
//! and every client when the key is off, are forwarded untouched.

mod common;

use common::history::{KEY, get, wait_for_messages};
use common::{MockUpstream, RedisServer, Tether, client};
use serde_json::{Value, json};

async fn stream(tether: &Tether, session: &str, body: &Value) -> reqwest::Response {
    client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", session)
        .header("x-mock-chunks", "6")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// What the mock upstream streams for `body`, asked directly.
async fn upstream_stream(mock: &MockUpstream, body: &Value) -> String {
    client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .header("x-mock-chunks", "6")
        .json(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn chat(stream_options: Option<Value>) -> Value {
    let mut body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    if let Some(options) = stream_options {
        body["stream_options"] = options;
    }
    body
}

async fn usage_of(tether: &Tether, session: &str) -> Value {
    wait_for_messages(tether, KEY, session, 2).await;
    get(tether, KEY, &format!("/sessions/{session}")).await.1["usage"].clone()
}

#[tokio::test]
async fn usage_is_asked_for_recorded_and_hidden_from_the_client() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), move |s| {
        s.record.include_usage = true;
        s.redis.url = url;
    })
    .await;

    let response = stream(&tether, "asked-by-tether", &chat(None)).await;
    let id = response.headers()["x-stream-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let received = response.text().await.unwrap();
    let sent: Value = serde_json::from_slice(&mock.last_request().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    assert_eq!(sent["messages"], chat(None)["messages"], "the rest as sent");

    let without_usage = upstream_stream(&mock, &chat(None)).await;
    let with_usage = upstream_stream(&mock, &chat(Some(json!({"include_usage": true})))).await;
    assert_ne!(with_usage, without_usage);
    assert_eq!(
        received, without_usage,
        "the client gets the stream it asked for, byte for byte"
    );
    assert_eq!(
        usage_of(&tether, "asked-by-tether").await,
        json!({"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}),
        "usage recorded"
    );
    let resumed = client()
        .get(tether.url(&format!("/tether/streams/{id}?after=0")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(resumed, without_usage, "a resume does not show it either");

    // A client that asks for usage gets it, and its request untouched.
    let own = chat(Some(json!({"include_usage": true})));
    let received = stream(&tether, "asked-by-client", &own)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(received, with_usage);
    assert_eq!(
        mock.last_request().body,
        serde_json::to_vec(&own).unwrap(),
        "forwarded untouched"
    );
    assert_eq!(
        usage_of(&tether, "asked-by-client").await["total_tokens"],
        9
    );
}

#[tokio::test]
async fn with_the_key_off_requests_pass_untouched() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let received = stream(&tether, "off", &chat(None))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        mock.last_request().body,
        serde_json::to_vec(&chat(None)).unwrap()
    );
    assert_eq!(received, upstream_stream(&mock, &chat(None)).await);
    assert_eq!(
        usage_of(&tether, "off").await["total_tokens"],
        0,
        "none sent, none recorded"
    );
}

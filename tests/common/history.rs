//! Reading what tether recorded, as a client of its own routes would.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Tether, client};
use serde_json::json;

/// The key tests use unless they are about tenants.
pub const KEY: &str = "sk-test-key-1";

/// `GET {prefix}{path}` with `key` as the bearer credential; status and JSON.
pub async fn get(tether: &Tether, key: &str, path: &str) -> (u16, Value) {
    call(reqwest::Method::GET, tether, key, path).await
}

/// `DELETE {prefix}{path}`, the same way.
pub async fn delete(tether: &Tether, key: &str, path: &str) -> (u16, Value) {
    call(reqwest::Method::DELETE, tether, key, path).await
}

async fn call(method: reqwest::Method, tether: &Tether, key: &str, path: &str) -> (u16, Value) {
    let response = client()
        .request(method, tether.url(&format!("/tether{path}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The Prometheus text of `/tether/metrics`, read with `key`.
pub async fn metrics(tether: &Tether, key: &str) -> String {
    let (status, body) = get(tether, key, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    match body {
        Value::String(text) => text,
        other => panic!("metrics are text, not {other}"),
    }
}

/// The value of the first metric line that starts with `name` (0 when none).
pub async fn metric(tether: &Tether, key: &str, name: &str) -> u64 {
    metrics(tether, key)
        .await
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Polls the session's history until it holds `count` messages (recording
/// is asynchronous: it lands milliseconds after the response ends).
pub async fn wait_for_messages(
    tether: &Tether,
    key: &str,
    session: &str,
    count: usize,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(tether, key, &format!("/history/{session}?limit=1000")).await;
        if status == 200 && body["messages"].as_array().map(Vec::len) == Some(count) {
            return body["messages"].as_array().unwrap().clone();
        }
        assert!(
            Instant::now() < deadline,
            "session {session} never reached {count} messages; last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Only role, content and tool calls: what a conversation is, without the
/// fields tether adds (timestamps, model, usage, index).
pub fn conversation(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let mut out = serde_json::Map::new();
            for key in ["role", "content", "tool_calls", "tool_call_id"] {
                if let Some(v) = m.get(key).filter(|v| !v.is_null()) {
                    out.insert(key.into(), v.clone());
                }
            }
            Value::Object(out)
        })
        .collect()
}

/// Sends one user message as a streamed chat turn of 2 mock chunks in
/// `session`, with the test key; returns the response unread.
pub async fn user_turn(tether: &Tether, session: &str, text: &str) -> reqwest::Response {
    client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", session)
        .header("x-mock-chunks", "2")
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": text}]}),
        )
        .send()
        .await
        .unwrap()
}

/// A turn of one user message, `content`, under the id `id`: what a test
/// of the store itself writes.
pub fn question(id: &str, content: &str) -> tether::store::Turn {
    tether::store::Turn {
        id: id.into(),
        messages: vec![json!({"role": "user", "content": content}).into()],
        at_ms: 1,
        ..tether::store::Turn::default()
    }
}

/// The `content` of every message `store` holds for `session`, in order:
/// what a test of the store itself reads back.
pub async fn stored_contents(
    store: &dyn tether::store::Store,
    tenant: &tether::tenant::Tenant,
    session: &tether::session::SessionId,
) -> Vec<String> {
    let stored = store
        .read_messages(tenant, session, tether::store::MessageRange::All)
        .await
        .unwrap()
        .expect("the session is stored");
    stored
        .messages
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

//! Streams as a client drives them: start a recorded chat stream through a
//! tether, read some of its events, count them.

use std::time::Duration;

use serde_json::json;

use super::history::KEY;
use super::{Tether, client};

/// Starts a streamed chat of `chunks` chunks, `delay_ms` apart, in
/// `session`, through the tether at `base` (`http://host:port`).
pub async fn start_stream(
    base: &str,
    session: &str,
    chunks: u32,
    delay_ms: u32,
) -> reqwest::Response {
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", session)
        .header("x-mock-chunks", chunks.to_string())
        .header("x-mock-delay-ms", delay_ms.to_string())
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "tell me a story"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().contains_key("x-stream-id"),
        "a recorded stream names its id"
    );
    response
}

/// SSE events (blank-line terminated) in `bytes`.
pub fn events_in(bytes: &[u8]) -> usize {
    bytes.windows(2).filter(|w| w == b"\n\n").count()
}

/// Reads until at least `n` whole events have arrived and returns the bytes
/// (a read can bring several events: count them with [`events_in`]).
pub async fn read_events(response: &mut reqwest::Response, n: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    while events_in(&bytes) < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("events keep coming")
            .unwrap()
            .expect("the stream ended early");
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

/// Drops `stream` after `have` events and reads the rest through `other`;
/// the union must be the whole stream, byte for byte.
pub async fn resume_elsewhere(mut stream: reqwest::Response, have: usize, other: &Tether) {
    let id = stream.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let head = read_events(&mut stream, have).await;
    let have = events_in(&head);
    let rest = client()
        .get(other.url(&format!("/tether/streams/{id}?after={have}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let mut original = head.clone();
    original.extend_from_slice(&stream.bytes().await.unwrap());
    let mut union = head;
    union.extend_from_slice(&rest.bytes().await.unwrap());
    assert!(
        union == original,
        "resumed through the other replica, byte for byte"
    );
}

//! Streams as a client drives them: start a recorded chat stream through a
//! tether, read some of its events, count them.

use std::time::Duration;

use serde_json::json;

use super::client;
use super::history::KEY;

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

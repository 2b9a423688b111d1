//! What the integration tests share: a mock OpenAI-compatible upstream, a
//! real redis-server on a free port, and tether running in-process.
#![allow(dead_code, unused_imports)]

pub mod history;
pub mod mock_upstream;
pub mod process;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod sdk;
pub mod streams;
pub mod tether;
pub mod tools;

pub use mock_upstream::MockUpstream;
pub use redis_server::RedisServer;
pub use tether::{Tether, both_stores};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP client that neither decompresses nor follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A chat completion request (`chat_body`) through `tether`.
pub async fn post_chat(tether: &Tether, stream: bool) -> reqwest::Response {
    client()
        .post(tether.url("/v1/chat/completions"))
        .body(chat_body(stream))
        .send()
        .await
        .unwrap()
}

/// The body of a chat completion request.
pub fn chat_body(stream: bool) -> String {
    serde_json::json!({
        "model": "mock-model",
        "stream": stream,
        "messages": [{"role": "user", "content": "hello"}]
    })
    .to_string()
}

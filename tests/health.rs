//! Probes: healthz answers while the process runs; readyz reports the store,
//! and follows a real Redis going away and coming back. Forwarding never
//! depends on Redis.

mod common;

use std::time::{Duration, Instant};

use common::{MockUpstream, RedisServer, Tether, chat_body, client};

async fn readyz(tether: &Tether) -> (u16, serde_json::Value) {
    let response = client()
        .get(tether.url("/tether/readyz"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls readyz until it answers `status`, for up to 10 s.
async fn wait_ready(tether: &Tether, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = readyz(tether).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readyz stayed {got} ({body}), wanted {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn healthz_and_readyz_with_the_in_memory_store() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let health = client()
        .get(tether.url("/tether/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, body) = readyz(&tether).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"store": "memory", "connected": true, "history_queue": 0})
    );
    assert!(
        mock.requests().is_empty(),
        "probes never reach the upstream"
    );
}

#[tokio::test]
async fn readyz_follows_redis_down_and_back_while_forwarding_goes_on() {
    let mock = MockUpstream::start().await;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), |s| {
        s.redis.url = url;
        s.redis.command_timeout_ms = 300;
        s.redis.connect_timeout_ms = 300;
    })
    .await;
    let body = wait_ready(&tether, 200).await;
    assert_eq!(
        body,
        serde_json::json!({"store": "redis", "connected": true, "history_queue": 0})
    );

    redis.kill();
    let body = wait_ready(&tether, 503).await;
    assert_eq!(body["store"], "redis");
    assert_eq!(body["connected"], false);
    let forwarded = client()
        .post(tether.url("/v1/chat/completions"))
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 200, "forwarding does not need Redis");
    assert!(
        forwarded
            .text()
            .await
            .unwrap()
            .ends_with("data: [DONE]\n\n")
    );

    redis.restart();
    wait_ready(&tether, 200).await;
}

#[tokio::test]
async fn tether_starts_and_serves_when_redis_is_down_at_start() {
    let mock = MockUpstream::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tether = Tether::start_with(&mock.url(), |s| {
        s.redis.url = format!("redis://127.0.0.1:{port}");
        s.redis.connect_timeout_ms = 200;
    })
    .await;
    let (status, body) = readyz(&tether).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "readyz says why: {body}");
    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the proxy serves without Redis");
}

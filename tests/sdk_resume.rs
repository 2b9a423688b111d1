//! The official OpenAI Python SDK streams a 500-chunk answer through tether,
//! drops the connection after 100 chunks and resumes with `after=100`: the
//! union of both parts is the full answer exactly, and history holds it
//! once. On the memory store from the same replica; on Redis from another.

mod common;

use common::history::{KEY, wait_for_messages};
use common::sdk::run_sdk_with;
use common::{MockUpstream, RedisServer, Tether, mock_upstream};

async fn check(sdk: &serde_json::Value, tether: &Tether, session: &str, label: &str) {
    let first = sdk["first"].as_array().unwrap();
    let resumed = sdk["resumed"].as_array().unwrap();
    assert_eq!(
        first.len(),
        100,
        "{label}: the SDK read 100 chunks before the drop"
    );
    let union: String = first
        .iter()
        .chain(resumed)
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        union,
        mock_upstream::answer(500),
        "{label}: both parts together are the full answer, exactly"
    );
    assert_eq!(
        sdk["replies"][0]["finish_reason"], "stop",
        "{label}: the resumed part runs to the end"
    );
    let stored = wait_for_messages(tether, KEY, session, 2).await;
    assert_eq!(
        stored[1]["content"],
        mock_upstream::answer(500),
        "{label}: history holds the full answer"
    );
    assert_eq!(stored[1]["complete"], true, "{label}");
    assert_eq!(stored[1]["stream_id"], sdk["stream_id"], "{label}");
}

#[tokio::test]
async fn the_sdk_resumes_a_dropped_stream_on_the_same_replica() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let sdk = run_sdk_with("chat_resume.py", &[&tether.url(""), KEY, "sdk-resume"], &[]).await;
    check(&sdk, &tether, "sdk-resume", "memory").await;
}

#[tokio::test]
async fn the_sdk_resumes_a_dropped_stream_on_another_replica() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let (url_a, url_b) = (redis.url(), redis.url());
    let a = Tether::start_with(&mock.url(), |s| s.redis.url = url_a).await;
    let b = Tether::start_with(&mock.url(), |s| s.redis.url = url_b).await;
    let sdk = run_sdk_with(
        "chat_resume.py",
        &[&a.url(""), KEY, "sdk-cross"],
        &[("TETHER_RESUME_BASE_URL", &b.url(""))],
    )
    .await;
    check(&sdk, &a, "sdk-cross", "redis, resumed on B").await;
}

//! Resumable streams: a client that lost its connection resumes the answer
//! where it left off, byte-identical, live to the end, on the same replica
//! or another one; several clients follow one stream; a stream can be
//! cancelled; finished streams expire.

mod common;

use std::time::{Duration, Instant};

use common::history::{KEY, get, wait_for_messages};
use common::streams::{events_in, read_events, start_stream};
use common::{MockUpstream, RedisServer, Tether, client, mock_upstream};
use serde_json::json;

async fn resume(tether: &Tether, path: &str) -> reqwest::Response {
    client()
        .get(tether.url(&format!("/tether{path}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
}

/// What the upstream sends for a mock stream of `n` chunks, straight from it.
async fn direct_body(mock: &MockUpstream, n: u32) -> Vec<u8> {
    let response = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .header("x-mock-chunks", n.to_string())
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "tell me a story"}]}))
        .send()
        .await
        .unwrap();
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_dropped_client_resumes_after_n_events_byte_for_byte() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let mut first = start_stream(&tether.url(""), "story", 60, 10).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let head = read_events(&mut first, 20).await;
    let have = events_in(&head);
    drop(first);

    let resumed = resume(&tether, &format!("/streams/{id}?after={have}")).await;
    assert_eq!(resumed.status(), 200);
    assert_eq!(resumed.headers()["content-type"], "text/event-stream");
    assert_eq!(resumed.headers()["x-session-id"], "story");
    let rest = resumed.bytes().await.unwrap();
    let mut whole = head;
    whole.extend_from_slice(&rest);
    assert!(
        whole == direct_body(&mock, 60).await,
        "what the client got before and after the drop is the upstream's stream exactly"
    );

    let stored = wait_for_messages(&tether, KEY, "story", 2).await;
    assert_eq!(
        stored[1]["content"],
        mock_upstream::answer(60),
        "history holds the full answer once"
    );
    assert_eq!(stored[1]["stream_id"], id.as_str());
    let (_, status) = get(&tether, KEY, &format!("/streams/{id}/status")).await;
    assert_eq!(status["state"], "done");
    assert_eq!(status["events"], 61, "60 chunks and [DONE]");
}

#[tokio::test]
async fn three_followers_of_a_live_stream_get_the_same_bytes() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let first = start_stream(&tether.url(""), "live", 40, 15).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let url = tether.url(&format!("/tether/streams/{id}"));
            tokio::spawn(async move {
                client()
                    .get(url)
                    .bearer_auth(KEY)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let original = first.bytes().await.unwrap();
    for follower in followers {
        let got = follower.await.unwrap();
        assert!(
            got == original,
            "a follower from event 0 gets the original bytes ({} vs {})",
            got.len(),
            original.len()
        );
    }
}

#[tokio::test]
async fn event_ids_for_eventsource_clients() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let first = start_stream(&tether.url(""), "ids", 5, 0).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    first.bytes().await.unwrap();

    let with_ids = resume(&tether, &format!("/streams/{id}?ids=true"))
        .await
        .text()
        .await
        .unwrap();
    let ids: Vec<&str> = with_ids.lines().filter(|l| l.starts_with("id: ")).collect();
    assert_eq!(
        ids,
        ["id: 1", "id: 2", "id: 3", "id: 4", "id: 5", "id: 6"],
        "{with_ids}"
    );
    let after_3 = client()
        .get(tether.url(&format!("/tether/streams/{id}")))
        .bearer_auth(KEY)
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        after_3.starts_with("id: 4\ndata: "),
        "Last-Event-ID resumes after it, with ids: {after_3}"
    );
    assert!(after_3.ends_with("id: 6\ndata: [DONE]\n\n"));
}

#[tokio::test]
async fn a_session_id_alone_finds_its_stream() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let none = resume(&tether, "/sessions/quiet/stream").await;
    assert_eq!(none.status(), 204, "no stream for this session");

    let mut first = start_stream(&tether.url(""), "page-load", 30, 10).await;
    let head = read_events(&mut first, 5).await;
    let have = events_in(&head);
    drop(first);
    let resumed = resume(&tether, &format!("/sessions/page-load/stream?after={have}")).await;
    assert_eq!(resumed.status(), 200);
    let mut whole = head;
    whole.extend_from_slice(&resumed.bytes().await.unwrap());
    assert!(
        whole == direct_body(&mock, 30).await,
        "the page picks up the answer still in flight"
    );

    let other_tenant = client()
        .get(tether.url("/tether/sessions/page-load/stream"))
        .bearer_auth("sk-someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(
        other_tenant.status(),
        204,
        "another tenant's session has no stream for it"
    );
}

/// A session's summary names its stream while it is in flight, then none.
async fn check_active_stream(tether: &Tether, label: &str) {
    let (_, before) = get(tether, KEY, "/sessions/busy").await;
    assert_eq!(
        before["active_stream"],
        json!(null),
        "{label}: nothing in flight yet"
    );
    let mut response = start_stream(&tether.url(""), "busy", 30, 20).await;
    let id = response.headers()["x-stream-id"]
        .to_str()
        .unwrap()
        .to_owned();
    read_events(&mut response, 2).await;
    let (_, during) = get(tether, KEY, "/sessions/busy").await;
    assert_eq!(
        during["active_stream"],
        json!(id),
        "{label}: the stream in flight"
    );
    response.bytes().await.unwrap();
    wait_for_messages(tether, KEY, "busy", 4).await;
    let (_, after) = get(tether, KEY, "/sessions/busy").await;
    assert_eq!(
        after["active_stream"],
        json!(null),
        "{label}: none once it ended"
    );
}

#[tokio::test]
async fn a_session_names_its_active_stream_on_both_stores() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let memory = Tether::start(&mock.url()).await;
    let on_redis = Tether::start_with(&mock.url(), |s| s.redis.url = redis_url).await;
    for (tether, label) in [(&memory, "memory"), (&on_redis, "redis")] {
        start_stream(&tether.url(""), "busy", 1, 0)
            .await
            .bytes()
            .await
            .unwrap();
        wait_for_messages(tether, KEY, "busy", 2).await;
        check_active_stream(tether, label).await;
    }
}

#[tokio::test]
async fn unknown_and_foreign_streams_are_404() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let first = start_stream(&tether.url(""), "mine", 3, 0).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    first.bytes().await.unwrap();
    for path in [
        "/streams/0123456789abcdef0123456789abcdef",
        "/streams/..%2F..%2Fetc",
        "/streams/0123/status",
    ] {
        let (status, body) = get(&tether, KEY, path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    for path in [format!("/streams/{id}"), format!("/streams/{id}/status")] {
        let (status, _) = get(&tether, "sk-another-tenant", &path).await;
        assert_eq!(
            status, 404,
            "{path}: another tenant's stream does not exist for it"
        );
    }
    let (status, _) = get(&tether, KEY, &format!("/streams/{id}?after=x")).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn cancel_closes_the_upstream_and_records_the_partial_answer() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let mut first = start_stream(&tether.url(""), "cancelled", 200, 20).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let have = events_in(&read_events(&mut first, 3).await);
    let follower = {
        let url = tether.url(&format!("/tether/streams/{id}?after={have}"));
        tokio::spawn(async move {
            client()
                .get(url)
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
        })
    };

    let cancelled_at = Instant::now();
    let cancel = client()
        .delete(tether.url(&format!("/tether/streams/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let body: serde_json::Value = cancel.json().await.unwrap();
    assert_eq!(body["state"], "cancelled", "{body}");
    let again = client()
        .delete(tether.url(&format!("/tether/streams/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "cancel is idempotent");

    let rest = tokio::time::timeout(Duration::from_secs(5), first.bytes())
        .await
        .expect("the client's stream ends");
    assert!(rest.is_ok(), "the first client gets a clean end");
    let followed = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("followers end too");
    assert!(followed.unwrap().is_ok());
    let deadline = Instant::now() + Duration::from_secs(2);
    while mock.abandoned_streams().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the upstream connection was not closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        mock.abandoned_streams()[0] - cancelled_at < Duration::from_secs(1),
        "closed within a second"
    );
    let stored = wait_for_messages(&tether, KEY, "cancelled", 2).await;
    assert_eq!(
        stored[1]["complete"], false,
        "the partial reply is recorded as incomplete"
    );
    assert!(
        stored[1]["content"]
            .as_str()
            .unwrap()
            .starts_with("tok0 tok1 tok2 ")
    );
}

#[tokio::test]
async fn a_client_leaving_with_policy_cancel_closes_the_upstream_within_a_second() {
    let mock = MockUpstream::start().await;
    let tether =
        Tether::start_with(&mock.url(), |s| s.streams.on_disconnect = "cancel".into()).await;
    let mut first = start_stream(&tether.url(""), "leaver", 200, 20).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    read_events(&mut first, 2).await;
    let left_at = Instant::now();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(2);
    while mock.abandoned_streams().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the upstream connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(mock.abandoned_streams()[0] - left_at < Duration::from_secs(1));
    wait_for_messages(&tether, KEY, "leaver", 2).await;
    let (_, status) = get(&tether, KEY, &format!("/streams/{id}/status")).await;
    assert_eq!(status["state"], "cancelled");
}

#[tokio::test]
async fn finished_streams_expire_after_the_retention() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), |s| {
        s.redis.url = url;
        s.streams.retention_secs = 1;
    })
    .await;
    let first = start_stream(&tether.url(""), "brief", 3, 0).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    first.bytes().await.unwrap();
    wait_for_messages(&tether, KEY, "brief", 2).await;
    let (status, _) = get(&tether, KEY, &format!("/streams/{id}/status")).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = get(&tether, KEY, &format!("/streams/{id}")).await;
    assert_eq!(status, 404, "expired: {body}");
    let keys = redis
        .cli(&["--scan", "--pattern", &format!("tether:{{x:{id}}}:*")])
        .unwrap();
    assert!(
        keys.trim().is_empty(),
        "its checkpoints are gone from Redis: {keys}"
    );
    let none = resume(&tether, "/sessions/brief/stream").await;
    assert_eq!(none.status(), 204, "and the session has no stream left");
}

/// With `streams.max_detached = 1`, a second client leaving mid-stream
/// cancels the oldest detached stream; the newer one is read to the end.
#[tokio::test]
async fn detached_streams_are_bounded_by_cancelling_the_oldest() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.streams.max_detached = 1).await;
    let mut older = start_stream(&tether.url(""), "older", 100, 20).await;
    let older_id = older.headers()["x-stream-id"].to_str().unwrap().to_owned();
    read_events(&mut older, 2).await;
    drop(older);
    let mut newer = start_stream(&tether.url(""), "newer", 20, 20).await;
    let newer_id = newer.headers()["x-stream-id"].to_str().unwrap().to_owned();
    read_events(&mut newer, 2).await;
    drop(newer);

    let older_reply = &wait_for_messages(&tether, KEY, "older", 2).await[1];
    assert_eq!(
        older_reply["complete"], false,
        "the oldest detached stream was cancelled: {older_reply}"
    );
    let (_, status) = get(&tether, KEY, &format!("/streams/{older_id}/status")).await;
    assert_eq!(status["state"], "cancelled");
    let newer_reply = &wait_for_messages(&tether, KEY, "newer", 2).await[1];
    assert_eq!(
        newer_reply["content"],
        mock_upstream::answer(20),
        "the newer one was read to the end"
    );
    let (_, status) = get(&tether, KEY, &format!("/streams/{newer_id}/status")).await;
    assert_eq!(status["state"], "done");
}

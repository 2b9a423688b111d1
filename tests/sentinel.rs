//! tether on a Sentinel-managed Redis: a `redis+sentinel://` URL (a dead
//! Sentinel listed first, the master's password, db 2) reaches the master
//! the Sentinel names; history and cross-replica resume work on it; and
//! when the master is killed and the Sentinel promotes its replica, a
//! stream in flight goes on untouched, what was recorded before is still
//! there, and tether writes, reads and resumes through the new master.

mod common;

use std::time::{Duration, Instant};

use common::history::{KEY, get, wait_for_messages};
use common::redis_sentinel::RedisSentinel;
use common::streams::{read_events, resume_elsewhere, start_stream};
use common::{MockUpstream, Tether, client, mock_upstream};

async fn on_sentinel(mock: &MockUpstream, url: &str) -> Tether {
    let url = url.to_owned();
    Tether::start_with(&mock.url(), move |s| {
        s.redis.url = url;
        s.redis.connect_timeout_ms = 500;
        s.redis.command_timeout_ms = 1000;
        s.streams.checkpoint_interval_ms = 50;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_resume_follow_the_master_through_a_sentinel_failover() {
    let mut redis = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap();
    let url = redis.url();
    let mock = MockUpstream::start().await;
    let (a, b) = (
        on_sentinel(&mock, &url).await,
        on_sentinel(&mock, &url).await,
    );

    for i in 0..4 {
        start_stream(&a.url(""), &format!("s{i}"), 3, 0)
            .await
            .bytes()
            .await
            .unwrap();
    }
    for i in 0..4 {
        wait_for_messages(&b, KEY, &format!("s{i}"), 2).await;
    }
    let keys = redis.master_cli(&["-n", "2", "DBSIZE"]).unwrap_or_default();
    assert!(
        keys.trim().parse::<u64>().unwrap_or(0) > 0,
        "the history is in db 2 of the master: {keys:?}"
    );
    resume_elsewhere(start_stream(&a.url(""), "before", 30, 10).await, 5, &b).await;

    // A stream in flight while the master dies and the replica takes over.
    let mut in_flight = start_stream(&a.url(""), "during", 60, 50).await;
    let mut received = read_events(&mut in_flight, 3).await;
    let old_master = redis.master_port;
    let killed = Instant::now();
    redis = tokio::task::spawn_blocking(move || {
        redis.fail_over();
        redis
    })
    .await
    .unwrap();
    println!(
        "the Sentinel promoted the replica {:?} after the kill of {old_master}",
        killed.elapsed()
    );
    received.extend_from_slice(&in_flight.bytes().await.unwrap());
    let upstream_sent = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .header("x-mock-chunks", "60")
        .json(&serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "tell me a story"}]}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        received == upstream_sent,
        "the client got the whole stream, byte for byte, through the failover"
    );

    // The first read after the failover is answered (the lost master is
    // noticed, looked up again and the read sent once more), with what
    // was written before the kill.
    let (status, body) = get(&b, KEY, "/history/s1").await;
    assert_eq!((status, &body["message_count"]), (200, &2.into()), "{body}");

    // History written through the failover.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&b, KEY, "/history/during").await;
        if status == 200 && body["message_count"] == 2 {
            assert_eq!(body["messages"][1]["content"], mock_upstream::answer(60));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the turn of the failover never landed: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "history written through the failover {:?} after the kill",
        killed.elapsed()
    );
    for i in 0..4 {
        wait_for_messages(&a, KEY, &format!("s{i}"), 2).await;
    }

    // Checkpoints, live tails and history on the new master.
    resume_elsewhere(start_stream(&b.url(""), "after", 30, 10).await, 5, &a).await;
    wait_for_messages(&a, KEY, "after", 2).await;

    // A cancel sent to B reaches the owner A at once: both listen on the
    // new master's pub/sub (the heartbeat fallback would take 5 s).
    let mut long = start_stream(&a.url(""), "cancelled", 500, 20).await;
    let id = long.headers()["x-stream-id"].to_str().unwrap().to_owned();
    read_events(&mut long, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // its record is written
    let asked = Instant::now();
    let cancel = client()
        .delete(b.url(&format!("/tether/streams/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    tokio::time::timeout(Duration::from_secs(10), long.bytes())
        .await
        .expect("the owner ends the stream")
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the cancel went over pub/sub, not the heartbeat: {:?}",
        asked.elapsed()
    );
    assert_eq!(
        redis.current_master_port(),
        Some(redis.replica_port),
        "all of it on the promoted replica"
    );
}

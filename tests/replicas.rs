//! Two tether replicas on one Redis: a stream that runs through one is
//! resumed through the other, byte-identical, live to the end; and when the
//! replica that owns a stream dies, the other reports it `interrupted` once
//! its heartbeat lapses and still serves what was checkpointed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::history::{KEY, delete, get};
use common::process::Process;
use common::streams::{read_events, start_stream};
use common::{MockUpstream, RedisServer, Tether, client};
use serde_json::json;

async fn replica(mock: &MockUpstream, redis: &RedisServer) -> Tether {
    replica_with_idle_timeout(mock, redis, None).await
}

/// A replica whose heartbeat period is a third of a second (idle timeout 1 s).
async fn quick_beating_replica(mock: &MockUpstream, redis: &RedisServer) -> Tether {
    replica_with_idle_timeout(mock, redis, Some(1)).await
}

/// Two quick-beating replicas, both subscribed to the control broadcasts.
async fn two_quick_beating_replicas(mock: &MockUpstream, redis: &RedisServer) -> (Tether, Tether) {
    let pair = (
        quick_beating_replica(mock, redis).await,
        quick_beating_replica(mock, redis).await,
    );
    tokio::time::sleep(Duration::from_millis(200)).await; // both subscribed
    pair
}

/// Reads the rest of `stream` while `other` reports it every 200 ms, which
/// must be `active` until it is `done`: the body, and how many looks. The
/// stream's opening is written beside the response, not before it, so the
/// looks start once `other` knows the stream.
async fn read_while_active_on(other: &Tether, stream: reqwest::Response) -> (bytes::Bytes, usize) {
    let id = stream.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let reader = tokio::spawn(async move { stream.bytes().await.unwrap() });
    let known = Instant::now() + Duration::from_secs(2);
    while get(other, KEY, &format!("/streams/{id}/status")).await.0 == 404 {
        assert!(
            Instant::now() < known,
            "the stream's opening never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut looks = 0;
    while !reader.is_finished() {
        let (_, status) = get(other, KEY, &format!("/streams/{id}/status")).await;
        if status["state"] != "done" {
            assert_eq!(status["state"], "active", "{status}");
        }
        looks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (reader.await.unwrap(), looks)
}

async fn replica_with_idle_timeout(
    mock: &MockUpstream,
    redis: &RedisServer,
    idle_timeout_secs: Option<u64>,
) -> Tether {
    replica_batching(mock, redis, idle_timeout_secs, 50).await
}

/// A replica that writes checkpoint batches every `interval_ms`.
async fn replica_batching(
    mock: &MockUpstream,
    redis: &RedisServer,
    idle_timeout_secs: Option<u64>,
    interval_ms: u64,
) -> Tether {
    let url = redis.url();
    Tether::start_with(&mock.url(), move |s| {
        s.redis.url = url;
        s.streams.checkpoint_interval_ms = interval_ms;
        if let Some(secs) = idle_timeout_secs {
            s.streams.idle_timeout_secs = secs;
        }
    })
    .await
}

/// Waits (3 s at most) until the owner has closed an upstream stream.
async fn upstream_closed_by_owner(mock: &MockUpstream) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while mock.abandoned_streams().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the owner never closed the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_stream_through_one_replica_resumes_on_the_other() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let (a, b) = (replica(&mock, &redis).await, replica(&mock, &redis).await);

    let mut first = start_stream(&format!("http://{}", a.addr), "cross", 60, 15).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let head = read_events(&mut first, 10).await;
    let have = head.windows(2).filter(|w| w == b"\n\n").count();
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let url = b.url(&format!("/tether/streams/{id}"));
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
    let resumed = client()
        .get(b.url(&format!("/tether/streams/{id}?after={have}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200, "replica B finds A's stream in Redis");
    let rest = resumed.bytes().await.unwrap();
    let original = {
        let mut all = head.clone();
        all.extend_from_slice(&first.bytes().await.unwrap());
        all
    };
    let mut union = head;
    union.extend_from_slice(&rest);
    assert!(
        union == original,
        "resumed through B, byte for byte ({} vs {})",
        union.len(),
        original.len()
    );
    for follower in followers {
        let got = follower.await.unwrap();
        assert!(
            got == original,
            "each of three followers on B got the original bytes"
        );
    }
    let (_, status) = get(&b, KEY, &format!("/streams/{id}/status")).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["replica"], "remote");

    let after_the_end = client()
        .get(b.url(&format!("/tether/streams/{id}?after=59")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        after_the_end.ends_with("data: [DONE]\n\n"),
        "a finished stream replays from Redis: {after_the_end}"
    );
    let session = client()
        .get(b.url("/tether/sessions/cross/stream"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        session.status(),
        200,
        "B finds the session's last stream too"
    );
    assert!(session.bytes().await.unwrap() == original);
}

/// A follower on the other replica sees the answer flow as the owner gets
/// it, not a checkpoint interval at a time: with batches every 5 s, a
/// 2-second stream (a token every 50 ms) still reaches it without a pause
/// anywhere near the 5 s (before, everything after the first flush came at
/// the end, in one piece).
#[tokio::test]
async fn a_follower_on_the_other_replica_sees_the_answer_flow() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let a = replica_batching(&mock, &redis, None, 5000).await;
    let b = replica_batching(&mock, &redis, None, 5000).await;

    let mut first = start_stream(&format!("http://{}", a.addr), "flow", 40, 50).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let head = read_events(&mut first, 5).await;
    let have = common::streams::events_in(&head);
    let asked = Instant::now();
    let mut follower = client()
        .get(b.url(&format!("/tether/streams/{id}?after={have}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(follower.status(), 200);
    let (mut rest, mut arrivals) = (Vec::new(), vec![asked]);
    while let Some(chunk) = follower.chunk().await.unwrap() {
        arrivals.push(Instant::now());
        rest.extend_from_slice(&chunk);
    }
    let longest = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let mut original = head;
    original.extend_from_slice(&first.bytes().await.unwrap());
    assert!(
        original.ends_with(&rest),
        "the rest of the stream, byte for byte"
    );
    let skipped = &original[..original.len() - rest.len()];
    assert_eq!(
        common::streams::events_in(skipped),
        have,
        "from event {have} on"
    );
    assert!(
        arrivals.len() >= 10,
        "the rest came in {} pieces, longest wait {longest:?}",
        arrivals.len() - 1
    );
    assert!(
        longest < Duration::from_millis(1000),
        "longest wait between pieces {longest:?} ({} pieces)",
        arrivals.len() - 1
    );
}

#[tokio::test]
async fn when_the_owner_dies_its_stream_is_interrupted_and_still_readable() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let a = Process::start(
        &mock.url(),
        &[
            ("TETHER_REDIS__URL", &redis.url()),
            ("TETHER_STREAMS__IDLE_TIMEOUT_SECS", "1"),
            ("TETHER_STREAMS__CHECKPOINT_INTERVAL_MS", "20"),
        ],
    )
    .await;
    let url = redis.url();
    let b = Tether::start_with(&mock.url(), |s| {
        s.redis.url = url;
        s.streams.idle_timeout_secs = 1;
    })
    .await;
    // An earlier turn, so that the session has history to describe.
    let earlier = start_stream(&format!("http://{}", b.addr), "doomed", 3, 0).await;
    earlier.bytes().await.unwrap();
    common::history::wait_for_messages(&b, KEY, "doomed", 2).await;
    let mut first = start_stream(&a.url(""), "doomed", 500, 20).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    read_events(&mut first, 15).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // a checkpoint interval or more
    let (_, session) = get(&b, KEY, "/sessions/doomed").await;
    assert_eq!(session["active_stream"], id.as_str(), "{session}");
    a.signal(libc::SIGKILL);
    let killed = Instant::now();

    let deadline = killed + Duration::from_secs(10);
    let status = loop {
        let (_, status) = get(&b, KEY, &format!("/streams/{id}/status")).await;
        if status["state"] == "interrupted" {
            break status;
        }
        assert_eq!(status["state"], "active", "{status}");
        assert!(
            Instant::now() < deadline,
            "never reported interrupted: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The last heartbeat came at most a third of the idle timeout before the kill.
    assert!(
        killed.elapsed() >= Duration::from_millis(1000 - 334),
        "not before the heartbeat lapses"
    );
    let (_, session) = get(&b, KEY, "/sessions/doomed").await;
    assert_eq!(
        session["active_stream"],
        serde_json::Value::Null,
        "a stream whose owner died is no longer the session's active one: {session}"
    );
    let checkpointed = status["events"].as_u64().unwrap();
    assert!(
        checkpointed >= 15,
        "the events sent before the kill were checkpointed: {status}"
    );

    let replay = tokio::time::timeout(
        Duration::from_secs(10),
        client()
            .get(b.url(&format!("/tether/streams/{id}")))
            .bearer_auth(KEY)
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), replay.text())
        .await
        .expect("the resume ends instead of waiting for a dead owner")
        .unwrap();
    assert_eq!(
        text.matches("data: ").count() as u64,
        checkpointed,
        "every checkpointed event, then the end"
    );
    assert!(text.starts_with("data: {") && !text.contains("[DONE]"));
}

/// Redis commands that write, by name, with their call counts so far
/// (`INFO commandstats`; reads, such as a test's own polling, left out).
fn write_commands(redis: &RedisServer) -> BTreeMap<String, u64> {
    const READS: [&str; 8] = [
        "info",
        "lrange",
        "llen",
        "hgetall",
        "hmget",
        "xrange",
        "xrevrange",
        "ping",
    ];
    redis
        .command_stats()
        .into_iter()
        .filter(|(name, _)| !READS.contains(&name.as_str()))
        .map(|(name, stats)| (name, stats.calls))
        .collect()
}

/// The commands called between two `write_commands` readings.
fn spent_since(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// What checkpointing costs in Redis commands, from `INFO commandstats`: a
/// 1,000-token stream sent as fast as possible, and one at 100 tokens a
/// second, with the default batching. Printed for the README; reads (the
/// test's own polling) are left out; the fast stream is bounded by batching.
#[tokio::test]
async fn checkpoint_cost_of_a_1000_token_stream() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), move |s| s.redis.url = url).await;
    for (delay_ms, label) in [(0, "as fast as possible"), (10, "at 100 tokens/s")] {
        let before = write_commands(&redis);
        let session = format!("cost-{delay_ms}");
        let response =
            start_stream(&format!("http://{}", tether.addr), &session, 1000, delay_ms).await;
        response.bytes().await.unwrap();
        common::history::wait_for_messages(&tether, KEY, &session, 2).await;
        let spent = spent_since(&before, &write_commands(&redis));
        let total: u64 = spent.values().sum();
        println!(
            "a 1000-token stream {label}: {total} Redis write commands (checkpoints and history): {spent:?}"
        );
        // Measured 33 and 21: the first stream also loads the turn script
        // (its pipeline is sent twice) and prunes the session indexes. The
        // bounds leave room for a slow machine (a stream that takes longer
        // batches more often).
        let bound = if delay_ms == 0 { 40 } else { 30 };
        assert!(total <= bound, "batching keeps a stream cheap: {spent:?}");
    }
}

/// A chat's later turn, on the replica that streamed the earlier one: the
/// session is listed already, so the stream's start leaves the indexes to
/// the turn (two ZADDs fewer), and the turn leaves the TTLs refreshed less
/// than a minute ago (two EXPIREs fewer). The session stays listed, at the
/// later turn's time.
#[tokio::test]
async fn a_chats_later_stream_leaves_the_session_indexes_to_its_turn() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let tether = replica(&mock, &redis).await;
    let base = format!("http://{}", tether.addr);
    // Another session first: Redis learns the turn script (a pipeline sent
    // twice) before the counting starts.
    start_stream(&base, "first-of-all", 5, 0)
        .await
        .bytes()
        .await
        .unwrap();
    common::history::wait_for_messages(&tether, KEY, "first-of-all", 2).await;
    let (mut spent, mut listed) = (Vec::new(), Vec::new());
    for turn in 1..=2 {
        let before = write_commands(&redis);
        // 20 tokens 10 ms apart: several checkpoint batches, as in both turns.
        let response = start_stream(&base, "later-turns", 20, 10).await;
        response.bytes().await.unwrap();
        common::history::wait_for_messages(&tether, KEY, "later-turns", 2 * turn).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // the stream's end
        spent.push(spent_since(&before, &write_commands(&redis)));
        let (_, sessions) = get(&tether, KEY, "/sessions").await;
        assert_eq!(
            sessions["sessions"][0], "later-turns",
            "the latest first: {sessions}"
        );
        listed.push(
            sessions["items"][0]["last_activity"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let calls = |turn: usize, name: &str| spent[turn].get(name).copied().unwrap_or(0);
    // An index pruned (at most once a second) is a ZREMRANGEBYSCORE and an EXPIRE.
    let expires = |turn: usize| calls(turn, "expire") - calls(turn, "zremrangebyscore");
    assert_eq!(
        (calls(0, "zadd"), calls(1, "zadd")),
        (4, 2),
        "the first stream lists its session at its start and its turn, a later one at its turn only: {spent:?}"
    );
    assert_eq!(
        expires(0) - expires(1),
        2,
        "a later turn leaves the session's TTLs: {spent:?}"
    );
    assert!(
        listed[1] > listed[0],
        "the session's last activity moves with the later turn: {listed:?}"
    );

    // Cleared here, the session is listed again from its next stream's start.
    let (cleared, _) = delete(&tether, KEY, "/history/later-turns").await;
    assert_eq!(cleared, 200);
    let mut response = start_stream(&base, "later-turns", 40, 25).await;
    read_events(&mut response, 3).await;
    let (_, sessions) = get(&tether, KEY, "/sessions").await;
    assert_eq!(
        sessions["sessions"][0], "later-turns",
        "while it streams: {sessions}"
    );
    response.bytes().await.unwrap();
}

#[tokio::test]
async fn a_cancel_through_the_other_replica_reaches_the_owner_at_once() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let (a, b) = (replica(&mock, &redis).await, replica(&mock, &redis).await);
    let mut first = start_stream(&format!("http://{}", a.addr), "cancel-across", 500, 20).await;
    let id = first.headers()["x-stream-id"].to_str().unwrap().to_owned();
    read_events(&mut first, 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the stream's record is in Redis

    let asked = Instant::now();
    let cancel = client()
        .delete(b.url(&format!("/tether/streams/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let rest = tokio::time::timeout(Duration::from_secs(5), first.bytes())
        .await
        .expect("the owner ends the client's stream");
    assert!(rest.is_ok(), "with a clean end");
    upstream_closed_by_owner(&mock).await;
    assert!(
        mock.abandoned_streams()[0] - asked < Duration::from_secs(1),
        "within a second, not at the next heartbeat"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, status) = get(&b, KEY, &format!("/streams/{id}/status")).await;
        if status["state"] == "cancelled" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never saw the stream cancelled: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis stops answering for three seconds in the middle of a stream: the
/// client's chunks keep arriving as the upstream sends them.
#[tokio::test]
async fn a_stalled_redis_never_holds_up_the_live_stream() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let tether = replica(&mock, &redis).await;
    let mut response = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", "redis-stall")
        .header("x-mock-chunks", "30")
        .header("x-mock-gated", "1")
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    let stall = redis.freeze(3.0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut text = String::new();
    for i in 0..30 {
        let token = common::mock_upstream::token(i as u64);
        while !text.contains(&token) {
            let chunk = tokio::time::timeout(Duration::from_millis(1000), response.chunk())
                .await
                .unwrap_or_else(|_| panic!("chunk {i} waited on Redis"))
                .unwrap()
                .expect("stream ended early");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        mock.release();
    }
    assert!(
        response
            .bytes()
            .await
            .unwrap()
            .ends_with(b"data: [DONE]\n\n")
    );
    stall.join();
}

/// A checkpoint write that times out may still land (Redis was only slow):
/// the writer then asks how far the checkpoints got instead of writing the
/// same batch again (which Redis refuses) or a longer one under the same
/// number (which would leave a gap). The other replica still replays the
/// whole stream, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_written_while_redis_stalled_are_not_written_twice_or_with_gaps() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let a = Tether::start_with(&mock.url(), move |s| {
        s.redis.url = url;
        s.redis.command_timeout_ms = 200;
        s.streams.checkpoint_interval_ms = 50;
    })
    .await;
    let b = replica(&mock, &redis).await;

    let mut stream = start_stream(&format!("http://{}", a.addr), "stalled", 150, 10).await;
    let id = stream.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let mut received = read_events(&mut stream, 20).await;
    // Redis stops answering for 800 ms; the writes sent meanwhile time out
    // in tether and are carried out when Redis wakes up.
    let stall = redis.freeze(0.8);
    received.extend_from_slice(&stream.bytes().await.unwrap());
    tokio::task::spawn_blocking(move || stall.join())
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, status) = get(&b, KEY, &format!("/streams/{id}/status")).await;
        if status["state"] == "done" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the end never reached the store: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replayed = client()
        .get(b.url(&format!("/tether/streams/{id}?after=0")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        replayed == received,
        "the other replica replays every event once, in order"
    );
}

/// An owner whose batches flow writes no heartbeat (each batch carries its
/// time, which readers take as one) and, its subscription to cancel
/// broadcasts unbroken, does not poll for missed cancels: the other replica
/// still sees the stream `active` all along, with a heartbeat period of a
/// third of a second.
#[tokio::test]
async fn a_flowing_stream_needs_no_heartbeat_writes_and_stays_active_elsewhere() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let (a, b) = two_quick_beating_replicas(&mock, &redis).await;
    let before = write_commands(&redis);
    let mut stream = start_stream(&format!("http://{}", a.addr), "flowing", 150, 20).await;
    read_events(&mut stream, 5).await;
    let (body, looks) = read_while_active_on(&b, stream).await;
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    assert!(looks >= 10, "the stream ran for {looks} looks");
    common::history::wait_for_messages(&a, KEY, "flowing", 2).await;
    let spent = spent_since(&before, &write_commands(&redis));
    println!("a 3-second stream, heartbeat every 333 ms: {spent:?}");
    // A heartbeat is the one write of the stream's hash (HMSET); the
    // record is the opening entry of its stream.
    assert_eq!(
        spent.get("hmset"),
        None,
        "the record written with the stream's entries, no heartbeat: {spent:?}"
    );
    assert_eq!(spent.get("hget"), None, "no poll for cancels: {spent:?}");
}

/// A batch interval longer than the heartbeat period (5 s against a third
/// of a second here) does not make a flowing stream look dead elsewhere:
/// the owner still writes what it has, or a beat, every period.
#[tokio::test]
async fn a_batch_interval_longer_than_the_heartbeat_period_still_shows_the_owner_alive() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let a = replica_batching(&mock, &redis, Some(1), 5000).await;
    let b = replica_batching(&mock, &redis, Some(1), 5000).await;
    let mut stream = start_stream(&format!("http://{}", a.addr), "long-batches", 100, 25).await;
    read_events(&mut stream, 5).await;
    let (body, looks) = read_while_active_on(&b, stream).await;
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    assert!(looks >= 8, "the stream ran for {looks} looks");
}

/// An owner whose stream goes quiet beats every third of the idle timeout
/// (a third of a second here), one HMSET a beat: the TTL of what beats
/// write goes with the first one only, and is cut to the retention at the
/// end. The other replica sees the stream `active` through the silences.
#[tokio::test]
async fn a_quiet_stream_beats_with_one_command_a_beat() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let (a, b) = two_quick_beating_replicas(&mock, &redis).await;
    let before = write_commands(&redis);
    // Three tokens 1.2 s apart: some three beats in each silence.
    let stream = start_stream(&format!("http://{}", a.addr), "quiet", 3, 1200).await;
    let id = stream.headers()["x-stream-id"].to_str().unwrap().to_owned();
    let (body, _) = read_while_active_on(&b, stream).await;
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    common::history::wait_for_messages(&a, KEY, "quiet", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the stream's end
    let spent = spent_since(&before, &write_commands(&redis));
    println!("a quiet 3-second stream, heartbeat every 333 ms: {spent:?}");
    let calls = |name: &str| spent.get(name).copied().unwrap_or(0);
    assert!(
        calls("hmset") >= 4,
        "it beat through the silences: {spent:?}"
    );
    // The events' TTL at the opening and the closing, the session's pointer,
    // the hash's at the first beat and at the closing, the new session's
    // two; an index pruned is a ZREMRANGEBYSCORE and an EXPIRE.
    assert_eq!(
        calls("expire") - calls("zremrangebyscore"),
        7,
        "one EXPIRE for the beats, however many: {spent:?}"
    );
    let ttl: i64 = redis
        .cli(&["TTL", &format!("tether:{{x:{id}}}:meta")])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (1..=300).contains(&ttl),
        "the beats expire with the retention: {ttl}"
    );
}

/// A cancel request whose broadcast the owner missed (the flag is in the
/// stream's record; its subscription broke meanwhile) is found at the
/// owner's next heartbeat once the subscription has broken; while it has
/// not, the owner heard every broadcast and does not ask.
#[tokio::test]
async fn a_cancel_missed_while_the_subscription_broke_is_found_at_the_next_heartbeat() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let owner = quick_beating_replica(&mock, &redis).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // subscribed
    let mut stream = start_stream(&format!("http://{}", owner.addr), "missed", 500, 20).await;
    let id = stream.headers()["x-stream-id"].to_str().unwrap().to_owned();
    read_events(&mut stream, 5).await;
    let meta = format!("tether:{{x:{id}}}:meta");
    // A cancel written without its broadcast: not looked for while the
    // subscription holds (three heartbeat periods).
    assert_eq!(
        redis.cli(&["HSET", &meta, "cancel", "1"]).unwrap().trim(),
        "1"
    );
    read_events(&mut stream, 50).await;
    assert!(mock.abandoned_streams().is_empty(), "still streaming");

    // The subscription breaks (and is made again): the owner may have
    // missed a broadcast, so its next heartbeat asks.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
    assert_eq!(killed.trim(), "1", "the owner's subscription was cut");
    let broke = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.bytes())
        .await
        .expect("the owner ends the client's stream");
    assert!(rest.is_ok(), "with a clean end");
    println!(
        "cancel found {:?} after the subscription broke",
        broke.elapsed()
    );
    upstream_closed_by_owner(&mock).await;
    assert!(
        broke.elapsed() < Duration::from_secs(2),
        "within a heartbeat or two"
    );
}

/// The checkpoint layout, read back through the store: the record is the
/// opening entry of the stream's events (written twice, it is there once),
/// a batch tells how far the checkpoints got, heartbeats go to the stream's
/// hash, and the closing entry holds the last events, the state and the
/// trailing bytes, after which everything expires with the retention. A
/// stream written the way replicas built before 2026-12-07 wrote it (a
/// record hash, the tail alone in the last entry) reads the same.
#[tokio::test]
async fn a_streams_checkpoints_read_back_as_written_in_either_layout() {
    use bytes::Bytes;
    use tether::store::{EventBatch, StreamRecord, StreamState, now_ms};
    let redis = RedisServer::start();
    let store = redis.stores().await.checkpoints.unwrap();
    let tenant = tether::tenant::Tenant::from_credential(KEY);
    let created = now_ms();
    let mut record = StreamRecord {
        id: "layout".into(),
        tenant: tenant.clone(),
        session: "layout-session".into(),
        state: StreamState::Active,
        events: 0,
        created_ms: created,
        heartbeat_ms: created,
    };
    let (active_ttl, retention) = (Duration::from_secs(600), Duration::from_secs(30));
    for _ in 0..2 {
        store
            .open_stream(&record, active_ttl, active_ttl)
            .await
            .expect("an opening written again is no error");
    }
    let events_key = "tether:{x:layout}:events";
    let meta_key = "tether:{x:layout}:meta";
    assert_eq!(redis.cli(&["XLEN", events_key]).unwrap().trim(), "1");
    assert_eq!(redis.cli(&["EXISTS", meta_key]).unwrap().trim(), "0");
    let read = store.stream_record("layout").await.unwrap().unwrap();
    assert!(read.heartbeat_ms >= created, "the opening is a heartbeat");
    assert_eq!(
        StreamRecord {
            heartbeat_ms: created,
            ..read
        },
        record,
        "the record, from the opening entry"
    );

    let event = |text: &str| Bytes::from(format!("data: {text}\n\n"));
    let batch = EventBatch {
        first: 0,
        events: vec![event("a"), event("b"), event("c")],
    };
    store.append_events("layout", &batch).await.unwrap();
    let stored = store.checkpointed("layout").await.unwrap();
    assert_eq!((stored.events, stored.closed), (3, false));
    let read = store.stream_record("layout").await.unwrap().unwrap();
    assert_eq!((read.events, read.state), (3, StreamState::Active));
    assert!(read.heartbeat_ms >= created, "a batch is a heartbeat");

    // A beat while no batch flows: the hash, with the stream's TTL.
    let beat = now_ms() + 5_000;
    store
        .heartbeat("layout", beat, 3, Some(active_ttl))
        .await
        .unwrap();
    assert_eq!(
        store
            .stream_record("layout")
            .await
            .unwrap()
            .unwrap()
            .heartbeat_ms,
        beat
    );
    let ttl = |key: &str| {
        redis
            .cli(&["TTL", key])
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert!(ttl(meta_key) > 500, "{}", ttl(meta_key));

    record.state = StreamState::Done;
    record.events = 5;
    let last = EventBatch {
        first: 3,
        events: vec![event("d"), event("[DONE]")],
    };
    store
        .close_stream(
            &record,
            Some(&last),
            Some(Bytes::from(": bye\n")),
            retention,
            true,
        )
        .await
        .unwrap();
    let stored = store.checkpointed("layout").await.unwrap();
    assert_eq!((stored.events, stored.closed), (5, true));
    let read = store.stream_record("layout").await.unwrap().unwrap();
    assert_eq!((read.events, read.state), (5, StreamState::Done));
    let all = store.read_events("layout", 0).await.unwrap();
    assert_eq!(
        all.events,
        [
            event("a"),
            event("b"),
            event("c"),
            event("d"),
            event("[DONE]")
        ]
    );
    assert_eq!(all.tail, Some(Bytes::from(": bye\n")));
    let after_four = store.read_events("layout", 4).await.unwrap();
    assert_eq!(after_four.events, [event("[DONE]")]);
    let after_all = store.read_events("layout", 5).await.unwrap();
    assert!(after_all.events.is_empty());
    assert_eq!(
        after_all.tail,
        Some(Bytes::from(": bye\n")),
        "the end is read"
    );
    for key in [events_key, meta_key] {
        assert!(
            (1..=30).contains(&ttl(key)),
            "{key} expires with the retention"
        );
    }

    // A cancel request finds the stream, and its flag expires with it.
    store.request_cancel("layout").await.unwrap();
    assert!(store.cancel_requested("layout").await.unwrap());
    assert!((1..=30).contains(&ttl(meta_key)));

    // Written before 2026-12-07: a record hash, batches `{first}-1`, the
    // tail alone in `{events}-2`.
    let (old_events, old_meta) = ("tether:{x:old}:events", "tether:{x:old}:meta");
    let created = created.to_string();
    for args in [
        vec![
            "HSET",
            old_meta,
            "state",
            "done",
            "tenant",
            tenant.as_str(),
            "session",
            "old-session",
        ],
        vec![
            "HSET",
            old_meta,
            "events",
            "2",
            "created_ms",
            &created,
            "heartbeat_ms",
            &created,
        ],
        vec![
            "XADD",
            old_events,
            "0-1",
            "n",
            "0",
            "at",
            &created,
            "lens",
            "9,9",
            "d",
            "data: a\n\ndata: b\n\n",
        ],
        vec!["XADD", old_events, "2-2", "tail", ": bye\n"],
    ] {
        redis.cli(&args).unwrap();
    }
    let read = store.stream_record("old").await.unwrap().unwrap();
    assert_eq!(
        (read.state, read.events, read.session.as_str(), read.tenant),
        (StreamState::Done, 2, "old-session", tenant)
    );
    let stored = store.checkpointed("old").await.unwrap();
    assert_eq!((stored.events, stored.closed), (2, true));
    let all = store.read_events("old", 1).await.unwrap();
    assert_eq!(all.events, [event("b")]);
    assert_eq!(all.tail, Some(Bytes::from(": bye\n")));
    assert!(store.stream_record("none").await.unwrap().is_none());
}

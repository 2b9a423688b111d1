//! Soak: hundreds of concurrent streams through two tether replicas on one
//! Redis, clients dropping at random points and resuming on a random
//! replica, and Redis restarted in the middle. Afterwards every stream's
//! history is present exactly once and every resume was byte-exact; the
//! counts are printed. `TETHER_SOAK_STREAMS` sets the number (default 200).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::history::{KEY, get};
use common::{MockUpstream, RedisServer, Tether, client, mock_upstream};
use serde_json::json;

const CHUNKS: u32 = 40;

#[derive(Default)]
struct Counts {
    dropped: AtomicUsize,
    resumed_elsewhere: AtomicUsize,
    resume_retries: AtomicUsize,
}

/// A tiny deterministic generator: each stream's choices depend on its index.
fn pick(i: usize, salt: u64, n: usize) -> usize {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (x >> 17) as usize % n
}

fn events_in(bytes: &[u8]) -> usize {
    bytes.windows(2).filter(|w| w == b"\n\n").count()
}

/// One client: start on a replica, maybe drop after some events and resume
/// (on either replica) until the stream is whole. Returns what it received.
async fn client_run(i: usize, replicas: Arc<Vec<String>>, counts: Arc<Counts>) -> Vec<u8> {
    let start = &replicas[pick(i, 1, 2)];
    let mut response = client()
        .post(format!("{start}/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", format!("soak-{i}"))
        .header("x-mock-chunks", CHUNKS.to_string())
        .header("x-mock-delay-ms", "10")
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": format!("story {i}")}]}))
        .send()
        .await
        .expect("tether answers");
    let id = response.headers()["x-stream-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let drop_after = pick(i, 2, CHUNKS as usize + 10);
    let mut got = Vec::new();
    while drop_after > CHUNKS as usize || events_in(&got) < drop_after {
        match response.chunk().await {
            Ok(Some(bytes)) => got.extend_from_slice(&bytes),
            Ok(None) => return got,
            Err(e) => panic!("stream {i} broke before the client dropped it: {e}"),
        }
    }
    drop(response);
    counts.dropped.fetch_add(1, Ordering::Relaxed);
    // Resume (and resume again if a resume itself is cut) until [DONE].
    for attempt in 0.. {
        assert!(attempt < 100, "stream {i} never completed through resumes");
        let replica = &replicas[pick(i, 3 + attempt, 2)];
        if replica != start {
            counts.resumed_elsewhere.fetch_add(1, Ordering::Relaxed);
        }
        let after = events_in(&got);
        let resumed = client()
            .get(format!("{replica}/tether/streams/{id}?after={after}"))
            .bearer_auth(KEY)
            .send()
            .await;
        if let Ok(mut resumed) = resumed.and_then(|r| r.error_for_status()) {
            while let Ok(Some(bytes)) = resumed.chunk().await {
                got.extend_from_slice(&bytes);
            }
        }
        if got.ends_with(b"data: [DONE]\n\n") {
            return got;
        }
        counts.resume_retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_survive_drops_resumes_and_a_redis_restart() {
    let streams: usize = std::env::var("TETHER_SOAK_STREAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start_persistent();
    let replica = |url: String| {
        let upstream = mock.url();
        async move {
            Tether::start_with(&upstream, move |s| {
                s.redis.url = url;
                s.redis.command_timeout_ms = 500;
                s.streams.checkpoint_interval_ms = 50;
            })
            .await
        }
    };
    let (a, b) = (replica(redis.url()).await, replica(redis.url()).await);
    let replicas = Arc::new(vec![
        format!("http://{}", a.addr),
        format!("http://{}", b.addr),
    ]);
    let expected = {
        let direct = client()
            .post(format!("{}/v1/chat/completions", mock.url()))
            .header("x-mock-chunks", CHUNKS.to_string())
            .json(&json!({"model": "m", "stream": true, "messages": []}))
            .send()
            .await
            .unwrap();
        direct.bytes().await.unwrap().to_vec()
    };
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|i| tokio::spawn(client_run(i, replicas.clone(), counts.clone())))
        .collect();

    tokio::time::sleep(Duration::from_millis(250)).await;
    let restarted_at = started.elapsed();
    let redis = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        redis.restart();
        redis
    })
    .await
    .unwrap();

    let mut byte_exact = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let got = task.await.unwrap();
        assert!(
            got == expected,
            "stream {i}: what the client assembled differs from the upstream's stream"
        );
        byte_exact += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut recorded = 0;
    for i in 0..streams {
        loop {
            let (status, history) = get(&a, KEY, &format!("/history/soak-{i}")).await;
            if status == 200 && history["message_count"] == 2 {
                assert_eq!(
                    history["messages"][1]["content"],
                    mock_upstream::answer(CHUNKS as u64),
                    "soak-{i}: the whole answer"
                );
                recorded += 1;
                break;
            }
            assert!(
                status == 404 || history["message_count"].as_u64() < Some(2),
                "soak-{i}: stored more than once: {history}"
            );
            assert!(Instant::now() < deadline, "soak-{i} was never recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "soak: {streams} streams over 2 replicas in {:?}, Redis restarted at {restarted_at:?}; {} dropped and resumed \
         ({} of the resumes on the other replica, {} resume retries); {byte_exact} byte-exact; {recorded} recorded exactly once",
        started.elapsed(),
        counts.dropped.load(Ordering::Relaxed),
        counts.resumed_elsewhere.load(Ordering::Relaxed),
        counts.resume_retries.load(Ordering::Relaxed),
    );
    drop(redis);
}

//! Resume: a client reads the first events of a stream on tether (Redis),
//! drops its connection, is away for a moment (the backlog), and asks `GET
//! /tether/streams/{id}?after=N` on the same replica or on the second one
//! sharing the Redis. Timed: request to
//! the first replayed byte, while the stream is still live, and again once
//! it is finished. Every resumed body must be the rest of the stream exactly.
//!
//! Then following: streams whose tokens come every 25 ms are each followed
//! live by a second client, on the same replica or the other, all at once;
//! timed, the longest wait between two events that follower gets (the
//! tokens' own 25 ms is the floor; a follower served a checkpoint batch at
//! a time would wait up to `streams.checkpoint_interval_ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::load::{Conn, EventClock, Target, header};
use crate::report::Results;
use crate::setup::Setup;
use crate::stats::Latencies;
use crate::wire;
use crate::workloads::{Plan, StreamShape};

pub async fn run(setup: &Setup, plan: &Plan, results: &mut Results) {
    let subjects = setup.subjects();
    let owner = subjects
        .iter()
        .find(|s| s.name() == "tether-redis")
        .expect("tether-redis")
        .target
        .clone();
    let other = Arc::new(Target {
        name: "tether-redis-b".into(),
        addr: setup.tether_redis_b.addr,
        headers: vec![],
        byte_exact: true,
    });
    let mut live = [Latencies::default(), Latencies::default()];
    let mut done = [Latencies::default(), Latencies::default()];
    for i in 0..plan.resumes {
        for (r, replica) in [&owner, &other].into_iter().enumerate() {
            match once(&owner, replica, plan, &format!("resume-{i}-{r}")).await {
                Ok((a, b)) => {
                    live[r].record(a);
                    done[r].record(b);
                }
                Err(e) => results.fail(format!("resume on {}: {e}", replica.name)),
            }
        }
    }
    let ms = |h: &Latencies, q| h.quantile_us(q) / 1000.0;
    results.push_global("resume_same_p50_ms", ms(&live[0], 0.5));
    results.push_global("resume_same_p99_ms", ms(&live[0], 0.99));
    results.push_global("resume_cross_p50_ms", ms(&live[1], 0.5));
    results.push_global("resume_cross_p99_ms", ms(&live[1], 0.99));
    results.push_global("resume_done_same_p50_ms", ms(&done[0], 0.5));
    results.push_global("resume_done_cross_p50_ms", ms(&done[1], 0.5));

    for (replica, figure) in [
        (&owner, "follow_same_wait_max_ms"),
        (&other, "follow_cross_wait_max_ms"),
    ] {
        let mut follows = tokio::task::JoinSet::new();
        for i in 0..plan.follows {
            let (owner, replica) = (owner.clone(), replica.clone());
            let session = format!("follow-{i}-{}", replica.name);
            let (shape, after) = (plan.follow_stream, plan.follow_after);
            follows.spawn(async move { follow(&owner, &replica, shape, after, &session).await });
        }
        let mut longest = Duration::ZERO;
        while let Some(outcome) = follows.join_next().await {
            match outcome.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(wait) => longest = longest.max(wait),
                Err(e) => results.fail(format!("follow on {}: {e}", replica.name)),
            }
        }
        results.push_global(figure, longest.as_secs_f64() * 1000.0);
    }
}

/// Starts a stream of `shape` on `owner` and reads its first `after`
/// events: the connection, the stream's id, the events read (a read can
/// bring several) and the rest of the body.
async fn start_and_read(
    owner: &Arc<Target>,
    session: &str,
    shape: StreamShape,
    after: u64,
) -> Result<(Conn, String, u64, Incoming), String> {
    let mut conn = Conn::open(owner.clone()).await?;
    let req = conn.chat(
        session,
        wire::chat_request(true, 0),
        Some((shape.chunks, shape.delay_ms)),
    );
    let response = conn.send(req).await?;
    let id = header(&response, "x-stream-id").ok_or("no X-Stream-Id")?;
    let mut body = response.into_body();
    let mut clock = EventClock::default();
    let mut ignored = Latencies::default();
    while clock.events() < after {
        let frame = body
            .frame()
            .await
            .ok_or("stream ended early")?
            .map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            clock.feed(data, Instant::now(), 0, &mut ignored);
        }
    }
    Ok((conn, id, clock.events(), body))
}

/// One stream read for `after` events and followed from there on
/// `replica` while its first reader reads on: the longest wait between two
/// events the follower gets. Its body must be the rest of the stream.
async fn follow(
    owner: &Arc<Target>,
    replica: &Arc<Target>,
    shape: StreamShape,
    after: u64,
    session: &str,
) -> Result<Duration, String> {
    let mut follower = Conn::open(replica.clone()).await?;
    let (reader, id, seen, body) = start_and_read(owner, session, shape, after).await?;
    // The first reader stays to the end, as a client that did not leave.
    let first = tokio::spawn(async move {
        let _connection = reader;
        body.collect().await.map(drop)
    });
    let path = format!("/tether/streams/{id}?after={seen}");
    let response = follower.send(follower.get(&path)).await?;
    let status = response.status();
    let mut body = response.into_body();
    let (mut bytes, mut last, mut longest) = (Vec::new(), Instant::now(), Duration::ZERO);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            let now = Instant::now();
            longest = longest.max(now - last);
            last = now;
            bytes.extend_from_slice(data);
        }
    }
    let _ = first.await;
    if !status.is_success() || bytes != wire::stream_bytes(shape.chunks, seen) {
        return Err(format!(
            "{path}: status {status}, {} bytes: not the rest of the stream",
            bytes.len()
        ));
    }
    Ok(longest)
}

/// One stream dropped after `resume_after` events and resumed on
/// `replica`: the time to the first replayed byte live, then finished.
async fn once(
    owner: &Arc<Target>,
    replica: &Arc<Target>,
    plan: &Plan,
    session: &str,
) -> Result<(Duration, Duration), String> {
    let shape = plan.resume_stream;
    let mut resumer = Conn::open(replica.clone()).await?;
    let (first, stream_id, seen, body) =
        start_and_read(owner, session, shape, plan.resume_after).await?;
    // Dropping the body and the connection is the client going away.
    drop((body, first));
    tokio::time::sleep(plan.resume_pause).await;
    let path = format!("/tether/streams/{stream_id}?after={seen}");
    let expected = wire::stream_bytes(shape.chunks, seen);
    let live = replay(&mut resumer, &path, &expected).await?;
    let finished = replay(&mut resumer, &path, &expected).await?;
    Ok((live, finished))
}

/// GET `path`; the time to its first body byte; the body must be `expected`.
async fn replay(conn: &mut Conn, path: &str, expected: &[u8]) -> Result<Duration, String> {
    let sent = Instant::now();
    let response = conn.send(conn.get(path)).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut first = None;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            first.get_or_insert_with(|| sent.elapsed());
            bytes.extend_from_slice(data);
        }
    }
    if !status.is_success() {
        return Err(format!(
            "{path}: status {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    if bytes != expected {
        return Err(format!(
            "{path}: resumed body is not the rest of the stream ({} bytes, {} expected)",
            bytes.len(),
            expected.len()
        ));
    }
    first.ok_or_else(|| format!("{path}: empty body"))
}

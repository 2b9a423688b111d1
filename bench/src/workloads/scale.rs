//! Scale: N concurrent slow streams through tether on Redis, each on its
//! own connection, opened evenly over a ramp, all recorded and byte-exact. Reported: tether's RSS per
//! active stream (RSS while all N are open, less RSS before, over N), the
//! p99 gap added to the upstream's nominal interval, TTFT p99, and CPU per
//! chunk.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::load::{Conn, StreamRun, one_stream};
use crate::procs::Sample;
use crate::report::Results;
use crate::setup::Setup;
use crate::wire;
use crate::workloads::{Plan, check};

pub async fn run(setup: &Setup, plan: &Plan, results: &mut Results) {
    let subjects = setup.subjects();
    let s = subjects
        .iter()
        .find(|s| s.name() == "tether-redis")
        .expect("tether-redis")
        .clone();
    let n = plan.scale;
    let shape = plan.scale_stream;
    let Ok(before) = check::counters(&s.target).await else {
        results.fail("tether-redis: no metrics".into());
        return;
    };
    let idle = Sample::of(setup.tether_redis.pid());
    let started = Arc::new(AtomicUsize::new(0));
    let expected = Bytes::from(wire::stream_bytes(shape.chunks, 0));
    let ramp = plan.scale_ramp;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (target, started, expected) = (s.target.clone(), started.clone(), expected.clone());
            tokio::spawn(async move {
                let mut run = StreamRun::default();
                tokio::time::sleep(ramp * i as u32 / n as u32).await;
                let result = async {
                    let mut conn = Conn::open(target).await?;
                    let req = conn.chat(
                        &format!("scale-{i}"),
                        wire::chat_request(true, 0),
                        Some((shape.chunks, shape.delay_ms)),
                    );
                    started.fetch_add(1, Ordering::Relaxed);
                    one_stream(&mut conn, req, shape, &mut run).await
                }
                .await;
                match result {
                    Ok((bytes, id)) if bytes == expected => {
                        run.ok = 1;
                        run.chunks = shape.chunks;
                        run.recorded.extend(id.map(|id| (format!("scale-{i}"), id)));
                    }
                    Ok(_) => run.mismatched = 1,
                    Err(e) => {
                        run.failed = 1;
                        run.first_error = Some(e);
                    }
                }
                run
            })
        })
        .collect();
    // The plateau: from the last stream's start (the ramp's end) to the
    // first one's end; tether's RSS is sampled through it.
    let life = Duration::from_millis(shape.chunks * shape.delay_ms);
    let start = Instant::now();
    while started.load(Ordering::Relaxed) < n && start.elapsed() < ramp + life / 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut peak = Sample::of(setup.tether_redis.pid());
    while start.elapsed() + Duration::from_millis(300) < life {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Sample::of(setup.tether_redis.pid());
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
    }
    let mut total = StreamRun::default();
    let mut errors = Vec::new();
    for task in tasks {
        let run = task.await.expect("stream task panicked");
        total.ok += run.ok;
        total.failed += run.failed;
        total.mismatched += run.mismatched;
        total.chunks += run.chunks;
        total.ttft.merge(&run.ttft);
        total.gap.merge(&run.gap);
        total.recorded.extend(run.recorded);
        errors.extend(run.first_error);
    }
    let end = Sample::of(setup.tether_redis.pid());
    let cpu_us = (end.cpu - idle.cpu).as_secs_f64() * 1e6;
    results.push_global("scale_streams", n as f64);
    results.push_global(
        "scale_rss_kib_per_stream",
        peak.rss_kib.saturating_sub(idle.rss_kib) as f64 / n as f64,
    );
    results.push_global(
        "scale_gap_p99_added_ms",
        total.gap.quantile_us(0.99) / 1000.0 - shape.delay_ms as f64,
    );
    results.push_global("scale_ttft_p99_ms", total.ttft.quantile_us(0.99) / 1000.0);
    results.push_global(
        "scale_cpu_us_per_chunk",
        cpu_us / total.chunks.max(1) as f64,
    );
    if total.failed > 0 || total.mismatched > 0 {
        results.fail(format!(
            "scale: {} of {n} streams failed, {} not byte-exact (first error: {})",
            total.failed,
            total.mismatched,
            errors.first().map_or("-", String::as_str)
        ));
    }
    if total.recorded.len() as u64 != total.ok {
        results.fail(format!(
            "scale: {} streams without X-Stream-Id",
            total.ok - total.recorded.len() as u64
        ));
    }
    match check::drained(&s.target, before, total.ok, Duration::from_secs(60)).await {
        Ok(_) => {
            if let Err(e) = check::streams_recorded(
                &s.target,
                &total.recorded,
                shape.chunks,
                1,
                plan.history_sample,
            )
            .await
            {
                results.fail(e);
            } else {
                results.push_global("scale_recorded", total.recorded.len() as f64);
            }
        }
        Err(e) => results.fail(e),
    }
}

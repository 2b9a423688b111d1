//! Streamed chat completions: TTFT and the gaps between events, added
//! against direct; every stream byte-exact; tether's CPU per chunk; for
//! tether on Redis, the Redis commands a stream costs (`INFO commandstats`
//! deltas, the driver's own reads left out); for recording subjects, every
//! stream a stored turn, a sample of them read back and compared.

use std::time::Duration;

use crate::load::{self, StreamRun};
use crate::procs::Sample;
use crate::report::Results;
use crate::setup::{Kind, Setup, Subject};
use crate::workloads::{Plan, check};

pub async fn round(
    setup: &Setup,
    subjects: &[Subject],
    plan: &Plan,
    round: usize,
    results: &mut Results,
) {
    for s in subjects {
        let before = if s.records() {
            check::counters(&s.target).await.ok()
        } else {
            None
        };
        let redis_before = (s.kind == Kind::TetherRedis).then(|| setup.redis.command_calls());
        let cpu0 = s.pid.map(Sample::of);
        let tag = format!("st{round}-{}", s.name());
        let run = load::streams(
            s.target.clone(),
            plan.stream_workers,
            plan.stream_duration,
            u64::MAX,
            &tag,
            plan.stream,
        )
        .await;
        let cpu1 = s.pid.map(Sample::of);
        judge(s, &run, results);
        results.push(
            s.name(),
            "streams_per_s",
            run.ok as f64 / run.elapsed.as_secs_f64(),
        );
        results.push(s.name(), "ttft_p50_us", run.ttft.quantile_us(0.5));
        results.push(s.name(), "ttft_p99_us", run.ttft.quantile_us(0.99));
        results.push(s.name(), "gap_p50_us", run.gap.quantile_us(0.5));
        results.push(s.name(), "gap_p99_us", run.gap.quantile_us(0.99));
        results.push(s.name(), "exact_streams", (run.ok - run.mismatched) as f64);
        results.push(s.name(), "mismatches", run.mismatched as f64);
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            let cpu_us = (b.cpu - a.cpu).as_secs_f64() * 1e6;
            results.push(
                s.name(),
                "cpu_us_per_chunk",
                cpu_us / run.chunks.max(1) as f64,
            );
            results.push(
                s.name(),
                "sys_us_per_chunk",
                (b.sys - a.sys).as_secs_f64() * 1e6 / run.chunks.max(1) as f64,
            );
            results.push(
                s.name(),
                "switches_per_chunk",
                b.switches.saturating_sub(a.switches) as f64 / run.chunks.max(1) as f64,
            );
        }
        let Some(before) = before else { continue };
        if run.recorded.len() as u64 != run.ok {
            results.fail(format!(
                "{}: {} of {} streams had no X-Stream-Id",
                s.name(),
                run.ok - run.recorded.len() as u64,
                run.ok
            ));
        }
        if let Err(e) = check::drained(&s.target, before, run.ok, Duration::from_secs(30)).await {
            results.fail(e);
            continue;
        }
        if let Some(redis_before) = redis_before {
            // Checkpoints are written in batches; give the last ones time.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let spent: u64 = setup.redis.spent_since(&redis_before).values().sum();
            results.push_global("redis_cmds_per_stream", spent as f64 / run.ok.max(1) as f64);
        }
        if let Err(e) = check::streams_recorded(
            &s.target,
            &run.recorded,
            plan.stream.chunks,
            1,
            plan.history_sample,
        )
        .await
        {
            results.fail(e);
        }
    }
}

fn judge(s: &Subject, run: &StreamRun, results: &mut Results) {
    if run.failed == 0 && run.mismatched == 0 {
        return;
    }
    let what = format!(
        "{}: {} streams failed, {} not byte-exact (first error: {})",
        s.name(),
        run.failed,
        run.mismatched,
        run.first_error.as_deref().unwrap_or("-")
    );
    if s.kind == Kind::Peer {
        results.notes.push(what);
    } else {
        results.fail(what);
    }
}

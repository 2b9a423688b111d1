//! Non-streamed chat completions: req/s at a fixed concurrency with p50/p99,
//! then one request at a time; CPU per request and RSS of the process; for
//! recording subjects, every request must become one stored turn.

use std::time::Duration;

use crate::load::{self, Run};
use crate::procs::Sample;
use crate::report::Results;
use crate::setup::{Kind, Subject};
use crate::workloads::{Plan, check};

pub async fn round(subjects: &[Subject], plan: &Plan, round: usize, results: &mut Results) {
    for s in subjects {
        let before = if s.records() {
            check::counters(&s.target).await.ok()
        } else {
            None
        };
        let tag = format!("ns{round}-{}", s.name());
        let warm = load::non_stream(
            s.target.clone(),
            plan.concurrency,
            plan.warmup,
            &format!("{tag}w"),
            0,
        )
        .await;
        let (cpu0, store0) = (sample(s), s.store_pid.map(Sample::of));
        let run =
            load::non_stream(s.target.clone(), plan.concurrency, plan.duration, &tag, 0).await;
        let (cpu1, store1) = (sample(s), s.store_pid.map(Sample::of));
        let serial = load::non_stream(
            s.target.clone(),
            1,
            plan.serial_duration,
            &format!("{tag}s"),
            0,
        )
        .await;
        for r in [&warm, &run, &serial] {
            judge(s, r, results);
        }
        results.push(s.name(), "rps", run.per_sec());
        results.push(s.name(), "p50_us", run.latency.quantile_us(0.5));
        results.push(s.name(), "p99_us", run.latency.quantile_us(0.99));
        results.push(s.name(), "p50_1_us", serial.latency.quantile_us(0.5));
        results.push(s.name(), "p99_1_us", serial.latency.quantile_us(0.99));
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            let cpu_us = (b.cpu - a.cpu).as_secs_f64() * 1e6;
            results.push(s.name(), "cpu_us_per_req", cpu_us / run.ok.max(1) as f64);
            results.push(
                s.name(),
                "switches_per_req",
                b.switches.saturating_sub(a.switches) as f64 / run.ok.max(1) as f64,
            );
            results.push(s.name(), "rss_mib", b.rss_kib as f64 / 1024.0);
        }
        if let (Some(a), Some(b)) = (store0, store1) {
            let cpu_us = (b.cpu - a.cpu).as_secs_f64() * 1e6;
            results.push(
                s.name(),
                "store_cpu_us_per_req",
                cpu_us / run.ok.max(1) as f64,
            );
        }
        if let Some(before) = before {
            let expected = warm.ok + run.ok + serial.ok;
            if let Err(e) =
                check::drained(&s.target, before, expected, Duration::from_secs(30)).await
            {
                results.fail(e);
            }
        }
    }
}

fn sample(s: &Subject) -> Option<Sample> {
    s.pid.map(Sample::of)
}

/// Failed requests and byte mismatches fail the run (for peers: a note).
pub fn judge(s: &Subject, run: &Run, results: &mut Results) {
    if run.failed == 0 && run.mismatched == 0 {
        return;
    }
    let what = format!(
        "{}: {} requests failed, {} answers not byte-exact (first error: {})",
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

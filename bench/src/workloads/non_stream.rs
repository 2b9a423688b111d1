//! Non-streamed chat completions: req/s at a fixed concurrency with p50/p99,
//! then one request at a time; CPU per request and RSS of the process; for
//! recording subjects, every request must become one stored turn. The same
//! again for a chat's later turn, whose request carries the conversation.

use std::time::Duration;

use bytes::Bytes;

use crate::load::{self, Run};
use crate::procs::Sample;
use crate::report::Results;
use crate::setup::{Kind, Subject};
use crate::wire;
use crate::workloads::{Plan, check};

/// The names a run's figures are pushed under.
struct Figures {
    rps: &'static str,
    p50_us: &'static str,
    p99_us: &'static str,
    p50_1_us: &'static str,
    p99_1_us: &'static str,
    cpu_us_per_req: &'static str,
    sys_us_per_req: &'static str,
    switches_per_req: &'static str,
    rss_mib: &'static str,
    store_cpu_us_per_req: &'static str,
}

const NON_STREAM: Figures = Figures {
    rps: "rps",
    p50_us: "p50_us",
    p99_us: "p99_us",
    p50_1_us: "p50_1_us",
    p99_1_us: "p99_1_us",
    cpu_us_per_req: "cpu_us_per_req",
    sys_us_per_req: "sys_us_per_req",
    switches_per_req: "switches_per_req",
    rss_mib: "rss_mib",
    store_cpu_us_per_req: "store_cpu_us_per_req",
};

const CHAT: Figures = Figures {
    rps: "chat_rps",
    p50_us: "chat_p50_us",
    p99_us: "chat_p99_us",
    p50_1_us: "chat_p50_1_us",
    p99_1_us: "chat_p99_1_us",
    cpu_us_per_req: "chat_cpu_us_per_req",
    sys_us_per_req: "chat_sys_us_per_req",
    switches_per_req: "chat_switches_per_req",
    rss_mib: "chat_rss_mib",
    store_cpu_us_per_req: "chat_store_cpu_us_per_req",
};

pub async fn round(subjects: &[Subject], plan: &Plan, round: usize, results: &mut Results) {
    let body = wire::chat_request(false, 0);
    measure(
        subjects,
        plan,
        &format!("ns{round}"),
        body,
        &NON_STREAM,
        results,
    )
    .await;
}

/// The same for the turn of a chat that already has `plan.chat_turns`
/// turns: the request carries the whole conversation, as clients send it.
pub async fn chat_round(subjects: &[Subject], plan: &Plan, round: usize, results: &mut Results) {
    let body = wire::chat_turn_request(plan.chat_turns);
    measure(
        subjects,
        plan,
        &format!("chat{round}"),
        body,
        &CHAT,
        results,
    )
    .await;
}

async fn measure(
    subjects: &[Subject],
    plan: &Plan,
    tag: &str,
    body: Bytes,
    figure: &Figures,
    results: &mut Results,
) {
    for s in subjects {
        let before = if s.records() {
            check::counters(&s.target).await.ok()
        } else {
            None
        };
        let tag = format!("{tag}-{}", s.name());
        let load = |workers, duration, tag: String| {
            let (target, body) = (s.target.clone(), body.clone());
            async move { load::non_stream(target, workers, duration, &tag, body).await }
        };
        let warm = load(plan.concurrency, plan.warmup, format!("{tag}w")).await;
        let (cpu0, store0) = (sample(s), s.store_pid.map(Sample::of));
        let run = load(plan.concurrency, plan.duration, tag.clone()).await;
        let (cpu1, store1) = (sample(s), s.store_pid.map(Sample::of));
        let serial = load(1, plan.serial_duration, format!("{tag}s")).await;
        for r in [&warm, &run, &serial] {
            judge(s, r, results);
        }
        results.push(s.name(), figure.rps, run.per_sec());
        results.push(s.name(), figure.p50_us, run.latency.quantile_us(0.5));
        results.push(s.name(), figure.p99_us, run.latency.quantile_us(0.99));
        results.push(s.name(), figure.p50_1_us, serial.latency.quantile_us(0.5));
        results.push(s.name(), figure.p99_1_us, serial.latency.quantile_us(0.99));
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            let cpu_us = (b.cpu - a.cpu).as_secs_f64() * 1e6;
            let per_request = |x: f64| x / run.ok.max(1) as f64;
            results.push(s.name(), figure.cpu_us_per_req, per_request(cpu_us));
            let sys_us = (b.sys - a.sys).as_secs_f64() * 1e6;
            results.push(s.name(), figure.sys_us_per_req, per_request(sys_us));
            let switches = b.switches.saturating_sub(a.switches) as f64;
            results.push(s.name(), figure.switches_per_req, per_request(switches));
            results.push(s.name(), figure.rss_mib, b.rss_kib as f64 / 1024.0);
        }
        if let (Some(a), Some(b)) = (store0, store1) {
            let cpu_us = (b.cpu - a.cpu).as_secs_f64() * 1e6;
            results.push(
                s.name(),
                figure.store_cpu_us_per_req,
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

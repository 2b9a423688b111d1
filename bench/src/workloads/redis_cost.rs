//! Redis cost: long streams at an LLM's pace through tether on Redis, and
//! the Redis commands they cost per 1,000 tokens (`INFO commandstats`
//! deltas over the run, the driver's own reads left out), with the
//! breakdown by command as a note.

use std::sync::Arc;
use std::time::Duration;

use crate::load::{self, Target};
use crate::report::Results;
use crate::setup::Setup;
use crate::workloads::{Plan, check};

pub async fn run(setup: &Setup, plan: &Plan, results: &mut Results) {
    let subjects = setup.subjects();
    let s = subjects
        .iter()
        .find(|s| s.name() == "tether-redis")
        .expect("tether-redis");
    // Each stream a new session's first, then the same sessions' second:
    // a chat's later turns leave the session indexes and TTLs alone.
    let turns = [
        (1, "redis_cmds_per_long_stream", "redis_cmds_per_1k_tokens"),
        (
            2,
            "redis_cmds_per_long_stream_later_turn",
            "redis_cmds_per_1k_tokens_later_turn",
        ),
    ];
    for (turn, per_stream, per_1k) in turns {
        if !measure(setup, plan, results, &s.target, turn, (per_stream, per_1k)).await {
            return;
        }
    }
}

/// One stream on each of the cost run's sessions, the `turn`-th of each;
/// false when the run failed (recorded in `results`).
async fn measure(
    setup: &Setup,
    plan: &Plan,
    results: &mut Results,
    target: &Arc<Target>,
    turn: usize,
    (per_stream, per_1k): (&'static str, &'static str),
) -> bool {
    let shape = plan.cost_stream;
    let Ok(before) = check::counters(target).await else {
        results.fail("tether-redis: no metrics".into());
        return false;
    };
    let redis_before = setup.redis.command_calls();
    let run = load::streams(
        target.clone(),
        plan.cost_streams,
        Duration::from_secs(3600),
        1,
        "cost",
        shape,
    )
    .await;
    if run.failed > 0 || run.mismatched > 0 {
        let error = run.first_error.as_deref().unwrap_or("-");
        results.fail(format!(
            "cost run: {} streams failed, {} not byte-exact ({error})",
            run.failed, run.mismatched
        ));
    }
    if let Err(e) = check::drained(target, before, run.ok, Duration::from_secs(30)).await {
        results.fail(e);
        return false;
    }
    // The last checkpoint batch and the stream's final state follow the turn.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spent = setup.redis.spent_since(&redis_before);
    let total: u64 = spent.values().sum();
    results.push_global(per_stream, total as f64 / run.ok.max(1) as f64);
    results.push_global(per_1k, total as f64 * 1000.0 / run.chunks.max(1) as f64);
    let breakdown: Vec<String> = spent
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    results.notes.push(format!(
        "Redis commands of {} streams of {} tokens at {} ms per token, each its session's turn {turn}: {}",
        run.ok,
        shape.chunks,
        shape.delay_ms,
        breakdown.join(", ")
    ));
    let checked = check::streams_recorded(
        target,
        &run.recorded,
        shape.chunks,
        turn,
        plan.history_sample,
    );
    if let Err(e) = checked.await {
        results.fail(e);
        return false;
    }
    true
}

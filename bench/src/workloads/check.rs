//! What the driver asks tether to prove nothing was lost: its counters
//! (turns written, writes dropped, replies cut short) and the stored history
//! of sampled sessions, compared with the bytes the upstream sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::{Conn, Target, exchange};
use crate::wire;

/// The counters of `/tether/metrics` the checks read.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counters {
    pub turns: f64,
    pub messages: f64,
    pub dropped: f64,
    pub incomplete: f64,
}

pub async fn counters(target: &Arc<Target>) -> Result<Counters, String> {
    let mut conn = Conn::open(target.clone()).await?;
    let req = conn.get("/tether/metrics");
    let text = exchange(&mut conn, req).await?;
    let text = String::from_utf8_lossy(&text);
    // A family's value is the sum of its lines (labels or not).
    let sum = |family: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok(Counters {
        turns: sum("tether_history_turns_total"),
        messages: sum("tether_history_messages_total"),
        dropped: sum("tether_history_dropped_total"),
        incomplete: sum("tether_recording_incomplete_total"),
    })
}

/// Wait (up to `limit`) until `expected` more turns than `before` are
/// written; the counters then, or an error naming what was lost.
pub async fn drained(
    target: &Arc<Target>,
    before: Counters,
    expected: u64,
    limit: Duration,
) -> Result<(Counters, Duration), String> {
    let start = Instant::now();
    loop {
        let now = counters(target).await?;
        let written = (now.turns - before.turns) as u64;
        if written >= expected {
            if now.dropped > before.dropped || now.incomplete > before.incomplete {
                return Err(format!(
                    "{}: {} history writes dropped, {} replies recorded incomplete",
                    target.name,
                    now.dropped - before.dropped,
                    now.incomplete - before.incomplete
                ));
            }
            if written > expected {
                return Err(format!(
                    "{}: {written} turns written for {expected} requests",
                    target.name
                ));
            }
            return Ok((now, start.elapsed()));
        }
        let dropped = (now.dropped - before.dropped) as u64;
        if dropped > 0 && written + dropped >= expected {
            return Err(format!(
                "{}: lost recording: {dropped} of {expected} turns dropped (the write-behind queue was full or the store refused them; see its log), {written} written",
                target.name
            ));
        }
        if start.elapsed() > limit {
            return Err(format!(
                "{}: lost recording: {written} of {expected} turns written after {limit:?}",
                target.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stored history of `session` is `turns` turns of the system and user
/// messages and the streamed answer of `chunks` tokens, complete (a request
/// with no earlier answer in it brings its system message again).
pub async fn stream_recorded(
    target: &Arc<Target>,
    session: &str,
    chunks: u64,
    turns: usize,
) -> Result<(), String> {
    let mut conn = Conn::open(target.clone()).await?;
    let req = conn.get(&format!("/tether/history/{session}"));
    let body = exchange(&mut conn, req)
        .await
        .map_err(|e| format!("{}: history of {session}: {e}", target.name))?;
    let history: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let messages = history["messages"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    let reply = messages.last().cloned().unwrap_or_default();
    let ok = roles == ["system", "user", "assistant"].repeat(turns)
        && reply["content"].as_str() == Some(wire::stream_answer(chunks).as_str())
        && reply["complete"] == serde_json::Value::Bool(true);
    if !ok {
        return Err(format!(
            "{}: session {session} recorded wrong: {history}",
            target.name
        ));
    }
    Ok(())
}

/// Check up to `sample` of the recorded streams, spread over all of them.
pub async fn streams_recorded(
    target: &Arc<Target>,
    recorded: &[(String, String)],
    chunks: u64,
    turns: usize,
    sample: usize,
) -> Result<(), String> {
    let step = (recorded.len() / sample.max(1)).max(1);
    for (session, _) in recorded.iter().step_by(step) {
        stream_recorded(target, session, chunks, turns).await?;
    }
    Ok(())
}

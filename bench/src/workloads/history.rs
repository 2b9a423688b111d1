//! History: non-streamed requests that each carry many new messages, into
//! tether on Redis, so the measure is the history writer, not the proxy:
//! messages stored per second (from tether's counters, counted until the
//! last turn is written), and the bytes a stored message takes in Redis
//! (`MEMORY USAGE` of sampled message lists over their length).

use std::time::Duration;

use crate::report::Results;
use crate::setup::Setup;
use crate::workloads::non_stream::judge;
use crate::workloads::{Plan, check};
use crate::{load, wire};

pub async fn run(setup: &Setup, plan: &Plan, round: usize, results: &mut Results) {
    let subjects = setup.subjects();
    let s = subjects
        .iter()
        .find(|s| s.name() == "tether-redis")
        .expect("tether-redis");
    let Ok(before) = check::counters(&s.target).await else {
        results.fail("tether-redis: no metrics".into());
        return;
    };
    let tag = format!("hist{round}");
    let run = load::non_stream(
        s.target.clone(),
        plan.concurrency,
        plan.history_duration,
        &tag,
        wire::chat_request(false, plan.history_messages),
    )
    .await;
    judge(s, &run, results);
    match check::drained(&s.target, before, run.ok, Duration::from_secs(60)).await {
        Ok((after, drain)) => {
            let seconds = (run.elapsed + drain).as_secs_f64();
            results.push_global(
                "history_msgs_per_s",
                (after.messages - before.messages) / seconds,
            );
        }
        Err(e) => results.fail(e),
    }
    let keys = setup
        .redis
        .keys(&format!("tether:{{s:*:{tag}-*}}:messages"), 20);
    let (bytes, messages) = keys
        .iter()
        .filter_map(|k| setup.redis.list_memory(k))
        .fold((0, 0), |(b, m), (kb, km)| (b + kb, m + km));
    if messages > 0 {
        results.push_global("history_bytes_per_msg", bytes as f64 / messages as f64);
    }
}

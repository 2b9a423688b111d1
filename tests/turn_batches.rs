//! How a batch of finished turns reaches Redis. On a standalone server the
//! history writer's whole batch is one script call (Redis pays a call's
//! fixed cost once a batch), with the same result as one call a turn:
//! each session's turns in order, its first messages once, a replayed
//! batch adding nothing. Behind one address that refuses a script over
//! several slots (a sharding proxy in front of a cluster) tether goes turn
//! by turn, and nothing is lost on the way.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use common::history::stored_contents;
use serde_json::json;
use tether::session::SessionId;
use tether::store::{MessageRange, Store, Turn, UsageTotals};
use tether::tenant::Tenant;

/// Turn `n` of `session`: its system prompt (stored only while the session
/// is new), a question and an answer.
fn turn(session: &SessionId, n: usize) -> (Tenant, SessionId, Turn) {
    let turn = Turn {
        id: format!("{session}-turn-{n}"),
        if_new: vec![json!({"role": "system", "content": format!("you are {session}")}).into()],
        messages: vec![
            json!({"role": "user", "content": format!("{session} q{n}")}).into(),
            json!({"role": "assistant", "content": format!("{session} a{n}")}).into(),
        ],
        usage: UsageTotals {
            prompt_tokens: 3,
            completion_tokens: 2,
            total_tokens: 5,
        },
        model: Some("m".into()),
        at_ms: 1_765_000_000_000 + n as u64,
    };
    (Tenant::from_credential("sk-batches"), session.clone(), turn)
}

/// Three sessions' turns interleaved, as a writer's batch holds them.
fn interleaved(sessions: &[SessionId], turns: usize) -> Vec<(Tenant, SessionId, Turn)> {
    (0..turns)
        .flat_map(|n| sessions.iter().map(move |s| turn(s, n)))
        .collect()
}

fn sessions() -> Vec<SessionId> {
    ["alpha", "bravo", "charlie"]
        .iter()
        .map(|s| SessionId::parse(s).unwrap())
        .collect()
}

/// Each session holds its system prompt once, then its questions and
/// answers in order, and its token totals once per turn.
async fn assert_stored(store: &dyn Store, sessions: &[SessionId], turns: usize) {
    let tenant = Tenant::from_credential("sk-batches");
    for session in sessions {
        let contents = stored_contents(store, &tenant, session).await;
        let mut expected = vec![format!("you are {session}")];
        for n in 0..turns {
            expected.push(format!("{session} q{n}"));
            expected.push(format!("{session} a{n}"));
        }
        assert_eq!(contents, expected, "{session}");
        let info = store.session_info(&tenant, session).await.unwrap().unwrap();
        assert_eq!(info.usage.total_tokens, 5 * turns as u64, "{session}");
    }
}

/// `cmdstat_evalsha`: the calls carried out (those that failed, such as a
/// first call before the script was loaded, left out), and those refused
/// before they ran.
fn script_calls(redis: &RedisServer) -> (u64, u64) {
    let evalsha = redis.command_stats().remove("evalsha").unwrap_or_default();
    (evalsha.calls - evalsha.failed_calls, evalsha.rejected_calls)
}

#[tokio::test]
async fn a_batch_of_many_sessions_is_one_script_call_and_stores_what_a_call_a_turn_would() {
    let redis = RedisServer::start();
    let store = redis.store().await;
    let sessions = sessions();
    let batch = interleaved(&sessions, 4);

    store.append_turns(&batch).await.unwrap();
    assert_eq!(script_calls(&redis), (1, 0), "one call for the 12 turns");
    assert_stored(&*store, &sessions, 4).await;

    // Its answer lost, the batch is sent again: nothing is added.
    store.append_turns(&batch).await.unwrap();
    assert_stored(&*store, &sessions, 4).await;

    // The next batch of the same sessions: no second system prompt.
    let next: Vec<_> = (4..6)
        .flat_map(|n| sessions.iter().map(move |s| turn(s, n)))
        .collect();
    store.append_turns(&next).await.unwrap();
    assert_stored(&*store, &sessions, 6).await;
}

#[tokio::test]
async fn behind_one_address_that_refuses_a_script_over_several_slots_turns_go_one_call_each() {
    let redis = tokio::task::spawn_blocking(RedisServer::start_single_node_cluster)
        .await
        .unwrap();
    let store = redis.store().await;
    let sessions = sessions();
    // The three sessions' keys hash to three slots.
    let slots: std::collections::BTreeSet<String> = sessions
        .iter()
        .map(|s| {
            let tenant = Tenant::from_credential("sk-batches");
            let key = format!("tether:{{s:{tenant}:{s}}}:meta");
            redis.cli(&["CLUSTER", "KEYSLOT", &key]).unwrap()
        })
        .collect();
    assert_eq!(slots.len(), 3, "{slots:?}");

    store
        .append_turns(&interleaved(&sessions, 4))
        .await
        .unwrap();
    assert_stored(&*store, &sessions, 4).await;
    // The call over three slots was refused, then each turn went alone.
    assert_eq!(script_calls(&redis), (12, 1));

    // From then on it goes turn by turn at once.
    let next: Vec<_> = sessions.iter().map(|s| turn(s, 4)).collect();
    store.append_turns(&next).await.unwrap();
    assert_eq!(script_calls(&redis), (15, 1));
    assert_stored(&*store, &sessions, 5).await;
}

#[tokio::test]
async fn a_batch_too_long_for_one_call_is_split_and_stored_whole() {
    let redis = RedisServer::start();
    let store = redis.store().await;
    let tenant = Tenant::from_credential("sk-batches");
    // Three imports of 40,000 messages each: 120,000 arguments, past the
    // 100,000 of one call.
    let batch: Vec<_> = ["one", "two", "three"]
        .iter()
        .map(|name| {
            let session = SessionId::parse(name).unwrap();
            let (tenant, session, mut turn) = turn(&session, 0);
            turn.messages = (0..40_000)
                .map(|i| json!({"role": "user", "content": format!("{name} {i}")}).into())
                .collect();
            (tenant, session, turn)
        })
        .collect();
    store.append_turns(&batch).await.unwrap();
    assert_eq!(script_calls(&redis), (2, 0), "two calls");
    for (_, session, _) in &batch {
        let stored = store
            .read_messages(&tenant, session, MessageRange::All)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.messages.len(), 40_001, "{session}");
        assert_eq!(stored.messages[0]["role"], "system");
        assert_eq!(
            stored.messages[40_000]["content"],
            format!("{session} 39999")
        );
    }
}

/// One call applies a batch's turns in order and stops at the first that
/// Redis refuses, leaving those before it applied: the writer then goes
/// turn by turn, the replay guard keeps those from being stored twice, and
/// only the refused session's turns are dropped (counted).
#[tokio::test]
async fn a_turn_redis_refuses_in_the_middle_of_a_batch_costs_only_itself() {
    use tether::metrics::Metrics;
    use tether::record::history_writer::{HistoryWriter, PendingTurn, QueueBounds};
    let redis = RedisServer::start();
    let store = redis.store().await;
    let sessions = sessions();
    // bravo's meta is not a hash: every write to it fails with WRONGTYPE.
    let tenant = Tenant::from_credential("sk-batches");
    let bravo_meta = format!("tether:{{s:{tenant}:bravo}}:meta");
    assert!(redis.cli(&["SET", &bravo_meta, "not a hash"]).is_some());

    let metrics = Arc::new(Metrics::new());
    let writer = HistoryWriter::spawn(
        store.clone(),
        metrics.clone(),
        QueueBounds {
            turns: 1000,
            bytes: usize::MAX,
        },
        1,
    );
    // On this current-thread runtime the writer cannot run while the turns
    // are submitted: they make one batch, bravo's in its middle.
    for (tenant, session, turn) in interleaved(&sessions, 2) {
        writer.submit(PendingTurn {
            tenant,
            session,
            turn,
            done: None,
        });
    }
    writer.drain(Duration::from_secs(30)).await;

    let good = [sessions[0].clone(), sessions[2].clone()];
    assert_stored(&*store, &good, 2).await;
    assert_eq!(metrics.history_dropped.get(), 2, "bravo's two turns");
    assert_eq!(metrics.history_turns.get(), 4);
}

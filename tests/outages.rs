//! Faults around tether: Redis down, flapping or slow, and upstreams that
//! fail in every way. Forwarding goes on unchanged; history waits in the
//! write-behind queue and is flushed in order; what overflows is counted;
//! a reply cut short is recorded as incomplete and its stream interrupted.

mod common;

use std::time::{Duration, Instant};

use common::history::{KEY, get, metric, question, stored_contents, user_turn, wait_for_messages};
use common::{MockUpstream, RedisServer, Tether, client, mock_upstream};
use serde_json::json;

async fn turn(tether: &Tether, session: &str, text: &str) -> u16 {
    let response = user_turn(tether, session, text).await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "the stream is whole: {body}"
    );
    status
}

#[tokio::test]
async fn history_written_while_redis_is_down_is_flushed_in_order_when_it_returns() {
    let mock = MockUpstream::start().await;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), |s| {
        s.redis.url = url;
        s.redis.command_timeout_ms = 300;
        s.redis.connect_timeout_ms = 300;
    })
    .await;
    redis.kill();
    for i in 0..4 {
        let started = Instant::now();
        assert_eq!(
            turn(&tether, "outage", &format!("question {i}")).await,
            200,
            "forwarding does not need Redis"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no request waits on the dead Redis"
        );
    }
    let (status, ready) = get(&tether, KEY, "/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(
        ready["history_queue"], 4,
        "the turns wait in the queue: {ready}"
    );

    redis.restart();
    let stored = wait_for_messages(&tether, KEY, "outage", 8).await;
    let questions: Vec<_> = stored
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        questions,
        ["question 0", "question 1", "question 2", "question 3"],
        "flushed in order"
    );
    assert_eq!(
        metric(&tether, KEY, "tether_history_dropped_total").await,
        0,
        "nothing lost"
    );
    let (_, ready) = get(&tether, KEY, "/readyz").await;
    assert_eq!(ready["history_queue"], 0);
}

#[tokio::test]
async fn what_overflows_the_queue_is_counted_not_silently_lost() {
    let mock = MockUpstream::start().await;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), |s| {
        s.redis.url = url;
        s.redis.command_timeout_ms = 300;
        s.store.queue_capacity = 2;
    })
    .await;
    redis.kill();
    for i in 0..6 {
        assert_eq!(turn(&tether, "overflow", &format!("q{i}")).await, 200);
    }
    // The capacity counts every turn not yet written: the one its writer
    // holds while it retries, and one more waiting.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&tether, KEY, "tether_history_dropped_total").await < 4 {
        assert!(Instant::now() < deadline, "drops are counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&tether, KEY, "tether_history_dropped_total").await,
        4
    );
    redis.restart();
    let stored = wait_for_messages(&tether, KEY, "overflow", 4).await;
    let questions: Vec<_> = stored
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(questions, ["q0", "q1"], "the first two were kept, in order");
}

#[tokio::test]
async fn a_slow_redis_delays_history_not_responses() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), |s| {
        s.redis.url = url;
        s.redis.command_timeout_ms = 500;
    })
    .await;
    let stall = redis.freeze(2.0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for i in 0..3 {
        turn(&tether, "slow", &format!("s{i}")).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "responses never waited for the frozen Redis"
    );
    stall.join();
    wait_for_messages(&tether, KEY, "slow", 6).await;
}

/// Each upstream fault: the client sees a clean end or a clear error, the
/// partial reply is recorded with `"complete": false`, the stream is marked
/// `interrupted`, nothing hangs.
#[tokio::test]
async fn upstream_faults_are_recorded_as_incomplete_and_interrupted() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.upstream.idle_timeout_secs = 1).await;
    for (session, knob, value) in [
        ("reset", "x-mock-reset-after", "3"),
        ("stall", "x-mock-stall-after", "3"),
    ] {
        let response = client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", session)
            .header("x-mock-chunks", "10")
            .header(knob, value)
            .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-stream-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let outcome = tokio::time::timeout(Duration::from_secs(5), response.bytes())
            .await
            .expect("nothing hangs");
        assert!(
            outcome.is_err(),
            "{session}: the client's stream ends with an error"
        );
        let stored = wait_for_messages(&tether, KEY, session, 2).await;
        assert_eq!(stored[1]["complete"], false, "{session}: {}", stored[1]);
        assert_eq!(
            stored[1]["content"],
            mock_upstream::answer(3),
            "{session}: what arrived is kept"
        );
        let (_, status) = get(&tether, KEY, &format!("/streams/{id}/status")).await;
        assert_eq!(status["state"], "interrupted", "{session}");
    }
    let refused = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", "status")
        .header("x-mock-status", "503")
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        503,
        "the upstream's own error reaches the client"
    );
    let not_sse = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", "json-not-sse")
        .json(&json!({"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_sse.status(), 200);
    not_sse.bytes().await.unwrap();
    let stored = wait_for_messages(&tether, KEY, "json-not-sse", 2).await;
    assert_eq!(
        stored[1]["complete"], true,
        "a JSON answer is recorded whole"
    );
}

/// A group commit whose answer was lost (a timeout after Redis carried it
/// out) is sent again whole: the turns it holds, several of one session,
/// are stored once.
#[tokio::test]
async fn a_batch_written_twice_is_stored_once() {
    use tether::store::{Turn, UsageTotals};
    let redis = RedisServer::start();
    let store = redis.store().await;
    let tenant = tether::tenant::Tenant::from_credential(KEY);
    let session = tether::session::SessionId::parse("replayed").unwrap();
    let batch: Vec<_> = (0..20)
        .map(|i| {
            let turn = Turn {
                usage: UsageTotals {
                    total_tokens: 1,
                    ..UsageTotals::default()
                },
                ..question(&tether::server::new_id(), &format!("q{i}"))
            };
            (tenant.clone(), session.clone(), turn)
        })
        .collect();
    store.append_turns(&batch[..4]).await.unwrap();
    store.append_turns(&batch[..4]).await.unwrap();
    let info = store
        .session_info(&tenant, &session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.message_count, 4, "the replayed batch added nothing");
    assert_eq!(info.usage.total_tokens, 4);

    // The last 16 ids are remembered (ids as long as the ones tether gives
    // its turns): a replay of a batch that long still adds nothing.
    store.append_turns(&batch[4..]).await.unwrap();
    store.append_turns(&batch[4..]).await.unwrap();
    let info = store
        .session_info(&tenant, &session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.message_count, 20);
}

/// A session whose replay guard an earlier version wrote (ids joined by
/// commas, none around them) still refuses the turns it names, the first
/// and the last among them too.
#[tokio::test]
async fn a_replay_guard_written_the_earlier_way_still_holds() {
    let redis = RedisServer::start();
    let store = redis.store().await;
    let tenant = tether::tenant::Tenant::from_credential(KEY);
    let session = tether::session::SessionId::parse("guarded-earlier").unwrap();
    let turn = |id: &str| (tenant.clone(), session.clone(), question(id, id));
    store.append_turns(&[turn("opening")]).await.unwrap();
    let meta = redis
        .cli(&["--scan", "--pattern", "*guarded-earlier*:meta"])
        .unwrap();
    redis
        .cli(&["HSET", meta.trim(), "recent_turns", "first,middle,last"])
        .unwrap();
    for replayed in ["first", "middle", "last"] {
        store.append_turns(&[turn(replayed)]).await.unwrap();
    }
    store.append_turns(&[turn("new")]).await.unwrap();
    store.append_turns(&[turn("new")]).await.unwrap();
    assert_eq!(
        stored_contents(store.as_ref(), &tenant, &session).await,
        ["opening", "new"]
    );
}

/// A stream's opening indexes its session at the stream's start. When that
/// write is carried out after the turn that ended the stream (it failed and
/// was retried, the turn's write did not), the session's last activity
/// stays the turn's: `ZADD GT` never moves a score back. Redis is down when
/// tether starts, so whether it takes `GT` is learnt at the first write.
#[tokio::test]
async fn an_opening_written_after_its_turn_leaves_the_session_at_the_turns_time() {
    use tether::store::{StreamRecord, StreamState, Turn, now_ms};
    let mut redis = RedisServer::start();
    redis.kill();
    let stores = redis.stores().await;
    redis.restart();
    let tenant = tether::tenant::Tenant::from_credential(KEY);
    let session = tether::session::SessionId::parse("late-opening").unwrap();
    let (started, ended) = (now_ms() - 5_000, now_ms() - 1_000);
    let turn = Turn {
        at_ms: ended,
        ..question("late-opening-turn", "hi")
    };
    // Retried while the connection comes back, as the history writer does.
    let batch = [(tenant.clone(), session.clone(), turn)];
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = stores.history.append_turns(&batch).await {
        assert!(Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = StreamRecord {
        id: "late-opening-stream".into(),
        tenant: tenant.clone(),
        session: session.to_string(),
        state: StreamState::Active,
        events: 0,
        created_ms: started,
        heartbeat_ms: started,
    };
    let ttl = Duration::from_secs(60);
    stores
        .checkpoints
        .unwrap()
        .open_stream(&record, ttl, ttl)
        .await
        .unwrap();
    let score = |key: &str, member: &str| redis.cli(&["ZSCORE", key, member]).unwrap();
    let index = format!("tether:{{t:{tenant}}}:sessions");
    assert_eq!(score(&index, "late-opening").trim(), ended.to_string());
    let all = "tether:{all}:sessions";
    let member = format!("{tenant}/late-opening");
    assert_eq!(score(all, &member).trim(), ended.to_string());
    let page = stores
        .history
        .list_sessions(&tether::store::Scope::Tenant(tenant), 0, 10)
        .await
        .unwrap();
    assert_eq!(page.entries[0].last_activity_ms, ended);
}

//! The history routes as a client uses them: session listing order and
//! paging, history pages and filters, delete, exports, TTLs, and a reply
//! that is recorded even when its client left mid-stream.

mod common;

use std::time::Duration;

use common::history::{KEY, delete, get, user_turn, wait_for_messages};
use common::{MockUpstream, RedisServer, Tether, client, mock_upstream};
use serde_json::{Value, json};

async fn turn(tether: &Tether, session: &str, text: &str) {
    user_turn(tether, session, text)
        .await
        .bytes()
        .await
        .unwrap();
}

fn ids(body: &Value) -> Vec<String> {
    body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sessions_are_listed_most_recent_first_in_pages() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), |s| s.redis.url = url).await;
    for i in 0..5 {
        turn(&tether, &format!("s{i}"), "hello").await;
        wait_for_messages(&tether, KEY, &format!("s{i}"), 2).await;
        tokio::time::sleep(Duration::from_millis(3)).await; // distinct activity times
    }
    turn(&tether, "s1", "again").await;
    wait_for_messages(&tether, KEY, "s1", 4).await;

    let (_, first) = get(&tether, KEY, "/sessions?limit=2").await;
    assert_eq!(
        ids(&first),
        ["s1", "s4"],
        "most recently active first: {first}"
    );
    assert_eq!(first["total_sessions"], 5);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = get(&tether, KEY, &format!("/sessions?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), ["s3", "s2"]);
    let cursor = second["next_cursor"].as_str().unwrap().to_owned();
    let (_, last) = get(&tether, KEY, &format!("/sessions?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&last), ["s0"]);
    assert_eq!(last["next_cursor"], Value::Null, "no page after the last");
    assert_eq!(first["items"][0]["message_count"], 4);

    for bad in [
        "/sessions?limit=0",
        "/sessions?limit=abc",
        "/sessions?limit=100000",
        "/sessions?cursor=zzz",
        "/history/s1?cursor=-1",
        "/history/s1?order=sideways",
    ] {
        let (status, body) = get(&tether, KEY, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (status, _) = get(&tether, KEY, "/history/nobody").await;
    assert_eq!(status, 404, "unknown session");
}

#[tokio::test]
async fn history_pages_filter_and_order() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    for tether in [
        Tether::start(&mock.url()).await,
        Tether::start_with(&mock.url(), |s| s.redis.url = url.clone()).await,
    ] {
        for i in 0..3 {
            turn(&tether, "paged", &format!("question {i} about Rust")).await;
            wait_for_messages(&tether, KEY, "paged", 2 * (i + 1)).await;
        }
        let (_, page) = get(&tether, KEY, "/history/paged?limit=4").await;
        let roles: Vec<_> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
        assert_eq!(page["message_count"], 6, "the whole session's count");
        let cursor = page["next_cursor"].as_str().unwrap();
        let (_, rest) = get(
            &tether,
            KEY,
            &format!("/history/paged?limit=4&cursor={cursor}"),
        )
        .await;
        assert_eq!(rest["messages"].as_array().unwrap().len(), 2);
        assert_eq!(rest["messages"][0]["index"], 4);
        assert_eq!(rest["next_cursor"], Value::Null);

        let (_, newest) = get(&tether, KEY, "/history/paged?order=desc&limit=1").await;
        assert_eq!(
            newest["messages"][0]["index"], 5,
            "desc starts at the newest: {newest}"
        );
        let (_, users) = get(&tether, KEY, "/history/paged?role=user").await;
        assert_eq!(users["messages"].as_array().unwrap().len(), 3);
        let (_, found) = get(&tether, KEY, "/history/paged?q=QUESTION%201").await;
        assert_eq!(
            found["messages"].as_array().unwrap().len(),
            1,
            "case-insensitive search: {found}"
        );
        assert_eq!(found["messages"][0]["content"], "question 1 about Rust");
        let (_, after) = get(&tether, KEY, "/history/paged?after=3").await;
        assert_eq!(
            after["messages"][0]["index"], 4,
            "after=N starts past message N"
        );
    }
}

#[tokio::test]
async fn a_session_is_deleted_and_exported_in_three_formats() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    turn(&tether, "exported", "hello *markdown*").await;
    wait_for_messages(&tether, KEY, "exported", 2).await;

    let export = |format: &'static str| {
        let tether = &tether;
        async move {
            let response = client()
                .get(tether.url(&format!("/tether/history/exported/export?format={format}")))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{format}");
            let disposition = response.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                disposition.starts_with("attachment; filename=\"tether-exported."),
                "{disposition}"
            );
            response.text().await.unwrap()
        }
    };
    let whole: Value = serde_json::from_str(&export("json").await).unwrap();
    assert_eq!(whole["messages"].as_array().unwrap().len(), 2);
    let lines: Vec<Value> = export("jsonl")
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["content"], mock_upstream::answer(2));
    let markdown = export("markdown").await;
    assert!(markdown.starts_with("# Session exported"), "{markdown}");
    assert!(
        markdown.contains("## user") && markdown.contains("hello *markdown*"),
        "{markdown}"
    );
    let (status, _) = get(&tether, KEY, "/history/exported/export?format=pdf").await;
    assert_eq!(status, 400);

    let (deleted, body) = delete(&tether, KEY, "/history/exported").await;
    assert_eq!(deleted, 200);
    assert_eq!(
        body,
        json!({"status": "success", "message": "Chat history cleared for session exported"})
    );
    let (status, _) = get(&tether, KEY, "/history/exported").await;
    assert_eq!(status, 404);
    let (_, list) = get(&tether, KEY, "/sessions").await;
    assert_eq!(list["total_sessions"], 0);
}

/// Redis keys get `history.ttl_secs` and writes refresh it; a write that
/// comes less than a minute (a hundredth of the TTL, if shorter) after the
/// last refresh leaves it, so a busy session's turns skip two of their five
/// commands.
#[tokio::test]
async fn history_ttl_is_set_and_refreshed_by_writes() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), |s| {
        s.redis.url = url;
        s.history.ttl_secs = 10_000;
    })
    .await;
    // Not streamed: a stream's opening refreshes the meta's TTL on its own
    // (it names the session's latest stream there).
    let answered = |text: &'static str| {
        client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", "ttl")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
            .send()
    };
    answered("one").await.unwrap().bytes().await.unwrap();
    wait_for_messages(&tether, KEY, "ttl", 2).await;
    let keys = redis
        .cli(&["--scan", "--pattern", "tether:{s:*:ttl}:*"])
        .unwrap();
    assert_eq!(keys.lines().count(), 2, "messages and meta: {keys}");
    let meta = keys.lines().find(|k| k.ends_with(":meta")).unwrap();
    let messages = keys.lines().find(|k| k.ends_with(":messages")).unwrap();
    let ttl = |key: &str| -> i64 { redis.cli(&["TTL", key]).unwrap().trim().parse().unwrap() };
    let fresh = 9_900..=10_000;
    assert!(fresh.contains(&ttl(meta)) && fresh.contains(&ttl(messages)));
    // As if time had passed since: the TTLs ran down...
    for key in [meta, messages] {
        redis.cli(&["EXPIRE", key, "5000"]).unwrap();
    }
    // ...but the last refresh is recent: the next turn leaves them.
    answered("two").await.unwrap().bytes().await.unwrap();
    wait_for_messages(&tether, KEY, "ttl", 4).await;
    for key in [meta, messages] {
        assert!(ttl(key) <= 5_000, "{key}: left, got {}", ttl(key));
    }
    // The last refresh a minute ago: the next turn refreshes both.
    let a_minute_ago = tether::store::now_ms() - 61_000;
    redis
        .cli(&["HSET", meta, "ttl_ms", &a_minute_ago.to_string()])
        .unwrap();
    answered("three").await.unwrap().bytes().await.unwrap();
    wait_for_messages(&tether, KEY, "ttl", 6).await;
    for key in [meta, messages] {
        assert!(
            fresh.contains(&ttl(key)),
            "{key}: refreshed to history.ttl_secs, got {}",
            ttl(key)
        );
    }
    // The messages expired before the meta (a stream's opening keeps the
    // meta alive): the list a turn makes anew gets the TTL at once.
    redis.cli(&["DEL", messages]).unwrap();
    answered("four").await.unwrap().bytes().await.unwrap();
    wait_for_messages(&tether, KEY, "ttl", 2).await;
    assert!(fresh.contains(&ttl(messages)), "got {}", ttl(messages));

    let memory = Tether::start_with(&mock.url(), |s| s.history.ttl_secs = 1).await;
    turn(&memory, "fleeting", "hi").await;
    wait_for_messages(&memory, KEY, "fleeting", 2).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = get(&memory, KEY, "/history/fleeting").await;
    assert_eq!(status, 404, "the in-memory store expires history too");
    let (_, list) = get(&memory, KEY, "/sessions").await;
    assert_eq!(list["total_sessions"], 0, "and prunes the session index");
}

/// The client leaves after 2 chunks: tether reads the upstream to the end
/// and records the whole answer (policy finish), or closes the upstream and
/// records what arrived, marked incomplete (policy cancel).
#[tokio::test]
async fn a_reply_is_recorded_when_its_client_leaves_mid_stream() {
    let mock = MockUpstream::start().await;
    for (policy, complete) in [("finish", true), ("cancel", false)] {
        let tether =
            Tether::start_with(&mock.url(), |s| s.streams.on_disconnect = policy.into()).await;
        let mut response = client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", policy)
            .header("x-mock-chunks", "10")
            .header("x-mock-delay-ms", "30")
            .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "long answer"}]}))
            .send()
            .await
            .unwrap();
        response.chunk().await.unwrap();
        response.chunk().await.unwrap();
        drop(response);
        let stored = wait_for_messages(&tether, KEY, policy, 2).await;
        let reply = &stored[1];
        assert_eq!(reply["complete"], complete, "{policy}: {reply}");
        let content = reply["content"].as_str().unwrap_or("");
        if complete {
            assert_eq!(
                content,
                mock_upstream::answer(10),
                "{policy}: the whole answer"
            );
        } else {
            assert!(
                content.starts_with("tok0 ") && content.len() < mock_upstream::answer(10).len(),
                "{policy}: {content}"
            );
        }
    }
}

const ADMIN: &str = "admin-token-0123456789";

/// Polls `GET /tether/sessions` (as `key`) until `session` is listed; its item.
async fn listed(tether: &Tether, key: &str, session: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get(tether, key, "/sessions").await;
        assert_eq!(status, 200, "{body}");
        if let Some(item) = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["session_id"] == session)
        {
            return item.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{session} never listed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A new session is listed, found, read and resumed (by the admin token
/// too, which names no tenant) while its first answer streams, with no
/// messages yet; then its first turn lands whole, system message first,
/// as any new session's does. With either store.
#[tokio::test]
async fn a_session_is_listed_while_its_first_answer_streams() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    for store in ["embedded", "redis"] {
        let url = redis.url();
        let tether = Tether::start_with(&mock.url(), |s| {
            s.auth.admin_token = ADMIN.into();
            if store == "redis" {
                s.redis.url = url;
            }
        })
        .await;
        let session = format!("first-answer-{store}");
        let mut answer = client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", &session)
            .header("x-mock-chunks", "40")
            .header("x-mock-delay-ms", "50")
            .json(&json!({"model": "m", "stream": true, "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "tell me a story"}]}))
            .send()
            .await
            .unwrap();
        let stream_id = answer.headers()["x-stream-id"].to_str().unwrap().to_owned();
        common::streams::read_events(&mut answer, 2).await;

        let item = listed(&tether, KEY, &session).await;
        assert_eq!(item["message_count"], 0, "{store}: {item}");
        let (_, everyone) = get(&tether, ADMIN, "/sessions").await;
        assert!(
            everyone["sessions"]
                .as_array()
                .unwrap()
                .contains(&json!(session)),
            "{store}: the admin lists it too: {everyone}"
        );
        let (status, info) = get(&tether, KEY, &format!("/sessions/{session}")).await;
        assert_eq!(status, 200, "{store}: {info}");
        assert_eq!(info["message_count"], 0, "{store}: {info}");
        assert_eq!(info["active_stream"], stream_id.as_str(), "{store}: {info}");
        assert_eq!(info["last_message_time"], Value::Null, "{store}: {info}");
        assert!(
            info["created_at"].as_str().unwrap().starts_with("20"),
            "{info}"
        );
        let (status, history) = get(&tether, KEY, &format!("/history/{session}")).await;
        assert_eq!(status, 200, "{store}: {history}");
        assert_eq!(history["messages"], json!([]), "{store}: {history}");
        let (status, export) = get(&tether, KEY, &format!("/history/{session}/export")).await;
        assert_eq!(status, 200, "{store}: {export}");
        assert_eq!(export["message_count"], 0, "{store}: {export}");

        let mut resumed = client()
            .get(tether.url(&format!("/tether/sessions/{session}/stream?after=2")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resumed.status(),
            200,
            "{store}: the admin token resumes it by session id alone"
        );
        assert_eq!(resumed.headers()["x-stream-id"], stream_id.as_str());
        common::streams::read_events(&mut resumed, 1).await;
        drop(resumed);

        answer.bytes().await.unwrap();
        let messages = wait_for_messages(&tether, KEY, &session, 3).await;
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant"], "{store}");
        let item = listed(&tether, KEY, &session).await;
        assert_eq!(item["message_count"], 3, "{store}: {item}");
    }
}

/// A session whose messages expired while its meta lived on (a stream's
/// opening refreshes the meta's TTL; the turn that would have refreshed
/// the list's was lost) starts again with its system prompt, as a new one.
#[tokio::test]
async fn a_session_whose_messages_expired_before_its_meta_starts_again_with_its_system_prompt() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let tether = Tether::start_with(&mock.url(), |s| s.redis.url = url).await;
    let chat = |messages: Value| {
        client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", "outlived")
            .json(&json!({"model": "m", "messages": messages}))
            .send()
    };
    let system = json!({"role": "system", "content": "be brief"});
    let developer = json!({"role": "developer", "content": "in French"});
    let first = json!({"role": "user", "content": "first"});
    chat(json!([system, developer, first]))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stored = wait_for_messages(&tether, KEY, "outlived", 4).await;
    let list = redis
        .cli(&["--scan", "--pattern", "tether:{s:*:outlived}:messages"])
        .unwrap();
    assert_eq!(redis.cli(&["DEL", list.trim()]).unwrap().trim(), "1");

    let reply = stored[3].clone();
    let answer = json!({"role": "assistant", "content": reply["content"]});
    let second = json!({"role": "user", "content": "second"});
    chat(json!([system, developer, first, answer, second]))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let messages = wait_for_messages(&tether, KEY, "outlived", 4).await;
    let said: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(said[0], ("system", "be brief"), "{messages:?}");
    assert_eq!(said[1], ("developer", "in French"), "{messages:?}");
    assert_eq!(said[2], ("user", "second"), "{messages:?}");
    assert_eq!(said[3].0, "assistant");
}

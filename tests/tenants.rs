//! Tenants: a client sees only its own sessions, the admin token sees all,
//! another tenant's session is a 404 (never a 403), and the raw key is
//! never written to Redis nor to the log.

mod common;

use common::history::{delete, get, wait_for_messages};
use common::{MockUpstream, RedisServer, Tether, client};
use serde_json::json;

const ALICE: &str = "sk-alice-5d1e0c7b9a";
const BOB: &str = "sk-bob-88f3a2c4e1";
const ADMIN: &str = "admin-token-0123456789";

/// tether recording into `redis`, with the admin token set.
async fn with_admin(mock: &MockUpstream, redis: &RedisServer) -> Tether {
    let url = redis.url();
    Tether::start_with(&mock.url(), |s| {
        s.redis.url = url;
        s.auth.admin_token = ADMIN.into();
    })
    .await
}

async fn say(tether: &Tether, key: &str, session: &str) {
    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-session-id", session)
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": format!("hi from {session}")}]}))
        .send()
        .await
        .unwrap();
    response.bytes().await.unwrap();
    wait_for_messages(tether, key, session, 2).await;
}

#[tokio::test]
async fn each_key_sees_only_its_sessions_and_the_admin_sees_all() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let tether = with_admin(&mock, &redis).await;
    say(&tether, ALICE, "alice-1").await;
    say(&tether, ALICE, "shared-name").await;
    say(&tether, BOB, "bob-1").await;
    say(&tether, BOB, "shared-name").await;

    let (_, alice) = get(&tether, ALICE, "/sessions").await;
    let mut alice_ids: Vec<_> = alice["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    alice_ids.sort();
    assert_eq!(alice_ids, ["alice-1", "shared-name"], "{alice}");
    assert_eq!(alice["total_sessions"], 2);

    for path in ["/history/bob-1", "/sessions/bob-1", "/history/bob-1/export"] {
        let (status, body) = get(&tether, ALICE, path).await;
        assert_eq!(
            status, 404,
            "{path}: another tenant's session does not exist for alice: {body}"
        );
    }
    let (deleted, _) = delete(&tether, ALICE, "/history/bob-1").await;
    assert_eq!(deleted, 404, "alice cannot delete bob's session");
    let (_, bob_history) = get(&tether, BOB, "/history/shared-name").await;
    assert_eq!(bob_history["messages"][0]["content"], "hi from shared-name");
    assert_eq!(
        bob_history["messages"].as_array().unwrap().len(),
        2,
        "same name, separate histories"
    );

    let (_, all) = get(&tether, ADMIN, "/sessions").await;
    assert_eq!(
        all["total_sessions"], 4,
        "the admin token sees every tenant: {all}"
    );
    let (status, _) = get(&tether, ADMIN, "/history/bob-1").await;
    assert_eq!(
        status, 200,
        "the admin finds a session of one tenant by its id"
    );
    let (status, body) = get(&tether, ADMIN, "/history/shared-name").await;
    assert_eq!(status, 409, "two tenants have this id: {body}");
    let bob_tenant = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["session_id"] == "bob-1")
        .unwrap()["tenant"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = get(
        &tether,
        ADMIN,
        &format!("/history/shared-name?tenant={bob_tenant}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["content"], "hi from shared-name");

    let anonymous = client()
        .get(tether.url("/tether/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "own routes need a credential");

    // Nothing in Redis holds a raw key: every key name and every value.
    let keys = redis.cli(&["--scan", "--pattern", "*"]).unwrap();
    assert!(keys.contains("tether:{s:"), "history is in Redis: {keys}");
    let mut everything = keys.clone();
    for key in keys.lines() {
        let kind = redis.cli(&["TYPE", key]).unwrap();
        let dump = match kind.trim() {
            "list" => redis.cli(&["LRANGE", key, "0", "-1"]),
            "hash" => redis.cli(&["HGETALL", key]),
            "zset" => redis.cli(&["ZRANGE", key, "0", "-1"]),
            "stream" => redis.cli(&["XRANGE", key, "-", "+"]),
            other => panic!("unexpected key type {other} for {key}"),
        };
        everything.push_str(&dump.unwrap());
    }
    for secret in [ALICE, BOB, ADMIN] {
        assert!(!everything.contains(secret), "{secret} is stored in Redis");
    }
}

#[tokio::test]
async fn without_tenancy_everyone_shares_one_tenant_and_the_admin_token_guards_it() {
    let mock = MockUpstream::start().await;
    let open = Tether::start_with(&mock.url(), |s| s.auth.tenancy = "none".into()).await;
    say(&open, "", "local-1").await;
    let (status, body) = get(&open, "", "/sessions").await;
    assert_eq!(
        status, 200,
        "a laptop in front of a local model needs no key: {body}"
    );
    assert_eq!(body["sessions"], json!(["local-1"]));

    let guarded = Tether::start_with(&mock.url(), |s| {
        s.auth.tenancy = "none".into();
        s.auth.admin_token = ADMIN.into();
    })
    .await;
    let (status, _) = get(&guarded, ALICE, "/sessions").await;
    assert_eq!(
        status, 401,
        "with an admin token set, only it opens the own routes"
    );
    let (status, _) = get(&guarded, ADMIN, "/sessions").await;
    assert_eq!(status, 200);
}

/// The admin token finds a session by id alone by reading the index of
/// every tenant's sessions: a thousand members a call, not Redis's default
/// ten (30,000 sessions were 3,000 round trips).
#[tokio::test]
async fn the_admin_finds_a_session_among_many_tenants_sessions_in_few_calls() {
    let mock = MockUpstream::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let tether = with_admin(&mock, &redis).await;
    say(&tether, ALICE, "needle").await;
    // 30,000 sessions of other tenants, as recent as the needle.
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for chunk in 0..6 {
        let members: Vec<(u64, String)> = (0..5000)
            .map(|i| (now, format!("tenant{}/haystack-{i}", chunk * 5000 + i)))
            .collect();
        let _: () =
            redis::AsyncCommands::zadd_multiple(&mut conn, "tether:{all}:sessions", &members)
                .await
                .unwrap();
    }
    let zscans = || redis.command_stats().get("zscan").map_or(0, |s| s.calls);
    let before = zscans();
    let (status, body) = get(&tether, ADMIN, "/history/needle").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"][0]["content"], "hi from needle");
    let calls = zscans() - before;
    assert!(calls <= 40, "{calls} ZSCAN calls for 30,001 members");
}

//! tether on a real 3-master Redis Cluster: history and cross-replica
//! resume work with every pipeline inside one slot, and a master killed
//! mid-run is survived: its replica takes over and tether recovers.

mod common;

use std::time::{Duration, Instant};

use common::history::{KEY, get, wait_for_messages};
use common::redis_cluster::RedisCluster;
use common::streams::resume_elsewhere;
use common::{MockUpstream, Tether, client, mock_upstream};
use serde_json::json;

async fn on_cluster(mock: &MockUpstream, cluster: &RedisCluster) -> Tether {
    let url = cluster.url();
    Tether::start_with(&mock.url(), move |s| {
        s.redis.url = url;
        s.redis.command_timeout_ms = 1000;
        s.streams.checkpoint_interval_ms = 50;
    })
    .await
}

async fn stream(tether: &Tether, session: &str, chunks: u32, delay_ms: u32) -> reqwest::Response {
    client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-session-id", session)
        .header("x-mock-chunks", chunks.to_string())
        .header("x-mock-delay-ms", delay_ms.to_string())
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": format!("hello from {session}")}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_cross_replica_resume_on_a_cluster_survive_a_master_kill() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let mock = MockUpstream::start().await;
    let (a, b) = (
        on_cluster(&mock, &cluster).await,
        on_cluster(&mock, &cluster).await,
    );

    // History over many sessions, so the keys land on every master.
    for i in 0..12 {
        stream(&a, &format!("c{i}"), 3, 0)
            .await
            .bytes()
            .await
            .unwrap();
    }
    for i in 0..12 {
        wait_for_messages(&b, KEY, &format!("c{i}"), 2).await;
    }
    let (_, list) = get(&b, KEY, "/sessions?limit=100").await;
    assert_eq!(list["total_sessions"], 12, "{list}");
    let keys = cluster.cli(&["--scan", "--pattern", "tether:{s:*:c3}:*"]);
    // A scan in cluster mode covers one node; the slot check is what matters.
    let tenant = tether::tenant::Tenant::from_credential(KEY);
    let slot = |key: &str| cluster.cli(&["CLUSTER", "KEYSLOT", key]).unwrap();
    assert_eq!(
        slot(&format!("tether:{{s:{tenant}:c3}}:messages")),
        slot(&format!("tether:{{s:{tenant}:c3}}:meta")),
        "a session's keys share a slot (scan: {keys:?})"
    );

    // A session whose first answer still streams through A is listed on B
    // (the stream's opening wrote the indexes, on their own slots), then
    // resumed there, byte for byte.
    let live = stream(&a, "resumed", 40, 25).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let info = loop {
        let (status, info) = get(&b, KEY, "/sessions/resumed").await;
        if status == 200 {
            break info;
        }
        assert!(Instant::now() < deadline, "never listed: {status} {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(info["message_count"], 0, "{info}");
    assert!(info["active_stream"].is_string(), "{info}");
    let (_, list) = get(&b, KEY, "/sessions?limit=100").await;
    assert_eq!(list["total_sessions"], 13, "{list}");
    resume_elsewhere(live, 5, &b).await;

    // Kill the master that holds a session; its replica takes over.
    let victim = format!("tether:{{s:{tenant}:c0}}:messages");
    let port = cluster.kill_master_of(&victim);
    println!("killed the master on port {port}");
    let killed = Instant::now();
    let recorded = stream(&a, "c0", 2, 0).await;
    assert_eq!(
        recorded.status(),
        200,
        "forwarding goes on while the cluster fails over"
    );
    recorded.bytes().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&a, KEY, "/history/c0").await;
        if status == 200 && body["message_count"] == 4 {
            assert_eq!(body["messages"][2]["content"], "hello from c0");
            assert_eq!(body["messages"][3]["content"], mock_upstream::answer(2));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tether never recovered after the failover: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "history written through the failover after {:?}",
        killed.elapsed()
    );
    let (status, _) = get(&b, KEY, "/history/c5").await;
    assert_eq!(
        status, 200,
        "the other replica reads through the new master too"
    );
}

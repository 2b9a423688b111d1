//! Hostile input: each gets a clear OpenAI-shaped 4xx or a closed
//! connection, loses nothing that was accepted, and none affects other
//! clients. (These tests use blocking sockets as attackers would, so tether
//! runs on worker threads of its own.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::history::{KEY, get, metrics};
use common::{MockUpstream, Tether, both_stores, chat_body, client};
use serde_json::json;

/// Sends raw bytes on a fresh connection and returns what came back.
fn raw(tether: &Tether, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(tether.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_cannot_be_recorded_are_forwarded_and_counted() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let deep = format!(
        "{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":{}1{}}}]}}",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let mut invalid_utf8 = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(br#""}]}"#);
    for (what, body) in [
        ("deeply nested", deep.into_bytes()),
        ("invalid UTF-8", invalid_utf8),
    ] {
        let response = client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", "hostile")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{what}: forwarded to the upstream");
        assert!(mock.last_request().body == body, "{what}: byte for byte");
    }
    let (status, _) = get(&tether, KEY, "/history/hostile").await;
    assert_eq!(status, 404, "neither was recorded");
    let metrics = metrics(&tether, KEY).await;
    assert!(
        metrics.contains("tether_recording_skipped_total{reason=\"invalid_json\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_conversation_within_the_limit_is_recorded_whole() {
    let mock = MockUpstream::start().await;
    for (tether, _redis) in both_stores(&mock.url(), |_| {}).await {
        let messages: Vec<_> = (0..20_000)
            .map(|i| json!({"role": "user", "content": format!("m{i}")}))
            .collect();
        let response = client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", "huge")
            .json(&json!({"model": "m", "messages": messages}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, page) = get(&tether, KEY, "/history/huge?limit=1&cursor=19999").await;
            if status == 200 && page["message_count"] == 20_001 {
                assert_eq!(page["messages"][0]["content"], "m19999");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the huge turn was never stored: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, first) = get(&tether, KEY, "/history/huge?limit=2").await;
        assert_eq!(
            first["messages"][0]["content"], "m0",
            "in order from the first"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_path_tricks_are_refused_before_forwarding() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    // A control character is not HTTP: the parser refuses it with a bare 400.
    let session_ctl = raw(
        &tether,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Session-Id: a\x01b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(session_ctl.starts_with("HTTP/1.1 400"), "{session_ctl}");
    // Legal HTTP that is not a session id gets tether's own error.
    let session_space = raw(
        &tether,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Session-Id: a b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(session_space.starts_with("HTTP/1.1 400"), "{session_space}");
    assert!(
        session_space.contains("invalid_session_id"),
        "an OpenAI-shaped error: {session_space}"
    );
    let split_header = raw(
        &tether,
        b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Evil: a\rInjected: b\r\n\r\n",
    );
    assert!(
        split_header.is_empty() || split_header.starts_with("HTTP/1.1 400"),
        "a CR inside a header: {split_header}"
    );
    // Raw bytes: an HTTP client library would remove the dot segments itself.
    for path in [
        "/s/../tether/sessions",
        "/s/x/../../tether/sessions",
        "/v1/%2e%2e/tether/sessions",
        "/s/a%2Fb/v1/models",
        "/s/a%0d%0aX:1/v1/models",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(&tether, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("\"code\":\"invalid_"),
            "{path}: an OpenAI-shaped error: {answer}"
        );
    }
    assert!(
        mock.requests().is_empty(),
        "nothing tricky reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_required_refuses_proxy_traffic_without_a_credential() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.auth.required = true).await;
    let anonymous = client()
        .post(tether.url("/v1/chat/completions"))
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(mock.requests().is_empty(), "not forwarded");
    let keyed = client()
        .post(tether.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200);
    let probe = client()
        .get(tether.url("/tether/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200, "probes still need nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_is_cut_off_and_others_are_served_meanwhile() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.server.header_read_timeout_secs = 1).await;
    let mut loris = TcpStream::connect(tether.addr).unwrap();
    loris
        .write_all(b"GET /v1/models HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let started = Instant::now();
    let served = client()
        .get(tether.url("/tether/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        served.status(),
        200,
        "another client is served while the loris dribbles"
    );
    loris
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = loris.read_to_end(&mut rest);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "closed after the header read timeout: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_neither_block_others_nor_stay_forever() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.server.header_read_timeout_secs = 2).await;
    let idle: Vec<TcpStream> = (0..3000)
        .map(|_| TcpStream::connect(tether.addr).unwrap())
        .collect();
    let started = Instant::now();
    for _ in 0..20 {
        let response = client()
            .post(tether.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .body(chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "3000 idle connections do not slow others down"
    );
    let mut probe = idle.into_iter().next().unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    let mut buf = [0u8; 1];
    let read = probe.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "an idle connection is closed by tether"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_new_connections_are_closed_and_others_recover() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| {
        s.server.max_connections = 50;
        s.server.header_read_timeout_secs = 1;
    })
    .await;
    let hogs: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(tether.addr).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(tether.addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = over.write_all(b"GET /tether/healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut answer = Vec::new();
    let _ = over.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "the 51st connection is closed without an answer"
    );
    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(r) = client().get(tether.url("/tether/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tether serves again once connections are released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

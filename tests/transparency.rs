//! Transparency: what the client gets through tether is what the upstream
//! sent, byte for byte and as soon as it was sent, for every method, path,
//! query, body size and recorded provider stream; only the documented header
//! rules apply.

mod common;

use std::time::{Duration, Instant};

use common::{MockUpstream, Tether, chat_body, client, mock_upstream};

/// Every fixture stream in tests/fixtures/streams (raw and gzip wire bodies).
fn recorded_streams() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sse") || n.ends_with(".sse.gz"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 31,
        "expected the 31 recorded streams, found {}",
        names.len()
    );
    names
}

#[tokio::test]
async fn every_recorded_provider_stream_passes_byte_for_byte() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    for name in recorded_streams() {
        let want = std::fs::read(format!(
            "{}/tests/fixtures/streams/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let response = client()
            .post(tether.url("/v1/chat/completions"))
            .header("x-mock-replay", &name)
            .header("x-mock-replay-chunk", "13")
            .body(chat_body(true))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            response.headers()["x-accel-buffering"],
            "no",
            "{name}: SSE is marked unbuffered"
        );
        let gzip = name.ends_with(".gz");
        assert_eq!(
            response
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            gzip.then_some("gzip"),
            "{name}: compressed streams are forwarded compressed"
        );
        let got = response.bytes().await.unwrap();
        assert!(
            got[..] == want[..],
            "{name}: {} bytes forwarded, {} sent by the upstream, or they differ",
            got.len(),
            want.len()
        );
    }
}

#[tokio::test]
async fn the_same_bytes_and_headers_with_and_without_tether() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let fetch = |url: String| async move {
        let response = client()
            .post(url)
            .header("content-type", "application/json")
            .header("x-mock-chunks", "40")
            .body(chat_body(true))
            .send()
            .await
            .unwrap();
        let mut headers = response.headers().clone();
        headers.remove("date");
        (headers, response.bytes().await.unwrap())
    };
    let (direct_headers, direct) = fetch(format!("{}/v1/chat/completions", mock.url())).await;
    let (mut proxied_headers, proxied) = fetch(tether.url("/v1/chat/completions")).await;
    assert_eq!(
        proxied, direct,
        "body through tether equals the direct body"
    );
    assert_eq!(proxied_headers.remove("x-accel-buffering").unwrap(), "no");
    assert!(
        proxied_headers.remove("x-tether-request-id").is_some(),
        "tether names its request id"
    );
    assert!(
        proxied_headers.remove("x-request-id").is_some(),
        "and returns it as X-Request-Id when the upstream sent none"
    );
    assert!(
        proxied_headers.remove("x-stream-id").is_some(),
        "a recorded stream names its id"
    );
    assert!(
        proxied_headers.remove("x-session-id").is_some(),
        "recorded responses name their session"
    );
    assert_eq!(
        proxied_headers, direct_headers,
        "no header added or lost but the documented ones"
    );
}

/// Each chunk reaches the client before the upstream sends the next one,
/// with a 100 ms gap between chunks upstream.
#[tokio::test]
async fn chunks_are_not_buffered_with_a_100ms_gap() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let mut response = client()
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-chunks", "6")
        .header("x-mock-delay-ms", "100")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    let mut arrivals = Vec::new();
    let mut buffer = Vec::new();
    while let Some(bytes) = response.chunk().await.unwrap() {
        let now = Instant::now();
        buffer.extend_from_slice(&bytes);
        let events = buffer.windows(2).filter(|w| w == b"\n\n").count();
        arrivals.resize(events, now);
    }
    let sent = mock.chunk_send_times();
    assert_eq!(sent.len(), 6, "the mock sent 6 content chunks");
    for i in 0..5 {
        assert!(
            arrivals[i] < sent[i + 1],
            "chunk {i} arrived {:?} after chunk {} was sent: tether held it back",
            arrivals[i] - sent[i + 1],
            i + 1
        );
    }
}

/// The upstream sends chunk i+1 only after the client has chunk i: any
/// buffering in tether would deadlock, caught by the timeout.
#[tokio::test]
async fn each_chunk_is_delivered_before_the_upstream_sends_the_next() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let mut response = client()
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-chunks", "20")
        .header("x-mock-gated", "1")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    for i in 0..20 {
        let expected = mock_upstream::token(i);
        while !text.contains(&expected) {
            let next = tokio::time::timeout(Duration::from_secs(5), response.chunk())
                .await
                .unwrap_or_else(|_| panic!("chunk {i} never arrived: tether is buffering"))
                .unwrap()
                .expect("stream ended early");
            text.push_str(std::str::from_utf8(&next).unwrap());
        }
        mock.release();
    }
    let rest = response.bytes().await.unwrap();
    assert!(
        std::str::from_utf8(&rest)
            .unwrap()
            .ends_with("data: [DONE]\n\n")
    );
}

#[tokio::test]
async fn twenty_mib_request_and_response_bodies_stream_through_intact() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let size = 20 * 1024 * 1024;
    let payload = mock_upstream::binary_bytes(size);

    let echoed = client()
        .post(tether.url("/echo"))
        .header("content-type", "application/octet-stream")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), 200);
    let echoed = echoed.bytes().await.unwrap();
    assert_eq!(
        echoed.len(),
        size,
        "the 20 MiB request body came back whole"
    );
    assert!(
        echoed[..] == payload[..],
        "binary request body is unchanged"
    );

    let downloaded = client()
        .get(tether.url(&format!("/download?bytes={size}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        downloaded.headers()["content-length"],
        size.to_string().as_str()
    );
    let downloaded = downloaded.bytes().await.unwrap();
    assert!(
        downloaded[..] == payload[..],
        "binary 20 MiB response body is unchanged"
    );
}

#[tokio::test]
async fn every_method_path_and_query_reaches_the_upstream_under_its_base_path() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&format!("{}/openai", mock.url())).await;
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "PROPFIND",
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client()
            .request(
                method.clone(),
                tether.url("/s/chat-42/echo?a=1&b=%2F%20x&a=2"),
            )
            .body(if method == "HEAD" { "" } else { "payload" })
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(response.headers()["x-echo-method"], method.as_str());
        assert_eq!(
            response.headers()["x-echo-path"],
            "/openai/echo",
            "{method}: base path joined, session prefix stripped"
        );
        assert_eq!(
            response.headers()["x-echo-query"],
            "a=1&b=%2F%20x&a=2",
            "{method}: query kept as sent"
        );
        if method != "HEAD" {
            assert_eq!(response.text().await.unwrap(), "payload", "{method}");
        }
    }
}

#[tokio::test]
async fn header_rules_apply_both_ways() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let response = client()
        .post(tether.url("/echo"))
        .header("connection", "x-client-hop")
        .header("x-client-hop", "1")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("authorization", "Bearer sk-end-to-end")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-custom", "kept")
        .body("x")
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    response.bytes().await.unwrap();
    let seen = mock.last_request().headers;
    assert_eq!(
        seen["host"],
        mock.addr.to_string().as_str(),
        "Host is the upstream's"
    );
    assert_eq!(
        seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1",
        "the client's address is appended"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(
        seen["authorization"], "Bearer sk-end-to-end",
        "credentials are end-to-end"
    );
    assert_eq!(seen["x-custom"], "kept");
    for hop in ["x-client-hop", "proxy-authorization"] {
        assert!(!seen.contains_key(hop), "{hop} must not reach the upstream");
    }
    for hop in ["x-upstream-hop", "keep-alive"] {
        assert!(
            !headers.contains_key(hop),
            "{hop} must not reach the client"
        );
    }
    assert_eq!(headers["x-upstream-end-to-end"], "kept");
}

#[tokio::test]
async fn tethers_own_prefix_is_never_forwarded() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    for path in [
        "/tether/no-such-route",
        "/tether",
        "/s/chat-1/tether/healthz",
    ] {
        let response = client()
            .get(tether.url(path))
            .bearer_auth("sk-any")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"].is_string(),
            "{path}: OpenAI-shaped error, got {body}"
        );
    }
    let anonymous = client()
        .get(tether.url("/tether/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "own routes need a credential");
    assert!(
        mock.requests().is_empty(),
        "nothing under /tether reached the upstream"
    );
}

#[tokio::test]
async fn clients_may_speak_http2_without_tls() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-chunks", "3")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(&mock_upstream::answer(3)[..5]) && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(
        mock.last_request().version,
        http::Version::HTTP_11,
        "upstream is spoken to in HTTP/1.1 over plain TCP"
    );
}

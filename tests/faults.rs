//! Upstream and client faults: each ends in a clear OpenAI-shaped error with
//! the right status, or a stream that ends instead of hanging.

mod common;

use std::time::{Duration, Instant};

use common::{MockUpstream, Tether, chat_body, client, post_chat};
use futures_util::StreamExt;

async fn error_of(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response
        .json()
        .await
        .expect("an OpenAI-shaped JSON error body");
    assert!(
        body["error"]["message"].is_string(),
        "error.message in {body}"
    );
    assert!(body["error"]["type"].is_string(), "error.type in {body}");
    (status, body)
}

#[tokio::test]
async fn an_upstream_that_refuses_connections_is_a_502() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tether = Tether::start(&format!("http://127.0.0.1:{port}")).await;
    let (status, body) = error_of(post_chat(&tether, false).await).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
}

#[tokio::test]
async fn slow_response_headers_are_a_504() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.upstream.header_timeout_secs = 1).await;
    let started = Instant::now();
    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-header-delay-ms", "5000")
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after the 1 s timeout, not the upstream's 5 s"
    );
}

/// An upstream whose listen backlog is full never completes a TCP handshake:
/// the connect timeout answers 504.
#[tokio::test]
async fn a_connect_timeout_is_a_504() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue; nothing is ever accepted, so later SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let tether = Tether::start_with(&format!("http://{addr}"), |s| {
        s.upstream.connect_timeout_secs = 1
    })
    .await;
    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(response).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_connect_timeout");
    drop(listener);
}

#[tokio::test]
async fn an_oversized_body_is_a_413_whether_announced_or_streamed() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.server.max_request_bytes = 1024).await;

    let announced = client()
        .post(tether.url("/echo"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(announced).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(
        mock.requests().is_empty(),
        "a body announced too large is not forwarded"
    );

    // No Content-Length: the limit trips while the body streams.
    let chunks =
        futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let streamed = client()
        .post(tether.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(streamed).await;
    assert_eq!(status, 413, "{body}");

    let small = client()
        .post(tether.url("/echo"))
        .body(vec![b'z'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200, "a body at the limit passes");
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_ends_the_clients_stream() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-chunks", "10")
        .header("x-mock-reset-after", "3")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "headers were already sent when the upstream broke"
    );
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(bytes) => received.extend_from_slice(&bytes),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await
    .expect("the client's stream must end, not hang");
    assert!(
        outcome.is_err(),
        "the client sees a broken stream, not a clean end"
    );
    let text = String::from_utf8(received).unwrap();
    assert_eq!(
        text.matches("data: ").count(),
        3,
        "the 3 chunks sent before the reset arrived: {text}"
    );
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn an_upstream_that_stalls_is_cut_off_after_the_idle_timeout() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start_with(&mock.url(), |s| s.upstream.idle_timeout_secs = 1).await;
    let started = Instant::now();
    let response = client()
        .post(tether.url("/v1/chat/completions"))
        .header("x-mock-chunks", "10")
        .header("x-mock-stall-after", "2")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), response.bytes())
        .await
        .expect("a stalled upstream must not hang the client");
    assert!(
        ended.is_err(),
        "the stream ends with an error, not as if complete"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the idle timeout"
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    for status in [400u16, 401, 429, 500, 503] {
        let response = client()
            .post(tether.url("/v1/chat/completions"))
            .header("x-mock-status", status.to_string())
            .body(chat_body(true))
            .send()
            .await
            .unwrap();
        let (got, body) = error_of(response).await;
        assert_eq!(got, status, "the upstream's status reaches the client");
        assert_eq!(
            body["error"]["type"], "mock_error",
            "the upstream's own error body: {body}"
        );
    }
}

#[tokio::test]
async fn an_invalid_session_id_is_a_400_and_nothing_is_forwarded() {
    let mock = MockUpstream::start().await;
    let tether = Tether::start(&mock.url()).await;
    let long = "x".repeat(129);
    for bad in [
        "-starts-with-dash",
        "has%20space",
        long.as_str(),
        "semi;colon",
    ] {
        let response = client()
            .post(tether.url(&format!("/s/{bad}/v1/chat/completions")))
            .body(chat_body(false))
            .send()
            .await
            .unwrap();
        let (status, body) = error_of(response).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_session_id");
    }
    assert!(
        mock.requests().is_empty(),
        "no request with a bad session id was forwarded"
    );
}

/// An upstream that answers each request on a connection of its own and
/// closes it: with `Connection: close`, or silently a moment after the
/// answer (an idle timeout shorter than tether's). Returns its port and how
/// many connections it accepted.
async fn closing_upstream(announce: bool) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // The request: its head, then as many bytes as it announces.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let body_start = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the connection closed before a request");
                    request.extend_from_slice(&buf[..n]);
                    if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..body_start]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while request.len() < body_start + length {
                    let n = socket.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                let body = r#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;
                let close = if announce {
                    "connection: close\r\n"
                } else {
                    ""
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{close}\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
                if !announce {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn an_upstream_that_closes_its_connections_gets_a_new_one_for_each_request() {
    for announce in [true, false] {
        let (port, accepted) = closing_upstream(announce).await;
        let tether = Tether::start(&format!("http://127.0.0.1:{port}")).await;
        for i in 0..8 {
            let response = post_chat(&tether, false).await;
            assert_eq!(response.status(), 200, "request {i}, announced: {announce}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["choices"][0]["message"]["content"], "ok");
            // Past the silent close: the connection tether keeps is dead.
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            8,
            "one connection a request, announced: {announce}"
        );
    }
}

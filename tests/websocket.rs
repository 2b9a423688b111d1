//! WebSocket upgrades (OpenAI's Realtime API) are tunnelled: the upgrade
//! request reaches the upstream with its path (session prefix removed),
//! query and credentials, frames pass both ways untouched, and an upstream
//! that refuses the upgrade is answered as it answered.

mod common;

use std::sync::{Arc, Mutex};

use common::Tether;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Error, Message, http};

/// What the upstream saw of an upgrade request.
#[derive(Debug, Clone, Default)]
struct Seen {
    uri: String,
    authorization: Option<String>,
    forwarded_for: Option<String>,
}

/// A WebSocket upstream that echoes every message with an `echo:` prefix
/// (text) or reversed (binary), and drops the connection on `vanish`;
/// with `refuse`, it answers 401 instead.
async fn ws_upstream(refuse: bool) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                // The signature is tungstenite's (its error is a whole response).
                #[allow(clippy::result_large_err)]
                let callback = |req: &Request, response: Response| {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                    };
                    log.lock().unwrap().push(Seen {
                        uri: req.uri().to_string(),
                        authorization: header("authorization"),
                        forwarded_for: header("x-forwarded-for"),
                    });
                    if refuse {
                        let mut denied = ErrorResponse::new(Some(
                            r#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#
                                .to_owned(),
                        ));
                        *denied.status_mut() = http::StatusCode::UNAUTHORIZED;
                        return Err(denied);
                    }
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    let reply = match message {
                        // Gone without a closing handshake, as a crashed upstream.
                        Message::Text(text) if text.as_str() == "vanish" => return,
                        Message::Text(text) => Message::text(format!("echo:{text}")),
                        Message::Binary(bytes) => {
                            Message::binary(bytes.iter().rev().copied().collect::<Vec<u8>>())
                        }
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    ws.send(reply).await.unwrap();
                }
            });
        }
    });
    (url, seen)
}

fn realtime_request(tether: &Tether, path: &str) -> http::Request<()> {
    let mut request = format!("ws://{}{path}", tether.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        http::HeaderValue::from_static("Bearer sk-realtime-key"),
    );
    request
}

#[tokio::test]
async fn a_realtime_websocket_is_tunnelled_both_ways() {
    let (upstream, seen) = ws_upstream(false).await;
    let tether = Tether::start(&upstream).await;

    let request = realtime_request(&tether, "/s/voice-1/v1/realtime?model=gpt-realtime");
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert!(
        response.headers().contains_key("x-tether-request-id"),
        "the switch is an answer like any other"
    );

    ws.send(Message::text("hello")).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply, Message::text("echo:hello"));
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    let reversed: Vec<u8> = binary.iter().rev().copied().collect();
    assert_eq!(reply, Message::binary(reversed), "100 kB frame, untouched");
    for i in 0..50 {
        ws.send(Message::text(format!("event {i}"))).await.unwrap();
    }
    for i in 0..50 {
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("echo:event {i}")), "in order");
    }
    ws.close(None).await.unwrap();

    let seen = seen.lock().unwrap()[0].clone();
    assert_eq!(
        seen.uri, "/v1/realtime?model=gpt-realtime",
        "session prefix removed, query kept"
    );
    assert_eq!(
        seen.authorization.as_deref(),
        Some("Bearer sk-realtime-key")
    );
    assert_eq!(seen.forwarded_for.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn an_upgrade_the_upstream_refuses_is_answered_as_it_answered() {
    let (upstream, seen) = ws_upstream(true).await;
    let tether = Tether::start(&upstream).await;

    let request = realtime_request(&tether, "/v1/realtime?model=gpt-realtime");
    match tokio_tungstenite::connect_async(request).await {
        Err(Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("bad key"), "the upstream's error: {body}");
        }
        other => panic!("expected the upstream's 401, got {other:?}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 1);

    // The same tether still proxies plain requests.
    let plain = common::client()
        .get(tether.url("/tether/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
}

/// Sends a health check on a new connection; the answer's status line, or
/// `None` when tether closes the connection without answering.
async fn health_on_new_connection(tether: &Tether) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(tether.addr).await.unwrap();
    let _ = conn
        .write_all(b"GET /tether/healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = conn.read_to_end(&mut answer);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), read).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn a_tunnel_holds_its_place_under_the_connection_limit() {
    let (upstream, _) = ws_upstream(false).await;
    let tether = Tether::start_with(&upstream, |s| s.server.max_connections = 2).await;

    let mut tunnels = Vec::new();
    for i in 0..2 {
        let request = realtime_request(&tether, "/v1/realtime?model=gpt-realtime");
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        ws.send(Message::text(format!("hi {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("echo:hi {i}"))
        );
        tunnels.push(ws);
    }
    assert_eq!(
        health_on_new_connection(&tether).await,
        None,
        "two switched tunnels fill a limit of two: a third connection is closed unanswered"
    );

    let mut closed = tunnels.pop().unwrap();
    closed.close(None).await.unwrap();
    while closed.next().await.is_some() {}
    drop(closed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(status) = health_on_new_connection(&tether).await {
            assert!(status.contains("200"), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a closed tunnel gives its place back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The tunnel still open was never cut.
    let open = &mut tunnels[0];
    open.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        open.next().await.unwrap().unwrap(),
        Message::text("echo:still here")
    );
}

/// A tunnel whose upstream is gone is cut once the client side has had
/// `TUNNEL_CLOSE_GRACE` to close too, so a client that never does (its
/// network gone) cannot hold the tunnel and its place for good.
#[tokio::test]
async fn a_tunnel_whose_client_stays_after_the_upstream_left_is_cut_after_the_grace() {
    let (upstream, _) = ws_upstream(false).await;
    let tether = Tether::start_with(&upstream, |s| s.server.max_connections = 1).await;
    let request = realtime_request(&tether, "/v1/realtime?model=gpt-realtime");
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text("vanish")).await.unwrap();
    // The upstream's close reaches the client as the end of the stream.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
    assert!(
        matches!(ended, Ok(None | Some(Err(_)))),
        "the upstream's close is passed on: {ended:?}"
    );
    let left = std::time::Instant::now();
    assert_eq!(
        health_on_new_connection(&tether).await,
        None,
        "the tunnel holds the only place while its client side is open"
    );
    // The client keeps its socket open (ws is alive) and never closes it.
    let grace = tether::proxy::TUNNEL_CLOSE_GRACE;
    loop {
        if let Some(status) = health_on_new_connection(&tether).await {
            assert!(status.contains("200"), "{status}");
            break;
        }
        assert!(
            left.elapsed() < grace + std::time::Duration::from_secs(10),
            "the tunnel was never cut"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        left.elapsed() >= grace - std::time::Duration::from_secs(1),
        "cut after the grace, not before: {:?}",
        left.elapsed()
    );
    drop(ws);
}

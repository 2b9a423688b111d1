//! A mock OpenAI-compatible upstream, in-process, with knobs for delay,
//! truncation and failure. Knobs are request headers, so they travel through
//! tether untouched and every test (and later an SDK's `extra_headers`) can
//! set them per request:
//!
//! | header | effect |
//! | --- | --- |
//! | `x-mock-chunks: N` | stream N content chunks (default 5) |
//! | `x-mock-delay-ms: D` | wait D ms between chunks |
//! | `x-mock-gated: 1` | send each chunk after the first only when the test calls [`MockUpstream::release`] |
//! | `x-mock-reset-after: K` | abort the connection after K chunks |
//! | `x-mock-stall-after: K` | send K chunks, then nothing, forever |
//! | `x-mock-header-delay-ms: D` | wait D ms before sending response headers |
//! | `x-mock-status: S` | answer status S with an OpenAI error body |
//! | `x-mock-replay: NAME` | answer a recorded stream from `tests/fixtures/streams/NAME` byte for byte |
//! | `x-mock-replay-chunk: B` | ... in pieces of B bytes (default 7) |
//!
//! Routes: `POST /v1/chat/completions` (stream and non-stream), `POST
//! /v1/responses` (non-stream; streams come from `x-mock-replay`), `/echo`
//! (answers the request body as it streams in), `GET /download?bytes=N`
//! (N deterministic binary bytes), anything else 404; all of them also under
//! the base path `/openai`. Every request is
//! remembered with its headers and body for the test to inspect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

type Body = BoxBody<Bytes, std::io::Error>;

/// A request as the mock saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    /// The body, for routes that read it whole (`/echo` keeps only its length).
    pub body: Bytes,
    pub body_len: usize,
}

struct Shared {
    seen: Mutex<Vec<SeenRequest>>,
    /// When each streamed chunk was handed to hyper, per request, in order.
    sent_at: Mutex<Vec<Instant>>,
    /// Streams whose reader went away before the end (tether closed the connection).
    abandoned: Mutex<Vec<Instant>>,
    gate: Semaphore,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            seen: Mutex::default(),
            sent_at: Mutex::default(),
            abandoned: Mutex::default(),
            gate: Semaphore::new(0),
        }
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// A plain-HTTP mock on a free loopback port.
    pub async fn start() -> MockUpstream {
        Self::start_with_tls(None).await
    }

    /// The same mock behind TLS (HTTP/1.1 and h2 offered through ALPN).
    pub async fn start_with_tls(tls: Option<tokio_rustls::TlsAcceptor>) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| respond(state.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls_stream) => {
                                builder
                                    .serve_connection(TokioIo::new(tls_stream), service)
                                    .await
                            }
                            Err(_) => return,
                        },
                        None => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                    };
                });
            }
        });
        MockUpstream { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> SeenRequest {
        self.requests()
            .pop()
            .expect("the mock upstream saw no request")
    }

    /// When each chunk of gated or delayed streams was sent, in order.
    pub fn chunk_send_times(&self) -> Vec<Instant> {
        self.shared.sent_at.lock().unwrap().clone()
    }

    /// When each chat stream whose reader went away before its end noticed it.
    pub fn abandoned_streams(&self) -> Vec<Instant> {
        self.shared.abandoned.lock().unwrap().clone()
    }

    /// Lets a gated stream send its next chunk.
    pub fn release(&self) {
        self.shared.gate.add_permits(1);
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sending half of a mock response body. Unlike http-body-util's
/// channel, an abort travels in order behind the data already sent, so
/// "reset after K chunks" delivers exactly K chunks first.
struct Sender(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Sender {
    async fn send_data(&mut self, data: Bytes) -> Result<(), ()> {
        self.0.send(Ok(data)).await.map_err(drop)
    }

    async fn abort(self, error: std::io::Error) {
        let _ = self.0.send(Err(error)).await;
    }
}

fn channel(buffer: usize) -> (Sender, Body) {
    let (tx, rx) = mpsc::channel(buffer);
    let frames = futures_util::stream::unfold(
        rx,
        |mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>| async move {
            let item: Result<Bytes, std::io::Error> = rx.recv().await?;
            Some((item.map(http_body::Frame::data), rx))
        },
    );
    (Sender(tx), http_body_util::StreamBody::new(frames).boxed())
}

fn knob(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

async fn respond(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let headers = req.headers().clone();
    if let Some(ms) = knob(&headers, "x-mock-header-delay-ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // Like Groq's `https://api.groq.com/openai`, the mock also serves under a base path.
    let path = req.uri().path();
    let path = path.strip_prefix("/openai").unwrap_or(path).to_owned();
    if path == "/echo" {
        return Ok(echo(shared, req));
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(SeenRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: headers.clone(),
        body_len: body.len(),
        body: body.clone(),
    });
    if let Some(status) = knob(&headers, "x-mock-status") {
        return Ok(openai_error(
            StatusCode::from_u16(status as u16).unwrap(),
            "mock failure",
        ));
    }
    if let Some(name) = headers.get("x-mock-replay").and_then(|v| v.to_str().ok()) {
        return Ok(replay(
            name,
            knob(&headers, "x-mock-replay-chunk").unwrap_or(7) as usize,
        ));
    }
    Ok(match (parts.method.as_str(), path.as_str()) {
        ("POST", "/v1/chat/completions") => chat(shared, &headers, &body),
        ("POST", "/v1/responses") => responses(&headers, &body),
        ("GET", "/download") => download(parts.uri.query().unwrap_or("")),
        _ => openai_error(StatusCode::NOT_FOUND, "no such mock route"),
    })
}

fn openai_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"message": message, "type": "mock_error", "code": status.as_u16()}});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Answers the request body as it streams in, plus what the mock saw in
/// `x-echo-*` headers. Hop-by-hop headers on the answer test tether's rules.
fn echo(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let (mut tx, rx) = channel(4);
    let seen = SeenRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: Bytes::new(),
        body_len: 0,
    };
    tokio::spawn(async move {
        let mut len = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                len += data.len();
                if tx.send_data(data).await.is_err() {
                    break;
                }
            }
        }
        shared.seen.lock().unwrap().push(SeenRequest {
            body_len: len,
            ..seen
        });
    });
    Response::builder()
        .header(
            "content-type",
            parts
                .headers
                .get("content-type")
                .cloned()
                .unwrap_or("application/octet-stream".parse().unwrap()),
        )
        .header("x-echo-method", parts.method.as_str())
        .header("x-echo-path", parts.uri.path())
        .header("x-echo-query", parts.uri.query().unwrap_or(""))
        .header("connection", "x-upstream-hop")
        .header("x-upstream-hop", "must not reach the client")
        .header("keep-alive", "timeout=5")
        .header("x-upstream-end-to-end", "kept")
        .body(rx)
        .unwrap()
}

/// N bytes of a fixed pseudo-random sequence, in 64 KiB chunks.
fn download(query: &str) -> Response<Body> {
    let n: usize = query
        .strip_prefix("bytes=")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let (mut tx, rx) = channel(4);
    tokio::spawn(async move {
        let data = binary_bytes(n);
        for chunk in data.chunks(64 * 1024) {
            if tx.send_data(Bytes::copy_from_slice(chunk)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", n)
        .body(rx)
        .unwrap()
}

/// The bytes `/download?bytes=n` answers: every byte value, in a fixed shuffle.
pub fn binary_bytes(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn replay(name: &str, piece: usize) -> Response<Body> {
    let path = format!(
        "{}/tests/fixtures/streams/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
    let (mut tx, rx) = channel(16);
    tokio::spawn(async move {
        for chunk in bytes.chunks(piece.max(1)) {
            if tx.send_data(Bytes::copy_from_slice(chunk)).await.is_err() {
                return;
            }
        }
    });
    let mut response =
        Response::builder().header("content-type", "text/event-stream; charset=utf-8");
    if name.ends_with(".gz") {
        response = response.header("content-encoding", "gzip");
    }
    response.body(rx).unwrap()
}

/// The content of chunk `i` of a mock chat stream.
pub fn token(i: u64) -> String {
    format!("tok{i} ")
}

/// The whole answer a mock chat stream of `n` chunks assembles to.
pub fn answer(n: u64) -> String {
    (0..n).map(token).collect()
}

fn chat(shared: Arc<Shared>, headers: &HeaderMap, body: &[u8]) -> Response<Body> {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("mock-model").to_owned();
    let n = knob(headers, "x-mock-chunks").unwrap_or(5);
    if request["stream"] != serde_json::Value::Bool(true) {
        let completion = serde_json::json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer(n)}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(full(completion.to_string()))
            .unwrap();
    }
    let plan = StreamPlan {
        model,
        chunks: n,
        delay: knob(headers, "x-mock-delay-ms").map(Duration::from_millis),
        gated: knob(headers, "x-mock-gated") == Some(1),
        reset_after: knob(headers, "x-mock-reset-after"),
        stall_after: knob(headers, "x-mock-stall-after"),
        usage: request["stream_options"]["include_usage"] == serde_json::Value::Bool(true),
    };
    let (tx, rx) = channel(1);
    tokio::spawn(plan.run(shared, tx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(rx)
        .unwrap()
}

/// A non-streamed Responses API answer: one assistant message whose text is
/// the answer of `x-mock-chunks` chunks, with usage, as OpenAI shapes it.
fn responses(headers: &HeaderMap, body: &[u8]) -> Response<Body> {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if request["stream"] == serde_json::Value::Bool(true) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "the mock streams the Responses API only through x-mock-replay",
        );
    }
    let model = request["model"].as_str().unwrap_or("mock-model");
    let n = knob(headers, "x-mock-chunks").unwrap_or(5);
    let response = serde_json::json!({
        "id": "resp_mock", "object": "response", "created_at": 0, "status": "completed",
        "error": null, "incomplete_details": null,
        "instructions": request.get("instructions").cloned().unwrap_or_default(),
        "model": model,
        "output": [{
            "type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": answer(n), "annotations": []}]
        }],
        "parallel_tool_calls": true, "previous_response_id": null, "store": false,
        "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": {
            "input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": n, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": n + 3
        },
        "metadata": {}
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(full(response.to_string()))
        .unwrap()
}

struct StreamPlan {
    model: String,
    chunks: u64,
    delay: Option<Duration>,
    gated: bool,
    reset_after: Option<u64>,
    stall_after: Option<u64>,
    usage: bool,
}

impl StreamPlan {
    /// The SSE bytes of chunk `i` (the first carries the role, the last the finish reason).
    fn chunk(&self, i: u64) -> Bytes {
        let mut delta = serde_json::json!({"content": token(i)});
        if i == 0 {
            delta["role"] = "assistant".into();
        }
        let finish = if i + 1 == self.chunks {
            serde_json::json!("stop")
        } else {
            serde_json::Value::Null
        };
        let chunk = serde_json::json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        });
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    async fn run(self, shared: Arc<Shared>, mut tx: Sender) {
        for i in 0..self.chunks {
            if i > 0 {
                if let Some(delay) = self.delay {
                    tokio::time::sleep(delay).await;
                }
                if self.gated {
                    shared.gate.acquire().await.unwrap().forget();
                }
            }
            if self.reset_after == Some(i) {
                tx.abort(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock reset",
                ))
                .await;
                return;
            }
            if self.stall_after == Some(i) {
                std::future::pending::<()>().await;
            }
            shared.sent_at.lock().unwrap().push(Instant::now());
            if tx.send_data(self.chunk(i)).await.is_err() {
                shared.abandoned.lock().unwrap().push(Instant::now());
                return;
            }
        }
        if self.usage {
            let usage = serde_json::json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": self.model,
                "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": self.chunks, "total_tokens": self.chunks + 3}
            });
            let _ = tx
                .send_data(Bytes::from(format!("data: {usage}\n\n")))
                .await;
        }
        let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
    }
}

//! The load generator: a fixed number of workers, each on its own
//! keep-alive HTTP/1.1 connection (hyper 1 client), sending requests back to
//! back until a deadline; latencies into histograms; every answer checked
//! byte for byte against [`crate::wire`]. The scale run can also share
//! HTTP/2 connections (h2c, prior knowledge) among many streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::stats::Latencies;
use crate::wire;

/// Where requests go and how they are dressed.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    /// Extra request headers (peers need some to find the upstream).
    pub headers: Vec<(String, String)>,
    /// Whether answers must be the upstream's bytes exactly (peers
    /// re-serialize, so they are only checked for completeness).
    pub byte_exact: bool,
}

/// One keep-alive connection: HTTP/1.1, one request at a time, or a clone
/// of an HTTP/2 connection whose streams run side by side.
pub struct Conn {
    target: Arc<Target>,
    send: Sender,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    pub async fn open(target: Arc<Target>) -> Result<Conn, String> {
        let io = TokioIo::new(connect(&target).await?);
        let (send, conn) = http1::handshake(io)
            .await
            .map_err(|e| format!("handshake {}: {e}", target.addr))?;
        tokio::spawn(conn);
        Ok(Conn {
            target,
            send: Sender::Http1(send),
        })
    }

    /// An HTTP/2 connection with prior knowledge (h2c); clones of it send
    /// their requests as streams of the one connection.
    pub async fn open_h2c(target: Arc<Target>) -> Result<Conn, String> {
        let io = TokioIo::new(connect(&target).await?);
        let (send, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2c handshake {}: {e}", target.addr))?;
        tokio::spawn(conn);
        Ok(Conn {
            target,
            send: Sender::Http2(send),
        })
    }

    /// Another handle on an HTTP/2 connection, for a stream of its own
    /// beside the others; none for HTTP/1.1, one request at a time.
    pub fn another_stream(&self) -> Option<Conn> {
        match &self.send {
            Sender::Http1(_) => None,
            Sender::Http2(send) => Some(Conn {
                target: self.target.clone(),
                send: Sender::Http2(send.clone()),
            }),
        }
    }

    /// Send one request; a closed HTTP/1.1 connection is reopened once.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String> {
        if let Sender::Http1(send) = &mut self.send
            && send.ready().await.is_err()
        {
            *self = Conn::open(self.target.clone()).await?;
        }
        let sent = match &mut self.send {
            Sender::Http1(send) => send.send_request(req).await,
            Sender::Http2(send) => {
                let (mut parts, body) = req.into_parts();
                // HTTP/2 names the authority in the request line itself.
                parts.uri = format!("http://{}{}", self.target.addr, parts.uri)
                    .parse()
                    .map_err(|e| format!("{}: {e}", self.target.name))?;
                parts.headers.remove(http::header::HOST);
                send.send_request(Request::from_parts(parts, body)).await
            }
        };
        sent.map_err(|e| format!("{}: {e}", self.target.name))
    }

    /// A chat completion request for `session`.
    pub fn chat(
        &self,
        session: &str,
        body: Bytes,
        stream: Option<(u64, u64)>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::post(wire::CHAT_PATH)
            .header("host", self.target.addr.to_string())
            .header("authorization", format!("Bearer {}", wire::API_KEY))
            .header("content-type", "application/json")
            .header("x-session-id", session);
        if let Some((chunks, delay_ms)) = stream {
            req = req
                .header(wire::CHUNKS_HEADER, chunks)
                .header(wire::DELAY_HEADER, delay_ms);
        }
        for (name, value) in &self.target.headers {
            req = req.header(name, value);
        }
        req.body(Full::new(body)).expect("a valid request")
    }

    /// A GET with the bench key (tether's own routes).
    pub fn get(&self, path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .header("host", self.target.addr.to_string())
            .header("authorization", format!("Bearer {}", wire::API_KEY))
            .body(Full::new(Bytes::new()))
            .expect("a valid request")
    }
}

async fn connect(target: &Target) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// What a run of non-streamed requests saw.
#[derive(Default)]
pub struct Run {
    pub ok: u64,
    pub failed: u64,
    pub mismatched: u64,
    pub elapsed: Duration,
    pub latency: Latencies,
    pub first_error: Option<String>,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.mismatched += other.mismatched;
        self.latency.merge(&other.latency);
        self.first_error = self.first_error.take().or(other.first_error);
    }

    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// `workers` workers send the non-streamed chat request `body` back to back
/// for `duration`, each on its own connection, each request with a new
/// session.
pub async fn non_stream(
    target: Arc<Target>,
    workers: usize,
    duration: Duration,
    tag: &str,
    body: Bytes,
) -> Run {
    let expected = wire::completion();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (target, body, expected, tag) = (
                target.clone(),
                body.clone(),
                expected.clone(),
                tag.to_owned(),
            );
            tokio::spawn(async move {
                let mut run = Run::default();
                let mut conn = match Conn::open(target.clone()).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        return Run {
                            failed: 1,
                            first_error: Some(e),
                            ..Run::default()
                        };
                    }
                };
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let req = conn.chat(&format!("{tag}-{w}-{i}"), body.clone(), None);
                    let sent = Instant::now();
                    match exchange(&mut conn, req).await {
                        Ok(bytes) => {
                            run.latency.record(sent.elapsed());
                            run.ok += 1;
                            if target.byte_exact && bytes != expected {
                                run.mismatched += 1;
                            }
                        }
                        Err(e) => {
                            run.failed += 1;
                            run.first_error.get_or_insert(e);
                        }
                    }
                }
                run
            })
        })
        .collect();
    let mut total = Run::default();
    for task in tasks {
        total.merge(task.await.expect("worker panicked"));
    }
    total.elapsed = start.elapsed();
    total
}

/// Send a request and read the whole answer; non-2xx is an error.
pub async fn exchange(conn: &mut Conn, req: Request<Full<Bytes>>) -> Result<Bytes, String> {
    let response = conn.send(req).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body)
}

/// What a run of streams saw.
#[derive(Default)]
pub struct StreamRun {
    pub ok: u64,
    pub failed: u64,
    pub mismatched: u64,
    pub chunks: u64,
    pub elapsed: Duration,
    /// Request sent to the first byte of the body.
    pub ttft: Latencies,
    /// Between two consecutive delayed events, as the client saw them.
    pub gap: Latencies,
    /// (session, stream id) of every stream that had an `X-Stream-Id`.
    pub recorded: Vec<(String, String)>,
    pub first_error: Option<String>,
}

impl StreamRun {
    fn merge(&mut self, other: StreamRun) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.mismatched += other.mismatched;
        self.chunks += other.chunks;
        self.ttft.merge(&other.ttft);
        self.gap.merge(&other.gap);
        self.recorded.extend(other.recorded);
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// The shape of the streams a run asks for.
#[derive(Clone, Copy, Debug)]
pub struct StreamShape {
    pub chunks: u64,
    pub delay_ms: u64,
}

/// `workers` workers run streams back to back for `duration`, at most
/// `per_worker` each (each stream on a new session), timing the first byte
/// and the gaps between events.
pub async fn streams(
    target: Arc<Target>,
    workers: usize,
    duration: Duration,
    per_worker: u64,
    tag: &str,
    shape: StreamShape,
) -> StreamRun {
    let expected = Bytes::from(wire::stream_bytes(shape.chunks, 0));
    let body = wire::chat_request(true, 0);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (target, body, expected, tag) = (
                target.clone(),
                body.clone(),
                expected.clone(),
                tag.to_owned(),
            );
            tokio::spawn(async move {
                let mut run = StreamRun::default();
                let mut conn = match Conn::open(target.clone()).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        return StreamRun {
                            failed: 1,
                            first_error: Some(e),
                            ..StreamRun::default()
                        };
                    }
                };
                let mut i = 0u64;
                while i < per_worker && Instant::now() < deadline {
                    i += 1;
                    let session = format!("{tag}-{w}-{i}");
                    let req =
                        conn.chat(&session, body.clone(), Some((shape.chunks, shape.delay_ms)));
                    let one = one_stream(&mut conn, req, shape, &mut run).await;
                    match one {
                        Ok((bytes, stream_id)) => {
                            run.ok += 1;
                            run.chunks += shape.chunks;
                            if !same_stream(&target, &bytes, &expected) {
                                run.mismatched += 1;
                            }
                            if let Some(id) = stream_id {
                                run.recorded.push((session, id));
                            }
                        }
                        Err(e) => {
                            run.failed += 1;
                            run.first_error.get_or_insert(e);
                        }
                    }
                }
                run
            })
        })
        .collect();
    let mut total = StreamRun::default();
    for task in tasks {
        total.merge(task.await.expect("worker panicked"));
    }
    total.elapsed = start.elapsed();
    total
}

/// Byte for byte, or, for a peer that re-serializes, the same number of events.
pub fn same_stream(target: &Target, got: &[u8], expected: &[u8]) -> bool {
    if target.byte_exact {
        return got == expected;
    }
    let events = |b: &[u8]| b.windows(2).filter(|w| w == b"\n\n").count();
    events(got) >= events(expected) - 1 && got.ends_with(b"[DONE]\n\n")
}

/// One stream: its bytes and `X-Stream-Id`; TTFT and gaps into `run`.
pub async fn one_stream(
    conn: &mut Conn,
    req: Request<Full<Bytes>>,
    shape: StreamShape,
    run: &mut StreamRun,
) -> Result<(Vec<u8>, Option<String>), String> {
    let sent = Instant::now();
    let response = conn.send(req).await?;
    let status = response.status();
    let stream_id = header(&response, "x-stream-id");
    let mut body = response.into_body();
    let mut bytes = Vec::with_capacity(8192);
    let mut events = EventClock::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("stream broke: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        if bytes.is_empty() {
            run.ttft.record(now - sent);
        }
        events.feed(data, now, shape.chunks, &mut run.gap);
        bytes.extend_from_slice(data);
    }
    if !status.is_success() {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok((bytes, stream_id))
}

pub fn header(response: &Response<Incoming>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// Counts SSE events (`\n\n`, also split across frames) and records the gap
/// before each of events 1..n-1, the ones the upstream sends `delay` apart.
#[derive(Default)]
pub struct EventClock {
    seen: u64,
    last_newline: bool,
    last_at: Option<Instant>,
}

impl EventClock {
    pub fn feed(&mut self, data: &[u8], now: Instant, chunks: u64, gaps: &mut Latencies) {
        for &b in data {
            let end = b == b'\n' && self.last_newline;
            self.last_newline = b == b'\n' && !end;
            if !end {
                continue;
            }
            if let Some(last) = self.last_at.filter(|_| self.seen < chunks) {
                gaps.record(now - last);
            }
            self.seen += 1;
            self.last_at = Some(now);
        }
    }

    pub fn events(&self) -> u64 {
        self.seen
    }
}

//! The mock upstream: as fast as a hyper server can answer. `POST
//! /v1/chat/completions` answers a fixed completion, or, when the body asks
//! for `"stream": true`, an SSE stream of `x-bench-chunks` events
//! `x-bench-delay-ms` apart (defaults from the command line, for peers that
//! do not forward custom headers). Bytes come from [`crate::wire`].

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::time::Sleep;

use crate::wire;

/// What a stream looks like when the request does not say.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub chunks: u64,
    pub delay_ms: u64,
}

/// Serve forever on `listener`.
pub async fn run(listener: TcpListener, defaults: Defaults) -> std::io::Result<()> {
    let completion = wire::completion();
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let completion = completion.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, defaults, completion.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    defaults: Defaults,
    completion: Bytes,
) -> Result<Response<MockBody>, Infallible> {
    let knob = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    };
    let chunks = knob(wire::CHUNKS_HEADER).unwrap_or(defaults.chunks);
    let delay_ms = knob(wire::DELAY_HEADER).unwrap_or(defaults.delay_ms);
    let is_chat = req.uri().path().ends_with("/chat/completions");
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let response = Response::builder();
    if !is_chat {
        let body = MockBody::Full(Some(Bytes::from_static(b"{\"error\":\"not found\"}")));
        return Ok(response.status(StatusCode::NOT_FOUND).body(body).unwrap());
    }
    if !asks_for_stream(&body) {
        let response = response.header("content-type", "application/json");
        return Ok(response.body(MockBody::Full(Some(completion))).unwrap());
    }
    let stream = Stream {
        next: 0,
        chunks,
        delay: Duration::from_millis(delay_ms),
        sleep: None,
    };
    Ok(response
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(MockBody::Stream(stream))
        .unwrap())
}

fn asks_for_stream(body: &[u8]) -> bool {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    has(b"\"stream\":true") || has(b"\"stream\": true")
}

/// A whole body, or a stream that sleeps between events (no task, no
/// channel: 10,000 slow streams cost 10,000 timers).
pub enum MockBody {
    Full(Option<Bytes>),
    Stream(Stream),
}

pub struct Stream {
    next: u64,
    chunks: u64,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let s = match self.get_mut() {
            MockBody::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Stream(s) => s,
        };
        if s.next > s.chunks {
            return Poll::Ready(None);
        }
        // Chunk 0 goes at once; each later one `delay` after the previous.
        // `[DONE]` follows the last chunk at once.
        if s.next > 0 && s.next < s.chunks && !s.delay.is_zero() {
            let sleep = s
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(s.delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            s.sleep = None;
        }
        let event = wire::stream_event(s.next, s.chunks);
        s.next += 1;
        Poll::Ready(Some(Ok(Frame::data(event))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Stream(s) => s.next > s.chunks,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            MockBody::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => http_body::SizeHint::with_exact(0),
            MockBody::Stream(_) => http_body::SizeHint::default(),
        }
    }
}

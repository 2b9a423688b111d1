//! One accepted connection: which HTTP it speaks, and its graceful end.
//!
//! Clients speak HTTP/1.1 or HTTP/2 with prior knowledge (h2c). hyper-util's
//! auto builder tells them apart by reading the first bytes and handing
//! them back to HTTP/1 through a side buffer; HTTP/1 then reads again with
//! 24 bytes already in its 8 KiB read buffer, which makes it double the
//! buffer to 16 KiB, kept for the connection's life. Peeking instead (the
//! bytes stay in the socket) lets HTTP/1 connections go to hyper's own
//! HTTP/1 server with nothing read yet; only a connection whose first bytes
//! could be the HTTP/2 preface goes through the auto builder.
//!
//! hyper-util's `GracefulShutdown` cannot watch hyper's HTTP/1 connection
//! with upgrades, so [`Drain`] does the same, more cheaply: a connection's
//! task looks at a flag of its own each time it wakes (a watch channel's
//! `changed()` took 960 instructions a request, polled at every wake), and
//! the drain sets the flags and wakes the tasks once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::task::AtomicWaker;

use hyper::body::Incoming;
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// Possibly the HTTP/2 preface: for the auto builder to read.
    Undecided,
}

/// Looks at the first bytes the client sent without taking them; `None`
/// when it sent nothing before `timeout` (or closed): such a connection is
/// closed, as hyper closes one that sends no request head in time.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> Option<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => Some(protocol_of(&first[..n])),
        _ => None,
    }
}

fn protocol_of(first: &[u8]) -> Protocol {
    if H2_PREFACE.starts_with(first) {
        Protocol::Undecided
    } else {
        Protocol::Http1
    }
}

/// Tells open connections to finish and waits until they have.
pub struct Drain {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Set by [`Drain::shutdown`]: connections accepted after it stop at once.
    stopping: AtomicBool,
    /// Each open connection's stop, to set and wake at shutdown; the
    /// entries of closed ones are swept as the list grows.
    stops: Mutex<Stops>,
    /// Connections whose [`Watcher`] is alive.
    open: AtomicUsize,
    /// Told when `open` falls to 0.
    closed: Notify,
}

#[derive(Default)]
struct Stops {
    list: Vec<Weak<Stop>>,
    /// The list's length after its last sweep.
    swept: usize,
}

/// One connection's stop: a flag and its task's waker.
#[derive(Default)]
struct Stop {
    requested: AtomicBool,
    waker: AtomicWaker,
}

impl Stop {
    fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// A connection's side of the drain: whether it is to finish.
pub struct Watcher {
    stop: Arc<Stop>,
    shared: Arc<Shared>,
}

impl Watcher {
    /// True once the drain began; until then the task is woken when it does.
    fn stop_requested(&self, cx: &std::task::Context<'_>) -> bool {
        if self.stop.requested.load(Ordering::Acquire) {
            return true;
        }
        self.stop.waker.register(cx.waker());
        // Looked at again: a stop set between the first look and the
        // registration woke no one.
        self.stop.requested.load(Ordering::Acquire)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.closed.notify_waiters();
        }
    }
}

impl Drain {
    pub fn new() -> Drain {
        Drain {
            shared: Arc::default(),
        }
    }

    /// For a connection just accepted.
    pub fn watcher(&self) -> Watcher {
        let stop = Arc::new(Stop::default());
        self.shared.open.fetch_add(1, Ordering::AcqRel);
        {
            let mut stops = self.shared.stops.lock().unwrap_or_else(|e| e.into_inner());
            stops.list.push(Arc::downgrade(&stop));
            if stops.list.len() >= 2 * stops.swept.max(64) {
                stops.list.retain(|stop| stop.strong_count() > 0);
                stops.swept = stops.list.len();
            }
        }
        // Accepted as the drain began: stopped at once.
        if self.shared.stopping.load(Ordering::Acquire) {
            stop.request();
        }
        Watcher {
            stop,
            shared: self.shared.clone(),
        }
    }

    /// Asks every watched connection to finish its requests and close, and
    /// waits until all have.
    pub async fn shutdown(self) {
        self.shared.stopping.store(true, Ordering::Release);
        let stops = std::mem::take(
            &mut self
                .shared
                .stops
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .list,
        );
        for stop in stops.iter().filter_map(Weak::upgrade) {
            stop.request();
        }
        loop {
            let closed = self.shared.closed.notified();
            if self.shared.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain::new()
    }
}

/// A connection that can be asked to close once its requests are answered.
pub trait GracefulStop: Future {
    fn graceful_stop(self: Pin<&mut Self>);
}

impl<S, B> GracefulStop for hyper::server::conn::http1::UpgradeableConnection<TokioIo<TcpStream>, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_stop(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<S, B> GracefulStop
    for auto::UpgradeableConnection<'static, TokioIo<TcpStream>, S, TokioExecutor>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn graceful_stop(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves `conn` to its end; once the drain begins, asks it to finish and
/// close. Boxed: a connection's state is most of what an open connection
/// costs beyond its buffers, and held by value it would sit in this future
/// and in its task's both.
pub async fn serve<C, E>(mut conn: Pin<Box<C>>, watcher: Watcher) -> Result<(), E>
where
    C: GracefulStop + Future<Output = Result<(), E>>,
{
    let mut stopping = false;
    std::future::poll_fn(|cx| {
        if !stopping && watcher.stop_requested(cx) {
            stopping = true;
            conn.as_mut().graceful_stop();
        }
        conn.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that runs until asked to stop (then ends at its next
    /// poll), counting its polls.
    struct Idle {
        stopped: bool,
        polls: Arc<AtomicUsize>,
    }

    impl Future for Idle {
        type Output = Result<(), ()>;

        fn poll(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.stopped {
                std::task::Poll::Ready(Ok(()))
            } else {
                std::task::Poll::Pending
            }
        }
    }

    impl GracefulStop for Idle {
        fn graceful_stop(mut self: Pin<&mut Self>) {
            self.stopped = true;
        }
    }

    fn idle(polls: &Arc<AtomicUsize>) -> Pin<Box<Idle>> {
        Box::pin(Idle {
            stopped: false,
            polls: polls.clone(),
        })
    }

    #[tokio::test]
    async fn the_drain_stops_every_connection_and_waits_for_them_to_end() {
        let drain = Drain::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let connections: Vec<_> = (0..200)
            .map(|_| tokio::spawn(serve(idle(&polls), drain.watcher())))
            .collect();
        // Closed connections leave the list as it grows.
        for _ in 0..500 {
            drop(drain.watcher());
        }
        // Let the connections start waiting (each registers its waker).
        while polls.load(Ordering::Relaxed) < 200 {
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("the drain ends once every connection has");
        for connection in connections {
            assert_eq!(connection.await.unwrap(), Ok(()));
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            2 * 200,
            "each woken once, not spun"
        );
    }

    #[tokio::test]
    async fn a_connection_accepted_as_the_drain_begins_is_stopped_at_once() {
        let drain = Drain::new();
        let shared = drain.shared.clone();
        shared.stopping.store(true, Ordering::Release);
        let polls = Arc::new(AtomicUsize::new(0));
        let ended = serve(idle(&polls), drain.watcher());
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), ended).await,
            Ok(Ok(()))
        );
        assert_eq!(shared.open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn http1_is_told_by_its_first_byte_and_the_preface_is_left_undecided() {
        assert_eq!(protocol_of(b"POST /v1/chat/completions"), Protocol::Http1);
        assert_eq!(protocol_of(b"GET"), Protocol::Http1);
        assert_eq!(protocol_of(b"P"), Protocol::Undecided, "could be PRI");
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n"), Protocol::Undecided);
        assert_eq!(protocol_of(H2_PREFACE), Protocol::Undecided);
        assert_eq!(
            protocol_of(b"\x16\x03\x01"),
            Protocol::Http1,
            "TLS is refused by HTTP/1"
        );
    }
}

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
//! with upgrades, so [`Drain`] does the same: a watch channel every
//! connection subscribes to when it is accepted.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

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
    stop: watch::Sender<()>,
}

impl Drain {
    pub fn new() -> Drain {
        Drain {
            stop: watch::channel(()).0,
        }
    }

    /// For a connection just accepted (before [`Drain::shutdown`]: a
    /// receiver made after the stop was sent would never see it).
    pub fn watcher(&self) -> watch::Receiver<()> {
        self.stop.subscribe()
    }

    /// Asks every watched connection to finish its requests and close, and
    /// waits until all have.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        self.stop.closed().await;
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

/// Serves `conn` to its end; once `stop` fires, asks it to finish and close.
/// Boxed: a connection's state is most of what an open connection costs
/// beyond its buffers, and held by value it would sit in this future and in
/// its task's both.
pub async fn serve<C, E>(mut conn: Pin<Box<C>>, mut stop: watch::Receiver<()>) -> Result<(), E>
where
    C: GracefulStop + Future<Output = Result<(), E>>,
{
    tokio::select! {
        result = conn.as_mut() => return result,
        // Sent, or the drain is gone: either way, time to finish.
        _ = stop.changed() => conn.as_mut().graceful_stop(),
    }
    conn.await
}

#[cfg(test)]
mod tests {
    use super::*;

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

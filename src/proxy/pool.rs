//! Keep-alive connections to an `http://` upstream, kept by hand.
//!
//! hyper-util's pooled client did more than a plaintext HTTP/1 upstream
//! needs, on every request: its pool key hashed with SipHash on the way
//! out and back in, a task spawned per response to put the connection back
//! once idle, and the response's end held back until it had: about 7,000
//! instructions a request (`bench/callgrind.sh`, 16 connections, recording
//! off: 59,243 with it, 52,144 with this). Here a connection goes back
//! onto a stack when its response's last frame has been read
//! ([`Lease::give_back`], called by the response body), and the next
//! request takes the most recent one.
//!
//! What hyper-util's client did that matters is kept: a connection that is
//! not ready when its response ends (the request body still going out, or
//! the upstream closing it) is let go rather than reused; a request that
//! never left on a reused connection that the upstream had just closed is
//! sent once more on a new one; idle connections go after
//! `upstream.pool_idle_timeout_secs`, and at most
//! `upstream.pool_max_idle_per_host` are kept. `https://` upstreams keep
//! hyper-util's client: TLS, and ALPN's choice of HTTP/2, are its job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::Body;

/// TCP keep-alive on upstream sockets, so a dead peer behind a NAT is noticed
/// while a long stream is quiet.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection: refused, unreachable, or not made within the
    /// connect timeout (an error of kind `TimedOut`).
    #[error("tcp connect error")]
    Connect(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Where to connect and how long connections may wait.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub host: String,
    pub port: u16,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

pub struct PlainPool {
    shared: Arc<Shared>,
}

struct Shared {
    settings: PoolSettings,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// The sweeper of idle connections runs (started with the first
    /// connection, so that a pool built outside a runtime needs none).
    sweeping: AtomicBool,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// A connection lent to one request, given back when its response ends.
pub struct Lease {
    shared: Arc<Shared>,
    sender: Option<SendRequest<Body>>,
}

impl PlainPool {
    pub fn new(settings: PoolSettings) -> Self {
        PlainPool {
            shared: Arc::new(Shared {
                settings,
                idle: Mutex::new(Vec::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `req` (its URI in origin form) on an idle connection, or a
    /// new one. The lease goes with the response body, which gives the
    /// connection back once it has read the last frame.
    pub async fn send(&self, req: Request<Body>) -> Result<(Response<Incoming>, Lease), PoolError> {
        let (mut sender, reused) = match self.shared.take_idle() {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        let response = match sender.try_send_request(req).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                // The upstream closed the idle connection as the request
                // went to it, unwritten: once more, on a new connection.
                Some(req) if reused => {
                    tracing::debug!(error = %e.error(), "idle upstream connection closed; sending on a new one");
                    sender = self.connect().await?;
                    sender.send_request(req).await?
                }
                _ => return Err(e.into_error().into()),
            },
        };
        let mut lease = Lease {
            shared: self.shared.clone(),
            sender: Some(sender),
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection is the tunnel's now.
            lease.sender = None;
        } else if response.body().is_end_stream() {
            lease.give_back();
        }
        Ok((response, lease))
    }

    async fn connect(&self) -> Result<SendRequest<Body>, PoolError> {
        let settings = &self.shared.settings;
        let stream = tokio::time::timeout(
            settings.connect_timeout,
            TcpStream::connect((settings.host.as_str(), settings.port)),
        )
        .await
        .map_err(|_| PoolError::Connect(std::io::ErrorKind::TimedOut.into()))?
        .map_err(PoolError::Connect)?;
        stream.set_nodelay(true).map_err(PoolError::Connect)?;
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))
            .map_err(PoolError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        self.start_sweeping();
        Ok(sender)
    }

    /// Starts the task that lets go of connections idle for longer than
    /// the idle timeout while no request comes to take or give one back.
    fn start_sweeping(&self) {
        if self.shared.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        let every = self
            .shared
            .settings
            .idle_timeout
            .max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let now = Instant::now();
                shared.idle().retain(|idle| !shared.expired(idle, now));
            }
        });
    }

    /// Idle connections now (for tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.shared.idle().len()
    }
}

impl Shared {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, idle: &Idle, now: Instant) -> bool {
        now.duration_since(idle.since) >= self.settings.idle_timeout
    }

    /// The most recently used idle connection that is still ready; the
    /// closed and the expired ones met on the way are let go.
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle();
        let now = Instant::now();
        while let Some(top) = idle.pop() {
            if self.expired(&top, now) {
                // Those below it are older still.
                idle.clear();
                return None;
            }
            if top.sender.is_ready() {
                return Some(top.sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<Body>) {
        let mut idle = self.idle();
        if idle.len() < self.settings.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

impl Lease {
    /// The response has been read to its end: the connection can take
    /// another request, once hyper has seen the end too (it has, or is
    /// about to: a connection not ready now is let go rather than waited
    /// for). Later calls do nothing.
    pub fn give_back(&mut self) {
        if let Some(sender) = self.sender.take()
            && sender.is_ready()
        {
            self.shared.put(sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream that answers `hello` and counts the connections it
    /// accepted; `close_after_one` makes it close each after one answer.
    async fn upstream(close_after_one: bool) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from("hello"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(!close_after_one)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (port, accepted)
    }

    fn pool(port: u16, idle_timeout: Duration, max_idle: usize) -> PlainPool {
        PlainPool::new(PoolSettings {
            host: "127.0.0.1".into(),
            port,
            connect_timeout: Duration::from_secs(2),
            idle_timeout,
            max_idle,
        })
    }

    fn get() -> Request<Body> {
        Request::get("/").body(crate::body::empty()).unwrap()
    }

    /// Reads the response to its end, as the response body does, and gives
    /// the connection back.
    async fn read(response: Response<Incoming>, mut lease: Lease) -> String {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        lease.give_back();
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// One request through the pool, read to its end.
    async fn fetch(pool: &PlainPool) -> String {
        let (response, lease) = pool.send(get()).await.unwrap();
        read(response, lease).await
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let (port, accepted) = upstream(false).await;
        let pool = pool(port, Duration::from_secs(60), 8);
        for _ in 0..20 {
            assert_eq!(fetch(&pool).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_response_left_unread_takes_its_connection_with_it() {
        let (port, accepted) = upstream(false).await;
        let pool = pool(port, Duration::from_secs(60), 8);
        let (response, lease) = pool.send(get()).await.unwrap();
        drop((response, lease));
        assert_eq!(fetch(&pool).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        let (port, accepted) = upstream(true).await;
        let pool = pool(port, Duration::from_secs(60), 8);
        for _ in 0..5 {
            assert_eq!(fetch(&pool).await, "hello");
            // The upstream's close reaches the connection's task.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept_and_none_past_the_idle_timeout() {
        let (port, accepted) = upstream(false).await;
        let pool = pool(port, Duration::from_millis(300), 3);
        let mut open = Vec::new();
        for _ in 0..5 {
            open.push(pool.send(get()).await.unwrap());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        for (response, lease) in open {
            assert_eq!(read(response, lease).await, "hello");
        }
        assert_eq!(pool.idle_count(), 3);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(fetch(&pool).await, "hello");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            6,
            "the expired ones were let go"
        );
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let pool = pool(port, Duration::from_secs(60), 8);
        let error = pool.send(get()).await.err().unwrap();
        assert!(matches!(error, PoolError::Connect(_)), "{error:?}");
    }
}

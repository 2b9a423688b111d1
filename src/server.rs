//! The listener, graceful shutdown, and the one dispatch between tether's own
//! routes and the proxy.
//!
//! [`run`] takes a bound listener and a shutdown future and never binds by
//! itself, so tests bind `127.0.0.1:0` and run the real server in-process.
//! Clients may speak HTTP/1.1 or HTTP/2 with prior knowledge (h2c).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::access_log::{AccessLog, LoggedBody, RouteClass};
use crate::app::App;
use crate::body::Body;
use crate::capture;
use crate::connection::{self, Drain, Protocol};
use crate::proxy::{ProxyError, UpstreamTiming};
use crate::record::Api;
use crate::session::{SessionId, has_dot_segments, split_session_prefix};

/// Serves connections from `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests and streams finish for up to
/// `server.shutdown_grace_secs`, waits for background work, and returns.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let builders = Arc::new(Builders::new(&app));
    let drain = Drain::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning on an error that will repeat.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = app.connections.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = app.settings.server.max_connections, "connection limit reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let (builders, stop) = (builders.clone(), drain.watcher());
        tokio::spawn(async move {
            let header_read_timeout = app.settings.server.header_read_timeout;
            let Some(protocol) = connection::sniff(&stream, header_read_timeout).await else {
                return;
            };
            // Boxed: hyper keeps its slot for a connection's in-flight
            // request allocated for the connection's life; boxed, the slot
            // holds a pointer and the request's state goes when it is answered.
            let service = service_fn(move |req| Box::pin(handle(app.clone(), req, remote)));
            let io = TokioIo::new(stream);
            let ended = match protocol {
                Protocol::Http1 => {
                    let conn = builders.http1.serve_connection(io, service).with_upgrades();
                    connection::serve(Box::pin(conn), stop)
                        .await
                        .map_err(|e| e.to_string())
                }
                Protocol::Undecided => {
                    let conn = builders.auto.serve_connection_with_upgrades(io, service);
                    connection::serve(Box::pin(conn.into_owned()), stop)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    let grace = app.settings.server.shutdown_grace;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining connections"
    );
    let deadline = Instant::now() + grace;
    if tokio::time::timeout(grace, drain.shutdown()).await.is_err() {
        tracing::warn!("grace period over with connections still open; closing them");
    }
    app.tracker.close();
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, app.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over with background work still running");
    }
    // Recorders have handed over their turns: write what waits.
    app.history
        .drain(deadline.saturating_duration_since(Instant::now()))
        .await;
    tracing::info!("shut down");
}

/// hyper's HTTP/1 server for connections that are plainly HTTP/1, and the
/// auto builder (HTTP/1 or HTTP/2) for those that might be HTTP/2.
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(app: &App) -> Builders {
        let header_read_timeout = app.settings.server.header_read_timeout;
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        auto.http2().timer(TokioTimer::new());
        Builders { http1, auto }
    }
}

/// Routes one request and wraps its response body in the access log.
async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = request_id(req.headers());
    // The id alone: the access line joins it to the method and path, and
    // each field of a span is formatted as the span opens, whether or not
    // anything is logged in it (about 1,000 instructions a field).
    let span = tracing::info_span!("request", request_id = %request_id);
    // Boxed: the routes' state machine is large (3 KiB), and this future
    // lives until the response head is out; the box goes with the routes.
    let (class, result) = Box::pin(dispatch(&app, req, remote.ip()))
        .instrument(span.clone())
        .await;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            let _entered = span.enter();
            if error.is_client_error() {
                tracing::debug!(%error, %method, %path, "rejected request");
            } else {
                tracing::warn!(%error, %method, %path, "could not forward request");
            }
            error.to_response()
        }
    };
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        // The upstream's own request id (OpenAI's `x-request-id`) is kept.
        if !parts.headers.contains_key(X_REQUEST_ID) {
            parts.headers.insert(X_REQUEST_ID, value.clone());
        }
        parts.headers.insert(X_TETHER_REQUEST_ID, value);
    }
    let log = AccessLog {
        request_id,
        class,
        method,
        path,
        status: parts.status,
        started,
        headers_at: Instant::now(),
        upstream: parts.extensions.get::<UpstreamTiming>().map(|t| t.0),
        metrics: app.metrics.clone(),
    };
    let body = http_body_util::BodyExt::boxed_unsync(LoggedBody::new(body, log));
    Ok(Response::from_parts(parts, body))
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_TETHER_REQUEST_ID: HeaderName = HeaderName::from_static("x-tether-request-id");

/// The client's `X-Request-Id` when it is a sane one (1 to 128 visible
/// ASCII characters), else a new one.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_id, str::to_owned)
}

/// A new random id: 32 lowercase hex digits (a UUID v4 without dashes),
/// encoded without going through `fmt`.
pub fn new_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .simple()
        .encode_lower(&mut buf)
        .to_owned()
}

/// The one dispatch: the session prefix comes off, own routes are answered
/// here, and everything else is forwarded. The own prefix is never forwarded.
/// Also names the class the request is answered as (for the access log and
/// metrics), from the same look at the path.
async fn dispatch(
    app: &App,
    req: Request<Incoming>,
    client_ip: IpAddr,
) -> (RouteClass, Result<Response<Body>, ProxyError>) {
    let full = req.uri().path();
    if has_dot_segments(full) {
        return (RouteClass::Rejected, Err(ProxyError::DotSegments));
    }
    let (session, rest) = match split_session_prefix(full) {
        Some((raw, rest)) => match SessionId::parse(raw) {
            Ok(session) => (Some(session), rest.to_owned()),
            Err(e) => return (RouteClass::Rejected, Err(e.into())),
        },
        None => (None, full.to_owned()),
    };
    if let Some(route) = own_route(&rest, &app.settings.api_prefix) {
        if session.is_some() {
            return (RouteClass::Rejected, Err(ProxyError::ReservedPath));
        }
        let route = route.to_owned();
        let response = crate::api::handle(app, req, &route, client_ip).await;
        return (RouteClass::Own, Ok(response));
    }
    let api = recorded_api(app, &req, &rest);
    let class = if api.is_some() {
        RouteClass::Recorded
    } else {
        RouteClass::Proxy
    };
    if app.settings.auth.required && crate::tenant::credential(req.headers()).is_none() {
        return (class, Err(ProxyError::Unauthorized));
    }
    let result = if crate::proxy::is_upgrade(&req) {
        app.proxy
            .tunnel(req, &rest, client_ip, app.connections.clone())
            .await
    } else {
        match api {
            Some(api) => capture::handle(app, req, api, &rest, session, client_ip).await,
            None => app.proxy.forward(req, &rest, client_ip).await,
        }
    };
    (class, result)
}

/// The API of a request tether records, if it is one.
fn recorded_api(app: &App, req: &Request<Incoming>, path: &str) -> Option<Api> {
    let record = app.settings.record.enabled
        && req.method() == http::Method::POST
        && !capture::recording_declined(req.headers());
    record.then(|| Api::from_path(path)).flatten()
}

/// The part of `path` after the own prefix, if `path` is under it.
fn own_route<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::own_route;

    #[test]
    fn own_prefix_matches_whole_segments_only() {
        assert_eq!(own_route("/tether/healthz", "/tether"), Some("/healthz"));
        assert_eq!(own_route("/tether", "/tether"), Some(""));
        assert_eq!(own_route("/tetherball/x", "/tether"), None);
        assert_eq!(own_route("/v1/tether", "/tether"), None);
    }
}

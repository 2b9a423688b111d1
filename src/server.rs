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

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::access_log::{AccessLog, LoggedBody};
use crate::app::App;
use crate::body::Body;
use crate::capture;
use crate::proxy::{ProxyError, UpstreamTiming};
use crate::record::Api;
use crate::session::{SessionId, has_dot_segments, split_session_prefix};

/// Serves connections from `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests and streams finish for up to
/// `server.shutdown_grace_secs`, waits for background work, and returns.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let builder = connection_builder(&app);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(app.settings.server.max_connections));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = app.settings.server.max_connections, "connection limit reached; closing new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req| handle(app.clone(), req, remote));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
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
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
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

fn connection_builder(app: &App) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.settings.server.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    builder
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
    let response = match dispatch(&app, req, remote.ip()).await {
        Ok(response) => response,
        Err(error) => {
            if error.is_client_error() {
                tracing::debug!(%method, %path, %error, "rejected request");
            } else {
                tracing::warn!(%method, %path, %error, "could not forward request");
            }
            error.to_response()
        }
    };
    let (parts, body) = response.into_parts();
    let log = AccessLog {
        method,
        path,
        status: parts.status,
        started,
        upstream: parts.extensions.get::<UpstreamTiming>().map(|t| t.0),
    };
    let body = http_body_util::BodyExt::boxed_unsync(LoggedBody::new(body, log));
    Ok(Response::from_parts(parts, body))
}

/// The one dispatch: the session prefix comes off, own routes are answered
/// here, and everything else is forwarded. The own prefix is never forwarded.
async fn dispatch(
    app: &App,
    req: Request<Incoming>,
    client_ip: IpAddr,
) -> Result<Response<Body>, ProxyError> {
    let full = req.uri().path();
    if has_dot_segments(full) {
        return Err(ProxyError::DotSegments);
    }
    let (session, rest) = match split_session_prefix(full) {
        Some((raw, rest)) => (Some(SessionId::parse(raw)?), rest.to_owned()),
        None => (None, full.to_owned()),
    };
    if let Some(route) = own_route(&rest, &app.settings.api_prefix) {
        if session.is_some() {
            return Err(ProxyError::ReservedPath);
        }
        let route = route.to_owned();
        return Ok(crate::api::handle(app, req, &route).await);
    }
    if app.settings.auth.required && crate::tenant::credential(req.headers()).is_none() {
        return Err(ProxyError::Unauthorized);
    }
    if let Some(api) = recorded_api(app, &req, &rest) {
        return capture::handle(app, req, api, &rest, session, client_ip).await;
    }
    app.proxy.forward(req, &rest, client_ip).await
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

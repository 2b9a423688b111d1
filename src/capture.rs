//! A request on a recorded path (chat completions, completions, responses,
//! Anthropic messages): its body is read (it is small and must be parsed for
//! the session and the new messages), forwarded as is, and the response is
//! tee'd into a recorder that appends the turn to the session's history.
//!
//! What cannot be recorded (a body that is not JSON, an unknown encoding)
//! is forwarded untouched; a warning and `tether_recording_skipped_total` say so.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::body::{self, Body};
use crate::config::Tenancy;
use crate::proxy::{ProxyError, headers::is_event_stream};
use crate::record::recorder::{self, RecordJob, StreamSink};
use crate::record::{Api, Encoding, TurnRequest, request, usage};
use crate::session::SessionId;
use crate::store::now_ms;
use crate::stream::checkpoint::{self, WriterSettings};
use crate::stream::{Hub, TeeBody, collecting_tap, new_stream_id, tap, tee::Detach};
use crate::tenant::{self, Tenant};

pub const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
pub const X_TETHER_RECORD: HeaderName = HeaderName::from_static("x-tether-record");
pub const X_STREAM_ID: HeaderName = HeaderName::from_static("x-stream-id");

/// True when the client asked not to be recorded (`X-Tether-Record: off`).
pub fn recording_declined(headers: &HeaderMap) -> bool {
    headers
        .get(&X_TETHER_RECORD)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("off"))
}

/// Forwards and records one request on a recorded path.
pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    api: Api,
    path: &str,
    path_session: Option<SessionId>,
    client_ip: IpAddr,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, incoming) = req.into_parts();
    let bytes = app.proxy.read_body(&parts.headers, incoming).await?;
    let header_session = match parts.headers.get(&X_SESSION_ID) {
        Some(value) => Some(SessionId::parse(value.to_str().unwrap_or("\u{0}"))?),
        None => None,
    };
    let mut bytes = bytes;
    let request = match request::parse(api, &bytes) {
        Ok(request) => request,
        Err(e) => {
            app.metrics.skipped(e.reason());
            tracing::warn!(path, reason = e.reason(), error = %e, "request forwarded without recording");
            let response = app
                .proxy
                .send(parts, body::full(bytes), path, client_ip)
                .await?;
            return Ok(response.map(BodyExt::boxed_unsync));
        }
    };
    let session = resolve_session(
        header_session.or(path_session),
        &request,
        app.settings.sessions.from_user,
    )?;
    let tenant = tenant_of(&parts.headers, app.settings.auth.tenancy);
    let hide_usage = app.settings.record.include_usage
        && match usage::ask_for_usage(&request, &bytes) {
            Some(asking) => {
                bytes = asking;
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                true
            }
            None => false,
        };
    let exchange = Exchange {
        tenant,
        session,
        request,
        done: None,
        hide_usage,
    };
    forward_recorded(app, parts, bytes, path, exchange, client_ip).await
}

/// One recorded exchange, its request already parsed.
pub struct Exchange {
    pub tenant: Tenant,
    pub session: SessionId,
    pub request: TurnRequest,
    /// Told when the turn is stored, for callers that answer only then.
    pub done: Option<tokio::sync::oneshot::Sender<bool>>,
    /// tether asked for the usage chunk (`record.include_usage`): the client
    /// and followers do not see it.
    pub hide_usage: bool,
}

/// Sends `bytes` to the upstream at `path` and tees the response into a
/// recorder for `exchange` (also used by the stateful chat routes, which
/// build the request themselves).
pub fn forward_recorded<'a>(
    app: &'a App,
    parts: http::request::Parts,
    bytes: bytes::Bytes,
    path: &'a str,
    exchange: Exchange,
    client_ip: IpAddr,
) -> Pin<Box<dyn Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a>> {
    // Boxed as `Send` where the type is concrete: inferred through callers,
    // rustc cannot prove the hyper client's future `Send` for every
    // lifetime (rust-lang/rust#102211).
    Box::pin(async move {
        let Exchange {
            tenant,
            session,
            request,
            done,
            hide_usage,
        } = exchange;
        let mut response = app
            .proxy
            .send(parts, body::full(bytes), path, client_ip)
            .await?;
        if let Ok(value) = HeaderValue::from_str(session.as_str()) {
            response.headers_mut().insert(X_SESSION_ID, value);
        }
        if !response.status().is_success() {
            // The upstream refused the turn (bad request, rate limit, ...): the
            // client will retry, and history keeps only turns that happened.
            app.metrics.skipped("upstream_status");
            return Ok(response.map(BodyExt::boxed_unsync));
        }
        let content_encoding = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let encoding = match Encoding::from_header(content_encoding) {
            Ok(encoding) => encoding,
            Err(e) => {
                app.metrics.skipped("unknown_encoding");
                tracing::warn!(path, %session, error = %e, "response forwarded without recording");
                return Ok(response.map(BodyExt::boxed_unsync));
            }
        };
        let sse = is_event_stream(response.headers());
        // Hidden only where the events can be told apart in the bytes.
        let hide_usage = hide_usage && sse && encoding == Encoding::Identity;
        if hide_usage {
            response.headers_mut().remove(header::CONTENT_LENGTH);
        }
        let now = now_ms();
        let hub = sse.then(|| {
            Arc::new(Hub::new(
                new_stream_id(),
                tenant.clone(),
                session.clone(),
                now,
            ))
        });
        let cancel = hub
            .as_ref()
            .map_or_else(CancellationToken::new, |h| h.cancel_token());
        let stream = hub.map(|hub| {
            app.streams.insert(hub.clone());
            if let Ok(value) = HeaderValue::from_str(&hub.id) {
                response.headers_mut().insert(X_STREAM_ID, value);
            }
            if let Some(store) = app.checkpoints.clone() {
                let writer = checkpoint::run(
                    store,
                    hub.clone(),
                    writer_settings(app),
                    app.streams.control_link(),
                    app.metrics.clone(),
                );
                app.tracker.spawn(writer);
            }
            StreamSink { hub, hide_usage }
        });
        // The session is listed from now on (the embedded store, in memory:
        // no wait; Redis does it as the stream's record opens).
        if stream.is_some()
            && let Err(e) = app.store.stream_started(&tenant, &session, now).await
        {
            tracing::warn!(%session, error = %e, "could not list the session of a new stream");
        }
        let job = RecordJob {
            tenant,
            session,
            sse,
            request,
            encoding,
            max_bytes: app.settings.record.max_response_bytes,
            stream,
            done,
        };
        let tap = if sse {
            let (tap, recording) = tap();
            app.tracker.spawn(Box::pin(recorder::run(
                job,
                recording,
                app.history.clone(),
                app.metrics.clone(),
            )));
            tap
        } else {
            let (tracker, history, metrics) = (
                app.tracker.clone(),
                app.history.clone(),
                app.metrics.clone(),
            );
            collecting_tap(
                job.max_bytes,
                Box::new(move |recording| {
                    // Boxed: the recorder's future is large, and the task
                    // would copy it several times on its way in (1,500
                    // instructions a request, `bench/callgrind.sh`).
                    tracker.spawn(Box::pin(recorder::run(job, recording, history, metrics)));
                }),
            )
        };
        let detach = Detach {
            policy: app.settings.streams.on_disconnect,
            max_duration: app.settings.streams.max_duration,
            tracker: app.tracker.clone(),
            detached: app.streams.detached(),
        };
        Ok(response.map(|upstream| {
            let tee = TeeBody::new(upstream, tap, detach, cancel);
            if hide_usage {
                usage::HideUsage::new(tee).boxed_unsync()
            } else {
                tee.boxed_unsync()
            }
        }))
    })
}

/// How this replica's checkpoint writers batch, from the stream settings.
fn writer_settings(app: &App) -> WriterSettings {
    let streams = &app.settings.streams;
    WriterSettings {
        interval: streams.checkpoint_interval,
        follow_interval: streams.follow_interval,
        max_events: streams.checkpoint_max_events,
        heartbeat: streams.idle_timeout / 3,
        active_ttl: streams.max_duration + app.settings.upstream.header_timeout + streams.retention,
        retention: streams.retention,
        history_ttl: app.settings.history_ttl,
    }
}

/// The session a recorded request belongs to, from (in order) the
/// `X-Session-Id` header or the `/s/{session}` prefix, the body's
/// `metadata.session_id`, its `user` (when `sessions.from_user`), else new.
fn resolve_session(
    named: Option<SessionId>,
    request: &TurnRequest,
    from_user: bool,
) -> Result<SessionId, ProxyError> {
    if let Some(session) = named {
        return Ok(session);
    }
    if let Some(raw) = &request.metadata_session {
        return Ok(SessionId::parse(raw)?);
    }
    if from_user && let Some(user) = request.user.as_deref().filter(|u| !u.is_empty()) {
        return Ok(SessionId::from_user(user));
    }
    Ok(SessionId::generate())
}

/// The tenant that owns what this request records.
pub fn tenant_of(headers: &HeaderMap, tenancy: Tenancy) -> Tenant {
    match (tenancy, tenant::credential(headers)) {
        (Tenancy::None, _) => Tenant::shared(),
        (Tenancy::ApiKey, Some(credential)) => cached_tenant(credential),
        (Tenancy::ApiKey, None) => Tenant::anonymous(),
    }
}

/// Credentials whose tenant a worker thread remembers; past it the memory
/// starts over.
const TENANT_CACHE: usize = 256;

thread_local! {
    /// Tenants of recently seen credentials: deriving one (SHA-256, then
    /// hex) was ~5% of a recorded request's instructions, and a client
    /// sends the same key request after request. Only in this process's
    /// memory, as the request headers themselves are.
    static TENANTS: std::cell::RefCell<std::collections::HashMap<Box<str>, Tenant>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// [`Tenant::from_credential`], remembered per worker thread.
fn cached_tenant(credential: &str) -> Tenant {
    TENANTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(tenant) = cache.get(credential) {
            return tenant.clone();
        }
        if cache.len() >= TENANT_CACHE {
            cache.clear();
        }
        let tenant = Tenant::from_credential(credential);
        cache.insert(credential.into(), tenant.clone());
        tenant
    })
}

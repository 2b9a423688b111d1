//! The stream routes: resume (`GET /tether/streams/{id}?after=N`, and
//! `GET /tether/sessions/{id}/stream` from a session id alone), status, and
//! cancel. A stream is served from this replica's hub when it has it, else
//! from the checkpoint store; another tenant's stream does not exist (404).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::{ApiError, Caller, Query, json, owner, timestamp};
use crate::app::App;
use crate::body::{self, Body};
use crate::capture::{X_SESSION_ID, X_STREAM_ID};
use crate::session::SessionId;
use crate::store::{StreamRecord, StreamState, now_ms};
use crate::stream::Hub;
use crate::stream::replay::{self, ReplayOptions};

/// How long a store-backed follower blocks per read before it looks at the
/// stream's state again (and notices a dead owner).
const FOLLOW_BLOCK: Duration = Duration::from_secs(1);

/// How long `DELETE` waits for a stream of this replica to come to its end.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// A stream as found: here, or in the store.
enum Found {
    Local(Arc<Hub>),
    Stored(StreamRecord),
}

impl Found {
    fn session(&self) -> String {
        match self {
            Found::Local(hub) => hub.session.to_string(),
            Found::Stored(record) => record.session.clone(),
        }
    }
}

fn visible(caller: &Caller, tenant: &crate::tenant::Tenant) -> bool {
    match caller {
        Caller::Admin => true,
        Caller::Tenant(t) => t == tenant,
    }
}

async fn find(app: &App, caller: &Caller, id: &str) -> Result<Found, ApiError> {
    let not_found = || ApiError::NotFound(format!("stream {id}"));
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) || id.is_empty() || id.len() > 64 {
        return Err(not_found());
    }
    if let Some(hub) = app.streams.get(id) {
        return visible(caller, &hub.tenant)
            .then_some(Found::Local(hub))
            .ok_or_else(not_found);
    }
    let Some(store) = &app.checkpoints else {
        return Err(not_found());
    };
    match store.stream_record(id).await? {
        Some(record) if visible(caller, &record.tenant) => Ok(Found::Stored(record)),
        _ => Err(not_found()),
    }
}

/// `after`, from the query or a browser's `Last-Event-ID`; `ids` when asked
/// for or when the client resumes by event id.
fn replay_options(query: &Query, headers: &HeaderMap) -> Result<ReplayOptions, ApiError> {
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let raw_after = query.get("after").or(last_event_id);
    let after = match raw_after {
        None => 0,
        Some(raw) => raw.trim().parse().map_err(|_| {
            ApiError::BadRequest(format!("after must be a number of events, got {raw:?}"))
        })?,
    };
    let ids = last_event_id.is_some() || matches!(query.get("ids"), Some("true" | "1"));
    Ok(ReplayOptions { after, ids })
}

fn resume(app: &App, found: Found, options: ReplayOptions) -> Response<Body> {
    let session = found.session();
    let (id, body) = match found {
        Found::Local(hub) => {
            app.metrics.resumed("memory");
            (hub.id.clone(), replay::from_hub(hub, options))
        }
        Found::Stored(record) => {
            app.metrics.resumed("store");
            let store = app
                .checkpoints
                .clone()
                .expect("a stored stream comes from the checkpoint store");
            let lapse = app.settings.streams.idle_timeout;
            (
                record.id.clone(),
                replay::from_store(store, record.id, options, lapse, FOLLOW_BLOCK),
            )
        }
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    for (name, value) in [(X_STREAM_ID, id), (X_SESSION_ID, session)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// `GET /tether/streams/{id}?after=N`
pub async fn get(
    app: &App,
    caller: &Caller,
    id: &str,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let options = replay_options(query, headers)?;
    let found = find(app, caller, id).await?;
    Ok(resume(app, found, options))
}

/// `GET /tether/sessions/{id}/stream`: the session's active stream, else its
/// last one while it is kept; 204 when there is none.
pub async fn of_session(
    app: &App,
    caller: &Caller,
    raw_id: &str,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let session = SessionId::parse(raw_id)?;
    let options = replay_options(query, headers)?;
    let tenant = match owner(app, caller, &session, query).await {
        Ok(tenant) => tenant,
        // A session whose first answer is still streaming has no history yet.
        Err(ApiError::NotFound(_)) => match caller {
            Caller::Tenant(t) => t.clone(),
            Caller::Admin => return Ok(no_content()),
        },
        Err(e) => return Err(e),
    };
    if let Some(hub) = app.streams.latest_of(&tenant, session.as_str()) {
        return Ok(resume(app, Found::Local(hub), options));
    }
    let Some(store) = &app.checkpoints else {
        return Ok(no_content());
    };
    let Some(id) = store.session_stream(&tenant, session.as_str()).await? else {
        return Ok(no_content());
    };
    match find(app, caller, &id).await {
        Ok(found) => Ok(resume(app, found, options)),
        Err(ApiError::NotFound(_)) => Ok(no_content()),
        Err(e) => Err(e),
    }
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// `GET /tether/streams/{id}/status`
pub async fn status(app: &App, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
    let found = find(app, caller, id).await?;
    Ok(json(StatusCode::OK, &describe(app, &found)))
}

fn describe(app: &App, found: &Found) -> serde_json::Value {
    match found {
        Found::Local(hub) => json!({
            "stream_id": hub.id,
            "state": hub.state(),
            "events": hub.event_count(),
            "session_id": hub.session.as_str(),
            "created_at": timestamp(hub.created_ms),
            "replica": "local",
        }),
        Found::Stored(record) => json!({
            "stream_id": record.id,
            "state": record.effective_state(now_ms(), app.settings.streams.idle_timeout),
            "events": record.events,
            "session_id": record.session,
            "created_at": timestamp(record.created_ms),
            "heartbeat_at": timestamp(record.heartbeat_ms),
            "replica": "remote",
        }),
    }
}

/// `DELETE /tether/streams/{id}`: stop reading the upstream; idempotent.
pub async fn cancel(app: &App, caller: &Caller, id: &str) -> Result<Response<Body>, ApiError> {
    let found = find(app, caller, id).await?;
    match &found {
        Found::Local(hub) => {
            if hub.state() == StreamState::Active {
                app.metrics.cancels.inc();
                let mut changes = hub.subscribe();
                hub.cancel();
                let _ = tokio::time::timeout(CANCEL_WAIT, async {
                    while hub.state() == StreamState::Active {
                        if changes.changed().await.is_err() {
                            break;
                        }
                    }
                })
                .await;
            }
        }
        Found::Stored(record) => {
            if record.state == StreamState::Active
                && let Some(store) = &app.checkpoints
            {
                app.metrics.cancels.inc();
                store.request_cancel(&record.id).await?;
            }
        }
    }
    Ok(json(StatusCode::OK, &describe(app, &found)))
}

//! `GET /tether/sessions` (most recently active first, paged by cursor) and
//! `GET /tether/sessions/{id}` (a session's summary).

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, Caller, Query, json, last_message_time, no_session, session_of, timestamp};
use crate::app::App;
use crate::body::Body;
use crate::session::SessionId;
use crate::store::{StreamState, now_ms};
use crate::tenant::Tenant;

/// Page size when `limit` is not given, and the largest one accepted.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

pub async fn list(app: &App, caller: &Caller, query: &Query) -> Result<Response<Body>, ApiError> {
    let limit = query.limit(DEFAULT_PAGE, MAX_PAGE)?;
    let offset = query.cursor()?;
    let page = app
        .store
        .list_sessions(&caller.scope(), offset, limit)
        .await?;
    let mut items = Vec::with_capacity(page.entries.len());
    for entry in &page.entries {
        let Ok(id) = SessionId::parse(&entry.session_id) else {
            continue;
        };
        let count = app
            .store
            .session_info(&entry.tenant, &id)
            .await?
            .map_or(0, |info| info.message_count);
        let mut item = json!({
            "session_id": entry.session_id,
            "message_count": count,
            "last_activity": timestamp(entry.last_activity_ms),
        });
        if *caller == Caller::Admin {
            item["tenant"] = entry.tenant.as_str().into();
        }
        items.push(item);
    }
    let next = offset + page.entries.len();
    let next_cursor = (next < page.total && !page.entries.is_empty()).then(|| next.to_string());
    Ok(json(
        StatusCode::OK,
        &json!({
            "sessions": page.entries.iter().map(|e| e.session_id.as_str()).collect::<Vec<_>>(),
            "total_sessions": page.total,
            "next_cursor": next_cursor,
            "items": items,
        }),
    ))
}

pub async fn info(
    app: &App,
    caller: &Caller,
    raw_id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (id, tenant) = session_of(app, caller, raw_id, query).await?;
    let info = app
        .store
        .session_info(&tenant, &id)
        .await?
        .ok_or_else(|| no_session(&id))?;
    let active_stream = active_stream(app, &tenant, &id, info.last_stream).await;
    Ok(json(
        StatusCode::OK,
        &json!({
            "session_id": id.as_str(),
            "message_count": info.message_count,
            "created_at": timestamp(info.created_at_ms),
            "last_message_time": last_message_time(info.last_message_ms),
            "models": info.models,
            "usage": info.usage,
            "active_stream": active_stream.map_or(Value::Null, Value::from),
        }),
    ))
}

/// The session's stream that is still being answered, if any: this
/// replica's hubs know theirs; Redis knows the session's latest stream, and
/// its record (state and heartbeat) says whether it is still active. The
/// session keeps no "active" pointer: clearing one would cost a script per
/// stream, and it would stay set forever for a stream whose replica died.
async fn active_stream(
    app: &App,
    tenant: &Tenant,
    session: &SessionId,
    last_stream: Option<String>,
) -> Option<String> {
    if let Some(hub) = app.streams.latest_of(tenant, session.as_str())
        && hub.state() == StreamState::Active
    {
        return Some(hub.id.clone());
    }
    let (id, store) = (last_stream?, app.checkpoints.as_ref()?);
    match store.stream_record(&id).await {
        Ok(Some(record))
            if record.effective_state(now_ms(), app.settings.streams.idle_timeout)
                == StreamState::Active =>
        {
            Some(id)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(session = %session.as_str(), error = %e, "cannot read the session's latest stream");
            None
        }
    }
}

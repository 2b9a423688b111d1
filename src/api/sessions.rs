//! `GET /tether/sessions` (most recently active first, paged by cursor) and
//! `GET /tether/sessions/{id}` (a session's summary).

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, Caller, Query, json, no_session, session_of, timestamp};
use crate::app::App;
use crate::body::Body;
use crate::session::SessionId;
use crate::store::StreamState;

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
    // The embedded store keeps no stream pointer; this replica's hubs know.
    let active_stream = info.active_stream.or_else(|| {
        app.streams
            .latest_of(&tenant, id.as_str())
            .filter(|hub| hub.state() == StreamState::Active)
            .map(|hub| hub.id.clone())
    });
    Ok(json(
        StatusCode::OK,
        &json!({
            "session_id": id.as_str(),
            "message_count": info.message_count,
            "created_at": timestamp(info.created_at_ms),
            "last_message_time": timestamp(info.last_message_ms),
            "models": info.models,
            "usage": info.usage,
            "active_stream": active_stream.map_or(Value::Null, Value::from),
        }),
    ))
}

//! `GET /tether/history/{id}`: a session's messages, oldest first (or
//! `order=desc`), paged by cursor, optionally filtered by `role` and by a
//! case-insensitive text search `q`. `DELETE /tether/history/{id}` clears it.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, Caller, Query, json, last_message_time, no_session, session_of};
use crate::app::App;
use crate::body::Body;
use crate::session::SessionId;
use crate::store::MessageRange;
use crate::tenant::Tenant;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// A history page request, checked.
struct PageRequest {
    limit: usize,
    cursor: usize,
    descending: bool,
    /// Only messages with a position above (ascending) or below (descending) this.
    after: Option<usize>,
    roles: Option<Vec<String>>,
    text: Option<String>,
}

impl PageRequest {
    fn from_query(query: &Query) -> Result<PageRequest, ApiError> {
        let descending = match query.get("order") {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "order must be asc or desc, got {other:?}"
                )));
            }
        };
        let after = match query.get("after") {
            None => None,
            Some(raw) => Some(raw.parse().map_err(|_| {
                ApiError::BadRequest(format!("after must be a message index, got {raw:?}"))
            })?),
        };
        Ok(PageRequest {
            limit: query.limit(DEFAULT_PAGE, MAX_PAGE)?,
            cursor: query.cursor()?,
            descending,
            after,
            roles: query
                .get("role")
                .map(|r| r.split(',').map(|s| s.trim().to_owned()).collect()),
            text: query
                .get("q")
                .filter(|q| !q.is_empty())
                .map(str::to_lowercase),
        })
    }

    /// True when the page can be read as one slice of the list.
    fn is_plain(&self) -> bool {
        self.roles.is_none() && self.text.is_none() && self.after.is_none()
    }

    fn keeps(&self, index: usize, message: &Value) -> bool {
        let role_ok = self.roles.as_ref().is_none_or(|roles| {
            let role = message["role"].as_str().unwrap_or("");
            roles.iter().any(|r| r == role)
        });
        let after_ok = match (self.after, self.descending) {
            (None, _) => true,
            (Some(after), false) => index > after,
            (Some(after), true) => index < after,
        };
        role_ok
            && after_ok
            && self
                .text
                .as_ref()
                .is_none_or(|q| searchable_text(message).contains(q.as_str()))
    }
}

/// The text `q` searches: content and tool calls, lower-cased.
fn searchable_text(message: &Value) -> String {
    let content = match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let calls = message
        .get("tool_calls")
        .map(Value::to_string)
        .unwrap_or_default();
    format!("{content}\n{calls}").to_lowercase()
}

/// One page of messages: `(index, message)` pairs and the cursor of the next page.
pub(super) struct Page {
    pub messages: Vec<Value>,
    pub next_cursor: Option<String>,
}

async fn read_page(
    app: &App,
    tenant: &Tenant,
    id: &SessionId,
    page: &PageRequest,
) -> Result<Page, ApiError> {
    let with_index = |index: usize, mut message: Value| {
        message["index"] = index.into();
        message
    };
    if page.is_plain() {
        let range = MessageRange::Slice {
            offset: page.cursor,
            len: page.limit,
            from_end: page.descending,
        };
        // The caller found the session: without messages, its first
        // answer is still streaming.
        let read = app
            .store
            .read_messages(tenant, id, range)
            .await?
            .unwrap_or_default();
        let returned = read.messages.len();
        let mut messages: Vec<Value> = read
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| with_index(read.first_index + i, m))
            .collect();
        if page.descending {
            messages.reverse();
        }
        let next = page.cursor + returned;
        let next_cursor = (returned > 0 && next < read.total).then(|| next.to_string());
        return Ok(Page {
            messages,
            next_cursor,
        });
    }
    let all = app
        .store
        .read_messages(tenant, id, MessageRange::All)
        .await?
        .unwrap_or_default();
    let mut matching: Vec<Value> = all
        .messages
        .into_iter()
        .enumerate()
        .filter(|(i, m)| page.keeps(*i, m))
        .map(|(i, m)| with_index(i, m))
        .collect();
    if page.descending {
        matching.reverse();
    }
    let more = matching.len() > page.cursor + page.limit;
    let messages: Vec<Value> = matching
        .into_iter()
        .skip(page.cursor)
        .take(page.limit)
        .collect();
    let next_cursor = more.then(|| (page.cursor + page.limit).to_string());
    Ok(Page {
        messages,
        next_cursor,
    })
}

pub async fn read(
    app: &App,
    caller: &Caller,
    raw_id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let page = PageRequest::from_query(query)?;
    let (id, tenant) = session_of(app, caller, raw_id, query).await?;
    let info = app
        .store
        .session_info(&tenant, &id)
        .await?
        .ok_or_else(|| no_session(&id))?;
    let Page {
        messages,
        next_cursor,
    } = read_page(app, &tenant, &id, &page).await?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "session_id": id.as_str(),
            "messages": messages,
            "message_count": info.message_count,
            "last_message_time": last_message_time(info.last_message_ms),
            "next_cursor": next_cursor,
        }),
    ))
}

/// Every message of a session, oldest first (for exports).
pub(super) async fn all_messages(
    app: &App,
    tenant: &Tenant,
    id: &SessionId,
) -> Result<Vec<Value>, ApiError> {
    match app
        .store
        .read_messages(tenant, id, MessageRange::All)
        .await?
    {
        Some(read) => Ok(read.messages),
        // No messages: a session whose first answer streams, or none.
        None => match app.store.session_info(tenant, id).await? {
            Some(_) => Ok(Vec::new()),
            None => Err(no_session(id)),
        },
    }
}

pub async fn delete(
    app: &App,
    caller: &Caller,
    raw_id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (id, tenant) = session_of(app, caller, raw_id, query).await?;
    if !app.store.delete_session(&tenant, &id).await? {
        return Err(ApiError::NotFound(format!("session {id}")));
    }
    Ok(json(
        StatusCode::OK,
        &json!({"status": "success", "message": format!("Chat history cleared for session {id}")}),
    ))
}

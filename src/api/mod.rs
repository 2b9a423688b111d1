//! tether's own routes, under the configurable prefix (default `/tether`).
//! One dispatch on (method, path segments); `handle` renders errors,
//! `route` returns them. Probes, the OpenAPI document and the console's
//! static files need no credential; every other route does.

mod chat;
mod error;
mod export;
mod health;
mod history;
mod openapi;
mod sessions;
mod streams;
mod ui;

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

pub use error::ApiError;

use crate::app::App;
use crate::body::{self, Body};
use crate::config::Tenancy;
use crate::session::SessionId;
use crate::store::Scope;
use crate::tenant::{self, Tenant};

/// Answers a request whose path was under the own prefix; `route` is the rest
/// of the path after the prefix (`/healthz`, `/history/chat-1`, ...).
///
/// The future is boxed as `Send` here, where its type is concrete: left to
/// inference, rustc cannot prove the borrows held across the routes' awaits
/// `Send` for every lifetime (rust-lang/rust#102211).
pub fn handle<'a>(
    app: &'a App,
    req: Request<Incoming>,
    route: &'a str,
    client_ip: IpAddr,
) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>> {
    Box::pin(async move {
        match dispatch(app, req, route, client_ip).await {
            Ok(response) => response,
            Err(error) => {
                if error.status().is_server_error() {
                    tracing::warn!(route, %error, detail = ?error, "own route failed");
                }
                error.to_response()
            }
        }
    })
}

async fn dispatch(
    app: &App,
    req: Request<Incoming>,
    route: &str,
    client_ip: IpAddr,
) -> Result<Response<Body>, ApiError> {
    // Segments are percent-decoded, so `a%3Ab` names the session `a:b` (as
    // `encodeURIComponent` writes it); what is not UTF-8 stays raw and fails
    // the id checks.
    let decoded: Vec<Cow<str>> = route
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .unwrap_or(Cow::Borrowed(s))
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
    let (parts, body) = req.into_parts();
    let method = &parts.method;
    match segments.as_slice() {
        ["healthz"] if method == Method::GET => return Ok(health::healthz()),
        ["readyz"] if method == Method::GET => return Ok(health::readyz(app).await),
        ["openapi.yaml"] if method == Method::GET => {
            return Ok(openapi::openapi(&app.settings.api_prefix));
        }
        ["healthz" | "readyz" | "openapi.yaml"] => return Err(ApiError::MethodNotAllowed("GET")),
        // The pages are public static files; the data they fetch is not.
        ["ui", rest @ ..] => return ui::serve(app, method, &parts.headers, rest),
        _ => {}
    }
    let caller = authorize(app, &parts.headers)?;
    // The chat routes take the request whole; they are answered before the
    // borrows below exist.
    match segments.as_slice() {
        ["chat"] if method == Method::POST => return chat::chat(app, parts, body, client_ip).await,
        ["simple-chat"] if method == Method::POST => {
            return chat::simple_chat(app, parts, client_ip).await;
        }
        _ => {}
    }
    let query = Query::parse(parts.uri.query());
    let headers = &parts.headers;
    match (method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => Ok(text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            app.metrics.encode(),
        )),
        (&Method::GET, ["sessions"]) => sessions::list(app, &caller, &query).await,
        (&Method::GET, ["sessions", id]) => sessions::info(app, &caller, id, &query).await,
        (&Method::GET, ["sessions", id, "stream"]) => {
            streams::of_session(app, &caller, id, &query, headers).await
        }
        (&Method::GET, ["streams", id]) => streams::get(app, &caller, id, &query, headers).await,
        (&Method::DELETE, ["streams", id]) => streams::cancel(app, &caller, id).await,
        (&Method::GET, ["streams", id, "status"]) => streams::status(app, &caller, id).await,
        (&Method::GET, ["history", id]) => history::read(app, &caller, id, &query).await,
        (&Method::DELETE, ["history", id]) => history::delete(app, &caller, id, &query).await,
        (&Method::GET, ["history", id, "export"]) => export::export(app, &caller, id, &query).await,
        (_, path) => match allowed_methods(path) {
            Some(allow) => Err(ApiError::MethodNotAllowed(allow)),
            None => Err(ApiError::NotFound(format!("route {route:?}"))),
        },
    }
}

/// The methods a known route answers, for a 405's `Allow` header.
fn allowed_methods(path: &[&str]) -> Option<&'static str> {
    Some(match path {
        ["metrics"] | ["sessions"] | ["sessions", _] | ["sessions", _, "stream"] => "GET",
        ["streams", _] | ["history", _] => "GET, DELETE",
        ["streams", _, "status"] | ["history", _, "export"] => "GET",
        ["chat"] | ["simple-chat"] => "POST",
        _ => return None,
    })
}

/// Who is asking: one tenant, or the admin token that sees them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Tenant(Tenant),
    Admin,
}

impl Caller {
    pub fn scope(&self) -> Scope {
        match self {
            Caller::Tenant(t) => Scope::Tenant(t.clone()),
            Caller::Admin => Scope::All,
        }
    }
}

/// The admin token, else the tenant of the credential. Under `auth.tenancy =
/// "none"` the routes are open unless an admin token is set.
fn authorize(app: &App, headers: &http::HeaderMap) -> Result<Caller, ApiError> {
    let auth = &app.settings.auth;
    let credential = tenant::credential(headers);
    if let (Some(expected), Some(presented)) = (&auth.admin_token, credential)
        && tenant::secret_matches(presented, expected)
    {
        return Ok(Caller::Admin);
    }
    match auth.tenancy {
        Tenancy::ApiKey => credential
            .map(|c| Caller::Tenant(Tenant::from_credential(c)))
            .ok_or(ApiError::Unauthorized),
        Tenancy::None if auth.admin_token.is_some() => Err(ApiError::Unauthorized),
        Tenancy::None => Ok(Caller::Tenant(Tenant::shared())),
    }
}

/// The session a route names (checked) and the tenant it belongs to.
async fn session_of(
    app: &App,
    caller: &Caller,
    raw_id: &str,
    query: &Query,
) -> Result<(SessionId, Tenant), ApiError> {
    let id = SessionId::parse(raw_id)?;
    let tenant = owner(app, caller, &id, query).await?;
    Ok((id, tenant))
}

/// The 404 of a session the caller has not (or that does not exist).
fn no_session(id: &SessionId) -> ApiError {
    ApiError::NotFound(format!("session {id}"))
}

/// The tenant whose session `id` the caller means. A tenant means its own;
/// the admin names one with `?tenant=`, or tether finds the only one.
async fn owner(
    app: &App,
    caller: &Caller,
    id: &SessionId,
    query: &Query,
) -> Result<Tenant, ApiError> {
    match caller {
        Caller::Tenant(t) => Ok(t.clone()),
        Caller::Admin => {
            if let Some(raw) = query.get("tenant") {
                return Tenant::parse(raw).ok_or_else(|| {
                    ApiError::BadRequest(format!("tenant {raw:?} is not a tenant id"))
                });
            }
            let mut tenants = app.store.tenants_of(id).await?;
            match tenants.len() {
                0 => Err(ApiError::NotFound(format!("session {id}"))),
                1 => Ok(tenants.remove(0)),
                _ => Err(ApiError::AmbiguousSession(id.to_string())),
            }
        }
    }
}

/// Decoded query parameters; the last value of a repeated name wins.
pub struct Query(HashMap<String, String>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A whole number in `1..=max`, `default` when absent.
    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "limit must be a whole number from 1 to {max}, got {raw:?}"
                    ))
                }),
        }
    }

    /// An opaque cursor from an earlier page (a position), 0 when absent.
    fn cursor(&self) -> Result<usize, ApiError> {
        match self.get("cursor") {
            None => Ok(0),
            Some(raw) => raw.parse().map_err(|_| {
                ApiError::BadRequest(format!("cursor {raw:?} did not come from this API"))
            }),
        }
    }
}

/// RFC 3339 with microseconds, as the history shapes use.
fn timestamp(ms: u64) -> String {
    crate::timestamp::rfc3339_micros(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The time of a session's last message; null before it has one (its
/// first answer is still streaming).
fn last_message_time(ms: u64) -> serde_json::Value {
    match ms {
        0 => serde_json::Value::Null,
        ms => timestamp(ms).into(),
    }
}

/// A JSON response with the given status.
fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    text(status, "application/json", value.to_string())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

//! Stateful chat over a stateless upstream, for apps that keep no history:
//! `POST /tether/chat` (JSON body) and `POST /tether/simple-chat` (query
//! string) prepend the session's stored history to the new message, call
//! the upstream's chat completions with the caller's own key, record both
//! sides like any proxied turn, and answer in the shape of the seed service
//! (`{"message", "model", "timestamp", "tokens_used", "finish_reason"}` plus
//! `session_id`), only once the turn is stored. With `"stream": true` the
//! answer is the upstream's SSE stream, resumable like any other.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Query, json};
use crate::app::App;
use crate::body::Body;
use crate::capture::{self, Exchange};
use crate::record::turn::history_may_keep;
use crate::record::{Api, Message, Role, TurnRequest};
use crate::session::SessionId;
use crate::store::MessageRange;

/// The upstream route a chat turn goes to (after `upstream.url`).
const CHAT_PATH: &str = "/v1/chat/completions";

/// Largest `/tether/chat` request body: a message, not a conversation.
const MAX_CHAT_BODY: usize = 1024 * 1024;

/// Largest non-streamed upstream answer read back for the reply.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// How long a non-streamed answer waits for its turn to be stored.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// The fields of a chat turn request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    message: String,
    model: Option<String>,
    session_id: Option<String>,
    system: Option<String>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f64>,
    /// A number, as JSON has no integers apart: `100.0` is 100.
    max_tokens: Option<f64>,
}

/// A route's future, boxed as `Send` where its type is concrete (left to
/// inference, rustc cannot prove it for every lifetime: rust-lang/rust#102211).
type Answer<'a> = Pin<Box<dyn Future<Output = Result<Response<Body>, ApiError>> + Send + 'a>>;

/// `POST /tether/chat`
pub fn chat(
    app: &App,
    parts: http::request::Parts,
    body: Incoming,
    client_ip: IpAddr,
) -> Answer<'_> {
    Box::pin(async move {
        let bytes = match Limited::new(body, MAX_CHAT_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return Err(ApiError::BadRequest(format!(
                    "could not read the body: {e}"
                )));
            }
        };
        let request: ChatRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("invalid chat request: {e}")))?;
        turn(app, &parts.headers, request, client_ip).await
    })
}

/// `POST /tether/simple-chat?message=&session_id=&model=`
pub fn simple_chat(app: &App, parts: http::request::Parts, client_ip: IpAddr) -> Answer<'_> {
    Box::pin(async move {
        let request = from_query(&Query::parse(parts.uri.query()))?;
        turn(app, &parts.headers, request, client_ip).await
    })
}

/// The chat turn a query string describes.
fn from_query(query: &Query) -> Result<ChatRequest, ApiError> {
    let message = query
        .get("message")
        .ok_or_else(|| ApiError::BadRequest("message is required".into()))?;
    let request = ChatRequest {
        message: message.to_owned(),
        model: query.get("model").map(str::to_owned),
        session_id: query.get("session_id").map(str::to_owned),
        system: query.get("system").map(str::to_owned),
        stream: matches!(query.get("stream"), Some("true" | "1")),
        temperature: None,
        max_tokens: None,
    };
    Ok(request)
}

async fn turn(
    app: &App,
    headers: &HeaderMap,
    chat: ChatRequest,
    client_ip: IpAddr,
) -> Result<Response<Body>, ApiError> {
    if chat.model.as_deref() == Some("") {
        return Err(ApiError::BadRequest("model must not be empty".into()));
    }
    if chat.message.is_empty() {
        return Err(ApiError::BadRequest("message must not be empty".into()));
    }
    let model = chat
        .model
        .clone()
        .or_else(|| app.settings.chat.default_model.clone())
        .ok_or_else(|| {
            ApiError::BadRequest("model is required (or set chat.default_model)".into())
        })?;
    let session = match &chat.session_id {
        Some(raw) => SessionId::parse(raw)?,
        None => SessionId::generate(),
    };
    let tenant = capture::tenant_of(headers, app.settings.auth.tenancy);
    let stored = app
        .store
        .read_messages(&tenant, &session, MessageRange::All)
        .await?
        .map(|read| read.messages)
        .unwrap_or_default();
    let mut messages = context(&stored, app.settings.chat.max_context_messages);
    if let Some(system) = &chat.system
        && !messages.iter().any(|m| m["role"] == "system")
    {
        messages.insert(0, json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": chat.message}));

    let mut body = json!({"model": model, "messages": messages, "stream": chat.stream});
    if let Some(t) = chat.temperature {
        body["temperature"] = t.into();
    }
    if let Some(n) = chat.max_tokens {
        if n < 0.0 || n.fract() != 0.0 || n > u32::MAX as f64 {
            return Err(ApiError::BadRequest(format!(
                "max_tokens must be a whole number, got {n}"
            )));
        }
        body["max_tokens"] = (n as u64).into();
    }
    let bytes = Bytes::from(body.to_string());
    let request = TurnRequest {
        api: Api::ChatCompletions,
        model: Some(model),
        stream: chat.stream,
        system: Vec::new(),
        // The context is history's own: only what follows its last
        // assistant message (and a system message) is new, and only that
        // is written out as text.
        messages: history_may_keep(messages.iter().collect(), |m| Role::of_value(m))
            .into_iter()
            .filter_map(Message::from_value)
            .collect(),
        metadata_session: None,
        user: None,
        stream_options: None,
    };
    let (done, stored_turn) = tokio::sync::oneshot::channel();
    let exchange = Exchange {
        hide_usage: false,
        tenant,
        session: session.clone(),
        request,
        done: Some(done),
    };
    let response = capture::forward_recorded(
        app,
        upstream_parts(headers)?,
        bytes,
        CHAT_PATH,
        exchange,
        client_ip,
    )
    .await
    .map_err(|e| ApiError::Upstream(e.to_string(), e.status()))?;
    if chat.stream || !response.status().is_success() {
        // A stream (resumable, recorded when it ends) or the upstream's own error, as is.
        return Ok(response);
    }
    let status = response.status();
    let answer = read_answer(response.into_body()).await.map_err(|e| {
        ApiError::Upstream(format!("reading the answer: {e}"), StatusCode::BAD_GATEWAY)
    })?;
    let _ = tokio::time::timeout(STORE_WAIT, stored_turn).await;
    let completion: Value = serde_json::from_slice(&answer).map_err(|_| {
        ApiError::Upstream(
            "the upstream's answer is not JSON".into(),
            StatusCode::BAD_GATEWAY,
        )
    })?;
    let choice = &completion["choices"][0];
    let mut response = json(
        status,
        &json!({
            "message": choice["message"]["content"],
            "model": completion["model"],
            "timestamp": crate::timestamp::rfc3339_micros(SystemTime::now()).to_string(),
            "tokens_used": completion["usage"]["total_tokens"],
            "finish_reason": choice["finish_reason"],
            "session_id": session.as_str(),
        }),
    );
    if let Ok(value) = HeaderValue::from_str(session.as_str()) {
        response.headers_mut().insert(capture::X_SESSION_ID, value);
    }
    Ok(response)
}

/// Reads a non-streamed answer whole, up to `MAX_ANSWER_BYTES`.
async fn read_answer(mut body: Body) -> Result<Vec<u8>, String> {
    let mut answer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if answer.len() + data.len() > MAX_ANSWER_BYTES {
                return Err(format!("longer than {MAX_ANSWER_BYTES} bytes"));
            }
            answer.extend_from_slice(&data);
        }
    }
    Ok(answer)
}

/// The stored history as the upstream takes it: the OpenAI message fields
/// only, the system messages kept, the rest cut to the newest `max`
/// messages (never starting on a tool result whose call was cut off).
fn context(stored: &[Value], max: usize) -> Vec<Value> {
    const FIELDS: [&str; 5] = ["role", "content", "tool_calls", "tool_call_id", "name"];
    let strip = |m: &Value| {
        let mut out = serde_json::Map::new();
        for key in FIELDS {
            if let Some(v) = m.get(key).filter(|v| !v.is_null() || key == "content") {
                out.insert(key.into(), v.clone());
            }
        }
        Value::Object(out)
    };
    let is_system = |m: &&Value| matches!(m["role"].as_str(), Some("system" | "developer"));
    let system: Vec<Value> = stored.iter().filter(is_system).map(strip).collect();
    let rest: Vec<&Value> = stored.iter().filter(|m| !is_system(m)).collect();
    let mut start = rest.len().saturating_sub(max);
    while start < rest.len() && rest[start]["role"] == "tool" {
        start += 1;
    }
    system
        .into_iter()
        .chain(rest[start..].iter().map(|m| strip(m)))
        .collect()
}

/// The upstream request's head: the caller's credentials and request id, JSON.
fn upstream_parts(headers: &HeaderMap) -> Result<http::request::Parts, ApiError> {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::POST;
    parts.uri = Uri::from_static(CHAT_PATH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for name in [header::AUTHORIZATION.as_str(), "x-api-key", "x-request-id"] {
        if let Some(value) = headers.get(name) {
            parts
                .headers
                .insert(header::HeaderName::from_static(name), value.clone());
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_system_message_and_the_newest_turns() {
        let mut stored = vec![json!({"role": "system", "content": "terse", "timestamp": "t"})];
        for i in 0..10 {
            stored.push(json!({"role": "user", "content": format!("q{i}"), "model": "m"}));
            stored.push(json!({"role": "assistant", "content": format!("a{i}"), "usage": {}}));
        }
        let context = context(&stored, 4);
        assert_eq!(
            context[0],
            json!({"role": "system", "content": "terse"}),
            "extra fields stripped"
        );
        let contents: Vec<_> = context[1..]
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(contents, ["q8", "a8", "q9", "a9"]);
    }

    #[test]
    fn context_never_starts_on_an_orphaned_tool_result() {
        let stored = vec![
            json!({"role": "user", "content": "weather?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1"}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"}),
            json!({"role": "assistant", "content": "It is sunny."}),
        ];
        let context = context(&stored, 2);
        assert_eq!(
            context,
            vec![json!({"role": "assistant", "content": "It is sunny."})]
        );
    }
}

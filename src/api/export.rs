//! `GET /tether/history/{id}/export?format=json|jsonl|markdown`: the whole
//! conversation as a download.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use super::history::all_messages;
use super::{ApiError, Caller, Query, session_of, text};
use crate::app::App;
use crate::body::Body;
use crate::session::SessionId;

pub async fn export(
    app: &App,
    caller: &Caller,
    raw_id: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let format = query.get("format").unwrap_or("json");
    let (content_type, extension) = match format {
        "json" => ("application/json", "json"),
        "jsonl" => ("application/x-ndjson", "jsonl"),
        "markdown" | "md" => ("text/markdown; charset=utf-8", "md"),
        other => {
            return Err(ApiError::BadRequest(format!(
                "format must be json, jsonl or markdown, got {other:?}"
            )));
        }
    };
    let (id, tenant) = session_of(app, caller, raw_id, query).await?;
    let messages = all_messages(app, &tenant, &id).await?;
    let body = match extension {
        "json" => json!({"session_id": id.as_str(), "message_count": messages.len(), "messages": messages}).to_string(),
        "jsonl" => messages.iter().map(|m| format!("{m}\n")).collect(),
        _ => markdown(&id, &messages),
    };
    let mut response = text(StatusCode::OK, content_type, body);
    let disposition = format!("attachment; filename=\"tether-{id}.{extension}\"");
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// A readable transcript: one section per message, tool calls as JSON blocks.
fn markdown(id: &SessionId, messages: &[Value]) -> String {
    let mut out = format!("# Session {id}\n");
    for message in messages {
        let role = message["role"].as_str().unwrap_or("unknown");
        let mut meta: Vec<&str> = Vec::new();
        for key in ["timestamp", "model"] {
            if let Some(value) = message[key].as_str() {
                meta.push(value);
            }
        }
        out.push_str(&format!("\n## {role}"));
        if !meta.is_empty() {
            out.push_str(&format!(" ({})", meta.join(", ")));
        }
        out.push_str("\n\n");
        match &message["content"] {
            Value::String(s) => out.push_str(s),
            Value::Null => {}
            other => out.push_str(&format!("```json\n{other}\n```")),
        }
        if let Some(calls) = message["tool_calls"].as_array() {
            for call in calls {
                let name = call["function"]["name"].as_str().unwrap_or("?");
                let args = call["function"]["arguments"].as_str().unwrap_or("");
                out.push_str(&format!(
                    "\n\n**tool call** `{name}`:\n\n```json\n{args}\n```"
                ));
            }
        }
        if let Some(call_id) = message["tool_call_id"].as_str() {
            out.push_str(&format!("\n\n_(result of tool call `{call_id}`)_"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_shows_roles_content_and_tool_calls() {
        let id = SessionId::parse("s1").unwrap();
        let messages = vec![
            json!({"role": "user", "content": "weather?", "timestamp": "2026-01-01T00:00:00.000000Z", "model": "m"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "snow"}),
        ];
        let md = markdown(&id, &messages);
        assert!(md.starts_with("# Session s1\n"), "{md}");
        assert!(
            md.contains("## user (2026-01-01T00:00:00.000000Z, m)\n\nweather?"),
            "{md}"
        );
        assert!(
            md.contains("**tool call** `get_weather`:\n\n```json\n{\"city\":\"Oslo\"}\n```"),
            "{md}"
        );
        assert!(
            md.contains("## tool\n\nsnow\n\n_(result of tool call `c1`)_"),
            "{md}"
        );
    }
}

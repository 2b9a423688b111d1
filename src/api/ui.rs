//! The web console (`{prefix}/ui`) and the demo chat page (`{prefix}/ui/chat`):
//! static files embedded in the binary, served without a credential because
//! they hold no data. Their scripts ask the user for a key and send it as a
//! Bearer header on every call to the data routes, which check it as usual.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::app::App;
use crate::body::{self, Body};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Scripts and styles from this origin only, no inline script or style, no
/// framing, no form posts, no plugins; `fetch` to tether itself only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The path under `{prefix}/ui` (empty for the console), its content type and
/// its text. HTML pages name the own prefix as `{{prefix}}`, filled in when served.
const FILES: &[(&str, &str, &str)] = &[
    ("", HTML, include_str!("../../ui/index.html")),
    ("console.js", JS, include_str!("../../ui/console.js")),
    ("console.css", CSS, include_str!("../../ui/console.css")),
    (
        "conversation.js",
        JS,
        include_str!("../../ui/conversation.js"),
    ),
    ("tether.js", JS, include_str!("../../ui/tether.js")),
    ("md.js", JS, include_str!("../../ui/md.js")),
    (
        "chat",
        HTML,
        include_str!("../../examples/web-chat/index.html"),
    ),
    (
        "chat.js",
        JS,
        include_str!("../../examples/web-chat/chat.js"),
    ),
    (
        "chat.css",
        CSS,
        include_str!("../../examples/web-chat/chat.css"),
    ),
];

/// `GET {prefix}/ui/{rest}`; a 404 for everything when `ui.enabled` is off.
pub fn serve(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let path = rest.join("/");
    let not_found = || ApiError::NotFound(format!("ui file {path:?}"));
    if !app.settings.ui_enabled {
        return Err(not_found());
    }
    let &(_, content_type, text) = FILES
        .iter()
        .find(|(name, _, _)| *name == path)
        .ok_or_else(not_found)?;
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed("GET"));
    }
    let text = if content_type == HTML {
        text.replace("{{prefix}}", &app.settings.api_prefix)
    } else {
        text.to_owned()
    };
    Ok(respond(content_type, text, headers))
}

/// The file with its security and caching headers, or a 304 when the
/// browser's copy (`If-None-Match`) is current.
fn respond(content_type: &'static str, text: String, request: &HeaderMap) -> Response<Body> {
    let etag = etag(&text);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(body::full(text))
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change only with the binary: revalidate every time, and the
    // ETag makes that a 304 without a body.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

/// A strong validator: the first 128 bits of the body's SHA-256, quoted.
fn etag(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

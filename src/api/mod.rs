//! tether's own routes, under the configurable prefix (default `/tether`).
//! One dispatch on (method, path); everything unknown is an OpenAI-shaped 404.

mod health;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::app::App;
use crate::body::Body;
use crate::error::error_response;

/// Answers a request whose path was under the own prefix; `route` is the rest
/// of the path after the prefix (`/healthz`, `/readyz`, ...).
pub async fn handle(app: &App, req: Request<Incoming>, route: &str) -> Response<Body> {
    let segments: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => health::healthz(),
        (&Method::GET, ["readyz"]) => health::readyz(app).await,
        (_, ["healthz"] | ["readyz"]) => method_not_allowed(),
        _ => not_found(route),
    }
}

fn not_found(route: &str) -> Response<Body> {
    error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        &format!("no tether route at {route:?}"),
    )
}

fn method_not_allowed() -> Response<Body> {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// A JSON response with the given status.
fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(crate::body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

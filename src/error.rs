//! OpenAI-shaped JSON errors: `{"error": {"message", "type", "code"}}`, the
//! form every OpenAI SDK knows how to surface to its caller.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};

/// Renders an OpenAI-shaped error response.
///
/// `kind` is the OpenAI `type` (`invalid_request_error`, `server_error`, ...)
/// and `code` a short machine-readable reason specific to tether.
pub fn error_response(status: StatusCode, kind: &str, code: &str, message: &str) -> Response<Body> {
    let json = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code, "param": null }
    });
    let mut response = Response::new(body::full(json.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_body_has_the_openai_shape() {
        let response = error_response(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "upstream_unreachable",
            "no route",
        );
        assert_eq!(response.status(), 502);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json["error"]["message"], "no route",
            "message travels as is: {json}"
        );
        assert_eq!(json["error"]["type"], "server_error");
        assert_eq!(json["error"]["code"], "upstream_unreachable");
    }
}

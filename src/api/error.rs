//! Errors of tether's own routes, grouped by who is at fault, with the one
//! mapping to a status and an OpenAI-shaped body. Internals stay in the log.

use http::{Response, StatusCode};

use crate::body::Body;
use crate::error::error_response;
use crate::session::InvalidSessionId;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // The client's fault.
    #[error("a credential is required: Authorization: Bearer <key> (or x-api-key)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid session id: {0}")]
    InvalidSession(#[from] InvalidSessionId),
    #[error("{0} not found")]
    NotFound(String),
    /// The route exists; these are the methods it answers.
    #[error("method not allowed on this route (it answers {0})")]
    MethodNotAllowed(&'static str),
    #[error("session {0} exists in several tenants; pass ?tenant=")]
    AmbiguousSession(String),

    // The upstream's or tether's side.
    #[error("{0}")]
    Upstream(String, StatusCode),
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) | ApiError::InvalidSession(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AmbiguousSession(_) => StatusCode::CONFLICT,
            ApiError::Upstream(_, status) => *status,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) => "invalid_parameter",
            ApiError::InvalidSession(_) => "invalid_session_id",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::AmbiguousSession(_) => "ambiguous_session",
            ApiError::Upstream(..) => "upstream_error",
            ApiError::Store(_) => "store_unavailable",
        }
    }

    pub fn to_response(&self) -> Response<Body> {
        let kind = match self {
            ApiError::Unauthorized => "authentication_error",
            ApiError::Store(_) | ApiError::Upstream(..) => "server_error",
            _ => "invalid_request_error",
        };
        let mut response = error_response(self.status(), kind, self.code(), &self.to_string());
        if let ApiError::MethodNotAllowed(allow) = self {
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status() {
        let cases = [
            (ApiError::Unauthorized, 401),
            (ApiError::BadRequest("limit".into()), 400),
            (ApiError::InvalidSession(InvalidSessionId::Empty), 400),
            (ApiError::NotFound("session x".into()), 404),
            (ApiError::MethodNotAllowed("GET"), 405),
            (ApiError::AmbiguousSession("x".into()), 409),
            (ApiError::Store(StoreError::Corrupt("x".into())), 503),
        ];
        for (error, status) in cases {
            assert_eq!(error.to_response().status().as_u16(), status, "{error}");
        }
        let store = ApiError::Store(StoreError::Corrupt("key tether:{s:secret}".into()));
        assert!(
            !store.to_string().contains("secret"),
            "store internals stay in the log"
        );
    }
}

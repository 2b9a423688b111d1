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
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("session {0} exists in several tenants; pass ?tenant=")]
    AmbiguousSession(String),

    // tether's side.
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) | ApiError::InvalidSession(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AmbiguousSession(_) => StatusCode::CONFLICT,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) => "invalid_parameter",
            ApiError::InvalidSession(_) => "invalid_session_id",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::AmbiguousSession(_) => "ambiguous_session",
            ApiError::Store(_) => "store_unavailable",
        }
    }

    pub fn to_response(&self) -> Response<Body> {
        let kind = match self {
            ApiError::Unauthorized => "authentication_error",
            ApiError::Store(_) => "server_error",
            _ => "invalid_request_error",
        };
        error_response(self.status(), kind, self.code(), &self.to_string())
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
            (ApiError::MethodNotAllowed, 405),
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

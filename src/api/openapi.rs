//! `GET /tether/openapi.yaml`: the OpenAPI document of the own routes
//! (`openapi.yaml` at the crate root), compiled into the binary and served
//! without a credential, with its server URL set to the configured prefix.

use http::{Response, StatusCode};

use crate::body::Body;

/// The document as written, whose server is the default prefix.
pub const SPEC: &str = include_str!("../../openapi.yaml");

/// The server line of [`SPEC`], rewritten when `api.prefix` is not `/tether`.
const DEFAULT_SERVER: &str = "\n  - url: /tether\n";

pub fn openapi(prefix: &str) -> Response<Body> {
    let body = if prefix == "/tether" {
        SPEC.to_owned()
    } else {
        SPEC.replacen(DEFAULT_SERVER, &format!("\n  - url: {prefix}\n"), 1)
    };
    super::text(StatusCode::OK, "application/yaml", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_url_follows_the_prefix() {
        assert!(
            SPEC.contains(DEFAULT_SERVER),
            "the spec names /tether as its server"
        );
        let custom = SPEC.replacen(DEFAULT_SERVER, "\n  - url: /_tether\n", 1);
        assert!(custom.contains("\n  - url: /_tether\n"));
        assert!(!custom.contains(DEFAULT_SERVER));
    }
}

//! Tenants: who owns a session. A tenant is derived from the client's
//! credential (the first 128 bits of SHA-256 of the bearer token or
//! `x-api-key`), so the same key always lands in the same tenant and the key
//! itself is never stored or logged.

use std::fmt;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A tenant id: 32 lowercase hex digits, or one of the fixed names below.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Tenant(String);

impl Tenant {
    /// The one tenant everybody shares under `auth.tenancy = "none"`.
    pub fn shared() -> Tenant {
        Tenant("local".into())
    }

    /// Where traffic without any credential is recorded under `auth.tenancy =
    /// "api-key"`: only the admin token can read it.
    pub fn anonymous() -> Tenant {
        Tenant("anonymous".into())
    }

    pub fn from_credential(credential: &str) -> Tenant {
        let digest = Sha256::digest(credential.as_bytes());
        Tenant(hex(&digest[..16]))
    }

    /// Rebuilds a tenant id read back from the store or a query parameter;
    /// `None` for anything that is not a tenant id.
    pub fn parse(raw: &str) -> Option<Tenant> {
        let hex_id = raw.len() == 32 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (hex_id || raw == "local" || raw == "anonymous").then(|| Tenant(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

/// The credential a request carries: `Authorization: Bearer ...`, else
/// `x-api-key` (Anthropic), else `x-goog-api-key` (Gemini).
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    bearer
        .or_else(|| header("x-api-key"))
        .or_else(|| header("x-goog-api-key"))
        .filter(|c| !c.is_empty())
}

/// Compares a presented secret with the expected one in time that does not
/// depend on where they differ (both are hashed first, so not on length either).
pub fn secret_matches(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_128_bits_of_sha256_of_the_key() {
        let tenant = Tenant::from_credential("sk-test");
        assert_eq!(tenant.as_str().len(), 32);
        assert_eq!(tenant, Tenant::from_credential("sk-test"), "stable");
        assert_ne!(tenant, Tenant::from_credential("sk-other"));
        assert!(!tenant.as_str().contains("sk-test"));
        assert_eq!(Tenant::parse(tenant.as_str()), Some(tenant));
        assert_eq!(Tenant::parse("../etc"), None);
    }

    #[test]
    fn the_credential_comes_from_bearer_or_x_api_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(credential(&headers), None);
        headers.insert("x-api-key", "anthropic-key".parse().unwrap());
        assert_eq!(credential(&headers), Some("anthropic-key"));
        headers.insert("authorization", "Bearer openai-key".parse().unwrap());
        assert_eq!(
            credential(&headers),
            Some("openai-key"),
            "Authorization wins"
        );
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(secret_matches("admin-123", "admin-123"));
        assert!(!secret_matches("admin-124", "admin-123"));
        assert!(!secret_matches("", "admin-123"));
    }
}

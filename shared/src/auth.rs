//! The operator's credential: the admin token (`CHATMESH_ADMIN_TOKEN`), presented as
//! `Authorization: Bearer <token>`, and the comparison every secret goes through.
//!
//! Secrets are compared as SHA-256 digests, in constant time: both sides are always 32 bytes,
//! so neither the length of the configured token nor how much of it a guess matched shows in
//! the response time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Whether two secrets are equal, without an early exit on length or content.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// The token of an `Authorization: Bearer <token>` header; `None` when the header is missing,
/// not UTF-8, of another scheme, or empty.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

/// The configured admin token, kept as its digest. Unset (or blank) means nobody is the
/// operator: every check fails, so an unconfigured deployment is closed, never open.
#[derive(Clone, Default)]
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    /// From the setting as loaded; a blank value counts as unset.
    pub fn new(configured: Option<&str>) -> Self {
        Self(configured.map(str::trim).filter(|token| !token.is_empty()).map(|token| Sha256::digest(token).into()))
    }

    pub fn is_configured(&self) -> bool {
        self.0.is_some()
    }

    /// Whether `presented` is the admin token.
    pub fn matches(&self, presented: &str) -> bool {
        let Some(expected) = &self.0 else {
            // Still hash, so an unconfigured server takes as long to refuse as a configured one.
            let _ = Sha256::digest(presented);
            return false;
        };
        bool::from(Sha256::digest(presented.trim()).ct_eq(expected))
    }

    /// Whether the request carries the admin token as its bearer.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        bearer_token(headers).is_some_and(|token| self.matches(token))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_configured() { "AdminToken(configured)" } else { "AdminToken(unset)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn secrets_compare_by_content_whatever_their_length() {
        assert!(secrets_equal(b"same", b"same"));
        assert!(!secrets_equal(b"same", b"diff"));
        assert!(!secrets_equal(b"short", b"a much longer secret"));
        assert!(!secrets_equal(b"", b"x"));
    }

    #[test]
    fn only_the_configured_token_as_a_bearer_is_the_admin() {
        let admin = AdminToken::new(Some("s3cret"));
        assert!(admin.authorizes(&with_authorization("Bearer s3cret")));
        assert!(admin.authorizes(&with_authorization("bearer s3cret")));
        for refused in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer "] {
            assert!(!admin.authorizes(&with_authorization(refused)), "{refused}");
        }
        assert!(!admin.authorizes(&HeaderMap::new()));
    }

    #[test]
    fn an_unset_or_blank_token_admits_nobody() {
        for unset in [AdminToken::new(None), AdminToken::new(Some("  "))] {
            assert!(!unset.is_configured());
            assert!(!unset.matches(""));
            assert!(!unset.matches("anything"));
        }
        assert_eq!(format!("{:?}", AdminToken::new(Some("x"))), "AdminToken(configured)");
    }
}

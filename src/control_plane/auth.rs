//! Bearer-token checks for runner connections and the HTTP API.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// Reason a request has no accepted token. Log lines name it instead of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenProblem {
    /// No `Authorization` header, or one that is not `Bearer <token>`.
    Missing,
    /// A bearer token that matches none of the configured tokens.
    Unknown,
}

impl TokenProblem {
    /// Returns a short description for logs.
    pub(super) fn describe(self) -> &'static str {
        match self {
            TokenProblem::Missing => "no bearer token in the Authorization header",
            TokenProblem::Unknown => "bearer token matches no configured token",
        }
    }
}

/// Checks the request's bearer token against every accepted token.
pub(super) fn check_bearer(headers: &HeaderMap, accepted: &[String]) -> Result<(), TokenProblem> {
    let presented = bearer_token(headers).ok_or(TokenProblem::Missing)?;
    // Every accepted token is compared, so the time taken does not reveal
    // which token, if any, matched.
    let matched = accepted.iter().fold(false, |found, token| {
        found | tokens_equal(presented.as_bytes(), token.as_bytes())
    });
    if matched {
        Ok(())
    } else {
        Err(TokenProblem::Unknown)
    }
}

/// Returns the token of an `Authorization: Bearer <token>` header. The scheme
/// name is case-insensitive (RFC 7235).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
        Some(token)
    } else {
        None
    }
}

/// Compares two byte strings in time that depends only on the longer length,
/// not on the position of the first difference.
fn tokens_equal(presented: &[u8], expected: &[u8]) -> bool {
    let length = presented.len().max(expected.len());
    let mut difference = u8::from(presented.len() != expected.len());
    for index in 0..length {
        let a = presented.get(index).copied().unwrap_or(0);
        let b = expected.get(index).copied().unwrap_or(0);
        difference |= a ^ b;
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers_with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn accepted() -> Vec<String> {
        vec!["first-token".to_string(), "second-token".to_string()]
    }

    #[test]
    fn bearer_matches_any_token() {
        assert_eq!(
            check_bearer(&headers_with("Bearer first-token"), &accepted()),
            Ok(())
        );
        assert_eq!(
            check_bearer(&headers_with("Bearer second-token"), &accepted()),
            Ok(())
        );
        assert_eq!(
            check_bearer(&headers_with("bearer  second-token "), &accepted()),
            Ok(())
        );
    }

    #[test]
    fn bearer_rejects_wrong_token() {
        let cases = [
            "Bearer first-toke",
            "Bearer first-token2",
            "Bearer FIRST-TOKEN",
            "Bearer x",
        ];
        for value in cases {
            assert_eq!(
                check_bearer(&headers_with(value), &accepted()),
                Err(TokenProblem::Unknown),
                "{value}"
            );
        }
    }

    #[test]
    fn bearer_missing_or_malformed() {
        assert_eq!(
            check_bearer(&HeaderMap::new(), &accepted()),
            Err(TokenProblem::Missing)
        );
        for value in ["first-token", "Basic first-token", "Bearer", "Bearer   "] {
            assert_eq!(
                check_bearer(&headers_with(value), &accepted()),
                Err(TokenProblem::Missing),
                "{value}"
            );
        }
    }

    #[test]
    fn tokens_equal_compares_bytes() {
        assert!(tokens_equal(b"abc", b"abc"));
        assert!(!tokens_equal(b"abc", b"abd"));
        assert!(!tokens_equal(b"abc", b"abc\0"));
        assert!(!tokens_equal(b"", b"a"));
    }
}

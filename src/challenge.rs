//! `WWW-Authenticate: Bearer` challenges (RFC 6750 §3, RFC 9728 §5.1) and the small JSON
//! error responses that carry them: built in one place so every refusal reads the same.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::Scopes;

/// The RFC 6750 §3.1 error codes a resource server puts in its challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BearerErrorCode {
    /// The request is malformed: a repeated `Authorization` header, a syntactically invalid
    /// token, or a token sent by more than one method. Answered with 400.
    InvalidRequest,
    /// The token is expired, revoked, malformed, or not meant for this resource. Answered with
    /// 401; the client should obtain a new token.
    InvalidToken,
    /// The token is valid but lacks scopes the request needs. Answered with 403; the challenge's
    /// `scope` says what to ask for (step-up authorization).
    InsufficientScope,
}

impl BearerErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            BearerErrorCode::InvalidRequest => "invalid_request",
            BearerErrorCode::InvalidToken => "invalid_token",
            BearerErrorCode::InsufficientScope => "insufficient_scope",
        }
    }

    /// The HTTP status RFC 6750 §3.1 assigns to the code.
    pub fn status(self) -> StatusCode {
        match self {
            BearerErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            BearerErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            BearerErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        }
    }
}

/// A `WWW-Authenticate: Bearer` challenge.
///
/// Parameters are always written in one order: `resource_metadata`, `scope`, `error`,
/// `error_description`. Values are quoted strings; characters RFC 6750 does not allow inside
/// them (`"`, `\`, controls, non-ASCII) are replaced, so no input can split the header.
///
/// ```
/// use tower_mcp_auth::challenge::{BearerErrorCode, Challenge};
/// use tower_mcp_auth::Scopes;
///
/// let scopes = Scopes::new(["files:write"]);
/// let c = Challenge::new("https://mcp.example.com/.well-known/oauth-protected-resource/mcp")
///     .scope(&scopes)
///     .error(BearerErrorCode::InsufficientScope, "this tool needs files:write");
/// assert_eq!(
///     c.to_string(),
///     r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="files:write", error="insufficient_scope", error_description="this tool needs files:write""#
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Challenge<'a> {
    resource_metadata: &'a str,
    scope: Option<&'a Scopes>,
    error: Option<(BearerErrorCode, &'a str)>,
}

impl<'a> Challenge<'a> {
    /// A challenge pointing at the protected resource metadata document (RFC 9728 §5.1).
    pub fn new(resource_metadata: &'a str) -> Self {
        Challenge {
            resource_metadata,
            scope: None,
            error: None,
        }
    }

    /// The scopes the client should request; omitted when empty.
    pub fn scope(mut self, scopes: &'a Scopes) -> Self {
        self.scope = (!scopes.is_empty()).then_some(scopes);
        self
    }

    /// The error code and a human-readable description.
    pub fn error(mut self, code: BearerErrorCode, description: &'a str) -> Self {
        self.error = Some((code, description));
        self
    }

    /// The header value. Infallible: every character that could make it invalid was replaced.
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// The challenge as a complete response: status from the error code (401 without one), the
    /// `WWW-Authenticate` header, `Cache-Control: no-store`, and a small JSON body naming the
    /// error.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let (status, code, description) = match self.error {
            Some((code, description)) => (code.status(), code.as_str(), description),
            None => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this resource requires a bearer access token",
            ),
        };
        let mut response = json_error(status, code, description);
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, self.to_header_value());
        response
    }
}

impl std::fmt::Display for Challenge<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer resource_metadata=\"")?;
        write_quoted(f, self.resource_metadata)?;
        f.write_str("\"")?;
        if let Some(scope) = self.scope {
            f.write_str(", scope=\"")?;
            write_quoted(f, &scope.to_string())?;
            f.write_str("\"")?;
        }
        if let Some((code, description)) = self.error {
            write!(f, ", error=\"{}\"", code.as_str())?;
            if !description.is_empty() {
                f.write_str(", error_description=\"")?;
                write_quoted(f, description)?;
                f.write_str("\"")?;
            }
        }
        Ok(())
    }
}

/// A `WWW-Authenticate: DPoP` challenge (RFC 9449 §7.1) as a 401 response: `error` (e.g.
/// `invalid_dpop_proof`, `use_dpop_nonce`, `invalid_token`), its description, the resource
/// metadata and the accepted proof algorithms; with `nonce`, a `DPoP-Nonce` header too, which
/// clients retry with.
pub fn dpop_challenge(
    resource_metadata: &str,
    error: &str,
    description: &str,
    algorithms: &[String],
    nonce: Option<&str>,
) -> Response<Full<Bytes>> {
    struct Quoted<'a>(&'a str);
    impl std::fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write_quoted(f, self.0)
        }
    }
    let value = format!(
        "DPoP error=\"{}\", error_description=\"{}\", resource_metadata=\"{}\", algs=\"{}\"",
        Quoted(error),
        Quoted(description),
        Quoted(resource_metadata),
        Quoted(&algorithms.join(" "))
    );
    let mut response = json_error(StatusCode::UNAUTHORIZED, error, description);
    let headers = response.headers_mut();
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("DPoP")),
    );
    if let Some(nonce) = nonce.and_then(|n| HeaderValue::from_str(n).ok()) {
        headers.insert(crate::wire::DPOP_NONCE, nonce);
    }
    response
}

/// Writes `value` keeping only the characters RFC 6750 §3 allows in a quoted parameter
/// (`%x20-21 / %x23-5B / %x5D-7E`); anything else becomes `?`.
fn write_quoted(f: &mut std::fmt::Formatter<'_>, value: &str) -> std::fmt::Result {
    use std::fmt::Write;
    for c in value.chars() {
        let allowed = matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
        f.write_char(if allowed { c } else { '?' })?;
    }
    Ok(())
}

/// A small `application/json` error response `{"error": code, "error_description": ...}`,
/// marked `no-store` (refusals must never be cached by a proxy and replayed to someone else).
pub fn json_error(status: StatusCode, code: &str, description: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": code, "error_description": description });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    crate::wire::json_no_store(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_challenge_has_no_error() {
        let scopes = Scopes::new(["mcp:tools"]);
        let c = Challenge::new("https://x/.well-known/oauth-protected-resource").scope(&scopes);
        assert_eq!(
            c.to_string(),
            r#"Bearer resource_metadata="https://x/.well-known/oauth-protected-resource", scope="mcp:tools""#
        );
        assert_eq!(c.into_response().status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn header_injection_in_description_is_neutralised() {
        let c = Challenge::new("u").error(BearerErrorCode::InvalidToken, "a\"b\r\nX-Evil: 1\\");
        assert_eq!(
            c.to_string(),
            r#"Bearer resource_metadata="u", error="invalid_token", error_description="a?b??X-Evil: 1?""#
        );
        assert!(c.to_header_value().to_str().is_ok());
    }
}

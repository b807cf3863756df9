//! [`OAuthError`]: every error the JSON endpoints answer with (RFC 6749 §5.2, RFC 6750 §3.1,
//! RFC 7591 §3.2.2, RFC 8707 §2), as one enum a handler returns with `?`.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::store::StoreError;

/// Seconds a client is told to wait after a 503: long enough for a store failover or a
/// restart, short enough that a person retrying does not notice.
const RETRY_AFTER_UNAVAILABLE: u32 = 2;

type Text = Cow<'static, str>;

/// An OAuth error response. Each variant fixes its `error` code and HTTP status; the text is
/// the `error_description`. The response carries `Cache-Control: no-store` (RFC 6749 §5.1),
/// and the challenge headers its RFC asks for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OAuthError {
    /// 400 `invalid_request`: a parameter is missing, repeated or malformed.
    #[error("invalid_request: {0}")]
    InvalidRequest(Text),
    /// 401 `invalid_client`; `basic` when the client used HTTP Basic, which then gets a Basic
    /// challenge (RFC 6749 §5.2).
    #[error("invalid_client")]
    InvalidClient { basic: bool },
    /// 400 `invalid_grant`: a code, refresh token or PKCE verifier that does not hold.
    #[error("invalid_grant: {0}")]
    InvalidGrant(Text),
    /// 400 `unauthorized_client`: an authenticated client may not use this grant.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(Text),
    /// 403 `unauthorized_client`: an authenticated client may not use this endpoint.
    #[error("unauthorized_client: {0}")]
    ForbiddenClient(Text),
    /// 400 `unsupported_grant_type`.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(Text),
    /// 400 `invalid_scope`.
    #[error("invalid_scope: {0}")]
    InvalidScope(Text),
    /// 400 `invalid_target` (RFC 8707): a resource this server issues no tokens for.
    #[error("invalid_target: {0}")]
    InvalidTarget(Text),
    /// 400 `invalid_redirect_uri` (RFC 7591).
    #[error("invalid_redirect_uri: {0}")]
    InvalidRedirectUri(Text),
    /// 400 `invalid_client_metadata` (RFC 7591).
    #[error("invalid_client_metadata: {0}")]
    InvalidClientMetadata(Text),
    /// 401 `invalid_token` with a Bearer challenge (RFC 6750 §3.1), for endpoints that take our
    /// own access tokens.
    #[error("invalid_token: {0}")]
    InvalidToken(Text),
    /// 401 with a plain Bearer challenge: no credentials at all, so no error code (RFC 6750
    /// §3.1); the body says `unauthorized`, as the bearer layer's does.
    #[error("a bearer token is required")]
    NoToken,
    /// 400 `invalid_request` with a Bearer challenge: malformed credentials (RFC 6750 §3.1).
    #[error("invalid_request: {0}")]
    BadCredentials(Text),
    /// 404 `invalid_request`: the path names nothing this server has.
    #[error("not found: {0}")]
    #[cfg_attr(not(feature = "atag"), allow(dead_code))]
    NotFound(Text),
    /// 429 `temporarily_unavailable` with `Retry-After` (seconds).
    #[error("rate limited: {description}")]
    RateLimited { description: Text, retry_after: u64 },
    /// 400 `invalid_dpop_proof` (RFC 9449 §5): the `DPoP` proof of a token request fails.
    #[error("invalid_dpop_proof: {0}")]
    InvalidDpopProof(Text),
    /// 400 `use_dpop_nonce` with a `DPoP-Nonce` header (RFC 9449 §8): retry with the nonce.
    #[error("use_dpop_nonce")]
    UseDpopNonce { nonce: String },
    /// 401 `use_dpop_nonce` with a `WWW-Authenticate: DPoP` challenge and a `DPoP-Nonce`
    /// header: a resource request's proof lacks the nonce (RFC 9449 §9).
    #[error("use_dpop_nonce")]
    DpopNonceChallenge { nonce: String, algorithms: String },
    /// 500 `server_error`.
    #[error("server_error: {0}")]
    ServerError(Text),
    /// 503 `temporarily_unavailable` with `Retry-After`: the store or the system RNG failed.
    /// Never a 4xx: a client must not drop good credentials over our outage.
    #[error("temporarily_unavailable: {0}")]
    TemporarilyUnavailable(Text),
}

impl OAuthError {
    /// The system RNG failed: never a predictable value in its place.
    pub(crate) fn no_randomness() -> Self {
        Self::ServerError("no randomness available".into())
    }

    /// The HTTP status and the `error` code.
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::InvalidClient { .. } => (StatusCode::UNAUTHORIZED, "invalid_client"),
            Self::InvalidGrant(_) => (StatusCode::BAD_REQUEST, "invalid_grant"),
            Self::UnauthorizedClient(_) => (StatusCode::BAD_REQUEST, "unauthorized_client"),
            Self::ForbiddenClient(_) => (StatusCode::FORBIDDEN, "unauthorized_client"),
            Self::UnsupportedGrantType(_) => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            Self::InvalidScope(_) => (StatusCode::BAD_REQUEST, "invalid_scope"),
            Self::InvalidTarget(_) => (StatusCode::BAD_REQUEST, "invalid_target"),
            Self::InvalidRedirectUri(_) => (StatusCode::BAD_REQUEST, "invalid_redirect_uri"),
            Self::InvalidClientMetadata(_) => (StatusCode::BAD_REQUEST, "invalid_client_metadata"),
            Self::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::NoToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::BadCredentials(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "temporarily_unavailable"),
            Self::InvalidDpopProof(_) => (StatusCode::BAD_REQUEST, "invalid_dpop_proof"),
            Self::UseDpopNonce { .. } => (StatusCode::BAD_REQUEST, "use_dpop_nonce"),
            Self::DpopNonceChallenge { .. } => (StatusCode::UNAUTHORIZED, "use_dpop_nonce"),
            Self::ServerError(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            Self::TemporarilyUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
        }
    }

    fn description(&self) -> &str {
        match self {
            Self::InvalidClient { .. } => "client authentication failed",
            Self::NoToken => "a bearer access token is required",
            Self::RateLimited { description, .. } => description,
            Self::UseDpopNonce { .. } | Self::DpopNonceChallenge { .. } => {
                "a DPoP nonce is required; retry with the DPoP-Nonce given"
            }
            Self::InvalidRequest(text)
            | Self::InvalidGrant(text)
            | Self::UnauthorizedClient(text)
            | Self::ForbiddenClient(text)
            | Self::UnsupportedGrantType(text)
            | Self::InvalidScope(text)
            | Self::InvalidTarget(text)
            | Self::InvalidRedirectUri(text)
            | Self::InvalidClientMetadata(text)
            | Self::InvalidToken(text)
            | Self::BadCredentials(text)
            | Self::NotFound(text)
            | Self::InvalidDpopProof(text)
            | Self::ServerError(text)
            | Self::TemporarilyUnavailable(text) => text,
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> Self {
        Self::TemporarilyUnavailable(error.to_string().into())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // The same body the resource-server layers answer with, plus the HTTP/1.0 cache header
        // RFC 6749 §5.1 asks token responses to carry.
        let mut response =
            crate::challenge::json_error(status, code, self.description()).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        match self {
            Self::InvalidClient { basic: true } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"oauth\""),
                );
            }
            Self::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            Self::NoToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::BadCredentials(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_request\""),
                );
            }
            Self::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            Self::UseDpopNonce { nonce } => {
                if let Ok(nonce) = HeaderValue::from_str(&nonce) {
                    headers.insert(crate::wire::DPOP_NONCE, nonce);
                }
            }
            Self::DpopNonceChallenge { nonce, algorithms } => {
                if let Ok(nonce) = HeaderValue::from_str(&nonce) {
                    headers.insert(crate::wire::DPOP_NONCE, nonce);
                }
                let challenge = format!(
                    "DPoP error=\"use_dpop_nonce\", error_description=\"a DPoP nonce is required\", algs=\"{algorithms}\""
                );
                if let Ok(challenge) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, challenge);
                }
            }
            Self::TemporarilyUnavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER_UNAVAILABLE),
                );
            }
            _ => {}
        }
        response
    }
}

/// Browser endpoints answer with pages and redirects, failures included (`Result<Response,
/// Response>`); a store or RNG failure inside them still answers as the OAuth error it is.
impl From<OAuthError> for Response {
    fn from(error: OAuthError) -> Self {
        error.into_response()
    }
}

/// `Cache-Control: no-store` and its HTTP/1.0 twin, for every response that carries a
/// credential or an answer about one.
pub(crate) fn no_store(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_answers_with_its_status_code_and_no_store() {
        let cases = [
            (
                OAuthError::InvalidClient { basic: true },
                401,
                "invalid_client",
            ),
            (
                OAuthError::ForbiddenClient("x".into()),
                403,
                "unauthorized_client",
            ),
            (
                OAuthError::RateLimited {
                    description: "slow".into(),
                    retry_after: 7,
                },
                429,
                "temporarily_unavailable",
            ),
            (
                OAuthError::TemporarilyUnavailable("down".into()),
                503,
                "temporarily_unavailable",
            ),
            (
                OAuthError::InvalidToken("gone".into()),
                401,
                "invalid_token",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status_and_code().1, code);
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
            let challenge = response.headers().get(header::WWW_AUTHENTICATE);
            let retry = response.headers().get(header::RETRY_AFTER);
            match status {
                401 => assert!(challenge.is_some()),
                429 => assert_eq!(retry.map(|v| v.to_str().unwrap()), Some("7")),
                503 => assert!(retry.is_some()),
                _ => assert!(challenge.is_none() && retry.is_none()),
            }
        }
    }
}

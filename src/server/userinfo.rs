//! OpenID Connect userinfo, and reading the caller of an endpoint that takes our own access
//! tokens.

use axum::extract::State;
use axum::response::Response;
use http::HeaderMap;
use serde_json::json;

use super::auth_server::AuthServer;
use super::error::OAuthError;
use super::revocation::{is_revoked, own_token};
use super::token::json_no_store;

/// The caller of an endpoint that takes this server's own access tokens (`Authorization:
/// Bearer`): valid for one of our resources and not revoked, or a 401 with a Bearer challenge.
pub(crate) async fn bearer_caller(
    server: &AuthServer,
    headers: &HeaderMap,
) -> Result<crate::AuthContext, OAuthError> {
    // Parsed as the bearer layer parses it (scheme in any case, one header, token syntax), and
    // no credentials at all is a challenge without an error code (RFC 6750 §3.1).
    let token = crate::bearer::credentials::bearer_token(headers, &http::Uri::from_static("/"))
        .and_then(crate::bearer::credentials::check_syntax)
        .map_err(|e| match e {
            crate::bearer::credentials::CredentialError::Missing => OAuthError::NoToken,
            crate::bearer::credentials::CredentialError::Invalid(why) => {
                OAuthError::BadCredentials(why.into())
            }
        })?;
    let ctx = own_token(server, token)
        .await
        .ok_or(OAuthError::InvalidToken(
            "the access token is not valid".into(),
        ))?;
    if is_revoked(server.store().as_ref(), server.revocations(), &ctx).await? {
        return Err(OAuthError::InvalidToken(
            "the access token was revoked".into(),
        ));
    }
    // These endpoints take bearer tokens only: a DPoP-bound token without its proof is
    // exactly what DPoP makes useless to a thief.
    if ctx.dpop_key_thumbprint().is_some() {
        return Err(OAuthError::InvalidToken(
            "the token is DPoP-bound; this endpoint takes bearer tokens only".into(),
        ));
    }
    Ok(ctx)
}

/// `GET /oauth/userinfo` (OpenID Connect Core §5.3): who the access token belongs to.
pub(super) async fn userinfo(
    State(server): State<AuthServer>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let ctx = bearer_caller(&server, &headers).await?;
    Ok(json_no_store(json!({"sub": ctx.subject()})))
}

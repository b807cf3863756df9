//! OpenID Connect userinfo, and reading the caller of an endpoint that takes our own access
//! tokens.

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, header};
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
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(OAuthError::InvalidToken(
            "a bearer token is required".into(),
        ))?;
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

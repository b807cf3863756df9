//! OpenID Connect userinfo, and reading the caller of an endpoint that takes our own access
//! tokens.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use super::auth_server::AuthServer;
use super::primitives::{no_store, oauth_error};
use super::revocation::{is_revoked, own_token};

/// The caller of an endpoint that takes this server's own access tokens (`Authorization:
/// Bearer`): valid for one of our resources and not revoked, or a 401 with a Bearer challenge.
pub(crate) async fn bearer_caller(
    server: &AuthServer,
    headers: &HeaderMap,
) -> Result<crate::AuthContext, Response> {
    let unauthorized = |description: &str| {
        let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        response
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("a bearer token is required"))?;
    let ctx = own_token(server, token)
        .await
        .ok_or_else(|| unauthorized("the access token is not valid"))?;
    match is_revoked(server.0.store.as_ref(), &ctx).await {
        Ok(false) => Ok(ctx),
        Ok(true) => Err(unauthorized("the access token was revoked")),
        Err(e) => Err(oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &e.to_string(),
        )),
    }
}

/// `GET /oauth/userinfo` (OpenID Connect Core §5.3): who the access token belongs to.
pub(super) async fn userinfo(State(server): State<AuthServer>, headers: HeaderMap) -> Response {
    match bearer_caller(&server, &headers).await {
        Ok(ctx) => {
            let mut response = axum::Json(json!({"sub": ctx.subject()})).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(response) => response,
    }
}

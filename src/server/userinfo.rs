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

/// The request an endpoint's caller is read from: its method and path (for a DPoP proof's
/// `htm` and `htu`) and its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallerRequest<'a> {
    pub(crate) method: &'a http::Method,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
}

/// The caller of an endpoint that takes this server's own access tokens (`Authorization:
/// Bearer`, or `Authorization: DPoP` with a proof for a bound token): valid for one of our
/// resources and not revoked, or a 401 with a Bearer challenge.
pub(crate) async fn bearer_caller(
    server: &AuthServer,
    request: CallerRequest<'_>,
) -> Result<crate::AuthContext, OAuthError> {
    use crate::bearer::credentials::{Scheme, check_syntax, token_in};
    // Parsed as the bearer layer parses it (scheme in any case, one header, token syntax), and
    // no credentials at all is a challenge without an error code (RFC 6750 §3.1).
    let (scheme, token) = token_in(
        request.headers,
        &http::header::AUTHORIZATION,
        &http::Uri::from_static("/"),
    )
    .and_then(|(scheme, token)| Ok((scheme, check_syntax(token)?)))
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
    // The same binding rule as the bearer layer: a bound token only with a proof by its key.
    let proven = match scheme {
        Scheme::Bearer => None,
        Scheme::Dpop => {
            let mut proofs = request.headers.get_all(crate::wire::DPOP).iter();
            let proof = match (proofs.next(), proofs.next()) {
                (Some(proof), None) => proof.to_str().ok(),
                _ => None,
            }
            .ok_or(OAuthError::InvalidToken(
                "exactly one DPoP proof header is required with a DPoP token".into(),
            ))?;
            let url = format!("{}{}", server.urls().origin(), request.path);
            match server
                .dpop()
                .verify(proof, request.method.as_str(), &url, Some(token))
            {
                Ok(proven) => Some(proven.jkt),
                Err(crate::dpop::DpopError::UseNonce) => {
                    return Err(OAuthError::DpopNonceChallenge {
                        nonce: server.dpop().current_nonce().unwrap_or_default(),
                        algorithms: server.dpop().algorithm_names().join(" "),
                    });
                }
                Err(e @ crate::dpop::DpopError::Busy) => {
                    return Err(OAuthError::TemporarilyUnavailable(e.to_string().into()));
                }
                Err(e) => return Err(OAuthError::InvalidToken(e.to_string().into())),
            }
        }
    };
    match (ctx.dpop_key_thumbprint(), proven.as_deref()) {
        (None, None) => Ok(ctx),
        (Some(bound), Some(key))
            if bool::from(subtle::ConstantTimeEq::ct_eq(
                bound.as_bytes(),
                key.as_bytes(),
            )) =>
        {
            Ok(ctx)
        }
        (Some(_), None) => Err(OAuthError::InvalidToken(
            "the token is DPoP-bound: present it with the DPoP scheme and a proof".into(),
        )),
        _ => Err(OAuthError::InvalidToken(
            "the DPoP proof does not match the token's binding".into(),
        )),
    }
}

/// `GET /oauth/userinfo` (OpenID Connect Core §5.3): who the access token belongs to.
pub(super) async fn userinfo(
    State(server): State<AuthServer>,
    method: http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let ctx = bearer_caller(
        &server,
        CallerRequest {
            method: &method,
            path: uri.path(),
            headers: &headers,
        },
    )
    .await?;
    Ok(json_no_store(json!({"sub": ctx.subject()})))
}

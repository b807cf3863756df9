//! RFC 7009 revocation, and the validator that refuses revoked access tokens.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::RingValidator;
use super::auth_server::AuthServer;
use super::error::{OAuthError, no_store};
use super::keyspace;
use super::primitives::{Form, required};
use super::revocation_list::{RevocationList, Revoked};
use crate::audit;
use crate::store::Store;
use crate::validate::TokenValidator;

/// Validates our own access tokens and refuses revoked ones: revoked at `/oauth/revoke`, or in
/// a grant family revoked by a refresh-token reuse or a code replay. A token the bearer layer
/// has cached is refused as soon as this process learns of the revocation (at once when it was
/// made here; within about a second, [`POLL_INTERVAL`](super::revocation_list::POLL_INTERVAL),
/// when another replica sharing the store made it).
#[derive(Clone)]
pub struct RevocationAwareValidator {
    inner: RingValidator,
    store: Arc<dyn Store>,
    revocations: Arc<RevocationList>,
}

impl RevocationAwareValidator {
    pub(super) fn new(
        inner: RingValidator,
        store: Arc<dyn Store>,
        revocations: Arc<RevocationList>,
    ) -> Self {
        RevocationAwareValidator {
            inner,
            store,
            revocations,
        }
    }
}

impl std::fmt::Debug for RevocationAwareValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationAwareValidator")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl TokenValidator for RevocationAwareValidator {
    fn validate<'a>(
        &'a self,
        token: &'a str,
    ) -> crate::BoxFuture<'a, Result<crate::AuthContext, crate::validate::TokenError>> {
        Box::pin(async move {
            self.revocations.follow(self.store.clone());
            let ctx = self.inner.validate(token).await?;
            if is_revoked(self.store.as_ref(), &self.revocations, &ctx)
                .await
                .map_err(|e| crate::validate::TokenError::Unavailable(e.to_string()))?
            {
                return Err(crate::validate::TokenError::Inactive);
            }
            Ok(ctx)
        })
    }

    fn cache_ttl(&self) -> Option<Duration> {
        // A backstop: revocations reach cached tokens through `revoked`; should the list miss
        // one (it overflowed, or the log was unreadable), the store is asked again within this.
        Some(Duration::from_secs(30))
    }

    fn revoked(&self, ctx: &crate::AuthContext) -> bool {
        self.revocations.contains(ctx)
    }
}

/// Whether the token's id or its grant family was revoked: on this process's list, or marked
/// in the store (then the list learns it).
pub(super) async fn is_revoked(
    store: &dyn Store,
    revocations: &RevocationList,
    ctx: &crate::AuthContext,
) -> Result<bool, crate::store::StoreError> {
    if revocations.contains(ctx) {
        return Ok(true);
    }
    if let Some(jti) = ctx.claim("jti").and_then(Value::as_str)
        && store
            .get(keyspace::revoked_token(jti).as_str())
            .await?
            .is_some()
    {
        revocations.add(&Revoked::Token(jti.to_owned()));
        return Ok(true);
    }
    if let Some(family) = ctx.claim("fid").and_then(Value::as_str)
        && store
            .get(keyspace::revoked_family(family).as_str())
            .await?
            .is_some()
    {
        revocations.add(&Revoked::Family(family.to_owned()));
        return Ok(true);
    }
    Ok(false)
}

/// Reads one of our access tokens for revocation or introspection, whatever its audience.
pub(super) async fn own_token(server: &AuthServer, token: &str) -> Option<crate::AuthContext> {
    for resource in &server.grants().resources {
        if let Ok(ctx) = server
            .signing_keys()
            .validator(server.issuer(), resource.as_str())
            .validate(token)
            .await
        {
            return Some(ctx);
        }
    }
    None
}

pub(super) async fn revoke(
    State(server): State<AuthServer>,
    headers: HeaderMap,
    Form(form): Form,
) -> Result<Response, OAuthError> {
    let client = super::token::grant_client(&server, &headers, &form).await?;
    let token = required(&form, "token")?;
    // A refresh token revokes its whole grant family (and so the access tokens issued in it);
    // RFC 7009 §2.2: an unknown, invalid or foreign token is answered 200 all the same.
    if !super::refresh::revoke_refresh_token(&server, &client, token).await?
        && let Some(ctx) = own_token(&server, token).await
        && ctx.client_id() == Some(client.client_id.as_str())
        && let Some(jti) = ctx.claim("jti").and_then(Value::as_str)
    {
        let left = ctx
            .expires_at()
            .and_then(|exp| exp.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        server
            .revocations()
            .revoke(
                server.store().as_ref(),
                Revoked::Token(jti.to_owned()),
                left + Duration::from_secs(60),
            )
            .await?;
        tracing::info!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client.client_id), jti, "access token revoked");
    }
    let mut response = StatusCode::OK.into_response();
    no_store(response.headers_mut());
    Ok(response)
}

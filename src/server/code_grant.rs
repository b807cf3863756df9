//! The `authorization_code` grant: single-use codes bound to client, redirect URI, PKCE
//! challenge and resource.

use std::collections::HashMap;

use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth_server::AuthServer;
use super::clients::Client;
use super::error::OAuthError;
use super::keyspace;
use super::primitives::{digest, required};
use super::refresh::revoke_family;
use super::storage::{load, save, take};
use super::token::{json_no_store, token_body};
use crate::Scopes;
use crate::audit;
use crate::resource::canonical_audience;

/// What an authorization code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Grant {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) scope: String,
    pub(super) resource: String,
    pub(super) subject: String,
    pub(super) family: String,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    #[serde(default)]
    pub(super) nonce: Option<String>,
}

pub(super) async fn exchange_code(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    let code = required(form, "code")?;
    let key = digest(code);
    // Atomic: of two concurrent redemptions exactly one gets the grant.
    let Some(grant) = take(server, &keyspace::code(&key)).await? else {
        // A code seen before is a replay: revoke what it produced.
        if let Some(family) = load(server, &keyspace::used_code(&key)).await? {
            revoke_family(server, &family).await?;
            tracing::warn!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client.client_id), "authorization code replayed; its tokens are revoked");
        }
        return Err(OAuthError::InvalidGrant(
            "the code is invalid, expired or already used".into(),
        ));
    };
    save(
        server,
        &keyspace::used_code(&key),
        &grant.family,
        server.grants().refresh_token_ttl,
    )
    .await?;
    if grant.client_id != client.client_id {
        return Err(OAuthError::InvalidGrant(
            "the code was issued to another client".into(),
        ));
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err(OAuthError::InvalidGrant(
            "redirect_uri does not match the authorization request".into(),
        ));
    }
    let verifier = form
        .get("code_verifier")
        .map(String::as_str)
        .unwrap_or_default();
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if !well_formed || !bool::from(computed.as_bytes().ct_eq(grant.code_challenge.as_bytes())) {
        return Err(OAuthError::InvalidGrant("PKCE verification failed".into()));
    }
    if let Some(resource) = form.get("resource")
        && canonical_audience(resource) != grant.resource.as_str()
    {
        return Err(OAuthError::InvalidTarget(
            "resource differs from the authorization request".into(),
        ));
    }
    tracing::info!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client.client_id), user = %crate::audit::Escaped(&grant.subject), "authorization code redeemed");
    server.keep_client(client).await;
    let scope = Scopes::from_space_separated(&grant.scope);
    let (mut body, _) = token_body(
        server,
        client,
        &grant.subject,
        &grant.resource,
        &scope,
        &grant.family,
        None,
        jkt,
    )
    .await?;
    if scope.iter().any(|s| s == "openid") {
        body["id_token"] = json!(server.mint_id_token(
            &grant.subject,
            &client.client_id,
            grant.nonce.as_deref(),
            &grant.groups,
            &grant.family,
        )?);
    }
    Ok(json_no_store(body))
}

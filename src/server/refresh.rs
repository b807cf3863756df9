//! The `refresh_token` grant: rotation with a grace window, reuse detection that revokes the
//! family, one use of a token at a time; and refresh-token revocation.

use std::collections::HashMap;
use std::time::Duration;

use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::auth_server::AuthServer;
use super::clients::Client;
use super::error::OAuthError;
use super::keyspace::{self, Key};
use super::primitives::{digest, required};
use super::storage::{forget, load, save};
use super::token::{json_no_store, token_body};
use crate::Scopes;
use crate::audit;
use crate::resource::canonical_audience;
use crate::store::Store;

/// How long a refresh may hold its token's lock (a crashed holder frees it after this).
const REFRESH_LOCK_TTL: Duration = Duration::from_secs(10);

/// How long a refresh waits for its token's lock.
const REFRESH_LOCK_WAIT: Duration = Duration::from_secs(2);

/// What a refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Refresh {
    pub(super) client_id: String,
    pub(super) scope: String,
    pub(super) resource: String,
    pub(super) subject: String,
    pub(super) family: String,
    /// When this token was first used, i.e. rotated (seconds since the epoch).
    pub(super) rotated_at: Option<u64>,
    /// Whether a token issued in exchange for this one has been used: then this one is dead.
    pub(super) successor_used: bool,
    /// The store key of the token this one replaced.
    pub(super) parent: Option<String>,
    /// The store key of the live token issued in exchange for this one.
    pub(super) child: Option<String>,
    /// With a grace window: that successor, sealed under a key derived from this token (which
    /// the store does not hold), so a retry gets it back.
    #[serde(default)]
    pub(super) successor_sealed: Option<String>,
    /// The DPoP key the family is bound to (RFC 9449 §5), if its tokens were issued to a proof.
    #[serde(default)]
    pub(super) jkt: Option<String>,
}

/// The presented refresh token (checked present before this is called).
fn presented_key_material(form: &HashMap<String, String>) -> &str {
    form.get("refresh_token").map_or("", String::as_str)
}

/// The key sealing a successor: SHA-256 over a label and the presented token. The record is
/// stored under another digest of the token, so the store alone cannot open it.
fn successor_key(presented: &str) -> Result<super::EncryptionKeys, OAuthError> {
    use sha2::{Digest, Sha256};
    let key: [u8; 32] = Sha256::new()
        .chain_update(b"tower-mcp-auth refresh successor\0")
        .chain_update(presented.as_bytes())
        .finalize()
        .into();
    super::EncryptionKeys::new("rt", &key)
        .map_err(|e| OAuthError::ServerError(e.to_string().into()))
}

fn seal_successor(presented: &str, successor: &str) -> Result<String, OAuthError> {
    successor_key(presented)?
        .seal(successor.as_bytes(), b"refresh successor")
        .map_err(|e| OAuthError::ServerError(e.to_string().into()))
}

fn open_successor(presented: &str, sealed: &str) -> Result<String, OAuthError> {
    let plain = successor_key(presented)?
        .open(sealed, b"refresh successor")
        .map_err(|_| OAuthError::InvalidGrant("the refresh token was already used".into()))?;
    String::from_utf8(plain)
        .map_err(|_| OAuthError::InvalidGrant("the refresh token was already used".into()))
}

/// Revokes a grant family: its refresh tokens at once, its access tokens wherever they are
/// validated (see [`RevocationList`](super::revocation_list::RevocationList)).
pub(super) async fn revoke_family(server: &AuthServer, family: &str) -> Result<(), OAuthError> {
    server
        .revocations()
        .revoke(
            server.store().as_ref(),
            super::revocation_list::Revoked::Family(family.to_owned()),
            server.grants().refresh_token_ttl,
        )
        .await?;
    Ok(())
}

async fn family_revoked(server: &AuthServer, family: &str) -> Result<bool, OAuthError> {
    Ok(load(server, &keyspace::revoked_family(family))
        .await?
        .is_some())
}

/// Refresh with rotation: each use returns a new refresh token, and the used one is rotated.
/// A rotated token stays usable for the grace window (a client retrying after a lost response,
/// or refreshing from two places) until its successor is first used; using it again in the
/// window replaces that successor, which dies, so a token never forks into two live chains.
/// A rotated token used after the window, or after its successor was used, is a theft signal:
/// the whole family is revoked. Scope may only narrow.
pub(super) async fn refresh(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    let presented = required(form, "refresh_token")?;
    let key = keyspace::refresh_token(&digest(presented));
    // One refresh of a token at a time, across instances (the lock is in the store): two
    // concurrent uses would each mint a successor and leave two live chains.
    let lock = keyspace::lock(key.as_str());
    let acquired = crate::store::lock(
        server.store().as_ref(),
        &lock,
        REFRESH_LOCK_TTL,
        REFRESH_LOCK_WAIT,
    )
    .await
    .map_err(OAuthError::from)?;
    if !acquired {
        // Busy is transient: never `invalid_grant`, which makes clients drop the grant.
        return Err(OAuthError::TemporarilyUnavailable(
            "the refresh token is being used by another request; retry".into(),
        ));
    }
    let result = refresh_locked(server, client, form, &key, jkt).await;
    let _ = server.store().delete(&lock).await;
    result
}

async fn refresh_locked(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
    key: &Key<Refresh>,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    let Some(mut entry) = load(server, key).await? else {
        return Err(OAuthError::InvalidGrant(
            "the refresh token is invalid or expired".into(),
        ));
    };
    if entry.client_id != client.client_id {
        return Err(OAuthError::InvalidGrant(
            "the refresh token was issued to another client".into(),
        ));
    }
    // RFC 9449 §5: a refresh token bound to a key is used only with a proof by that key (and
    // its access tokens stay bound to it).
    if let Some(bound) = &entry.jkt
        && jkt != Some(bound.as_str())
    {
        return Err(OAuthError::InvalidDpopProof(
            "the refresh token is bound to another DPoP key".into(),
        ));
    }
    let jkt = entry.jkt.as_deref().or(jkt).map(str::to_owned);
    let jkt = jkt.as_deref();
    if family_revoked(server, &entry.family).await? {
        return Err(OAuthError::InvalidGrant(
            "the refresh token was revoked".into(),
        ));
    }
    let now = super::primitives::now();
    let grace = server.grants().refresh_grace.as_secs();
    let in_grace = entry
        .rotated_at
        .is_some_and(|at| grace > 0 && now.saturating_sub(at) <= grace);
    // A rotated token presented again is a theft signal (RFC 9700 §4.14.2): unless it is a
    // retry within the opt-in grace window and its successor is still unused.
    if entry.rotated_at.is_some() && (entry.successor_used || !in_grace) {
        revoke_family(server, &entry.family).await?;
        tracing::warn!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client.client_id), user = %crate::audit::Escaped(&entry.subject), "refresh token reused after rotation; family revoked");
        return Err(OAuthError::InvalidGrant(
            "the refresh token was already used".into(),
        ));
    }
    let Some(scope) =
        Scopes::from_space_separated(&entry.scope).narrow(form.get("scope").map(String::as_str))
    else {
        return Err(OAuthError::InvalidScope(
            "a refresh may only narrow the scope".into(),
        ));
    };
    if let Some(resource) = form.get("resource")
        && canonical_audience(resource) != entry.resource.as_str()
    {
        return Err(OAuthError::InvalidTarget(
            "resource differs from the grant".into(),
        ));
    }
    // Using this token retires the one it replaced, grace or not.
    if let Some(parent_key) = &entry.parent
        && let Some(mut parent) =
            load(server, &Key::<Refresh>::from_stored(parent_key.clone())).await?
        && !parent.successor_used
    {
        parent.successor_used = true;
        save(
            server,
            &Key::from_stored(parent_key.clone()),
            &parent,
            server.grants().refresh_token_ttl,
        )
        .await?;
    }
    // A retry within the grace window gets the successor handed out before, never a second
    // one: no second chain can exist. It is kept sealed under a key only the presenter of
    // this token can derive.
    if let Some(sealed) = &entry.successor_sealed {
        let successor = open_successor(presented_key_material(form), sealed)?;
        let (mut body, _) = token_body(
            server,
            &Client {
                // The access token only: the refresh token is the one handed out before.
                grant_types: Vec::new(),
                ..client.clone()
            },
            &entry.subject,
            &entry.resource,
            &scope,
            &entry.family,
            None,
            jkt,
        )
        .await?;
        body["refresh_token"] = serde_json::Value::String(successor);
        tracing::info!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client.client_id), user = %crate::audit::Escaped(&entry.subject), "refresh retried within the grace window; same successor");
        return Ok(json_no_store(body));
    }
    let (body, child) = token_body(
        server,
        client,
        &entry.subject,
        &entry.resource,
        &scope,
        &entry.family,
        Some(key.as_str()),
        jkt,
    )
    .await?;
    entry.rotated_at.get_or_insert(now);
    if grace > 0
        && let Some(successor) = body["refresh_token"].as_str()
    {
        entry.successor_sealed = Some(seal_successor(presented_key_material(form), successor)?);
    }
    entry.child = child;
    save(server, key, &entry, server.grants().refresh_token_ttl).await?;
    server.keep_client(client).await;
    tracing::info!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client.client_id), user = %crate::audit::Escaped(&entry.subject), "refresh token rotated");
    Ok(json_no_store(body))
}

/// RFC 7009 for refresh tokens: revokes the token's whole family. `Ok(true)` if the token was
/// one of ours (revoked if it belongs to `client`; a foreign client's request changes nothing).
pub(super) async fn revoke_refresh_token(
    server: &AuthServer,
    client: &Client,
    token: &str,
) -> Result<bool, OAuthError> {
    let key = keyspace::refresh_token(&digest(token));
    let Some(entry) = load(server, &key).await? else {
        return Ok(false);
    };
    if entry.client_id == client.client_id {
        revoke_family(server, &entry.family).await?;
        forget(server, &key).await;
        tracing::info!(target: audit::TARGET, client_id = %crate::audit::Escaped(&client.client_id), user = %crate::audit::Escaped(&entry.subject), "refresh token revoked");
    }
    Ok(true)
}

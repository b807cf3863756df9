//! Typed reads and writes of the store's records ([`Key`]), with single-use spending. A store
//! that cannot be reached, or a record that no longer decodes, is a 503 (`temporarily_unavailable`),
//! never "not found": a corrupt refresh token must not read as an unknown one, nor a corrupt
//! revocation marker as no revocation.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth_server::AuthServer;
use super::error::OAuthError;
use super::keyspace::Key;
use crate::audit;

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, OAuthError> {
    serde_json::from_slice(bytes).map_err(|e| {
        tracing::error!(target: audit::TARGET, key, error = %crate::audit::Escaped(&e), "a stored record does not decode");
        OAuthError::TemporarilyUnavailable("a stored record is unreadable".into())
    })
}

/// The record under `key`, if there is one.
pub(crate) async fn load<T: DeserializeOwned>(
    server: &AuthServer,
    key: &Key<T>,
) -> Result<Option<T>, OAuthError> {
    match server.store().get(key.as_str()).await {
        Ok(Some(bytes)) => decode(key.as_str(), &bytes).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The record under `key`, removed atomically (of two racing takes, one gets it).
pub(crate) async fn take<T: DeserializeOwned>(
    server: &AuthServer,
    key: &Key<T>,
) -> Result<Option<T>, OAuthError> {
    match server.store().take(key.as_str()).await {
        Ok(Some(bytes)) => decode(key.as_str(), &bytes).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Spends the single-use entry under `key`, atomically (of two racing uses, one wins):
/// `Ok(false)` if it was spent already or expired.
pub(crate) async fn spend<T>(server: &AuthServer, key: &Key<T>) -> Result<bool, OAuthError> {
    server
        .store()
        .take(key.as_str())
        .await
        .map(|found| found.is_some())
        .map_err(OAuthError::from)
}

/// Stores `value` under `key` for `ttl`.
pub(crate) async fn save<T: Serialize>(
    server: &AuthServer,
    key: &Key<T>,
    value: &T,
    ttl: Duration,
) -> Result<(), OAuthError> {
    let bytes =
        serde_json::to_vec(value).map_err(|e| OAuthError::ServerError(e.to_string().into()))?;
    server
        .store()
        .put(key.as_str(), Bytes::from(bytes), ttl)
        .await
        .map_err(OAuthError::from)
}

/// Forgets the record under `key` (failures are ignored: the record expires anyway).
pub(crate) async fn forget<T>(server: &AuthServer, key: &Key<T>) {
    let _ = server.store().delete(key.as_str()).await;
}

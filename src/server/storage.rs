//! Typed reads and writes of the store's records ([`Key`]), with single-use spending. A store
//! that cannot be reached, or a record that no longer decodes, is a 503 (`temporarily_unavailable`),
//! never "not found": a corrupt refresh token must not read as an unknown one, nor a corrupt
//! revocation marker as no revocation.

// Helpers return a ready `Response` as their error: boxing it would add an allocation to
// every refusal for no gain.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth_server::AuthServer;
use super::keyspace::Key;
use super::primitives::oauth_error;
use crate::audit;

fn unavailable(detail: &str) -> Response {
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        detail,
    )
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        tracing::error!(target: audit::TARGET, key, error = %e, "a stored record does not decode");
        unavailable("a stored record is unreadable")
    })
}

/// The record under `key`, if there is one.
pub(crate) async fn load<T: DeserializeOwned>(
    server: &AuthServer,
    key: &Key<T>,
) -> Result<Option<T>, Response> {
    match server.0.store.get(key.as_str()).await {
        Ok(Some(bytes)) => decode(key.as_str(), &bytes).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(unavailable(&e.to_string())),
    }
}

/// The record under `key`, removed atomically (of two racing takes, one gets it).
pub(crate) async fn take<T: DeserializeOwned>(
    server: &AuthServer,
    key: &Key<T>,
) -> Result<Option<T>, Response> {
    match server.0.store.take(key.as_str()).await {
        Ok(Some(bytes)) => decode(key.as_str(), &bytes).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(unavailable(&e.to_string())),
    }
}

/// Spends the single-use entry under `key`, atomically (of two racing uses, one wins):
/// `Ok(false)` if it was spent already or expired.
pub(crate) async fn spend<T>(server: &AuthServer, key: &Key<T>) -> Result<bool, Response> {
    server
        .0
        .store
        .take(key.as_str())
        .await
        .map(|found| found.is_some())
        .map_err(|e| unavailable(&e.to_string()))
}

/// Stores `value` under `key` for `ttl`.
pub(crate) async fn save<T: Serialize>(
    server: &AuthServer,
    key: &Key<T>,
    value: &T,
    ttl: Duration,
) -> Result<(), Response> {
    let bytes = serde_json::to_vec(value).map_err(|e| {
        oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.to_string(),
        )
    })?;
    server
        .0
        .store
        .put(key.as_str(), Bytes::from(bytes), ttl)
        .await
        .map_err(|e| unavailable(&e.to_string()))
}

/// Forgets the record under `key` (failures are ignored: the record expires anyway).
pub(crate) async fn forget<T>(server: &AuthServer, key: &Key<T>) {
    let _ = server.0.store.delete(key.as_str()).await;
}

//! Typed reads and writes of the store for the flow's records, with single-use spending.

use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth_server::AuthServer;
use super::primitives::oauth_error;
use crate::store::Store;

pub(crate) async fn load<T: for<'de> Deserialize<'de>>(
    server: &AuthServer,
    key: &str,
    take: bool,
) -> Result<Option<T>, Response> {
    let found = if take {
        server.0.store.take(key).await
    } else {
        server.0.store.get(key).await
    };
    match found {
        Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
        Ok(None) => Ok(None),
        Err(e) => Err(oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &e.to_string(),
        )),
    }
}

/// Spends the single-use entry under `key`, atomically (of two racing uses, one wins):
/// `Ok(false)` if it was spent already or expired.
pub(crate) async fn spend(server: &AuthServer, key: &str) -> Result<bool, Response> {
    server
        .0
        .store
        .take(key)
        .await
        .map(|found| found.is_some())
        .map_err(|e| {
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            )
        })
}

pub(crate) async fn save<T: Serialize>(
    server: &AuthServer,
    key: &str,
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
        .put(key, Bytes::from(bytes), ttl)
        .await
        .map_err(|e| {
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            )
        })
}

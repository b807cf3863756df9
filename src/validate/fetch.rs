//! Bounded HTTP reads for the validators that talk to an identity provider.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::ConfigError;

/// Connect timeout of the default client.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A client with timeouts and without redirects: a JWKS or introspection endpoint that redirects
/// is misconfigured, and following it would let whoever controls the redirect pick our keys.
pub(crate) fn default_client(timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tower-mcp-auth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::HttpClient(e.to_string()))
}

/// Reads a successful response's body, refusing non-2xx statuses and bodies beyond `limit`
/// bytes (checked as chunks arrive, so a huge or endless body costs at most `limit`).
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, String> {
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP status {status}"));
    }
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(format!("response larger than {limit} bytes"));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

//! Every call this crate makes to another server (an identity provider's keys, discovery or
//! introspection; an upstream sign-in; a client ID metadata document; a third-party token
//! endpoint) goes through one kind of client and one bounded reader: time limits, no redirects,
//! and bodies read only up to a cap, so a slow, redirecting or endless answer costs a bounded
//! amount of time and memory.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::ConfigError;

/// Connect timeout of the default client.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer of an OAuth endpoint (token, userinfo, discovery) read.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) const MAX_OAUTH_RESPONSE: usize = 256 * 1024;

/// A client with timeouts and without redirects: a JWKS or introspection endpoint that redirects
/// is misconfigured, and following it would let whoever controls the redirect pick our keys.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    crate::validate::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tower-mcp-auth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::HttpClient(e.to_string()))
}

/// Reads a successful response's body, refusing non-2xx statuses and bodies beyond `limit`
/// bytes.
pub(crate) async fn read_limited(
    response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, String> {
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP status {status}"));
    }
    read_capped(response, limit).await
}

/// Reads a response's body whatever its status, refusing bodies beyond `limit` bytes (checked
/// as chunks arrive, so a huge or endless body costs at most `limit`).
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, String> {
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

/// The `oauth2` crate's HTTP calls, made with our client and read with a cap.
#[cfg(feature = "server")]
pub(crate) async fn send(
    client: reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut builder = http::Response::builder().status(response.status());
    if let Some(headers) = builder.headers_mut() {
        *headers = response.headers().clone();
    }
    // An oversized answer reads as an empty 502: the exchange failed, never a success.
    let body = match read_capped(response, MAX_OAUTH_RESPONSE).await {
        Ok(body) => body.to_vec(),
        Err(_) => {
            builder = builder.status(http::StatusCode::BAD_GATEWAY);
            Vec::new()
        }
    };
    // Status and headers came from a valid response, so building cannot fail; if it did, an
    // empty 500 makes the caller see a failed exchange, never a success.
    Ok(builder.body(body).unwrap_or_else(|_| {
        let mut failed = http::Response::new(Vec::new());
        *failed.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        failed
    }))
}

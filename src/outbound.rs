//! Every call this crate makes to another server (an identity provider's keys, discovery or
//! introspection; an upstream sign-in; a client ID metadata document; a third-party token
//! endpoint) goes through one kind of client and one bounded reader: time limits, no redirects,
//! and bodies read only up to a cap, so a slow, redirecting or endless answer costs a bounded
//! amount of time and memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::ConfigError;
use crate::address::AddressPolicy;

/// Connect timeout of the default client.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer of an OAuth endpoint (token, userinfo, discovery) read.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) const MAX_OAUTH_RESPONSE: usize = 256 * 1024;

/// A client with timeouts and without redirects: a JWKS or introspection endpoint that redirects
/// is misconfigured, and following it would let whoever controls the redirect pick our keys.
/// Names resolve through `policy`, so a connection reaches only addresses it permits; no proxy
/// from the environment is used (through a proxy, the policy would judge the proxy's address,
/// not the target's), unless the policy is unrestricted.
pub(crate) fn client(
    timeout: Duration,
    policy: &AddressPolicy,
) -> Result<reqwest::Client, ConfigError> {
    crate::validate::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tower-mcp-auth/", env!("CARGO_PKG_VERSION")));
    if !policy.is_unrestricted() {
        builder = builder
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())));
    }
    builder
        .build()
        .map_err(|e| ConfigError::HttpClient(e.to_string()))
}

/// Resolves names with the system resolver, then refuses the name if any address it resolved
/// to is outside the policy: connecting only to the permitted ones would let a rebinding name
/// pick which of its answers we trust.
#[derive(Debug)]
struct PolicyResolver(AddressPolicy);

/// A name resolved to an address the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {address}, which the outbound address policy refuses")]
struct Refused {
    host: String,
    address: std::net::IpAddr,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !policy.permits(a.ip())) {
                crate::metrics::count!(crate::metrics::OUTBOUND_REFUSED, "reason" => "address_policy");
                tracing::warn!(host = %crate::audit::Escaped(&host), address = %bad.ip(), "outbound fetch refused by the address policy");
                return Err(Box::new(Refused {
                    host,
                    address: bad.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An error with its causes (`reqwest` puts the interesting part, such as a refused address,
/// in the source chain).
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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

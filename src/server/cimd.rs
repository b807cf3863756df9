//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25+):
//! a `client_id` that is an https URL names a JSON document, served by the client, that
//! describes it. Fetching a URL a stranger chose is an SSRF risk, so the fetch is fenced:
//!
//! - https only, a URL with a path, no fragment, no credentials;
//! - the host is resolved first and every address must be public (no loopback, private,
//!   link-local, unique-local, unspecified, multicast or documentation ranges; IPv4-mapped
//!   IPv6 addresses are judged as IPv4), and the connection is pinned to the checked address
//!   so a second DNS answer cannot swap it (rebinding);
//! - no redirects, a 5 s timeout, 64 KiB at most;
//! - the document's `client_id` must equal the URL exactly; `client_name` and `redirect_uris`
//!   are required, each redirect URI checked like a registered one; only public clients
//!   (`token_endpoint_auth_method: none`) are accepted.
//!
//! Good documents are cached per their `Cache-Control: max-age` (1 hour when absent, 24 hours
//! at most). A development mode admits plain http and loopback hosts, for tests and local
//! clients only.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::auth_server::AuthServer;
use super::clients::Client;
use crate::audit;

const MAX_DOCUMENT: usize = 64 * 1024;
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
struct Document {
    client_id: String,
    client_name: String,
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// The display-only links of a document (`client_uri`, `logo_uri`), read leniently: a link of
/// the wrong type is ignored, never a reason to refuse the client.
fn display_link(body: &[u8], name: &str) -> Option<String> {
    let document: serde_json::Value = serde_json::from_slice(body).ok()?;
    document.get(name)?.as_str().map(str::to_owned)
}

/// `link` when it is an https (or, for a loopback client id, http) URL on the same host as the
/// `client_id` URL: the fetch proved that host speaks for the client, and nothing else.
fn same_host_link(client_id: &str, link: Option<&str>) -> Option<String> {
    let id = url::Url::parse(client_id).ok()?;
    let link = link?;
    let parsed = url::Url::parse(link).ok()?;
    let same = parsed.host_str() == id.host_str()
        && parsed.port_or_known_default() == id.port_or_known_default()
        && parsed.scheme() == id.scheme()
        && parsed.username().is_empty()
        && parsed.password().is_none();
    (same && link.len() <= 2048).then(|| parsed.to_string())
}

/// Whether a `client_id` is URL-shaped (and so names a metadata document).
pub(super) fn is_document_id(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        })
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL)
        .min(MAX_TTL)
}

impl AuthServer {
    /// The client a metadata document describes, fetched (fenced) or from the cache. `Ok(None)`
    /// when the document cannot be used: the caller shows its error page.
    pub(super) async fn document_client(&self, client_id: &str) -> Result<Option<Client>, String> {
        let cache_key = super::keyspace::metadata_document(client_id);
        // A cache that cannot be read or decoded is refetched: the document is the truth.
        if let Ok(Some(bytes)) = self.store().get(cache_key.as_str()).await
            && let Ok(client) = serde_json::from_slice(&bytes)
        {
            return Ok(Some(client));
        }
        let (client, ttl) = self.fetch_document(client_id).await?;
        if let Ok(bytes) = serde_json::to_vec(&client) {
            let _ = self
                .store()
                .put(cache_key.as_str(), Bytes::from(bytes), ttl)
                .await;
        }
        Ok(Some(client))
    }

    async fn fetch_document(&self, client_id: &str) -> Result<(Client, Duration), String> {
        let dev = self.registry().cimd_development;
        let url =
            url::Url::parse(client_id).map_err(|_| "the client_id is not a URL".to_owned())?;
        match url.scheme() {
            "https" => {}
            "http" if dev => {}
            _ => return Err("client_id metadata documents must be served over https".into()),
        }
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err("the client_id URL has a fragment or credentials".into());
        }
        if url.path() == "/" || url.path().is_empty() {
            return Err("the client_id URL needs a path".into());
        }
        let host = url
            .host_str()
            .ok_or("the client_id URL has no host")?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or("the client_id URL has no port")?;
        let lookup_host = host.trim_matches(['[', ']']).to_owned();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup_host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve the client_id host: {e}"))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            return Err("the client_id host has no address".into());
        };
        if !dev && addrs.iter().any(|a| !crate::address::is_global(a.ip())) {
            return Err("the client_id host resolves to a non-public address".into());
        }
        // Pinned: the connection goes to the address just checked, whatever DNS says next.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .resolve(&lookup_host, addr)
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .get(url.as_str())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching the client metadata failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "the client metadata answered {}",
                response.status()
            ));
        }
        let ttl = max_age(response.headers());
        let body = crate::outbound::read_capped(response, MAX_DOCUMENT)
            .await
            .map_err(|e| format!("the client metadata document is refused: {e}"))?;
        // A JSON object (a derived struct would also read an array, field by field).
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err("the client metadata is not a JSON object".into());
        }
        let document: Document = serde_json::from_slice(&body)
            .map_err(|e| format!("the client metadata is invalid: {e}"))?;
        if document.client_id != client_id {
            return Err("the document's client_id differs from its URL".into());
        }
        if document.redirect_uris.is_empty() {
            return Err("the document lists no redirect_uris".into());
        }
        for uri in &document.redirect_uris {
            super::redirect::check_redirect_uri(uri)
                .map_err(|e| format!("redirect URI `{uri}`: {e}"))?;
        }
        if !matches!(
            document.token_endpoint_auth_method.as_deref(),
            None | Some("none")
        ) {
            return Err(
                "only public clients (token_endpoint_auth_method none) are supported".into(),
            );
        }
        let supported = crate::Scopes::new(&self.grants().scopes_supported);
        let scope = supported
            .narrow(document.scope.as_deref())
            .ok_or("the document asks for scopes this server does not support")?;
        let scope = scope.to_string();
        let grant_types = vec!["authorization_code".to_owned(), "refresh_token".to_owned()];
        if let Some(policy) = &self.registry().registration_policy {
            let registration = super::ClientRegistration {
                client_name: Some(&document.client_name),
                redirect_uris: &document.redirect_uris,
                grant_types: &grant_types,
                scope: &scope,
                confidential: false,
                source: None,
                metadata_document: Some(client_id),
            };
            policy(&registration).map_err(|reason| format!("refused by policy: {reason}"))?;
        }
        tracing::info!(target: audit::TARGET, client_id, "client metadata document fetched");
        Ok((
            Client {
                client_id: client_id.to_owned(),
                secret_sha256: None,
                scope,
                name: Some(document.client_name.chars().take(200).collect()),
                redirect_uris: document.redirect_uris,
                grant_types,
                configured: false,
                auth_method: None,
                client_uri: same_host_link(client_id, display_link(&body, "client_uri").as_deref()),
                logo_uri: same_host_link(client_id, display_link(&body, "logo_uri").as_deref()),
                assertion_keys: None,
            },
            ttl,
        ))
    }
}

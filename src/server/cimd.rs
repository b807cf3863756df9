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

use std::net::{IpAddr, SocketAddr};
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

/// Whether an address may be fetched from the public internet. IPv6 forms that carry an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by that address; Teredo and NAT64's
/// local-use prefix, whose targets cannot be told, are refused.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if v6.is_loopback() || v6.is_unspecified() {
                return false;
            }
            match s {
                // IPv4-compatible `::a.b.c.d` (deprecated, still routed by some stacks).
                [0, 0, 0, 0, 0, 0, hi, lo] => return embedded(hi, lo),
                // NAT64, well-known prefix 64:ff9b::/96: the IPv4 address it reaches.
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return embedded(hi, lo),
                // NAT64 local-use 64:ff9b:1::/48: a local translator, target unknown.
                [0x64, 0xff9b, 1, ..] => return false,
                // 6to4 2002::/16: the IPv4 address is in the next 32 bits.
                [0x2002, hi, lo, ..] => return embedded(hi, lo),
                // Teredo 2001::/32: tunnels to an address we cannot vet.
                [0x2001, 0, ..] => return false,
                // Discard-only 100::/64.
                [0x100, 0, 0, 0, ..] => return false,
                _ => {}
            }
            let first = s[0];
            !(v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0 // site local (deprecated)
                || first == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
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
        if !dev && addrs.iter().any(|a| !is_public(a.ip())) {
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
            },
            ttl,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_fence() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::",
            // Forms that carry an internal IPv4 address, or tunnel where we cannot see.
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "::127.0.0.1",
            "::10.0.0.1",
            "192.0.0.8",
            "100::1",
            "fec0::1",
        ] {
            assert!(!is_public(blocked.parse().unwrap()), "{blocked}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}

//! Start-up checks against an identity provider's own description of itself: its discovery
//! document (OpenID Connect Discovery, or RFC 8414 metadata).
//!
//! A resource server that trusts an outside identity provider fails on every request when one
//! configured value differs from what the provider puts in its tokens, most often the issuer:
//! `https://id.example.com/realms/mcp/` (trailing slash) is not
//! `https://id.example.com/realms/mcp`, and `http://localhost:8080` is not
//! `http://127.0.0.1:8080`. These checks find that at start-up, with both values in the error.

use serde::Deserialize;

use crate::ConfigError;
use crate::outbound::read_limited;
use crate::resource::parse_http_url;

const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// What an identity provider publishes about itself, as far as a resource server cares.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// The issuer identifier: exactly what its tokens carry in `iss`.
    pub issuer: String,
    /// Where its signing keys are published.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Its RFC 7662 introspection endpoint, if it offers one.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// Its RFC 7591 registration endpoint: MCP clients register themselves there.
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    /// The scopes it lists.
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
}

/// Fetches the discovery document of `issuer`: `{issuer}/.well-known/openid-configuration`,
/// then the RFC 8414 form `/.well-known/oauth-authorization-server{path}`. The document must
/// name exactly `issuer` (OpenID Connect Discovery §4.3, RFC 8414 §3.3); otherwise the error
/// names both values and what tells them apart.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_mcp_auth::ConfigError> {
/// use tower_mcp_auth::validate::discovery::discover;
///
/// let client = reqwest::Client::new();
/// let provider = discover(&client, "https://id.example.com/realms/mcp", false).await?;
/// println!("keys at {:?}", provider.jwks_uri);
/// # Ok(()) }
/// ```
pub async fn discover(
    client: &reqwest::Client,
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<ProviderMetadata, ConfigError> {
    let url = parse_http_url("issuer", issuer, allow_insecure_http)?;
    let appended = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let path = url.path().trim_end_matches('/');
    let inserted = format!(
        "{}/.well-known/oauth-authorization-server{path}",
        url.origin().ascii_serialization()
    );
    let mut failures = Vec::new();
    for candidate in [appended, inserted] {
        match fetch_document(client, &candidate).await {
            Ok(document) => {
                check_same("issuer", issuer, &document.issuer)?;
                return Ok(document);
            }
            Err(reason) => failures.push(format!("{candidate}: {reason}")),
        }
    }
    Err(ConfigError::ProviderUnavailable {
        url: issuer.to_owned(),
        reason: format!("no discovery document ({})", failures.join("; ")),
    })
}

async fn fetch_document(client: &reqwest::Client, url: &str) -> Result<ProviderMetadata, String> {
    let response = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body = read_limited(response, MAX_DOCUMENT_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| format!("not a discovery document: {e}"))
}

/// Refuses `found` unless it is byte for byte `configured`.
pub(crate) fn check_same(
    what: &'static str,
    configured: &str,
    found: &str,
) -> Result<(), ConfigError> {
    if configured == found {
        return Ok(());
    }
    Err(ConfigError::ProviderMismatch {
        what,
        configured: configured.to_owned(),
        found: found.to_owned(),
        hint: difference(configured, found),
    })
}

/// What tells two URLs apart when the difference is one people overlook.
fn difference(a: &str, b: &str) -> String {
    let loopback = |s: &str| {
        s.replace("://localhost", "://127.0.0.1")
            .replace("://[::1]", "://127.0.0.1")
    };
    let scheme = |s: &str| s.replacen("https://", "http://", 1);
    let hint = if a.trim_end_matches('/') == b.trim_end_matches('/') {
        "they differ only in a trailing slash"
    } else if loopback(a) == loopback(b) {
        "localhost, 127.0.0.1 and [::1] are different names: use the one the provider uses"
    } else if scheme(a) == scheme(b) {
        "they differ in the scheme (http or https)"
    } else if a.eq_ignore_ascii_case(b) {
        "they differ in letter case"
    } else {
        "configure exactly the value the provider publishes"
    };
    hint.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatches_say_what_differs() {
        let hint = |a, b| match check_same("issuer", a, b) {
            Err(ConfigError::ProviderMismatch { hint, .. }) => hint,
            other => panic!("{other:?}"),
        };
        assert!(hint("https://id.example.com/", "https://id.example.com").contains("slash"));
        assert!(hint("http://localhost:8080", "http://127.0.0.1:8080").contains("localhost"));
        assert!(hint("http://id.example.com", "https://id.example.com").contains("scheme"));
        assert!(hint("https://ID.example.com", "https://id.example.com").contains("case"));
        assert!(check_same("issuer", "https://a", "https://a").is_ok());
        let message = check_same("issuer", "https://a/", "https://a")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`https://a/`") && message.contains("`https://a`"),
            "{message}"
        );
    }
}

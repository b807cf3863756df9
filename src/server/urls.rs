//! One canonical builder for every public URL of the authorization server, over the configured
//! public base URL (the issuer). Issuers with a path and servers behind proxies get their
//! discovery URLs right because nothing else builds URLs.

use url::Url;

use crate::ConfigError;
use crate::resource::{canonical_uri, parse_http_url};

/// The public URLs of an authorization server whose issuer is the public base URL.
///
/// ```
/// use tower_mcp_auth::server::PublicUrls;
///
/// let urls = PublicUrls::new("https://auth.example.com/tenant1").unwrap();
/// assert_eq!(urls.issuer(), "https://auth.example.com/tenant1");
/// assert_eq!(urls.endpoint("/oauth/token"), "https://auth.example.com/tenant1/oauth/token");
/// // The order MCP clients (2025-11-25+) try them in.
/// assert_eq!(urls.discovery_urls(), [
///     "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
///     "https://auth.example.com/.well-known/openid-configuration/tenant1",
///     "https://auth.example.com/tenant1/.well-known/openid-configuration",
/// ]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrls {
    issuer: String,
    origin: String,
    path: String,
}

impl PublicUrls {
    /// Builds from the public base URL: https (or loopback http), no query, no fragment.
    pub fn new(base: &str) -> Result<Self, ConfigError> {
        let url: Url = parse_http_url("public base URL", base, false)?;
        if url.query().is_some() {
            return Err(ConfigError::InvalidUrl {
                what: "public base URL",
                url: base.to_owned(),
                reason: "has a query component".into(),
            });
        }
        let issuer = canonical_uri(&url);
        let origin = url.origin().ascii_serialization();
        let path = issuer[origin.len()..].trim_end_matches('/').to_owned();
        Ok(PublicUrls {
            issuer,
            origin,
            path,
        })
    }

    /// The origin (`scheme://host[:port]`) every public URL starts with.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// The issuer identifier: exactly what metadata documents and tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The absolute URL of an endpoint path (`/oauth/token`) under the issuer.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}{}", self.origin, self.path, path)
    }

    /// The path an endpoint is served at locally (the public path; a proxy that strips a
    /// prefix must be configured to keep it).
    pub fn local_path(&self, path: &str) -> String {
        format!("{}{}", self.path, path)
    }

    /// Authorization server metadata URLs in the order MCP clients try them: RFC 8414 with
    /// path insertion, OpenID Connect discovery with path insertion, then appended. Without an
    /// issuer path, the first two.
    pub fn discovery_urls(&self) -> Vec<String> {
        if self.path.is_empty() {
            return vec![
                format!("{}/.well-known/oauth-authorization-server", self.origin),
                format!("{}/.well-known/openid-configuration", self.origin),
            ];
        }
        vec![
            format!(
                "{}/.well-known/oauth-authorization-server{}",
                self.origin, self.path
            ),
            format!(
                "{}/.well-known/openid-configuration{}",
                self.origin, self.path
            ),
            format!(
                "{}{}/.well-known/openid-configuration",
                self.origin, self.path
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_without_path() {
        let urls = PublicUrls::new("https://Auth.Example.com/").unwrap();
        assert_eq!(urls.issuer(), "https://auth.example.com");
        assert_eq!(
            urls.endpoint("/oauth/authorize"),
            "https://auth.example.com/oauth/authorize"
        );
        assert_eq!(urls.local_path("/oauth/authorize"), "/oauth/authorize");
        assert_eq!(
            urls.discovery_urls(),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn loopback_http_with_port_and_path() {
        let urls = PublicUrls::new("http://127.0.0.1:8080/a/b").unwrap();
        assert_eq!(urls.issuer(), "http://127.0.0.1:8080/a/b");
        assert_eq!(urls.local_path("/oauth/jwks"), "/a/b/oauth/jwks");
        assert_eq!(
            urls.discovery_urls()[0],
            "http://127.0.0.1:8080/.well-known/oauth-authorization-server/a/b"
        );
        assert!(PublicUrls::new("http://auth.example.com").is_err());
        assert!(PublicUrls::new("https://auth.example.com/?tenant=1").is_err());
    }
}

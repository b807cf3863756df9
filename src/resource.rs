//! The protected resource: its canonical URI (RFC 8707) and its metadata document (RFC 9728).
//!
//! An MCP client that meets a 401 follows the challenge's `resource_metadata` URL (or probes the
//! well-known locations) to learn which authorization server issues tokens for this server.
//! [`ProtectedResource`] owns the canonical resource URI every validator checks `aud` against,
//! the metadata URL every challenge names, and an axum router serving the document at both
//! locations clients probe:
//!
//! 1. `/.well-known/oauth-protected-resource/<resource path>` (path-inserted, tried first), and
//! 2. `/.well-known/oauth-protected-resource` (the root fallback).
//!
//! ```
//! use tower_mcp_auth::ProtectedResource;
//!
//! let resource = ProtectedResource::builder("https://MCP.example.com/mcp")
//!     .authorization_server("https://auth.example.com")
//!     .scopes_supported(["mcp:tools"])
//!     .build()
//!     .unwrap();
//! assert_eq!(resource.resource(), "https://mcp.example.com/mcp");
//! assert_eq!(
//!     resource.metadata_url(),
//!     "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
//! );
//! let app: axum::Router = resource.router();
//! ```

use std::net::IpAddr;
use std::sync::Arc;

use axum::response::IntoResponse;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde::Serialize;
use url::Url;

use crate::{ConfigError, Scopes, ToolPolicy};

/// The well-known path prefix of RFC 9728.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// A protected resource (an MCP endpoint): canonical URI, metadata, and the routes serving it.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProtectedResource(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    resource: String,
    metadata_url: String,
    metadata_path: String,
    scopes_supported: Scopes,
    baseline_scopes: Scopes,
    document: Bytes,
}

/// The RFC 9728 §2 metadata document.
#[derive(Debug, Clone, Serialize)]
struct Document<'a> {
    resource: &'a str,
    authorization_servers: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    scopes_supported: Vec<&'a str>,
    bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_documentation: Option<&'a str>,
}

impl ProtectedResource {
    /// Starts building the resource whose canonical URI is `resource` (the public URL of the MCP
    /// endpoint, e.g. `https://mcp.example.com/mcp`). Behind a proxy, this is the URL clients
    /// use, not the address the process listens on.
    pub fn builder(resource: impl Into<String>) -> ProtectedResourceBuilder {
        ProtectedResourceBuilder {
            resource: resource.into(),
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            policy_scopes: Vec::new(),
            resource_name: None,
            resource_documentation: None,
            allow_insecure_http: false,
        }
    }

    /// The canonical resource URI: the audience every accepted token must carry.
    pub fn resource(&self) -> &str {
        &self.0.resource
    }

    /// The origin of the resource URI (where clients send requests), for DPoP's `htu`.
    pub(crate) fn origin(&self) -> String {
        Url::parse(&self.0.resource).map_or_else(|_| String::new(), |url| origin(&url))
    }

    /// The absolute URL of the metadata document, as named in every challenge.
    pub fn metadata_url(&self) -> &str {
        &self.0.metadata_url
    }

    /// The path of [`metadata_url`](Self::metadata_url) (the path-inserted well-known form).
    pub fn metadata_path(&self) -> &str {
        &self.0.metadata_path
    }

    /// `scopes_supported` of the metadata document.
    pub fn scopes_supported(&self) -> &Scopes {
        &self.0.scopes_supported
    }

    /// What a client should ask for first: the scopes given to
    /// [`ProtectedResourceBuilder::scopes_supported`], without those added from a policy (all of
    /// `scopes_supported` when none were given). The bearer layer's 401 challenge names them by
    /// default, so a client does not ask for administration in its first sign-in.
    pub fn baseline_scopes(&self) -> &Scopes {
        &self.0.baseline_scopes
    }

    /// The metadata document, serialized once at build time.
    pub fn document(&self) -> &Bytes {
        &self.0.document
    }

    /// An axum router serving the metadata at the path-inserted and root well-known paths, with
    /// CORS open to any origin (browser-based clients such as the MCP Inspector read it) and
    /// `OPTIONS` preflights answered (clients send `MCP-Protocol-Version` on the fetch). These
    /// routes need no token. Merge it beside the MCP route.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let serve = {
            let doc = self.0.document.clone();
            move |method: Method| {
                let doc = doc.clone();
                async move { metadata_response(&method, doc) }
            }
        };
        let mut router = axum::Router::new().route(
            WELL_KNOWN_PREFIX,
            axum::routing::get(serve.clone()).options(serve.clone()),
        );
        if self.0.metadata_path != WELL_KNOWN_PREFIX {
            router = router.route(
                &self.0.metadata_path,
                axum::routing::get(serve.clone()).options(serve),
            );
        }
        router
    }
}

pub(crate) fn metadata_response(method: &Method, doc: Bytes) -> axum::response::Response {
    let cors = [
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("*"),
        ),
        (
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        ),
    ];
    if method == Method::OPTIONS {
        return (StatusCode::NO_CONTENT, cors).into_response();
    }
    (
        cors,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        doc,
    )
        .into_response()
}

/// Builder of [`ProtectedResource`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ProtectedResourceBuilder {
    resource: String,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    /// Scopes from a policy: listed in the document, not in the baseline.
    policy_scopes: Vec<String>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    allow_insecure_http: bool,
}

impl ProtectedResourceBuilder {
    /// Adds an authorization server (its issuer URL) that issues tokens for this resource. At
    /// least one is required.
    pub fn authorization_server(mut self, issuer: impl Into<String>) -> Self {
        self.authorization_servers.push(issuer.into());
        self
    }

    /// The scopes a client needs for basic use (RFC 9728 `scopes_supported`). Keep it minimal,
    /// and without `offline_access`: clients request all of it when no challenge names scopes.
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported
            .extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Adds every scope `policy` can ask for ([`ToolPolicy::scopes`]) to `scopes_supported`,
    /// after the ones given explicitly: a client that picks its scopes from the metadata is
    /// then not stuck with the baseline only. They do not join the
    /// [`baseline_scopes`](ProtectedResource::baseline_scopes) a 401 challenge names.
    ///
    /// ```
    /// use tower_mcp_auth::{ProtectedResource, ToolPolicy};
    ///
    /// let policy = ToolPolicy::builder()
    ///     .default_scopes(["mcp:tools"])
    ///     .tool("purge_*", ["notes:admin"])
    ///     .build()
    ///     .unwrap();
    /// let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
    ///     .authorization_server("https://id.example.com")
    ///     .scopes_supported(["mcp:tools"])
    ///     .policy(&policy)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(resource.scopes_supported().to_string(), "mcp:tools notes:admin");
    /// // A client's first sign-in asks for the baseline only (the 401 challenge's default).
    /// assert_eq!(resource.baseline_scopes().to_string(), "mcp:tools");
    /// ```
    pub fn policy(mut self, policy: &ToolPolicy) -> Self {
        self.policy_scopes
            .extend(policy.scopes().iter().map(str::to_owned));
        self
    }

    /// A human-readable name for the resource.
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// A URL of human-readable documentation.
    pub fn resource_documentation(mut self, url: impl Into<String>) -> Self {
        self.resource_documentation = Some(url.into());
        self
    }

    /// Accepts a plain `http` resource URI on a non-loopback host. Only for test networks: OAuth
    /// 2.1 requires TLS, and loopback hosts are accepted without this.
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// Validates and canonicalizes the URIs and serializes the metadata document.
    pub fn build(self) -> Result<ProtectedResource, ConfigError> {
        let url = parse_http_url("resource", &self.resource, self.allow_insecure_http)?;
        if url.query().is_some() {
            return Err(invalid("resource", &self.resource, "has a query component"));
        }
        let resource = canonical_uri(&url);
        if self.authorization_servers.is_empty() {
            return Err(ConfigError::NoAuthorizationServer);
        }
        for issuer in &self.authorization_servers {
            parse_http_url("authorization server", issuer, self.allow_insecure_http)?;
        }
        for scope in &self.scopes_supported {
            check_scope_token(scope)?;
        }
        if self.scopes_supported.iter().any(|s| s == "offline_access") {
            // MCP 2026-07-28: clients request all of `scopes_supported` when no challenge
            // names scopes; `offline_access` there makes every client ask for refresh tokens.
            tracing::warn!(resource = %crate::audit::Escaped(&self.resource), "scopes_supported should not contain offline_access");
        }
        let path = match url.path() {
            "/" => "",
            p => p,
        };
        let metadata_path = format!("{WELL_KNOWN_PREFIX}{path}");
        let metadata_url = format!("{}{}", origin(&url), metadata_path);
        let listed: Vec<&String> = self
            .scopes_supported
            .iter()
            .chain(&self.policy_scopes)
            .collect();
        let scopes_supported = Scopes::new(&listed);
        let baseline_scopes = if self.scopes_supported.is_empty() {
            scopes_supported.clone()
        } else {
            Scopes::new(&self.scopes_supported)
        };
        let document = serde_json::to_vec(&Document {
            resource: &resource,
            authorization_servers: &self.authorization_servers,
            // Declaration order is kept (first mention): the order a client shows a person.
            scopes_supported: {
                let mut seen = std::collections::HashSet::new();
                listed
                    .iter()
                    .map(|s| s.as_str())
                    .filter(|s| seen.insert(*s))
                    .collect()
            },
            bearer_methods_supported: ["header"],
            resource_name: self.resource_name.as_deref(),
            resource_documentation: self.resource_documentation.as_deref(),
        })
        .map_err(|e| invalid("resource", &self.resource, &e.to_string()))?;
        Ok(ProtectedResource(Arc::new(Inner {
            resource,
            metadata_url,
            metadata_path,
            scopes_supported,
            baseline_scopes,
            document: Bytes::from(document),
        })))
    }
}

/// Refuses strings that are not RFC 6749 §3.3 scope tokens (`%x21 / %x23-5B / %x5D-7E`), so a
/// scope can never break a challenge header or a space-separated list.
pub(crate) fn check_scope_token(scope: &str) -> Result<(), ConfigError> {
    let ok = !scope.is_empty()
        && scope
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidScope(scope.to_owned()))
    }
}

fn invalid(what: &'static str, url: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidUrl {
        what,
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Parses an absolute http(s) URL without fragment; plain http only for loopback hosts unless
/// `allow_insecure_http`.
pub(crate) fn parse_http_url(
    what: &'static str,
    raw: &str,
    allow_insecure_http: bool,
) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| invalid(what, raw, &e.to_string()))?;
    if url.fragment().is_some() {
        return Err(invalid(what, raw, "has a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(what, raw, "carries credentials"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure_http || is_loopback(&url) => Ok(url),
        "http" => Err(invalid(
            what,
            raw,
            "plain http is only accepted for loopback hosts",
        )),
        other => Err(invalid(
            what,
            raw,
            &format!("scheme `{other}` is not http(s)"),
        )),
    }
}

/// Whether the URL's host is a loopback name or address.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The canonical form of a resource URI (MCP spec, RFC 8707): lowercase scheme and host (the
/// `url` crate does that), no default port, and no trailing slash on an empty path.
pub(crate) fn canonical_uri(url: &Url) -> String {
    let s = url.as_str();
    if url.path() == "/" && url.query().is_none() {
        s.strip_suffix('/').unwrap_or(s).to_owned()
    } else {
        s.to_owned()
    }
}

/// Canonicalizes an audience value for comparison: URLs as [`canonical_uri`], anything else
/// (`api://...` identifiers, client ids) unchanged.
pub(crate) fn canonical_audience(aud: &str) -> std::borrow::Cow<'_, str> {
    match Url::parse(aud) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.fragment().is_none() => {
            std::borrow::Cow::Owned(canonical_uri(&url))
        }
        _ => std::borrow::Cow::Borrowed(aud),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(uri: &str) -> Result<ProtectedResource, ConfigError> {
        ProtectedResource::builder(uri)
            .authorization_server("https://auth.example.com")
            .build()
    }

    #[test]
    fn canonicalizes_and_builds_metadata_urls() {
        let r = build("HTTPS://Mcp.Example.com:443").unwrap();
        assert_eq!(r.resource(), "https://mcp.example.com");
        assert_eq!(
            r.metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
        let r = build("https://ex.com/public/mcp").unwrap();
        assert_eq!(
            r.metadata_url(),
            "https://ex.com/.well-known/oauth-protected-resource/public/mcp"
        );
        let r = build("http://127.0.0.1:8080/mcp").unwrap();
        assert_eq!(r.resource(), "http://127.0.0.1:8080/mcp");
    }

    #[test]
    fn refuses_unusable_resource_uris() {
        for bad in [
            "mcp.example.com",
            "https://mcp.example.com/mcp#frag",
            "https://mcp.example.com/mcp?x=1",
            "http://mcp.example.com/mcp",
            "ftp://mcp.example.com/",
            "https://user:pw@mcp.example.com/",
            "https://user@mcp.example.com/",
            "https://:pw@mcp.example.com/",
        ] {
            assert!(build(bad).is_err(), "{bad} accepted");
        }
        assert!(matches!(
            ProtectedResource::builder("https://a.example").build(),
            Err(ConfigError::NoAuthorizationServer)
        ));
    }

    #[test]
    fn accessors_return_what_was_built() {
        let r = ProtectedResource::builder("https://ex.com/public/mcp")
            .authorization_server("https://auth.example.com")
            .scopes_supported(["mcp:tools"])
            .build()
            .unwrap();
        assert_eq!(
            r.metadata_path(),
            "/.well-known/oauth-protected-resource/public/mcp"
        );
        assert_eq!(r.scopes_supported(), &Scopes::new(["mcp:tools"]));
        assert_eq!(r.baseline_scopes(), &Scopes::new(["mcp:tools"]));
        let doc: serde_json::Value = serde_json::from_slice(r.document()).unwrap();
        assert_eq!(doc["resource"], "https://ex.com/public/mcp");
        assert_eq!(doc["scopes_supported"][0], "mcp:tools");
    }

    async fn get(router: &axum::Router, method: Method, path: &str) -> axum::response::Response {
        use tower::ServiceExt;
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn router_serves_the_document_at_both_locations_with_cors() {
        let r = build("https://ex.com/public/mcp").unwrap();
        let router: axum::Router = r.router();
        for path in [r.metadata_path(), WELL_KNOWN_PREFIX] {
            let response = get(&router, Method::GET, path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            assert_eq!(&body, r.document());
            let preflight = get(&router, Method::OPTIONS, path).await;
            assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
            assert_eq!(
                preflight.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
                "GET, OPTIONS"
            );
        }
        // A resource at the root has one location (registering it twice would panic).
        let root = build("https://ex.com").unwrap();
        assert_eq!(root.metadata_path(), WELL_KNOWN_PREFIX);
        let router: axum::Router = root.router();
        let response = get(&router, Method::GET, WELL_KNOWN_PREFIX).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn scope_tokens_follow_rfc_6749() {
        for bad in ["", "a b", "a\"b", "a\\b", "caf\u{e9}", "tab\there"] {
            let built = ProtectedResource::builder("https://ex.com/mcp")
                .authorization_server("https://auth.example.com")
                .scopes_supported([bad])
                .build();
            assert!(
                matches!(built, Err(ConfigError::InvalidScope(ref s)) if s == bad),
                "{bad:?} accepted"
            );
        }
        assert!(check_scope_token("notes:read!#[]~").is_ok());
    }

    /// `offline_access` in `scopes_supported` makes 2026-07-28 clients ask every user for
    /// refresh tokens: the builder warns the operator.
    #[test]
    fn offline_access_in_scopes_supported_is_warned_about() {
        let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Captured(sink.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for scopes in [&["mcp:tools"][..], &["mcp:tools", "offline_access"][..]] {
                ProtectedResource::builder("https://ex.com/mcp")
                    .authorization_server("https://auth.example.com")
                    .scopes_supported(scopes.iter().copied())
                    .build()
                    .unwrap();
            }
        });
        let logged = String::from_utf8_lossy(&logged.lock().unwrap()).into_owned();
        assert_eq!(
            logged.matches("should not contain offline_access").count(),
            1,
            "{logged}"
        );
    }

    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn audience_canonicalization() {
        assert_eq!(
            canonical_audience("https://MCP.example.com/"),
            "https://mcp.example.com"
        );
        assert_eq!(canonical_audience("api://thing"), "api://thing");
        // Only the root path loses its slash: `/a/` and `/a` are different resources.
        assert_eq!(canonical_audience("https://ex.com/a/"), "https://ex.com/a/");
        assert_eq!(
            canonical_audience("https://ex.com/?q=1"),
            "https://ex.com/?q=1"
        );
    }
}

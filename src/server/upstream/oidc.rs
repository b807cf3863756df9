//! [`OidcProvider`]: any OpenID Connect provider, found through discovery, its id_tokens
//! validated against its JWKS.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::code_flow::{CodeFlow, random, read_kept};
use super::{IdentityProvider, UpstreamError, UpstreamStart, UpstreamUser, check_provider_id};
use crate::BoxFuture;
use crate::ConfigError;
use crate::address::AddressPolicy;
use crate::resource::parse_http_url;
use crate::validate::{JwksValidator, TokenValidator};

/// Any OpenID Connect provider: discovery at `{issuer}/.well-known/openid-configuration`
/// (fetched at the first sign-in, and again after a failure), the code flow with PKCE, `state`
/// and `nonce`, and the `id_token` validated against the provider's JWKS (signature, `iss`,
/// `aud` = our client id, `azp`, `exp`, `nonce`).
///
/// ```
/// use tower_mcp_auth::server::{AuthServer, OidcProvider};
///
/// let sso = OidcProvider::builder("acme", "https://login.acme.example", "mcp-server")
///     .client_secret("from-the-idp-console")
///     .display_name("Acme SSO")
///     .scopes(["openid", "email", "groups"])
///     .build()
///     .unwrap();
/// let auth = AuthServer::builder("https://mcp.example.com")
///     .resource("https://mcp.example.com/mcp")
///     .identity_provider(sso)
///     .build()
///     .unwrap();
/// # let _ = auth;
/// ```
#[derive(Clone)]
pub struct OidcProvider(Arc<OidcInner>);

struct OidcInner {
    id: String,
    display_name: String,
    issuer: String,
    flow: CodeFlow,
    groups_claim: String,
    allow_insecure_http: bool,
    addresses: AddressPolicy,
    discovered: tokio::sync::OnceCell<Discovered>,
}

struct Discovered {
    authorization_endpoint: String,
    token_endpoint: String,
    id_tokens: JwksValidator,
    /// RFC 9207: the provider puts `iss` in its authorization responses.
    iss_in_responses: bool,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("id", &self.0.id)
            .field("issuer", &self.0.issuer)
            .finish_non_exhaustive()
    }
}

/// Builder of [`OidcProvider`].
#[must_use]
#[derive(Clone)]
pub struct OidcProviderBuilder {
    id: String,
    display_name: Option<String>,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    groups_claim: String,
    timeout: Duration,
    allow_insecure_http: bool,
    addresses: AddressPolicy,
}

impl std::fmt::Debug for OidcProviderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderBuilder")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// A provider with this `id`, issuer URL and our `client_id` there.
    pub fn builder(
        id: impl Into<String>,
        issuer: impl Into<String>,
        client_id: impl Into<String>,
    ) -> OidcProviderBuilder {
        OidcProviderBuilder {
            id: id.into(),
            display_name: None,
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            groups_claim: "groups".into(),
            timeout: Duration::from_secs(10),
            allow_insecure_http: false,
            addresses: AddressPolicy::default(),
        }
    }

    /// Google (`https://accounts.google.com`), id `google`, scopes `openid email profile`.
    pub fn google(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        OidcProvider::builder("google", "https://accounts.google.com", client_id)
            .client_secret(client_secret)
            .display_name("Google")
            .build()
    }

    async fn discovered(&self) -> Result<&Discovered, UpstreamError> {
        // A failed discovery is not cached: the next sign-in tries again.
        self.0.discovered.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Discovered, UpstreamError> {
        let inner = &self.0;
        let url = format!(
            "{}/.well-known/openid-configuration",
            inner.issuer.trim_end_matches('/')
        );
        let unavailable = |e: String| UpstreamError::Unavailable(format!("discovery: {e}"));
        let response = inner
            .flow
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unavailable(crate::outbound::describe(&e)))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("{url} answered {}", response.status())));
        }
        let body = crate::outbound::read_capped(response, crate::outbound::MAX_OAUTH_RESPONSE)
            .await
            .map_err(unavailable)?;
        let document: DiscoveryDocument =
            serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()))?;
        // OpenID Connect Discovery §4.3: the document must name exactly this issuer.
        if document.issuer != inner.issuer {
            return Err(unavailable(format!(
                "the document names issuer `{}`, not `{}`",
                document.issuer, inner.issuer
            )));
        }
        // The document names where we send codes and fetch keys: an address inside our
        // network is refused unless the operator allowed it (the browser-facing authorization
        // endpoint is not fetched by us).
        for (what, endpoint) in [
            ("token endpoint", &document.token_endpoint),
            ("JWKS URL", &document.jwks_uri),
        ] {
            inner
                .addresses
                .check_url(what, endpoint)
                .map_err(|e| unavailable(e.to_string()))?;
        }
        // An https issuer's endpoints are https too: a tampered document must not send codes
        // or trust keys over plain http (even on loopback).
        let https_issuer = inner.issuer.starts_with("https://");
        for (what, endpoint) in [
            ("authorization endpoint", &document.authorization_endpoint),
            ("token endpoint", &document.token_endpoint),
            ("JWKS URL", &document.jwks_uri),
        ] {
            let url = parse_http_url(what, endpoint, inner.allow_insecure_http)
                .map_err(|e| unavailable(e.to_string()))?;
            if https_issuer && url.scheme() != "https" && !inner.allow_insecure_http {
                return Err(unavailable(format!(
                    "the {what} of an https issuer is not https"
                )));
            }
        }
        let mut jwks = JwksValidator::builder(
            document.jwks_uri,
            inner.issuer.clone(),
            inner.flow.client_id.clone(),
        )
        .http_client(inner.flow.http.clone())
        .address_policy(inner.addresses.clone());
        if inner.allow_insecure_http {
            jwks = jwks.allow_insecure_http();
        }
        let id_tokens = jwks.build().map_err(|e| unavailable(e.to_string()))?;
        Ok(Discovered {
            authorization_endpoint: document.authorization_endpoint,
            token_endpoint: document.token_endpoint,
            id_tokens,
            iss_in_responses: document.authorization_response_iss_parameter_supported,
        })
    }

    async fn finish_inner(
        &self,
        redirect_uri: &str,
        code: &str,
        kept: &str,
    ) -> Result<UpstreamUser, UpstreamError> {
        let kept = read_kept(kept)?;
        let found = self.discovered().await?;
        let response = self
            .0
            .flow
            .exchange(
                &found.authorization_endpoint,
                &found.token_endpoint,
                redirect_uri,
                code,
                &kept,
            )
            .await?;
        let id_token =
            response.extra_fields().id_token.as_deref().ok_or_else(|| {
                UpstreamError::Refused("the token response has no id_token".into())
            })?;
        let context = found.id_tokens.validate(id_token).await.map_err(|e| {
            if e.is_unavailable() {
                UpstreamError::Unavailable(e.to_string())
            } else {
                UpstreamError::Refused(format!("id_token: {e}"))
            }
        })?;
        let claims = context.claims();
        let nonce_ok = match (claims.get("nonce").and_then(Value::as_str), &kept.nonce) {
            (Some(got), Some(sent)) => {
                subtle::ConstantTimeEq::ct_eq(got.as_bytes(), sent.as_bytes()).into()
            }
            _ => false,
        };
        if !nonce_ok {
            return Err(UpstreamError::Refused("id_token nonce mismatch".into()));
        }
        // OpenID Connect Core §3.1.3.7: an `azp` must be us, and with several audiences there
        // must be one.
        let several = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.0.flow.client_id => {
                return Err(UpstreamError::Refused(
                    "id_token azp is not this client".into(),
                ));
            }
            None if several => {
                return Err(UpstreamError::Refused(
                    "id_token with several audiences has no azp".into(),
                ));
            }
            _ => {}
        }
        let subject = context.subject();
        if subject.is_empty() {
            return Err(UpstreamError::Refused("id_token has no sub".into()));
        }
        let name = ["preferred_username", "email", "name"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .map(str::to_owned);
        let groups = match claims.get(&self.0.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(UpstreamUser {
            subject: subject.to_owned(),
            name,
            groups,
        })
    }
}

impl OidcProviderBuilder {
    /// Our client secret at the provider (sent with `client_secret_basic`); without one the
    /// client is public and relies on PKCE.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// The name on the sign-in button (default: the id).
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// The scopes requested (default `openid email profile`; `openid` is always added).
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The id_token claim holding the user's groups (default `groups`).
    pub fn groups_claim(mut self, claim: impl Into<String>) -> Self {
        self.groups_claim = claim.into();
        self
    }

    /// Timeout of each request to the provider (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Accepts plain-http provider URLs on non-loopback hosts (test networks only; loopback
    /// http is always accepted).
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// Which addresses the provider's discovery document, token endpoint and keys may be
    /// fetched from (default [`AddressPolicy::public_only`]; a provider on the same machine
    /// needs `allow_loopback`, one inside the network `allow_private` or `allow_network`).
    pub fn address_policy(mut self, policy: AddressPolicy) -> Self {
        self.addresses = policy;
        self
    }

    /// Checks the configuration. Nothing is fetched until the first sign-in.
    pub fn build(mut self) -> Result<OidcProvider, ConfigError> {
        check_provider_id(&self.id)?;
        parse_http_url("issuer", &self.issuer, self.allow_insecure_http)?;
        self.addresses.check_url("issuer", &self.issuer)?;
        if !self.scopes.iter().any(|s| s == "openid") {
            self.scopes.insert(0, "openid".into());
        }
        Ok(OidcProvider(Arc::new(OidcInner {
            display_name: self.display_name.unwrap_or_else(|| self.id.clone()),
            id: self.id,
            issuer: self.issuer,
            flow: CodeFlow {
                client_id: self.client_id,
                client_secret: self.client_secret,
                scopes: self.scopes,
                http: crate::outbound::client(self.timeout, &self.addresses)?,
            },
            groups_claim: self.groups_claim,
            allow_insecure_http: self.allow_insecure_http,
            addresses: self.addresses,
            discovered: tokio::sync::OnceCell::new(),
        })))
    }
}

impl IdentityProvider for OidcProvider {
    fn id(&self) -> &str {
        &self.0.id
    }

    fn display_name(&self) -> &str {
        &self.0.display_name
    }

    fn issuer(&self) -> Option<&str> {
        Some(&self.0.issuer)
    }

    fn requires_iss(&self) -> bool {
        self.0
            .discovered
            .get()
            .is_some_and(|found| found.iss_in_responses)
    }

    fn check_ready(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
        Box::pin(async move { self.discover().await.map(|_| ()) })
    }

    fn start<'a>(
        &'a self,
        redirect_uri: &'a str,
        state: &'a str,
    ) -> BoxFuture<'a, Result<UpstreamStart, UpstreamError>> {
        Box::pin(async move {
            let found = self.discovered().await?;
            self.0.flow.start(
                &found.authorization_endpoint,
                &found.token_endpoint,
                redirect_uri,
                state,
                Some(random()?),
            )
        })
    }

    fn finish<'a>(
        &'a self,
        redirect_uri: &'a str,
        code: &'a str,
        kept: &'a str,
    ) -> BoxFuture<'a, Result<UpstreamUser, UpstreamError>> {
        Box::pin(self.finish_inner(redirect_uri, code, kept))
    }
}

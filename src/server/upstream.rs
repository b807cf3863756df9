//! Upstream identity providers: where the users of the authorization server sign in.
//!
//! The authorization server never sees a password of an upstream user: it sends the browser to
//! the provider (authorization code flow with PKCE and `state`, plus a `nonce` for OpenID
//! Connect), takes the code at its callback, and learns who signed in. Built in:
//! [`OidcProvider`] for any OpenID Connect provider (discovery, id_token validated against the
//! provider's JWKS), with [`OidcProvider::google`] preset, and [`GitHubProvider`] (OAuth App,
//! user API). Other providers implement [`IdentityProvider`].

use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ConfigError;
use crate::resource::parse_http_url;
use crate::validate::{BoxFuture, JwksValidator, TokenValidator};

/// Who signed in at an upstream provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UpstreamUser {
    /// The provider's stable identifier of the user (OpenID `sub`, GitHub's numeric id). The
    /// subject of our tokens is `{provider id}|{subject}`, so two providers never share one.
    pub subject: String,
    /// A name to show (login, email or display name), if the provider gave one.
    pub name: Option<String>,
    /// The user's groups at the provider (mapped to scopes by
    /// [`crate::server::AuthServerBuilder::groups`]).
    pub groups: Vec<String>,
}

impl UpstreamUser {
    /// A user with this provider-side subject, no name and no groups.
    pub fn new(subject: impl Into<String>) -> Self {
        UpstreamUser {
            subject: subject.into(),
            name: None,
            groups: Vec::new(),
        }
    }

    /// With a display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// With groups.
    #[must_use]
    pub fn with_groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, groups: I) -> Self {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }
}

/// The start of an upstream sign-in.
#[derive(Clone)]
pub struct UpstreamStart {
    /// Where the browser goes (the provider's authorization URL, carrying the given `state`).
    pub url: String,
    /// What [`IdentityProvider::finish`] needs back (PKCE verifier, nonce): kept in the store
    /// under the state, never sent to the browser.
    pub kept: String,
}

impl std::fmt::Debug for UpstreamStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamStart")
            .field("url", &self.url)
            .field("kept", &"<redacted>")
            .finish()
    }
}

/// Why an upstream sign-in failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The provider could not be reached or answered nonsense: try again later (502).
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused, or what it returned failed validation (403).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
}

/// An upstream identity provider users sign in with.
pub trait IdentityProvider: Send + Sync + 'static {
    /// A short id, used in the callback path (`/oauth/callback/{id}`) and as the prefix of
    /// subjects. Letters, digits, `-` and `_`.
    fn id(&self) -> &str;

    /// The name on the sign-in button.
    fn display_name(&self) -> &str;

    /// The provider's issuer identifier, if it has one: a callback whose RFC 9207 `iss`
    /// parameter names another issuer is refused (mix-up defence).
    fn issuer(&self) -> Option<&str> {
        None
    }

    /// Whether the provider promises `iss` in every authorization response (RFC 9207
    /// `authorization_response_iss_parameter_supported`): then a response without it is
    /// refused.
    fn requires_iss(&self) -> bool {
        false
    }

    /// Begins a sign-in: the URL to send the browser to, carrying `state`, and returning to
    /// `redirect_uri`.
    fn start<'a>(
        &'a self,
        redirect_uri: &'a str,
        state: &'a str,
    ) -> BoxFuture<'a, Result<UpstreamStart, UpstreamError>>;

    /// Completes a sign-in with the `code` the provider sent back, and what `start` kept.
    fn finish<'a>(
        &'a self,
        redirect_uri: &'a str,
        code: &'a str,
        kept: &'a str,
    ) -> BoxFuture<'a, Result<UpstreamUser, UpstreamError>>;
}

pub(crate) fn check_provider_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty()
        || id.len() > 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::InvalidPolicy(format!(
            "identity provider id `{id}` must be 1 to 32 letters, digits, `-` or `_`"
        )));
    }
    Ok(())
}

/// Token response fields beyond OAuth's: the OpenID Connect `id_token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

type CodeClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<IdTokenField, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What one code flow against a provider needs.
#[derive(Clone)]
struct CodeFlow {
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    http: reqwest::Client,
}

/// What `start` keeps for `finish`.
#[derive(Serialize, Deserialize)]
struct Kept {
    verifier: String,
    #[serde(default)]
    nonce: Option<String>,
}

impl CodeFlow {
    fn client(
        &self,
        authorize: &str,
        token: &str,
        redirect_uri: &str,
    ) -> Result<CodeClient, UpstreamError> {
        let bad = |e: oauth2::url::ParseError| UpstreamError::Unavailable(e.to_string());
        let mut client = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::new(authorize.to_owned()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(token.to_owned()).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).map_err(bad)?);
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        Ok(client)
    }

    fn start(
        &self,
        authorize: &str,
        token: &str,
        redirect_uri: &str,
        state: &str,
        nonce: Option<String>,
    ) -> Result<UpstreamStart, UpstreamError> {
        let client = self.client(authorize, token, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(|| CsrfToken::new(state.to_owned()))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge);
        if let Some(nonce) = &nonce {
            request = request.add_extra_param("nonce", nonce.clone());
        }
        let (url, _) = request.url();
        let kept = serde_json::to_string(&Kept {
            verifier: verifier.secret().clone(),
            nonce,
        })
        .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        Ok(UpstreamStart {
            url: url.into(),
            kept,
        })
    }

    async fn exchange(
        &self,
        authorize: &str,
        token: &str,
        redirect_uri: &str,
        code: &str,
        kept: &Kept,
    ) -> Result<StandardTokenResponse<IdTokenField, BasicTokenType>, UpstreamError> {
        let client = self.client(authorize, token, redirect_uri)?;
        let http = self.http.clone();
        let caller = move |request| crate::outbound::send(http.clone(), request);
        client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(kept.verifier.clone()))
            .request_async(&caller)
            .await
            .map_err(token_error)
    }
}

pub(crate) fn token_error<E: std::error::Error>(
    error: RequestTokenError<E, BasicErrorResponse>,
) -> UpstreamError {
    match error {
        RequestTokenError::ServerResponse(e) => UpstreamError::Refused(e.to_string()),
        // GitHub answers errors with 200 and an error object: that is a refusal too.
        RequestTokenError::Parse(_, body) => {
            match serde_json::from_slice::<BasicErrorResponse>(&body) {
                Ok(e) => UpstreamError::Refused(e.to_string()),
                Err(_) => UpstreamError::Unavailable("the token response is not understood".into()),
            }
        }
        RequestTokenError::Request(e) => UpstreamError::Unavailable(e.to_string()),
        RequestTokenError::Other(e) => UpstreamError::Unavailable(e),
    }
}

fn random() -> Result<String, UpstreamError> {
    super::primitives::random_token()
        .ok_or_else(|| UpstreamError::Unavailable("no randomness available".into()))
}

fn read_kept(kept: &str) -> Result<Kept, UpstreamError> {
    serde_json::from_str(kept)
        .map_err(|_| UpstreamError::Refused("the sign-in state is invalid".into()))
}

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
            .map_err(|e| unavailable(e.to_string()))?;
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
        .http_client(inner.flow.http.clone());
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

    /// Checks the configuration. Nothing is fetched until the first sign-in.
    pub fn build(mut self) -> Result<OidcProvider, ConfigError> {
        check_provider_id(&self.id)?;
        parse_http_url("issuer", &self.issuer, self.allow_insecure_http)?;
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
                http: crate::outbound::client(self.timeout)?,
            },
            groups_claim: self.groups_claim,
            allow_insecure_http: self.allow_insecure_http,
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

/// GitHub sign-in through an OAuth App (or GitHub Enterprise Server with
/// [`GitHubProvider::enterprise`]): the code flow with PKCE, then the user API. The subject is
/// GitHub's numeric user id (logins can be renamed); with [`GitHubProvider::org_groups`] the
/// user's organizations become groups (`read:org` scope).
///
/// ```
/// use tower_mcp_auth::server::{AuthServer, GitHubProvider};
///
/// let github = GitHubProvider::new("Iv1.0123456789abcdef", "oauth-app-secret")
///     .unwrap()
///     .org_groups(true);
/// let auth = AuthServer::builder("https://mcp.example.com")
///     .resource("https://mcp.example.com/mcp")
///     .identity_provider(github)
///     .build()
///     .unwrap();
/// # let _ = auth;
/// ```
#[derive(Clone)]
pub struct GitHubProvider {
    flow: CodeFlow,
    web: String,
    api: String,
    org_groups: bool,
}

impl std::fmt::Debug for GitHubProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubProvider")
            .field("web", &self.web)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct GitHubUser {
    id: u64,
    login: String,
}

#[derive(Deserialize)]
struct GitHubOrg {
    login: String,
}

impl GitHubProvider {
    /// github.com, with the OAuth App's client id and secret.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        Self::enterprise(
            "https://github.com",
            "https://api.github.com",
            client_id,
            client_secret,
        )
    }

    /// A GitHub Enterprise Server (`web` such as `https://github.acme.example`, `api` such as
    /// `https://github.acme.example/api/v3`).
    pub fn enterprise(
        web: impl Into<String>,
        api: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let (web, api) = (web.into(), api.into());
        parse_http_url("GitHub URL", &web, false)?;
        parse_http_url("GitHub API URL", &api, false)?;
        Ok(GitHubProvider {
            flow: CodeFlow {
                client_id: client_id.into(),
                client_secret: Some(client_secret.into()),
                scopes: vec!["read:user".into()],
                http: crate::outbound::client(Duration::from_secs(10))?,
            },
            web: web.trim_end_matches('/').to_owned(),
            api: api.trim_end_matches('/').to_owned(),
            org_groups: false,
        })
    }

    /// Makes the user's organizations (their logins) the user's groups; asks for `read:org`.
    #[must_use]
    pub fn org_groups(mut self, enabled: bool) -> Self {
        self.org_groups = enabled;
        self.flow.scopes = if enabled {
            vec!["read:user".into(), "read:org".into()]
        } else {
            vec!["read:user".into()]
        };
        self
    }

    fn endpoints(&self) -> (String, String) {
        (
            format!("{}/login/oauth/authorize", self.web),
            format!("{}/login/oauth/access_token", self.web),
        )
    }

    async fn api_get<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        token: &str,
    ) -> Result<T, UpstreamError> {
        let response = self
            .flow
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(UpstreamError::Refused(format!(
                "GitHub {path} answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(UpstreamError::Unavailable(format!(
                "GitHub {path} answered {status}"
            )));
        }
        let body = crate::outbound::read_capped(response, crate::outbound::MAX_OAUTH_RESPONSE)
            .await
            .map_err(UpstreamError::Unavailable)?;
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Unavailable(e.to_string()))
    }

    async fn finish_inner(
        &self,
        redirect_uri: &str,
        code: &str,
        kept: &str,
    ) -> Result<UpstreamUser, UpstreamError> {
        let kept = read_kept(kept)?;
        let (authorize, token) = self.endpoints();
        let response = self
            .flow
            .exchange(&authorize, &token, redirect_uri, code, &kept)
            .await?;
        let access = response.access_token().secret();
        let user: GitHubUser = self.api_get("/user", access).await?;
        let groups = if self.org_groups {
            self.api_get::<Vec<GitHubOrg>>("/user/orgs?per_page=100", access)
                .await?
                .into_iter()
                .map(|o| o.login)
                .collect()
        } else {
            Vec::new()
        };
        Ok(UpstreamUser {
            subject: user.id.to_string(),
            name: Some(user.login),
            groups,
        })
    }
}

impl IdentityProvider for GitHubProvider {
    fn id(&self) -> &str {
        "github"
    }

    fn display_name(&self) -> &str {
        "GitHub"
    }

    fn start<'a>(
        &'a self,
        redirect_uri: &'a str,
        state: &'a str,
    ) -> BoxFuture<'a, Result<UpstreamStart, UpstreamError>> {
        let (authorize, token) = self.endpoints();
        Box::pin(std::future::ready(self.flow.start(
            &authorize,
            &token,
            redirect_uri,
            state,
            None,
        )))
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

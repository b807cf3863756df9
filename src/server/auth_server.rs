//! The authorization server: configuration, and the routes that exist so far (metadata, JWKS,
//! dynamic registration of confidential clients, the token endpoint with the
//! `client_credentials` grant, revocation and introspection).

// Handlers return a `Response` on both arms of their helpers' `Result`s; boxing the error arm
// would add an allocation to every refusal for no gain.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::login::{DevUser, Session};
use super::source::{ClientAddress, ClientRegistration, PeerAddress, RegistrationPolicy};
use super::upstream::IdentityProvider;
use super::{PublicUrls, RingValidator, SigningKeys};
use crate::policy::GroupMapping;
use crate::resource::{canonical_audience, check_scope_token, parse_http_url};
use crate::store::{MemoryStore, Store};
use crate::validate::TokenValidator;
use crate::{ConfigError, Scopes};

/// Largest body any endpoint reads (form posts and registration documents are small).
const MAX_BODY: usize = 64 * 1024;
/// Dynamic registrations allowed per client address and hour, by default.
const DEFAULT_REGISTRATIONS_PER_HOUR: u64 = 20;

/// A registered client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Client {
    pub(super) client_id: String,
    /// SHA-256 of the secret (none for public clients): secrets are 256-bit random, so a fast
    /// hash is enough and the secret itself is never stored.
    pub(super) secret_sha256: Option<[u8; 32]>,
    pub(super) scope: String,
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) redirect_uris: Vec<String>,
    #[serde(default)]
    pub(super) grant_types: Vec<String>,
    /// Configured by the operator in code (`client`, `public_client`): its scope list is a
    /// ceiling. Never stored, so every client read from the store (self-registered) is not.
    #[serde(skip)]
    pub(super) configured: bool,
}

impl Client {
    /// What this client may ask for: a configured client its own list; a self-registered one
    /// (dynamic registration, metadata document) any scope the server supports. A client can
    /// register itself again with a wider `scope` at any time, so that self-declared list
    /// would be no security boundary, only a trap for step-up: what a user receives is decided
    /// by the user's own grants and consent.
    pub(super) fn scope_ceiling(&self, server: &AuthServer) -> Scopes {
        if self.configured {
            Scopes::from_space_separated(&self.scope)
        } else {
            Scopes::new(&server.0.scopes_supported)
        }
    }

    /// The scopes of a request for `requested`: the request itself if within the ceiling, the
    /// registered (recorded) scope if the request names none, `None` (`invalid_scope`) if it
    /// asks for more than the ceiling.
    pub(super) fn requested_scope(
        &self,
        server: &AuthServer,
        requested: Option<&str>,
    ) -> Option<Scopes> {
        match requested {
            None => Some(Scopes::from_space_separated(&self.scope)),
            Some(_) => self.scope_ceiling(server).narrow(requested),
        }
    }
}

/// An OAuth 2.1 authorization server for MCP resources. Cheap to clone.
///
/// Machine clients (configured with [`AuthServerBuilder::client`]) get `client_credentials`
/// tokens; once users can sign in ([`AuthServerBuilder::dev_user`],
/// [`AuthServerBuilder::identity_provider`]) the authorization code flow is served too, to
/// registered, pre-configured and metadata-document clients. The metadata advertises only
/// what is served.
///
/// ```
/// use tower_mcp_auth::server::AuthServer;
///
/// let auth = AuthServer::builder("https://mcp.example.com")
///     .resource("https://mcp.example.com/mcp")
///     .scopes_supported(["mcp:tools"])
///     .client("reporting-job", "a-long-random-secret-of-32-bytes!", ["mcp:tools"])
///     .build()
///     .unwrap();
/// let app: axum::Router = auth.router();
/// let validator = auth.validator("https://mcp.example.com/mcp").unwrap();
/// # let _ = (app, validator);
/// ```
#[derive(Clone)]
pub struct AuthServer(pub(super) Arc<Inner>);

pub(super) struct Inner {
    pub(super) urls: PublicUrls,
    pub(super) resources: Vec<String>,
    pub(super) scopes_supported: Vec<String>,
    pub(super) keys: SigningKeys,
    pub(super) store: Arc<dyn Store>,
    pub(super) clients: HashMap<String, Client>,
    pub(super) access_token_ttl: Duration,
    pub(super) refresh_token_ttl: Duration,
    pub(super) refresh_grace: Duration,
    metadata: Bytes,
    /// Dev login users.
    pub(super) users: Vec<DevUser>,
    /// Upstream identity providers users sign in with.
    pub(super) providers: Vec<Arc<dyn IdentityProvider>>,
    /// Groups → scopes; with it, users get only `user_scopes` and what their groups grant.
    groups: Option<GroupMapping>,
    user_scopes: Vec<String>,
    pub(super) prefill: Option<(String, String)>,
    pub(super) cookie_name: String,
    pub(super) pages: minijinja::Environment<'static>,
    pub(super) cimd_development: bool,
    client_address: Arc<dyn ClientAddress>,
    registration_limit: Option<(u64, Duration)>,
    registration_limit_loopback: bool,
    pub(super) registration_policy: Option<RegistrationPolicy>,
    #[cfg(feature = "atag")]
    pub(super) atag: Option<Arc<crate::atag::AtagState>>,
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("issuer", &self.0.urls.issuer())
            .field("resources", &self.0.resources)
            .finish_non_exhaustive()
    }
}

/// Builder of [`AuthServer`].
#[must_use]
pub struct AuthServerBuilder {
    base: String,
    resources: Vec<String>,
    scopes_supported: Vec<String>,
    keys: Option<SigningKeys>,
    store: Option<Arc<dyn Store>>,
    clients: Vec<(String, String, Vec<String>)>,
    public_clients: Vec<(String, Vec<String>, Vec<String>)>,
    users: Vec<(String, String, Vec<String>)>,
    providers: Vec<Arc<dyn IdentityProvider>>,
    groups: Option<GroupMapping>,
    user_scopes: Vec<String>,
    prefill: bool,
    access_token_ttl: Duration,
    refresh_token_ttl: Duration,
    refresh_grace: Duration,
    cimd_development: bool,
    client_address: Arc<dyn ClientAddress>,
    registration_limit: Option<(u64, Duration)>,
    registration_limit_loopback: bool,
    registration_policy: Option<RegistrationPolicy>,
    #[cfg(feature = "atag")]
    services: Vec<crate::atag::ExternalService>,
    #[cfg(feature = "atag")]
    vault_keys: Option<super::EncryptionKeys>,
}

impl std::fmt::Debug for AuthServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServerBuilder")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AuthServer {
    /// Starts a server whose issuer is the public base URL `base`.
    pub fn builder(base: impl Into<String>) -> AuthServerBuilder {
        AuthServerBuilder {
            base: base.into(),
            resources: Vec::new(),
            scopes_supported: Vec::new(),
            keys: None,
            store: None,
            clients: Vec::new(),
            public_clients: Vec::new(),
            users: Vec::new(),
            providers: Vec::new(),
            groups: None,
            user_scopes: Vec::new(),
            prefill: false,
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::from_secs(30),
            client_address: Arc::new(PeerAddress),
            registration_limit: Some((DEFAULT_REGISTRATIONS_PER_HOUR, Duration::from_secs(3600))),
            registration_limit_loopback: false,
            registration_policy: None,
            #[cfg(feature = "atag")]
            services: Vec::new(),
            #[cfg(feature = "atag")]
            vault_keys: None,
            cimd_development: false,
        }
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        self.0.urls.issuer()
    }

    /// The signing keys (to rotate them).
    pub fn signing_keys(&self) -> &SigningKeys {
        &self.0.keys
    }

    /// A validator for the access tokens this server issues for `resource`, for the bearer
    /// layer in front of that resource. It also refuses tokens revoked at `/oauth/revoke`.
    pub fn validator(&self, resource: &str) -> Result<RevocationAwareValidator, ConfigError> {
        let resource = canonical_audience(resource).into_owned();
        if !self.0.resources.contains(&resource) {
            return Err(ConfigError::InvalidPolicy(format!(
                "`{resource}` is not a resource of this authorization server"
            )));
        }
        Ok(RevocationAwareValidator {
            inner: self.0.keys.validator(self.issuer(), resource),
            store: self.0.store.clone(),
        })
    }

    /// The bearer layer for `resource` (a [`ProtectedResource`](crate::ProtectedResource) whose
    /// URI this server issues tokens for), validating this server's tokens. Shorthand for
    /// `BearerLayer::new(self.validator(resource.resource())?, resource.clone())`.
    ///
    /// ```
    /// use tower_mcp_auth::ProtectedResource;
    /// use tower_mcp_auth::server::AuthServer;
    ///
    /// let auth = AuthServer::builder("https://mcp.example.com")
    ///     .resource("https://mcp.example.com/mcp")
    ///     .dev_user("demo", "demo")
    ///     .build()
    ///     .unwrap();
    /// let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
    ///     .authorization_server(auth.issuer())
    ///     .build()
    ///     .unwrap();
    /// let layer = auth.bearer_layer(&resource).unwrap();
    /// # let _ = layer;
    /// ```
    pub fn bearer_layer(
        &self,
        resource: &crate::ProtectedResource,
    ) -> Result<crate::BearerLayer<RevocationAwareValidator>, ConfigError> {
        Ok(crate::BearerLayer::new(
            self.validator(resource.resource())?,
            resource.clone(),
        ))
    }

    /// The routes: `/.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`
    /// (with the path variants of an issuer with a path), `/oauth/jwks`, `/oauth/register`,
    /// `/oauth/token`, `/oauth/revoke`, `/oauth/introspect`, `/oauth/userinfo`; when users can
    /// sign in, also `/oauth/authorize`, `/oauth/login`, `/oauth/consent`,
    /// `/oauth/upstream/{provider}` and `/oauth/callback/{provider}`; with external services
    /// (feature `atag`), `/atag/connect/{service}`, `/atag/callback/{service}`,
    /// `GET /atag/connections` and `DELETE /atag/connections/{service}`. Bodies over 64 KiB get 413. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so per-address limits know the
    /// client.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let urls = &self.0.urls;
        // Endpoints browser-based clients (the MCP Inspector) call with fetch: CORS open to
        // any origin, without credentials (no cookies are involved in them).
        let mut api = axum::Router::new()
            .route(&urls.local_path("/oauth/jwks"), get(jwks))
            .route(&urls.local_path("/oauth/register"), post(register))
            .route(&urls.local_path("/oauth/token"), post(token))
            .route(&urls.local_path("/oauth/revoke"), post(revoke))
            .route(&urls.local_path("/oauth/introspect"), post(introspect))
            .route(&urls.local_path("/oauth/userinfo"), get(userinfo));
        for url in urls.discovery_urls() {
            let path = url::Url::parse(&url)
                .map(|u| u.path().to_owned())
                .unwrap_or_default();
            api = api.route(&path, get(metadata));
        }
        let api = api.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([http::Method::GET, http::Method::POST])
                .allow_headers(tower_http::cors::Any),
        );
        // Pages the browser navigates to: no CORS, cookies, strict headers.
        let mut router = api;
        if self.code_flow() {
            router = router
                .route(
                    &urls.local_path("/oauth/authorize"),
                    get(super::flow::authorize),
                )
                .route(&urls.local_path("/oauth/login"), post(super::login::login))
                .route(
                    &urls.local_path("/oauth/upstream/{provider}"),
                    post(super::login::upstream_start),
                )
                .route(
                    &urls.local_path("/oauth/callback/{provider}"),
                    get(super::login::upstream_callback),
                )
                .route(
                    &urls.local_path("/oauth/consent"),
                    post(super::flow::consent),
                );
        }
        #[cfg(feature = "atag")]
        if self.0.atag.is_some() {
            router = router
                .route(
                    &urls.local_path("/atag/connect/{service}"),
                    get(super::connect::connect),
                )
                .route(
                    &urls.local_path("/atag/callback/{service}"),
                    get(super::connect::callback),
                )
                .route(
                    &urls.local_path("/atag/connections"),
                    get(super::connect::connections),
                )
                .route(
                    &urls.local_path("/atag/connections/{service}"),
                    axum::routing::delete(super::connect::disconnect),
                );
        }
        router
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }
}

#[cfg(feature = "atag")]
impl AuthServer {
    /// The layer giving tools that need third-party services (per `policy`'s
    /// [`needs_service`](crate::policy::ToolPolicyBuilder::needs_service) rules) the user's
    /// token there, or challenging the client to connect. Fails if the policy names a service
    /// not registered with [`AuthServerBuilder::external_service`].
    ///
    /// ```
    /// use tower_mcp_auth::atag::ExternalService;
    /// use tower_mcp_auth::policy::ToolPolicy;
    /// use tower_mcp_auth::server::AuthServer;
    ///
    /// let auth = AuthServer::builder("https://mcp.example.com")
    ///     .resource("https://mcp.example.com/mcp")
    ///     .dev_user("demo", "demo")
    ///     .external_service(ExternalService::github("Iv1.0123", "secret"))
    ///     .build()
    ///     .unwrap();
    /// let policy = ToolPolicy::builder()
    ///     .default_scopes(["mcp:tools"])
    ///     .tool("github_*", ["mcp:tools"])
    ///     .needs_service("github", ["repo"])
    ///     .build()
    ///     .unwrap();
    /// let layer = auth.atag_layer(&policy).unwrap();
    /// # let _ = layer;
    /// ```
    pub fn atag_layer(
        &self,
        policy: &crate::policy::ToolPolicy,
    ) -> Result<crate::atag::AtagLayer, ConfigError> {
        let Some(state) = &self.0.atag else {
            return Err(ConfigError::InvalidPolicy(
                "no external service is registered".into(),
            ));
        };
        if let Some(unknown) = policy
            .service_ids()
            .into_iter()
            .find(|id| !state.services.contains_key(*id))
        {
            return Err(ConfigError::InvalidPolicy(format!(
                "the policy names service `{unknown}`, which is not registered"
            )));
        }
        Ok(crate::atag::AtagLayer::new(state.clone(), policy.clone()))
    }

    /// The third-party token vault, if services are registered.
    pub fn vault(&self) -> Option<&crate::atag::TokenVault> {
        self.0.atag.as_ref().map(|state| &state.vault)
    }
}

impl AuthServerBuilder {
    /// A resource (canonical URI of an MCP endpoint) this server issues tokens for.
    pub fn resource(mut self, uri: impl Into<String>) -> Self {
        self.resources.push(uri.into());
        self
    }

    /// The scopes clients may request. Self-registered clients (dynamic registration, client
    /// ID metadata documents) may ask for any of them, whatever `scope` they registered: that
    /// is recorded, not enforced, since a client can always register itself again with a
    /// wider one, and as a ceiling it would only stop step-up. What a user receives is decided
    /// by the user's own grants ([`AuthServerBuilder::groups`]) and consent.
    pub fn scopes_supported<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        scopes: I,
    ) -> Self {
        self.scopes_supported
            .extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Signing keys (default: one generated at start-up).
    pub fn signing_keys(mut self, keys: SigningKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Where state lives (default: a [`MemoryStore`]).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A pre-registered confidential client allowed `scopes` (an enforced ceiling: a request
    /// for more is `invalid_scope`). Secrets must have at least 32 characters.
    pub fn client<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        id: impl Into<String>,
        secret: impl Into<String>,
        scopes: I,
    ) -> Self {
        self.clients.push((
            id.into(),
            secret.into(),
            scopes.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// A pre-registered public client (PKCE, no secret) with its redirect URIs, allowed
    /// `scopes` (an enforced ceiling, unlike a self-registered client's `scope`).
    pub fn public_client<R, I>(mut self, id: impl Into<String>, redirect_uris: R, scopes: I) -> Self
    where
        R: IntoIterator,
        R::Item: Into<String>,
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.public_clients.push((
            id.into(),
            redirect_uris.into_iter().map(Into::into).collect(),
            scopes.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// A user of the embedded dev login (the default login: no outside service needed). Dev
    /// users or an identity provider enable the authorization code flow.
    pub fn dev_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into(), Vec::new()));
        self
    }

    /// A dev login user who belongs to `groups` (see [`AuthServerBuilder::groups`]).
    pub fn dev_user_in_groups<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        name: impl Into<String>,
        password: impl Into<String>,
        groups: I,
    ) -> Self {
        self.users.push((
            name.into(),
            password.into(),
            groups.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// An upstream identity provider users sign in with ([`super::OidcProvider`],
    /// [`super::GitHubProvider`], or your own). With one provider and no dev users, the
    /// authorization endpoint sends the browser straight to it; otherwise the sign-in page
    /// offers each. Subjects of its users are `{provider id}|{subject}`.
    pub fn identity_provider(mut self, provider: impl IdentityProvider) -> Self {
        self.providers.push(Arc::new(provider));
        self
    }

    /// Maps users' groups (from the identity provider, or of dev users) to the scopes they may
    /// be granted, with the policy model's [`GroupMapping`] (its `scopes` table). With a
    /// mapping, a user gets at most the [`AuthServerBuilder::user_scopes`] plus what their
    /// groups grant, whatever the client asks; without one, users may get any scope the client
    /// may.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use tower_mcp_auth::policy::GroupMapping;
    /// use tower_mcp_auth::server::AuthServer;
    ///
    /// let mapping = GroupMapping {
    ///     scopes: BTreeMap::from([("admins".to_owned(), vec!["notes:admin".to_owned()])]),
    ///     ..GroupMapping::default()
    /// };
    /// let auth = AuthServer::builder("http://127.0.0.1:8080")
    ///     .resource("http://127.0.0.1:8080/mcp")
    ///     .scopes_supported(["mcp:tools", "notes:admin"])
    ///     .dev_user_in_groups("alice", "pw", ["admins"])
    ///     .dev_user("bob", "pw")
    ///     .groups(mapping)
    ///     .user_scopes(["mcp:tools"])
    ///     .build()
    ///     .unwrap();
    /// # let _ = auth;
    /// ```
    pub fn groups(mut self, mapping: GroupMapping) -> Self {
        self.groups = Some(mapping);
        self
    }

    /// The scopes every user may be granted when a group mapping is set (default none).
    pub fn user_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.user_scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Prefills the dev login form with the first user (for demos: one click signs in).
    pub fn prefill_login(mut self, prefill: bool) -> Self {
        self.prefill = prefill;
        self
    }

    /// How long a rotated refresh token stays usable, until its successor is first used
    /// (default 30 s): clients retry after lost responses and refresh from two places.
    pub fn refresh_grace(mut self, grace: Duration) -> Self {
        self.refresh_grace = grace;
        self
    }

    /// Development mode for client ID metadata documents: plain http and loopback or private
    /// hosts are fetched too. Never in production: it opens the server to SSRF.
    pub fn allow_development_client_metadata(mut self) -> Self {
        self.cimd_development = true;
        self
    }

    /// How the address of a client is found, for per-source limits (default [`PeerAddress`]:
    /// the TCP peer, which needs `into_make_service_with_connect_info::<SocketAddr>()`). Behind
    /// a reverse proxy use [`super::TrustedProxies`]. Requests whose address cannot be told
    /// share one bucket.
    pub fn client_address(mut self, extractor: impl ClientAddress) -> Self {
        self.client_address = Arc::new(extractor);
        self
    }

    /// At most `max` dynamic registrations per client address in each window of `per`
    /// (default 20 per hour); beyond it, 429 with `Retry-After`. `None` lifts the limit.
    ///
    /// Clients on the server's own machine (a loopback address, with no `Forwarded`,
    /// `X-Forwarded-For` or `X-Real-IP` header) are not counted by default: a person who
    /// restarts a desktop client a few dozen times must not be locked out for an hour. A
    /// request relayed by a local reverse proxy carries such a header, so it is counted; behind
    /// a proxy, configure [`super::TrustedProxies`] so each client gets its own bucket. See
    /// [`AuthServerBuilder::registration_limit_loopback`].
    pub fn registration_limit(mut self, limit: Option<(u64, Duration)>) -> Self {
        self.registration_limit = limit;
        self
    }

    /// Whether the registration limit also counts loopback clients (default `false`: they are
    /// exempt, see [`AuthServerBuilder::registration_limit`]).
    pub fn registration_limit_loopback(mut self, count_loopback: bool) -> Self {
        self.registration_limit_loopback = count_loopback;
        self
    }

    /// A policy every new client must pass (dynamic registrations and client ID metadata
    /// documents alike), after the built-in checks: `Err(reason)` refuses it with
    /// `invalid_client_metadata`.
    ///
    /// ```
    /// use tower_mcp_auth::server::AuthServer;
    ///
    /// // Only client metadata documents from our own domain; registrations need a name.
    /// let auth = AuthServer::builder("https://mcp.example.com")
    ///     .resource("https://mcp.example.com/mcp")
    ///     .dev_user("demo", "demo")
    ///     .registration_policy(|client| match client.metadata_document {
    ///         Some(url) if !url.starts_with("https://apps.example.com/") => {
    ///             Err("unknown client publisher".into())
    ///         }
    ///         None if client.client_name.is_none() => Err("client_name is required".into()),
    ///         _ => Ok(()),
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = auth;
    /// ```
    pub fn registration_policy<F>(mut self, policy: F) -> Self
    where
        F: Fn(&ClientRegistration<'_>) -> Result<(), String> + Send + Sync + 'static,
    {
        self.registration_policy = Some(Arc::new(policy));
        self
    }

    /// A third-party service tools may act at for the user (feature `atag`): enables the
    /// `/atag/*` routes and [`AuthServer::atag_layer`].
    #[cfg(feature = "atag")]
    pub fn external_service(mut self, service: crate::atag::ExternalService) -> Self {
        self.services.push(service);
        self
    }

    /// The keys sealing the third-party token vault (default: one generated at start-up, so
    /// stored tokens die with the process; production deployments keep theirs). Separate from
    /// the signing keys: either rotates alone.
    #[cfg(feature = "atag")]
    pub fn vault_keys(mut self, keys: super::EncryptionKeys) -> Self {
        self.vault_keys = Some(keys);
        self
    }

    /// Lifetime of refresh tokens (default 30 days).
    pub fn refresh_token_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_token_ttl = ttl;
        self
    }

    /// Lifetime of access tokens (default 15 minutes).
    pub fn access_token_ttl(mut self, ttl: Duration) -> Self {
        self.access_token_ttl = ttl;
        self
    }

    /// Validates the configuration and prepares the metadata document.
    pub fn build(self) -> Result<AuthServer, ConfigError> {
        let urls = PublicUrls::new(&self.base)?;
        if self.resources.is_empty() {
            return Err(ConfigError::InvalidPolicy(
                "an authorization server needs a resource".into(),
            ));
        }
        let mut resources = Vec::new();
        for r in &self.resources {
            let url = parse_http_url("resource", r, false)?;
            resources.push(crate::resource::canonical_uri(&url));
        }
        for s in &self.scopes_supported {
            check_scope_token(s)?;
        }
        let mut clients = HashMap::new();
        for (id, secret, scopes) in self.clients {
            if secret.len() < 32 {
                return Err(ConfigError::InvalidKey(format!(
                    "the secret of client `{id}` is shorter than 32 characters"
                )));
            }
            for s in &scopes {
                check_scope_token(s)?;
            }
            let client = Client {
                client_id: id.clone(),
                secret_sha256: Some(Sha256::digest(secret.as_bytes()).into()),
                scope: scopes.join(" "),
                name: None,
                redirect_uris: Vec::new(),
                grant_types: vec!["client_credentials".into()],
                configured: true,
            };
            clients.insert(id, client);
        }
        for (id, redirect_uris, scopes) in self.public_clients {
            for uri in &redirect_uris {
                super::flow::check_redirect_uri(uri).map_err(|e| ConfigError::InvalidUrl {
                    what: "redirect URI",
                    url: uri.clone(),
                    reason: e.into(),
                })?;
            }
            let client = Client {
                client_id: id.clone(),
                secret_sha256: None,
                scope: scopes.join(" "),
                name: None,
                redirect_uris,
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                configured: true,
            };
            clients.insert(id, client);
        }
        let code_flow = !self.users.is_empty() || !self.providers.is_empty();
        for (name, _, _) in &self.users {
            // `|` separates provider and subject in upstream users' subjects.
            if name.is_empty() || name.contains('|') {
                return Err(ConfigError::InvalidPolicy(format!(
                    "dev user name `{name}` must be non-empty and free of `|`"
                )));
            }
            // Machine clients' tokens carry their client id as the subject (RFC 9068): a user
            // of that name would share its identity.
            if clients.contains_key(name) {
                return Err(ConfigError::InvalidPolicy(format!(
                    "dev user `{name}` has the name of a machine client"
                )));
            }
        }
        let mut provider_ids = std::collections::HashSet::new();
        for p in &self.providers {
            super::upstream::check_provider_id(p.id())?;
            if !provider_ids.insert(p.id().to_owned()) {
                return Err(ConfigError::InvalidPolicy(format!(
                    "two identity providers have the id `{}`",
                    p.id()
                )));
            }
        }
        let mut metadata = json!({
            "issuer": urls.issuer(),
            "token_endpoint": urls.endpoint("/oauth/token"),
            "jwks_uri": urls.endpoint("/oauth/jwks"),
            "registration_endpoint": urls.endpoint("/oauth/register"),
            "revocation_endpoint": urls.endpoint("/oauth/revoke"),
            "introspection_endpoint": urls.endpoint("/oauth/introspect"),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": self.scopes_supported,
        });
        if code_flow {
            // Advertised only when someone can log in to authorize.
            metadata["authorization_endpoint"] = json!(urls.endpoint("/oauth/authorize"));
            metadata["grant_types_supported"] =
                json!(["authorization_code", "refresh_token", "client_credentials"]);
            metadata["response_types_supported"] = json!(["code"]);
            metadata["response_modes_supported"] = json!(["query"]);
            metadata["authorization_response_iss_parameter_supported"] = json!(true);
            metadata["client_id_metadata_document_supported"] = json!(true);
            metadata["token_endpoint_auth_methods_supported"] =
                json!(["none", "client_secret_basic", "client_secret_post"]);
            // OpenID Connect: an `openid` scope adds an id_token to the code exchange.
            metadata["subject_types_supported"] = json!(["public"]);
            metadata["userinfo_endpoint"] = json!(urls.endpoint("/oauth/userinfo"));
            metadata["id_token_signing_alg_values_supported"] = json!(["ES256"]);
            metadata["claims_supported"] =
                json!(["iss", "sub", "aud", "exp", "iat", "nonce", "groups"]);
        }
        let users = self
            .users
            .iter()
            .map(|(name, password, groups)| DevUser {
                name: name.clone(),
                password_sha256: Sha256::digest(password.as_bytes()).into(),
                groups: groups.clone(),
            })
            .collect();
        // A prefilled form shows the password to every visitor: loopback issuers only.
        let loopback = url::Url::parse(urls.issuer())
            .ok()
            .is_some_and(|u| crate::resource::is_loopback(&u));
        let prefill = (self.prefill && loopback)
            .then(|| {
                self.users
                    .first()
                    .map(|(name, password, _)| (name.clone(), password.clone()))
            })
            .flatten();
        // Browsers key cookies by host, not port: two servers on 127.0.0.1 must not share a
        // cookie name, so the name carries a digest of the issuer.
        let digest = Sha256::digest(urls.issuer().as_bytes());
        let cookie_name = format!(
            "tma_session_{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        );
        let keys = match self.keys {
            Some(keys) => keys,
            None => SigningKeys::generate()?,
        };
        // A retired key must outlive every token it signed (plus validators' leeway).
        keys.ensure_retention(self.access_token_ttl + Duration::from_secs(300));
        let store: Arc<dyn Store> = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::default()));
        #[cfg(feature = "atag")]
        let atag = if self.services.is_empty() {
            None
        } else {
            let mut services = HashMap::new();
            for service in self.services {
                service.check()?;
                let id = service.id.clone();
                if services.insert(id.clone(), service).is_some() {
                    return Err(ConfigError::InvalidPolicy(format!(
                        "two external services have the id `{id}`"
                    )));
                }
            }
            let keys = match self.vault_keys {
                Some(keys) => keys,
                None => super::EncryptionKeys::generate("vault-1")?,
            };
            Some(Arc::new(crate::atag::AtagState::new(
                services,
                store.clone(),
                keys,
                urls.clone(),
                super::http_client(Duration::from_secs(10))?,
            )))
        };
        Ok(AuthServer(Arc::new(Inner {
            urls,
            resources,
            scopes_supported: self.scopes_supported,
            keys,
            store,
            clients,
            access_token_ttl: self.access_token_ttl,
            refresh_token_ttl: self.refresh_token_ttl,
            refresh_grace: self.refresh_grace,
            metadata: Bytes::from(metadata.to_string()),
            users,
            providers: self.providers,
            groups: self.groups,
            user_scopes: self.user_scopes,
            prefill,
            cookie_name,
            pages: super::flow::pages()?,
            cimd_development: self.cimd_development,
            client_address: self.client_address,
            registration_limit: self.registration_limit,
            registration_limit_loopback: self.registration_limit_loopback,
            registration_policy: self.registration_policy,
            #[cfg(feature = "atag")]
            atag,
        })))
    }
}

/// Validates our own access tokens and refuses those revoked at `/oauth/revoke`.
#[derive(Clone)]
pub struct RevocationAwareValidator {
    inner: RingValidator,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for RevocationAwareValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationAwareValidator")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl TokenValidator for RevocationAwareValidator {
    fn validate<'a>(
        &'a self,
        token: &'a str,
    ) -> crate::validate::BoxFuture<'a, Result<crate::AuthContext, crate::validate::TokenError>>
    {
        Box::pin(async move {
            let ctx = self.inner.validate(token).await?;
            if is_revoked(self.store.as_ref(), &ctx)
                .await
                .map_err(|e| crate::validate::TokenError::Unavailable(e.to_string()))?
            {
                return Err(crate::validate::TokenError::Inactive);
            }
            Ok(ctx)
        })
    }

    fn cache_ttl(&self) -> Option<Duration> {
        // Revocation must show within a bounded time despite the bearer layer's cache.
        Some(Duration::from_secs(30))
    }
}

/// Whether the token's id or its grant family was revoked.
pub(super) async fn is_revoked(
    store: &dyn Store,
    ctx: &crate::AuthContext,
) -> Result<bool, crate::store::StoreError> {
    for (claim, prefix) in [("jti", "revoked:"), ("fid", "revoked-family:")] {
        if let Some(id) = ctx.claim(claim).and_then(Value::as_str)
            && store.get(&format!("{prefix}{id}")).await?.is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// An RFC 6749 §5.2 error response.
pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    no_store(response.headers_mut());
    response
}

pub(super) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

async fn metadata(State(server): State<AuthServer>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        server.0.metadata.clone(),
    )
        .into_response()
}

async fn jwks(State(server): State<AuthServer>) -> Response {
    (
        [
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        axum::Json(server.0.keys.jwks()),
    )
        .into_response()
}

/// How a request authenticated its client.
pub(super) enum ClientAuth {
    Basic,
    Post,
}

impl AuthServer {
    pub(super) async fn lookup_client(&self, id: &str) -> Result<Option<Client>, Response> {
        if let Some(client) = self.0.clients.get(id) {
            return Ok(Some(client.clone()));
        }
        if self.code_flow() && super::cimd::is_document_id(id) {
            return match self.document_client(id).await {
                Ok(client) => Ok(client),
                Err(reason) => {
                    tracing::info!(target: crate::bearer::policy::AUDIT, client_id = %id, %reason, "client metadata document refused");
                    Ok(None)
                }
            };
        }
        super::flow::load(self, &format!("client:{id}"), false).await
    }

    /// Client authentication (`client_secret_basic` or `client_secret_post`, not both), with
    /// the secret compared in constant time. Failures are 401 `invalid_client`, with a Basic
    /// challenge where Basic was used (RFC 6749 §5.2).
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<(Client, ClientAuth), Response> {
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, creds)| creds.trim());
        let (id, secret, how) = match (basic, form.get("client_id"), form.get("client_secret")) {
            (Some(_), _, Some(_)) => {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "use one client authentication method",
                ));
            }
            (Some(creds), _, None) => {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(creds)
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok());
                let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                    return Err(invalid_client(true));
                };
                let decode = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                };
                match (decode(id), decode(secret)) {
                    (Some(id), Some(secret)) => (id, secret, ClientAuth::Basic),
                    _ => return Err(invalid_client(true)),
                }
            }
            (None, Some(id), Some(secret)) => (id.clone(), secret.clone(), ClientAuth::Post),
            (None, _, _) => return Err(invalid_client(false)),
        };
        let basic = matches!(how, ClientAuth::Basic);
        let client = self.lookup_client(&id).await?;
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        match client {
            Some(client)
                if client
                    .secret_sha256
                    .is_some_and(|stored| bool::from(presented.ct_eq(&stored))) =>
            {
                Ok((client, how))
            }
            _ => {
                tracing::info!(target: crate::bearer::policy::AUDIT, client_id = %id, "client authentication failed");
                Err(invalid_client(basic))
            }
        }
    }
}

pub(super) fn invalid_client(basic: bool) -> Response {
    let mut response = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    if basic {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"oauth\""),
        );
    }
    response
}

async fn token(State(server): State<AuthServer>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match parse_form(&body) {
        Ok(form) => form,
        Err(response) => return response,
    };
    let grant = form.get("grant_type").map(String::as_str);
    if matches!(grant, Some("authorization_code" | "refresh_token")) && server.code_flow() {
        return super::flow::user_grant(&server, &headers, &form).await;
    }
    let (client, _) = match server.authenticate(&headers, &form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match grant {
        Some("client_credentials")
            if client.grant_types.iter().any(|g| g == "client_credentials") => {}
        Some("client_credentials") => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "this client may not use client_credentials",
            );
        }
        Some("authorization_code" | "refresh_token") => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "this server issues client_credentials tokens only",
            );
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "unknown grant_type",
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            );
        }
    }
    // RFC 8707: the resource the token is for; with one resource, it may be left out.
    let resource = match form.get("resource") {
        Some(r) => canonical_audience(r).into_owned(),
        None if server.0.resources.len() == 1 => server.0.resources[0].clone(),
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource is required",
            );
        }
    };
    if !server.0.resources.contains(&resource) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "this server issues no tokens for that resource",
        );
    }
    let Some(scope) = client.requested_scope(&server, form.get("scope").map(String::as_str)) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the client may not request these scopes",
        );
    };
    let ttl = server.0.access_token_ttl.as_secs();
    let access_token = match server.mint_access_token(
        &client.client_id,
        &client.client_id,
        &resource,
        &scope,
        None,
    ) {
        Ok(token) => token,
        Err(response) => return response,
    };
    tracing::info!(target: crate::bearer::policy::AUDIT, client_id = %client.client_id, scope = %scope, resource = %resource, "access token issued (client_credentials)");
    let mut response = axum::Json(json!({
        "access_token": access_token, "token_type": "Bearer", "expires_in": ttl, "scope": scope.to_string(),
    }))
    .into_response();
    no_store(response.headers_mut());
    response
}

impl AuthServer {
    /// Whether users can sign in (dev users or an identity provider): the authorization code
    /// flow is served.
    pub(super) fn code_flow(&self) -> bool {
        !self.0.users.is_empty() || !self.0.providers.is_empty()
    }

    /// `requested` narrowed to what this user may be granted (see
    /// [`AuthServerBuilder::groups`]). `openid` is an identity request, not a permission: it
    /// is never removed.
    pub(super) fn user_scope(&self, session: &Session, requested: &str) -> String {
        let Some(mapping) = &self.0.groups else {
            return requested.to_owned();
        };
        let granted_by_groups = session
            .groups
            .iter()
            .filter_map(|g| mapping.scopes.get(g))
            .flatten();
        let allowed: std::collections::HashSet<&str> = self
            .0
            .user_scopes
            .iter()
            .chain(granted_by_groups)
            .map(String::as_str)
            .chain(["openid"])
            .collect();
        Scopes::from_space_separated(requested)
            .iter()
            .filter(|s| allowed.contains(s))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Signs an OpenID Connect id_token for `client_id`.
    pub(super) fn mint_id_token(
        &self,
        subject: &str,
        client_id: &str,
        nonce: Option<&str>,
        groups: &[String],
    ) -> Result<String, Response> {
        let issued_at = now();
        let mut claims = json!({
            "iss": self.issuer(), "sub": subject, "aud": client_id,
            "iat": issued_at, "exp": issued_at + self.0.access_token_ttl.as_secs(),
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        if !groups.is_empty() {
            claims["groups"] = json!(groups);
        }
        self.0.keys.sign(&claims, "JWT").map_err(|e| {
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            )
        })
    }

    /// Signs an access token (RFC 9068): `aud` is the resource, `fid` the grant family a
    /// replayed code or refresh token revokes.
    pub(super) fn mint_access_token(
        &self,
        subject: &str,
        client_id: &str,
        resource: &str,
        scope: &Scopes,
        family: Option<&str>,
    ) -> Result<String, Response> {
        let issued_at = now();
        let Some(jti) = random_token() else {
            return Err(rng_failure());
        };
        let mut claims = json!({
            "iss": self.issuer(), "sub": subject, "client_id": client_id,
            "aud": resource, "scope": scope.to_string(), "iat": issued_at,
            "exp": issued_at + self.0.access_token_ttl.as_secs(), "jti": jti,
        });
        if let Some(family) = family {
            claims["fid"] = json!(family);
        }
        self.0.keys.sign(&claims, "at+jwt").map_err(|e| {
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            )
        })
    }
}

/// A 256-bit random value, base64url: token ids and client secrets. `None` if the system RNG
/// fails, which callers answer with 500: never a predictable value in its place.
pub(crate) fn random_token() -> Option<String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub(super) fn rng_failure() -> Response {
    oauth_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "no randomness available",
    )
}

/// A form parameter the request must carry, or RFC 6749 `invalid_request`.
pub(super) fn required<'a>(
    form: &'a HashMap<String, String>,
    name: &str,
) -> Result<&'a String, Response> {
    form.get(name).ok_or_else(|| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{name} is required"),
        )
    })
}

pub(super) fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, Response> {
    let mut form = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        // RFC 6749 §3.2: parameters must not be repeated.
        if form.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a parameter is repeated",
            ));
        }
    }
    Ok(form)
}

#[derive(Deserialize)]
struct RegistrationBody {
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
    #[serde(default)]
    response_types: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    application_type: Option<String>,
}

/// How long a registered client that never obtained a grant is kept.
pub(super) const UNUSED_REGISTRATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// RFC 7591 dynamic registration of public or confidential `authorization_code` clients (machine
/// clients are configured, never self-registered). Redirect URIs must be https or loopback http,
/// without fragments; `application_type` `web` clients may not use loopback redirects. The
/// registration policy sees every valid request; each client address gets a limited number of
/// registrations per window. A registration never used expires after a day; one with a grant
/// lives as long as its refresh tokens.
async fn register(
    State(server): State<AuthServer>,
    parts: http::request::Parts,
    body: Bytes,
) -> Response {
    let invalid = |msg: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", msg);
    let bad_redirect =
        |msg: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", msg);
    let Ok(request) = serde_json::from_slice::<RegistrationBody>(&body) else {
        return invalid("the registration request is not a valid JSON document");
    };
    // RFC 7591 §2: grant_types defaults to authorization_code.
    let mut grant_types = request
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into()]);
    if grant_types.iter().any(|g| g == "client_credentials") {
        // Open registration of machine clients would hand anyone tokens with no user in the
        // loop: machine clients are configured (`AuthServerBuilder::client`) only.
        return invalid("client_credentials clients cannot register themselves here");
    }
    let interactive = grant_types
        .iter()
        .all(|g| g == "authorization_code" || g == "refresh_token")
        && grant_types.iter().any(|g| g == "authorization_code");
    if !(interactive && server.code_flow()) {
        return invalid("unsupported grant_types for this server");
    }
    if request
        .response_types
        .as_ref()
        .is_some_and(|r| r.iter().any(|t| t != "code"))
    {
        return invalid("response_types may only be [\"code\"]");
    }
    let redirect_uris = request.redirect_uris.unwrap_or_default();
    if redirect_uris.is_empty() || redirect_uris.len() > 10 {
        return bad_redirect("between 1 and 10 redirect_uris are required");
    }
    let mut loopback = false;
    for uri in &redirect_uris {
        match super::flow::check_redirect_uri(uri) {
            Ok(url) => loopback |= url.scheme() == "http",
            Err(e) => return bad_redirect(e),
        }
    }
    let application_type = request.application_type.as_deref().unwrap_or("native");
    match application_type {
        "native" => {}
        "web" if loopback => {
            return bad_redirect("web applications may not use loopback http redirect URIs");
        }
        "web" => {}
        _ => return invalid("application_type must be native or web"),
    }
    let method = request
        .token_endpoint_auth_method
        .as_deref()
        .unwrap_or("none");
    let confidential = match method {
        "client_secret_basic" | "client_secret_post" => true,
        "none" => false,
        _ => return invalid("unsupported token_endpoint_auth_method"),
    };
    let Some(scope) = Scopes::new(&server.0.scopes_supported).narrow(request.scope.as_deref())
    else {
        return invalid("scope holds scopes this server does not support");
    };
    if request.client_name.as_ref().is_some_and(|n| n.len() > 200) {
        return invalid("client_name is too long");
    }
    if !grant_types.iter().any(|g| g == "refresh_token") {
        grant_types.push("refresh_token".into());
    }
    let scope = scope.to_string();
    let source = server.0.client_address.client_address(&parts);
    if let Some(policy) = &server.0.registration_policy {
        let registration = ClientRegistration {
            client_name: request.client_name.as_deref(),
            redirect_uris: &redirect_uris,
            grant_types: &grant_types,
            scope: &scope,
            confidential,
            source,
            metadata_document: None,
        };
        if let Err(reason) = policy(&registration) {
            tracing::info!(target: crate::bearer::policy::AUDIT, ?source, %reason, "registration refused by policy");
            return invalid(&reason);
        }
    }
    // Counted only for requests that would register: invalid ones store nothing.
    if let Some((max, per)) = server.0.registration_limit
        && (server.0.registration_limit_loopback || !local_client(source, &parts.headers))
    {
        let (started, period) = (now(), per.as_secs().max(1));
        let window = started / period;
        // An IPv6 client holds a whole /64 (rotating within it is free): that is its bucket.
        let bucket = match source.map(|ip| ip.to_canonical()) {
            Some(std::net::IpAddr::V6(ip)) => {
                let [a, b, c, d, ..] = ip.segments();
                format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
            }
            Some(ip) => ip.to_string(),
            None => "unknown".to_owned(),
        };
        let key = format!("regcount:{bucket}:{window}");
        match server.0.store.increment(&key, per).await {
            Ok(count) if count > max => {
                tracing::warn!(target: crate::bearer::policy::AUDIT, source = %bucket, "registration limit reached");
                let retry_after = ((window + 1) * period).saturating_sub(started);
                let mut response = oauth_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "temporarily_unavailable",
                    "too many registrations from this address; try again later",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
                return response;
            }
            Ok(_) => {}
            Err(e) => {
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    &e.to_string(),
                );
            }
        }
    }
    let (Some(id_part), Some(secret)) = (random_token(), random_token()) else {
        return rng_failure();
    };
    let client_id = format!("app-{id_part}");
    let client = Client {
        client_id: client_id.clone(),
        secret_sha256: confidential.then(|| Sha256::digest(secret.as_bytes()).into()),
        scope: scope.clone(),
        name: request.client_name.clone(),
        redirect_uris: redirect_uris.clone(),
        grant_types: grant_types.clone(),
        configured: false,
    };
    let stored = match serde_json::to_vec(&client) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            );
        }
    };
    match server
        .0
        .store
        .put_if_absent(
            &format!("client:{client_id}"),
            stored,
            UNUSED_REGISTRATION_TTL,
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "client id collision",
            );
        }
        Err(e) => {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            );
        }
    }
    tracing::info!(target: crate::bearer::policy::AUDIT, client_id = %client_id, ?source, "client registered");
    let mut document = json!({
        "client_id": client_id, "client_id_issued_at": now(),
        "grant_types": grant_types, "token_endpoint_auth_method": method,
        "scope": scope, "client_name": request.client_name,
        "redirect_uris": redirect_uris, "response_types": ["code"],
        "application_type": application_type,
    });
    if confidential {
        // Returned once; only its hash is kept.
        document["client_secret"] = json!(secret);
        document["client_secret_expires_at"] = json!(0);
    }
    let mut response = (StatusCode::CREATED, axum::Json(document)).into_response();
    no_store(response.headers_mut());
    response
}

/// A client on this machine: a loopback address, and no sign of a proxy relaying someone else.
fn local_client(source: Option<std::net::IpAddr>, headers: &HeaderMap) -> bool {
    source.is_some_and(|ip| ip.to_canonical().is_loopback())
        && !["forwarded", "x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|name| headers.contains_key(*name))
}

impl AuthServer {
    /// Keeps a dynamically registered client as long as a grant of it may live.
    pub(super) async fn keep_client(&self, client: &Client) {
        if self.0.clients.contains_key(&client.client_id) {
            return;
        }
        if let Ok(bytes) = serde_json::to_vec(client) {
            let key = format!("client:{}", client.client_id);
            let _ = self
                .0
                .store
                .put(&key, Bytes::from(bytes), self.0.refresh_token_ttl)
                .await;
        }
    }
}

/// Reads one of our access tokens for revocation or introspection, whatever its audience.
pub(super) async fn own_token(server: &AuthServer, token: &str) -> Option<crate::AuthContext> {
    for resource in &server.0.resources {
        if let Ok(ctx) = server
            .0
            .keys
            .validator(server.issuer(), resource.as_str())
            .validate(token)
            .await
        {
            return Some(ctx);
        }
    }
    None
}

async fn revoke(State(server): State<AuthServer>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match parse_form(&body) {
        Ok(form) => form,
        Err(response) => return response,
    };
    let client = match super::flow::grant_client(&server, &headers, &form).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let token = match required(&form, "token") {
        Ok(token) => token,
        Err(response) => return response,
    };
    // A refresh token revokes its whole grant family (and so the access tokens issued in it).
    match super::flow::revoke_refresh_token(&server, &client, token).await {
        Ok(true) => {
            let mut response = StatusCode::OK.into_response();
            no_store(response.headers_mut());
            return response;
        }
        Ok(false) => {}
        Err(response) => return response,
    }
    // RFC 7009 §2.2: an unknown, invalid or foreign token is answered 200 all the same.
    if let Some(ctx) = own_token(&server, token).await
        && ctx.client_id() == Some(client.client_id.as_str())
        && let Some(jti) = ctx.claim("jti").and_then(Value::as_str)
    {
        let left = ctx
            .expires_at()
            .and_then(|exp| exp.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        if let Err(e) = server
            .0
            .store
            .put(
                &format!("revoked:{jti}"),
                Bytes::from_static(b"1"),
                left + Duration::from_secs(60),
            )
            .await
        {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            );
        }
        tracing::info!(target: crate::bearer::policy::AUDIT, client_id = %client.client_id, jti, "access token revoked");
    }
    let mut response = StatusCode::OK.into_response();
    no_store(response.headers_mut());
    response
}

/// The caller of an endpoint that takes this server's own access tokens (`Authorization:
/// Bearer`): valid for one of our resources and not revoked, or a 401 with a Bearer challenge.
pub(super) async fn bearer_caller(
    server: &AuthServer,
    headers: &HeaderMap,
) -> Result<crate::AuthContext, Response> {
    let unauthorized = |description: &str| {
        let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        response
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("a bearer token is required"))?;
    let ctx = own_token(server, token)
        .await
        .ok_or_else(|| unauthorized("the access token is not valid"))?;
    match is_revoked(server.0.store.as_ref(), &ctx).await {
        Ok(false) => Ok(ctx),
        Ok(true) => Err(unauthorized("the access token was revoked")),
        Err(e) => Err(oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &e.to_string(),
        )),
    }
}

/// `GET /oauth/userinfo` (OpenID Connect Core §5.3): who the access token belongs to.
async fn userinfo(State(server): State<AuthServer>, headers: HeaderMap) -> Response {
    match bearer_caller(&server, &headers).await {
        Ok(ctx) => {
            let mut response = axum::Json(json!({"sub": ctx.subject()})).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(response) => response,
    }
}

async fn introspect(State(server): State<AuthServer>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match parse_form(&body) {
        Ok(form) => form,
        Err(response) => return response,
    };
    match server.authenticate(&headers, &form).await {
        // Introspection tells who a token belongs to: only clients configured in code (the
        // resource servers), never self-registered ones.
        Ok((client, _)) if server.0.clients.contains_key(&client.client_id) => {}
        Ok(_) => {
            return oauth_error(
                StatusCode::FORBIDDEN,
                "unauthorized_client",
                "this client may not introspect tokens",
            );
        }
        Err(response) => return response,
    }
    let token = match required(&form, "token") {
        Ok(token) => token,
        Err(response) => return response,
    };
    let mut answer = json!({"active": false});
    if let Some(ctx) = own_token(&server, token).await {
        let revoked = match is_revoked(server.0.store.as_ref(), &ctx).await {
            Ok(revoked) => revoked,
            Err(e) => {
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    &e.to_string(),
                );
            }
        };
        if !revoked {
            answer = Value::Object(ctx.claims().clone());
            answer["active"] = Value::Bool(true);
            answer["token_type"] = Value::from("Bearer");
        }
    }
    let mut response = axum::Json(answer).into_response();
    no_store(response.headers_mut());
    response
}

//! The [`AuthServer`] handle: its shared state, the router that mounts every endpoint, and the
//! layers and validators it hands to the resource server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;

use super::clients::Client;
use super::config::AuthServerBuilder;
use super::introspect::introspect;
use super::login::DevUser;
use super::metadata::{jwks, metadata};
use super::primitives::MAX_BODY;
use super::registration::register;
use super::revocation::{RevocationAwareValidator, revoke};
use super::revocation_list::RevocationList;
use super::source::RegistrationPolicy;
use super::token::token;
use super::upstream::IdentityProvider;
use super::userinfo::userinfo;
use super::{PublicUrls, SigningKeys};
use crate::ConfigError;
use crate::address::ClientAddress;
use crate::policy::GroupMapping;
use crate::resource::canonical_audience;
use crate::store::Store;

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
    pub(super) keys: SigningKeys,
    pub(super) store: Arc<dyn Store>,
    pub(super) grants: Grants,
    pub(super) registry: Registry,
    pub(super) sign_in: SignIn,
    pub(super) pages: super::pages::Pages,
    pub(super) metadata: Metadata,
    pub(super) revocations: Arc<RevocationList>,
    /// Host names the routes answer to (lower case, no port).
    pub(super) hosts: Vec<String>,
}

/// What this server issues tokens for, and how long they live.
pub(super) struct Grants {
    /// The resources (RFC 8707 audiences) tokens are issued for.
    pub(super) resources: Vec<String>,
    pub(super) scopes_supported: Vec<String>,
    pub(super) access_token_ttl: Duration,
    pub(super) refresh_token_ttl: Duration,
    /// How long a rotated refresh token may be retried (a lost response).
    pub(super) refresh_grace: Duration,
    /// How token requests' DPoP proofs are checked.
    pub(super) dpop: crate::dpop::Dpop,
    /// Enterprise IdPs whose ID-JAGs are redeemed here.
    pub(super) enterprise: Vec<super::enterprise::TrustedIdp>,
    /// Authorization servers this one issues ID-JAGs for.
    pub(super) id_jag_audiences: Vec<super::enterprise::IdJagAudience>,
}

/// Who the clients are and who may become one.
pub(super) struct Registry {
    /// Clients configured in code (machine clients and pre-registered apps).
    pub(super) clients: HashMap<String, Client>,
    /// Client ID metadata documents may be served over http from loopback (development).
    pub(super) cimd_development: bool,
    pub(super) client_address: Arc<dyn ClientAddress>,
    /// Registrations per client address and window.
    pub(super) registration_limit: Option<(u64, Duration)>,
    /// Loopback clients are not counted by the registration limit (a loopback issuer only).
    pub(super) exempt_local_registrations: bool,
    pub(super) registration_policy: Option<RegistrationPolicy>,
}

/// How users sign in, and what their sign-in grants.
pub(super) struct SignIn {
    /// Dev login users.
    pub(super) users: Vec<DevUser>,
    /// Upstream identity providers users sign in with.
    pub(super) providers: Vec<Arc<dyn IdentityProvider>>,
    /// Groups → scopes; with it, users get only `user_scopes` and what their groups grant.
    pub(super) groups: Option<GroupMapping>,
    pub(super) user_scopes: Vec<String>,
    /// The dev login form's prefilled user name and password (the quickstart's demo user).
    pub(super) prefill: Option<(String, String)>,
    pub(super) cookie_name: String,
    /// Scope → what it lets a client do, for the consent page.
    pub(super) scope_descriptions: HashMap<String, String>,
}

/// The RFC 8414 metadata document, serialized once.
#[derive(Clone)]
pub(super) struct Metadata(pub(super) Bytes);

impl FromRef<AuthServer> for Metadata {
    fn from_ref(server: &AuthServer) -> Self {
        server.0.metadata.clone()
    }
}

impl FromRef<AuthServer> for SigningKeys {
    fn from_ref(server: &AuthServer) -> Self {
        server.0.keys.clone()
    }
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("issuer", &self.0.urls.issuer())
            .field("resources", &self.0.grants.resources)
            .finish_non_exhaustive()
    }
}

impl AuthServer {
    /// Starts a server whose issuer is the public base URL `base`.
    pub fn builder(base: impl Into<String>) -> AuthServerBuilder {
        AuthServerBuilder::new(base.into())
    }

    /// The store everything this server knows lives in.
    /// The upstream identity providers users sign in with.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn identity_providers(&self) -> &[Arc<dyn super::IdentityProvider>] {
        &self.sign_in().providers
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    /// The server's public URLs.
    pub(crate) fn urls(&self) -> &PublicUrls {
        &self.0.urls
    }

    pub(super) fn dpop(&self) -> &crate::dpop::Dpop {
        &self.grants().dpop
    }

    pub(super) fn grants(&self) -> &Grants {
        &self.0.grants
    }

    pub(super) fn registry(&self) -> &Registry {
        &self.0.registry
    }

    pub(super) fn sign_in(&self) -> &SignIn {
        &self.0.sign_in
    }

    pub(super) fn pages(&self) -> &super::pages::Pages {
        &self.0.pages
    }

    pub(super) fn revocations(&self) -> &Arc<RevocationList> {
        &self.0.revocations
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
        if !self.0.grants.resources.contains(&resource) {
            return Err(ConfigError::InvalidServer(format!(
                "`{resource}` is not a resource of this authorization server"
            )));
        }
        Ok(RevocationAwareValidator::new(
            self.0.keys.validator(self.issuer(), resource),
            self.0.store.clone(),
            self.0.revocations.clone(),
        ))
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
    /// `/oauth/upstream/{provider}` and `/oauth/callback/{provider}` (the ATAG routes come from
    /// [`Atag::router`](crate::atag::Atag::router)). Bodies over 64 KiB get 413. Serve it with
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
                .allow_headers(tower_http::cors::Any)
                // A browser client must read the nonce a `use_dpop_nonce` answer carries.
                .expose_headers([crate::wire::DPOP_NONCE]),
        );
        // Pages the browser navigates to: no CORS, cookies, strict headers.
        let mut router = api;
        if self.code_flow() {
            router = router
                .route(
                    &urls.local_path("/oauth/authorize"),
                    get(super::authorize::authorize),
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
                    post(super::consent::consent),
                );
        }
        router
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                only_own_hosts,
            ))
            .with_state(self.clone())
    }
}

/// Refuses requests whose `Host` (or HTTP/2 authority) names a host this server is not: DNS
/// rebinding would otherwise let a page on an attacker's name read our pages (the sign-in form
/// with its prefilled demo password) from the victim's browser. 421 Misdirected Request.
async fn only_own_hosts(
    axum::extract::State(server): axum::extract::State<AuthServer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Borrowed from the request: no allocation on the way through.
    let authority = request.uri().authority().map(|a| a.as_str()).or_else(|| {
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let own = authority
        .map(host_of)
        .is_some_and(|host| server.0.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)));
    if own {
        return next.run(request).await;
    }
    tracing::warn!(target: crate::audit::TARGET, decision = "deny", host = ?authority, "request for another host refused");
    let mut response = crate::challenge::json_error(
        http::StatusCode::MISDIRECTED_REQUEST,
        "invalid_request",
        "this server does not serve that host",
    )
    .into_response();
    super::error::no_store(response.headers_mut());
    response
}

/// The host name of an authority (`host[:port]`, `[v6]:port`), without the port.
fn host_of(authority: &str) -> &str {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

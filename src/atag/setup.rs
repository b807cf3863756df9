//! [`Atag`]: the third-party services of an authorization server, their token vault, the
//! `/atag/*` routes that connect a user's account, and the layer that hands tools the token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{delete, get};

use super::routes;
use super::{AtagLayer, AtagState, ExternalService, TokenVault};
use crate::ConfigError;
use crate::policy::ToolPolicy;
use crate::server::{AuthServer, EncryptionKeys};

/// Largest body an ATAG route reads.
const MAX_BODY: usize = 64 * 1024;

/// ATAG on an [`AuthServer`]: tools that need a third-party service get the signed-in user's
/// token there. The connect routes rely on the authorization server's sign-in (the person who
/// opens a connect link must be the user who called the tool), so ATAG is built on one. Cheap
/// to clone.
///
/// ```
/// use tower_mcp_auth::atag::{Atag, ExternalService};
/// use tower_mcp_auth::policy::ToolPolicy;
/// use tower_mcp_auth::server::AuthServer;
///
/// let auth = AuthServer::builder("https://mcp.example.com")
///     .resource("https://mcp.example.com/mcp")
///     .dev_user("demo", "demo")
///     .build()
///     .unwrap();
/// let atag = Atag::builder(&auth)
///     .service(ExternalService::github("Iv1.0123", "secret"))
///     .build()
///     .unwrap();
/// let policy = ToolPolicy::builder()
///     .default_scopes(["mcp:tools"])
///     .tool("github_*", ["mcp:tools"])
///     .needs_service("github", ["repo"])
///     .build()
///     .unwrap();
/// let layer = atag.layer(&policy).unwrap(); // inside the policy layer
/// let routes: axum::Router = auth.router().merge(atag.router());
/// # let _ = (layer, routes);
/// ```
#[derive(Clone, Debug)]
pub struct Atag {
    pub(crate) auth: AuthServer,
    pub(crate) state: Arc<AtagState>,
}

impl Atag {
    /// Starts ATAG on `auth`.
    pub fn builder(auth: &AuthServer) -> AtagBuilder {
        AtagBuilder {
            auth: auth.clone(),
            services: Vec::new(),
            vault_keys: None,
            addresses: crate::address::AddressPolicy::default(),
        }
    }

    /// The layer giving tools that need third-party services (per `policy`'s
    /// [`needs_service`](crate::policy::ToolPolicyBuilder::needs_service) rules) the user's
    /// token there, or challenging the client to connect. Place it inside the policy layer
    /// built from the same `policy` value: that is what lets the policy layer offer those tools.
    /// Fails if the policy names a service not registered here.
    pub fn layer(&self, policy: &ToolPolicy) -> Result<AtagLayer, ConfigError> {
        if let Some(unknown) = policy
            .service_ids()
            .into_iter()
            .find(|id| !self.state.services.contains_key(*id))
        {
            return Err(ConfigError::InvalidService(format!(
                "the policy names service `{unknown}`, which is not registered"
            )));
        }
        Ok(AtagLayer::new(self.state.clone(), policy.clone()))
    }

    /// The routes: `/atag/connect/{service}` and `/atag/callback/{service}` (the connect flow
    /// in the browser), `GET /atag/connections` and `DELETE /atag/connections/{service}` (with
    /// the user's access token). Merge them beside [`AuthServer::router`].
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let urls = self.auth.urls();
        axum::Router::new()
            .route(
                &urls.local_path("/atag/connect/{service}"),
                get(routes::connect),
            )
            .route(
                &urls.local_path("/atag/callback/{service}"),
                get(routes::callback),
            )
            .route(
                &urls.local_path("/atag/connections"),
                get(routes::connections),
            )
            .route(
                &urls.local_path("/atag/connections/{service}"),
                delete(routes::disconnect),
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// The third-party token vault.
    pub fn vault(&self) -> &TokenVault {
        &self.state.vault
    }
}

/// Builder of [`Atag`].
#[derive(Debug)]
#[must_use]
pub struct AtagBuilder {
    auth: AuthServer,
    services: Vec<ExternalService>,
    vault_keys: Option<EncryptionKeys>,
    addresses: crate::address::AddressPolicy,
}

impl AtagBuilder {
    /// Which addresses the services' token endpoints may be reached at (default
    /// [`AddressPolicy::public_only`](crate::address::AddressPolicy::public_only)): a service
    /// inside the network needs `allow_private` or `allow_network`, one on this machine
    /// `allow_loopback`.
    pub fn address_policy(mut self, policy: crate::address::AddressPolicy) -> Self {
        self.addresses = policy;
        self
    }

    /// A third-party service tools may act at for the user. Register
    /// `{issuer}/atag/callback/{id}` as the redirect URI at the service.
    pub fn service(mut self, service: ExternalService) -> Self {
        self.services.push(service);
        self
    }

    /// The keys sealing the vault (default: one generated at start-up, so stored tokens die
    /// with the process; production deployments keep theirs). Separate from the signing keys:
    /// either rotates alone.
    pub fn vault_keys(mut self, keys: EncryptionKeys) -> Self {
        self.vault_keys = Some(keys);
        self
    }

    /// Checks the services (at least one; ids unique) and builds.
    pub fn build(self) -> Result<Atag, ConfigError> {
        if self.services.is_empty() {
            return Err(ConfigError::InvalidService(
                "no external service is registered".into(),
            ));
        }
        let mut services = HashMap::new();
        for service in self.services {
            service.check()?;
            self.addresses.check_url(
                &format!("token URL of `{}`", service.id),
                &service.token_url,
            )?;
            let id = service.id.clone();
            if services.insert(id.clone(), service).is_some() {
                return Err(ConfigError::InvalidService(format!(
                    "two external services have the id `{id}`"
                )));
            }
        }
        let keys = match self.vault_keys {
            Some(keys) => keys,
            None => EncryptionKeys::generate("vault-1")?,
        };
        let state = AtagState::new(
            services,
            self.auth.store().clone(),
            keys,
            self.auth.urls().clone(),
            crate::outbound::client(Duration::from_secs(10), &self.addresses)?,
        );
        Ok(Atag {
            auth: self.auth,
            state: Arc::new(state),
        })
    }
}

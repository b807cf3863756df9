//! One configuration file for the whole deployment (TOML): the authorization server (users,
//! upstream identity providers, clients, scope descriptions, store), third-party services, and
//! the MCP services with their policies. The [gateway](crate::gateway) runs from it; an
//! embedded server loads the same file into the builders, so a team moves from one to the
//! other without rewriting its rules.
//!
//! Secrets never live in the file: every secret is named by the environment variable that
//! holds it (`client_secret_env = "GITHUB_CLIENT_SECRET"`), and a file that puts one inline is
//! refused (unknown fields are errors).
//!
//! ```
//! use tower_mcp_auth::config::Config;
//!
//! let config = Config::from_toml(r#"
//!     public_url = "https://mcp.example.com"
//!
//!     [scopes]
//!     "notes:read" = "Read your notes"
//!
//!     [[services]]
//!     name = "notes"
//!     url = "http://10.0.0.5:8080/mcp"
//!     [services.policy]
//!     default_scopes = ["notes:read"]
//!     rules = [{ glob = "delete_*", all_of = ["notes:admin"] }]
//! "#).unwrap();
//! // Embedded: the same policy, without the gateway.
//! let policy = config.policy("notes").unwrap();
//! assert!(policy.scopes().contains("notes:admin"));
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use self::access::{
    ClientConfig, DpopConfig, EnterpriseIdpConfig, IdJagAudienceConfig, OutboundConfig,
};
use crate::ConfigError;
use crate::atag::ExternalService;
use crate::policy::{GroupMapping, PolicyConfig, ToolPolicy};
use crate::server::{AuthServerBuilder, EncryptionKeys, GitHubProvider, OidcProvider};

/// Where configuration secrets come from: the process environment, or (in tests) any lookup.
pub type Environment<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, empty values counted as absent.
pub fn process_environment(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The whole file. See the [module docs](self) and `examples/gateway.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The public URL: the issuer, and the base of every service's `/{name}/mcp`.
    pub public_url: String,
    /// Where state lives (default: memory).
    #[serde(default)]
    pub store: StoreConfig,
    /// The environment variable holding the deployment secret (32 characters or more, the
    /// same on every replica): it seals the signing keys in a shared store and keys the
    /// vault. Required with a Redis store.
    #[serde(default)]
    pub secret_key_env: Option<String>,
    /// Users of the embedded dev login (development; passwords from the environment).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Upstream identity providers users sign in with.
    #[serde(default)]
    pub identity_providers: Vec<ProviderConfig>,
    /// Operator-registered clients.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Scope → a sentence for people (consent pages).
    #[serde(default)]
    pub scopes: BTreeMap<String, String>,
    /// Identity-provider groups that grant scopes.
    #[serde(default)]
    pub groups: Option<GroupMapping>,
    /// With `groups`: the scopes every user may hold.
    #[serde(default)]
    pub user_scopes: Vec<String>,
    /// Prefill the dev login form with the first user (development).
    #[serde(default)]
    pub prefill_login: bool,
    /// The name in the header of the sign-in and consent pages (default: the public host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Page → a minijinja template file replacing it (`consent.html = "pages/consent.html"`,
    /// relative to the working directory).
    #[serde(default)]
    pub pages: BTreeMap<String, std::path::PathBuf>,
    /// Third-party services (ATAG) tools act at with the user's own token.
    #[serde(default)]
    pub third_party: Vec<ThirdPartyConfig>,
    /// The MCP services.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Gateway-only settings.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// Where the server's own fetches (identity providers, third-party token endpoints) may go.
    #[serde(default)]
    pub outbound: OutboundConfig,
    /// Enterprise identity providers whose ID-JAGs are redeemed (enterprise-managed
    /// authorization).
    #[serde(default)]
    pub enterprise_idps: Vec<EnterpriseIdpConfig>,
    /// Authorization servers this one issues ID-JAGs for (acting as the enterprise IdP).
    #[serde(default)]
    pub id_jag_audiences: Vec<IdJagAudienceConfig>,
    /// DPoP settings.
    #[serde(default)]
    pub dpop: DpopConfig,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StoreConfig {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub kind: StoreKind,
    /// The environment variable holding the Redis URL (default `REDIS_URL`).
    #[serde(default)]
    pub url_env: Option<String>,
    /// Key prefix in Redis (default `tower-mcp-auth:`).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Which store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreKind {
    /// In process: one instance only.
    #[default]
    Memory,
    /// Redis 7 or Valkey (feature `redis`): several replicas.
    Redis,
}

/// `[[users]]`: a dev-login user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UserConfig {
    /// The user name (also the token subject).
    pub name: String,
    /// The environment variable holding the password.
    pub password_env: String,
    /// Groups (mapped to scopes by `[groups]`).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[[identity_providers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// `github`, `google` or `oidc`.
    pub kind: ProviderKind,
    /// The provider's id in URLs and subjects (`oidc` only; default `oidc`).
    #[serde(default)]
    pub id: Option<String>,
    /// The OpenID issuer (`oidc` only).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The OAuth client id registered there.
    pub client_id: String,
    /// The environment variable holding the client secret (optional for `oidc` public clients).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The name on the sign-in page.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Allow an `http://` issuer (development only).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// Which kind of identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProviderKind {
    /// GitHub OAuth App.
    Github,
    /// Google (OpenID Connect).
    Google,
    /// Any OpenID Connect provider.
    Oidc,
}

/// `[[third_party]]`: a service tools act at (ATAG).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ThirdPartyConfig {
    /// The id policies name (`needs_service = { service = "github" }`).
    pub id: String,
    /// `github`, `google`, `slack` or `custom`.
    pub kind: String,
    /// The OAuth client id registered there.
    pub client_id: String,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// `custom` only: the authorization endpoint.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// `custom` only: the token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Scopes asked for there.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The name people see.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Allow `http://` endpoints (development only).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

/// `[[services]]`: one MCP service (a gateway backend, or an embedded server's endpoint).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The name: the gateway serves it at `/{name}/mcp`.
    pub name: String,
    /// The backend's MCP endpoint (gateway only).
    #[serde(default)]
    pub url: Option<String>,
    /// A sentence for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Scopes every request needs.
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// Scopes the 401 challenge names (what clients ask for first).
    #[serde(default)]
    pub challenge_scopes: Option<Vec<String>>,
    /// The policy (absent: every tool open to any valid token).
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    /// The header the backend receives third-party tokens in.
    #[serde(default)]
    pub service_token_header: Option<String>,
    /// Milliseconds to connect to the backend.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Milliseconds the backend has to start answering.
    #[serde(default)]
    pub response_timeout_ms: Option<u64>,
    /// Requests in flight to the backend at once.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Requests one user may have in flight to the backend at once.
    #[serde(default)]
    pub max_in_flight_per_user: Option<usize>,
    /// The largest response body passed on.
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
    /// The environment variable holding a secret the gateway proves itself with to the
    /// backend (checked there by `GatewayIdentityLayer::shared_secret`).
    #[serde(default)]
    pub gateway_secret_env: Option<String>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewaySettings {
    /// User-context headers: field (`subject`, `email`, `name`, `provider`, `client_id`,
    /// `scopes`) → a header name, or `false` to leave it out.
    #[serde(default)]
    pub user_headers: BTreeMap<String, HeaderChoice>,
    /// Read clients' tokens from this header instead of `Authorization`.
    #[serde(default)]
    pub ingress_header: Option<String>,
    /// Browser origins allowed besides the gateway's own.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Allow every loopback origin (development).
    #[serde(default)]
    pub allow_loopback_origins: bool,
}

/// A user header's name, or `false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum HeaderChoice {
    /// Sent under this name.
    Name(String),
    /// `false`: not sent (`true` keeps the default name).
    Enabled(bool),
}

fn file_error(reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::InvalidServer(format!("configuration file: {reason}"))
}

/// The value of the environment variable `name`, or an error naming it and what needs it.
pub(crate) fn secret(env: Environment<'_>, name: &str, what: &str) -> Result<String, ConfigError> {
    env(name).ok_or_else(|| file_error(format!("{what} needs the environment variable {name}")))
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(file_error)
    }

    /// Reads and parses the TOML file at `path`.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| file_error(format!("{}: {e}", path.display())))?;
        Config::from_toml(&text)
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Result<&ServiceConfig, ConfigError> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| file_error(format!("no service is named `{name}`")))
    }

    /// The compiled policy of service `name` (every tool open to a valid token when it has
    /// none).
    pub fn policy(&self, name: &str) -> Result<ToolPolicy, ConfigError> {
        self.service(name)?.policy()
    }

    /// The resource URI of service `name` behind the gateway: `{public_url}/{name}/mcp`.
    pub fn resource_uri(&self, name: &str) -> String {
        format!("{}/{name}/mcp", self.public_url.trim_end_matches('/'))
    }

    /// The third-party services, their secrets read from `env`.
    pub fn third_party_services(
        &self,
        env: Environment<'_>,
    ) -> Result<Vec<ExternalService>, ConfigError> {
        self.third_party.iter().map(|tp| tp.service(env)).collect()
    }

    /// The vault keys, derived from the deployment secret when there is one.
    pub fn vault_keys(&self, env: Environment<'_>) -> Result<Option<EncryptionKeys>, ConfigError> {
        self.derived_key(env, "vault").map(|key| {
            key.map(|key| EncryptionKeys::new("vault-1", &key))
                .transpose()
        })?
    }

    /// A 32-byte key for `purpose` derived from the deployment secret (SHA-256 over a label and
    /// the secret), if one is configured.
    pub(crate) fn derived_key(
        &self,
        env: Environment<'_>,
        purpose: &str,
    ) -> Result<Option<[u8; 32]>, ConfigError> {
        use sha2::{Digest, Sha256};
        let Some(name) = &self.secret_key_env else {
            return Ok(None);
        };
        let secret = secret(env, name, "secret_key_env")?;
        if secret.len() < 32 {
            return Err(file_error(format!(
                "{name} must hold 32 characters or more"
            )));
        }
        Ok(Some(
            Sha256::new()
                .chain_update(b"tower-mcp-auth ")
                .chain_update(purpose)
                .chain_update([0])
                .chain_update(secret)
                .finalize()
                .into(),
        ))
    }

    /// The authorization server's builder: users, providers, clients, scope descriptions,
    /// groups, the store (Redis connected here) and, with a shared store, signing keys sealed
    /// in it. Resources are not added: the gateway adds its services'; an embedded server adds
    /// its own endpoint.
    pub async fn auth_server_builder(
        &self,
        env: Environment<'_>,
    ) -> Result<AuthServerBuilder, ConfigError> {
        let mut builder = crate::server::AuthServer::builder(&self.public_url);
        let addresses = self.outbound.address_policy()?;
        for user in &self.users {
            let password = secret(env, &user.password_env, &format!("user `{}`", user.name))?;
            builder = builder.dev_user_in_groups(&user.name, password, &user.groups);
        }
        for provider in &self.identity_providers {
            builder = provider.add_to(builder, env, &addresses)?;
        }
        builder = self.add_access(builder, env, &addresses)?;
        for (scope, text) in &self.scopes {
            builder = builder
                .scope_description(scope, text)
                .scopes_supported([scope]);
        }
        if let Some(groups) = &self.groups {
            builder = builder
                .groups(groups.clone())
                .user_scopes(&self.user_scopes);
        }
        if self.prefill_login {
            builder = builder.prefill_login(true);
        }
        if let Some(name) = &self.server_name {
            builder = builder.server_name(name);
        }
        for (page, path) in &self.pages {
            let source = std::fs::read_to_string(path)
                .map_err(|e| file_error(format!("page {page}: {}: {e}", path.display())))?;
            builder = builder.page_template(page, source);
        }
        match self.store.kind {
            StoreKind::Memory => Ok(builder),
            StoreKind::Redis => self.with_redis(builder, env).await,
        }
    }

    #[cfg(feature = "redis")]
    async fn with_redis(
        &self,
        builder: AuthServerBuilder,
        env: Environment<'_>,
    ) -> Result<AuthServerBuilder, ConfigError> {
        let url_env = self.store.url_env.as_deref().unwrap_or("REDIS_URL");
        let url = secret(env, url_env, "the Redis store")?;
        let prefix = self.store.prefix.as_deref().unwrap_or("tower-mcp-auth:");
        let store = crate::store::RedisStore::builder(url)
            .prefix(prefix)
            .connect()
            .await
            .map_err(|e| file_error(format!("the Redis store: {e}")))?;
        let Some(sealing) = self.derived_key(env, "signing keys")? else {
            return Err(file_error(
                "a Redis store needs secret_key_env: replicas share signing keys sealed with it",
            ));
        };
        let sealing = EncryptionKeys::new("kek-1", &sealing)?;
        let keys = crate::server::SigningKeys::shared(&store, &sealing)
            .await
            .map_err(|e| file_error(format!("shared signing keys: {e}")))?;
        Ok(builder.store(store).signing_keys(keys))
    }

    #[cfg(not(feature = "redis"))]
    async fn with_redis(
        &self,
        _: AuthServerBuilder,
        _: Environment<'_>,
    ) -> Result<AuthServerBuilder, ConfigError> {
        Err(file_error(
            "store kind `redis` needs the crate's `redis` feature",
        ))
    }
}

impl ServiceConfig {
    /// The compiled policy.
    pub fn policy(&self) -> Result<ToolPolicy, ConfigError> {
        match &self.policy {
            Some(policy) => ToolPolicy::from_config(policy.clone()),
            None => ToolPolicy::builder()
                .default_scopes(Vec::<String>::new())
                .build(),
        }
    }

    /// A timeout in milliseconds as a duration.
    pub(crate) fn millis(value: Option<u64>) -> Option<Duration> {
        value.map(Duration::from_millis)
    }
}

impl ProviderConfig {
    fn add_to(
        &self,
        builder: AuthServerBuilder,
        env: Environment<'_>,
        addresses: &crate::address::AddressPolicy,
    ) -> Result<AuthServerBuilder, ConfigError> {
        let what = format!(
            "identity provider `{}`",
            self.id.as_deref().unwrap_or(match self.kind {
                ProviderKind::Github => "github",
                ProviderKind::Google => "google",
                ProviderKind::Oidc => "oidc",
            })
        );
        let client_secret = self
            .client_secret_env
            .as_deref()
            .map(|name| secret(env, name, &what))
            .transpose()?;
        Ok(match self.kind {
            ProviderKind::Github => {
                let secret = client_secret
                    .ok_or_else(|| file_error(format!("{what} needs client_secret_env")))?;
                builder.identity_provider(
                    GitHubProvider::new(&self.client_id, secret)?
                        .address_policy(addresses.clone())?,
                )
            }
            ProviderKind::Google => {
                let secret = client_secret
                    .ok_or_else(|| file_error(format!("{what} needs client_secret_env")))?;
                builder.identity_provider(OidcProvider::google(&self.client_id, secret)?)
            }
            ProviderKind::Oidc => {
                let issuer = self
                    .issuer
                    .as_deref()
                    .ok_or_else(|| file_error(format!("{what} needs issuer")))?;
                let id = self.id.as_deref().unwrap_or("oidc");
                let mut oidc = OidcProvider::builder(id, issuer, &self.client_id)
                    .display_name(self.display_name.as_deref().unwrap_or(issuer))
                    .address_policy(addresses.clone());
                if let Some(secret) = client_secret {
                    oidc = oidc.client_secret(secret);
                }
                if self.allow_insecure_http {
                    oidc = oidc.allow_insecure_http();
                }
                builder.identity_provider(oidc.build()?)
            }
        })
    }
}

impl ThirdPartyConfig {
    fn service(&self, env: Environment<'_>) -> Result<ExternalService, ConfigError> {
        let what = format!("third-party service `{}`", self.id);
        let secret = self
            .client_secret_env
            .as_deref()
            .map(|name| secret(env, name, &what))
            .transpose()?;
        let needs_secret = || {
            secret
                .clone()
                .ok_or_else(|| file_error(format!("{what} needs client_secret_env")))
        };
        let mut service = match self.kind.as_str() {
            "github" => ExternalService::github(&self.client_id, needs_secret()?),
            "google" => ExternalService::google(&self.client_id, needs_secret()?),
            "slack" => ExternalService::slack(&self.client_id, needs_secret()?),
            "custom" => {
                let (Some(authorize), Some(token)) = (&self.authorize_url, &self.token_url) else {
                    return Err(file_error(format!(
                        "{what} needs authorize_url and token_url"
                    )));
                };
                ExternalService::custom(&self.id, authorize, token, &self.client_id, secret.clone())
            }
            other => return Err(file_error(format!("{what}: unknown kind `{other}`"))),
        }
        .id(&self.id);
        if !self.scopes.is_empty() {
            service = service.scopes(&self.scopes);
        }
        if let Some(name) = &self.display_name {
            service = service.display_name(name);
        }
        if self.allow_insecure_http {
            service = service.allow_insecure_http();
        }
        Ok(service)
    }
}

mod access;
#[cfg(test)]
mod tests;

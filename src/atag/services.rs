//! The registry of third-party services: where their OAuth endpoints are and who we are there.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ConfigError;
use crate::resource::parse_http_url;

/// How our client authenticates at a service's token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic (`client_secret_basic`, the OAuth default).
    #[default]
    Basic,
    /// Credentials in the form body (`client_secret_post`).
    Post,
}

/// A third-party OAuth 2.0/2.1 service tools act at for the user (GitHub, Google, …).
///
/// Declared in code with a preset ([`ExternalService::github`], [`ExternalService::google`],
/// [`ExternalService::slack`], [`ExternalService::atlassian`],
/// [`ExternalService::microsoft`]) or [`ExternalService::custom`], or loaded from config:
///
/// ```
/// use tower_mcp_auth::atag::ExternalService;
///
/// let github = ExternalService::github("Iv1.0123", "secret").scopes(["read:user"]);
/// let custom: ExternalService = serde_json::from_str(r#"{
///     "id": "crm", "display_name": "Acme CRM",
///     "authorize_url": "https://crm.example.com/oauth/authorize",
///     "token_url": "https://crm.example.com/oauth/token",
///     "client_id": "mcp", "client_secret": "s3cret",
///     "scopes": ["contacts.read"], "extra_params": {"prompt": "consent"}
/// }"#).unwrap();
/// # let _ = (github, custom);
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalService {
    /// The id tools name it by, and the path segment of its routes.
    pub id: String,
    /// The name shown to users.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The authorization endpoint.
    pub authorize_url: String,
    /// The token endpoint.
    pub token_url: String,
    /// Our client id at the service.
    pub client_id: String,
    /// Our client secret at the service (none for public clients, which rely on PKCE).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// How the secret is sent (default HTTP Basic).
    #[serde(default)]
    pub auth_method: ClientAuthMethod,
    /// Scopes always requested (tools' own needs are added).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra authorization request parameters (`access_type=offline`, `audience=…`).
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// The name of the authorization parameter carrying scopes (default `scope`; Slack user
    /// tokens use `user_scope`).
    #[serde(default)]
    pub scope_param: Option<String>,
    /// Accept plain-http endpoints on non-loopback hosts (test networks only).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl std::fmt::Debug for ExternalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalService")
            .field("id", &self.id)
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl ExternalService {
    /// Any OAuth 2.0/2.1 provider.
    pub fn custom(
        id: impl Into<String>,
        authorize_url: impl Into<String>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<String>,
    ) -> Self {
        ExternalService {
            id: id.into(),
            display_name: None,
            authorize_url: authorize_url.into(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret,
            auth_method: ClientAuthMethod::Basic,
            scopes: Vec::new(),
            extra_params: BTreeMap::new(),
            scope_param: None,
            allow_insecure_http: false,
        }
    }

    /// GitHub (an OAuth App or GitHub App user token), id `github`.
    pub fn github(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self::custom(
            "github",
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
            client_id,
            Some(client_secret.into()),
        )
        .display_name("GitHub")
    }

    /// Google, id `google`: offline access (a refresh token) and incremental consent.
    pub fn google(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self::custom(
            "google",
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            client_id,
            Some(client_secret.into()),
        )
        .display_name("Google")
        .extra_param("access_type", "offline")
        .extra_param("prompt", "consent")
        .extra_param("include_granted_scopes", "true")
    }

    /// Slack user tokens (OAuth v2, scopes in `user_scope`), id `slack`.
    pub fn slack(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        let mut service = Self::custom(
            "slack",
            "https://slack.com/oauth/v2/authorize",
            "https://slack.com/api/oauth.v2.access",
            client_id,
            Some(client_secret.into()),
        )
        .display_name("Slack");
        service.auth_method = ClientAuthMethod::Post;
        service.scope_param = Some("user_scope".into());
        service
    }

    /// Atlassian Cloud (Jira, Confluence; OAuth 2.0 3LO), id `atlassian`, with refresh tokens.
    pub fn atlassian(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        let mut service = Self::custom(
            "atlassian",
            "https://auth.atlassian.com/authorize",
            "https://auth.atlassian.com/oauth/token",
            client_id,
            Some(client_secret.into()),
        )
        .display_name("Atlassian")
        .extra_param("audience", "api.atlassian.com")
        .extra_param("prompt", "consent")
        .scopes(["offline_access"]);
        service.auth_method = ClientAuthMethod::Post;
        service
    }

    /// Microsoft identity platform (Graph) for `tenant` (`common`, `organizations`, or a
    /// tenant id), id `microsoft`, with refresh tokens.
    pub fn microsoft(
        tenant: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
        let mut service = Self::custom(
            "microsoft",
            format!("{base}/authorize"),
            format!("{base}/token"),
            client_id,
            Some(client_secret.into()),
        )
        .display_name("Microsoft")
        .scopes(["offline_access"]);
        service.auth_method = ClientAuthMethod::Post;
        service
    }

    /// The name shown to users.
    #[must_use]
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Adds scopes always requested.
    #[must_use]
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Adds an authorization request parameter.
    #[must_use]
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.insert(name.into(), value.into());
        self
    }

    /// Uses another id (two GitHub Enterprise servers, say).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Accepts plain-http endpoints on non-loopback hosts (test networks only; loopback http
    /// is always accepted).
    #[must_use]
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// The name shown to users (the display name, or the id).
    pub fn name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.id)
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        crate::server::check_provider_id(&self.id).map_err(|_| {
            ConfigError::InvalidService(format!(
                "service id `{}` must be 1 to 32 letters, digits, `-` or `_`",
                self.id
            ))
        })?;
        parse_http_url(
            "authorize URL",
            &self.authorize_url,
            self.allow_insecure_http,
        )?;
        parse_http_url("token URL", &self.token_url, self.allow_insecure_http)?;
        Ok(())
    }
}

//! [`GitHubProvider`]: sign-in with a GitHub OAuth App (github.com or GitHub Enterprise).

use std::time::Duration;

use oauth2::TokenResponse;
use serde::Deserialize;

use super::code_flow::{CodeFlow, read_kept};
use super::{IdentityProvider, UpstreamError, UpstreamStart, UpstreamUser};
use crate::BoxFuture;
use crate::ConfigError;
use crate::address::AddressPolicy;
use crate::resource::parse_http_url;

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
    addresses: AddressPolicy,
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
                http: crate::outbound::client(Duration::from_secs(10), &AddressPolicy::default())?,
            },
            web: web.trim_end_matches('/').to_owned(),
            api: api.trim_end_matches('/').to_owned(),
            org_groups: false,
            addresses: AddressPolicy::default(),
        })
    }

    /// Which addresses the server may be reached at (default
    /// [`AddressPolicy::public_only`]): a GitHub Enterprise Server inside the network needs
    /// `allow_private` or `allow_network`.
    pub fn address_policy(mut self, policy: AddressPolicy) -> Result<Self, ConfigError> {
        policy.check_url("GitHub URL", &self.web)?;
        policy.check_url("GitHub API URL", &self.api)?;
        self.flow.http = crate::outbound::client(Duration::from_secs(10), &policy)?;
        self.addresses = policy;
        Ok(self)
    }

    /// Refuses IP-literal URLs outside the policy (names are checked as they resolve).
    fn check_addresses(&self) -> Result<(), UpstreamError> {
        self.addresses
            .check_url("GitHub URL", &self.web)
            .and_then(|()| self.addresses.check_url("GitHub API URL", &self.api))
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))
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
            .map_err(|e| UpstreamError::Unavailable(crate::outbound::describe(&e)))?;
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
        self.check_addresses()?;
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

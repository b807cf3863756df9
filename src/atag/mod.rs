//! ATAG, the Authenticated Tool Access Gateway (feature `atag`): tools that act at third-party
//! services (GitHub, Google, …) with the user's own token there.
//!
//! - [`ExternalService`]: the registry entries, with presets, declared in code or config.
//! - [`crate::policy::ToolPolicyBuilder::needs_service`]: which tools need which service and
//!   scopes, next to the tool scope rules.
//! - [`TokenVault`]: users' tokens, sealed with AES-256-GCM, user and service bound as
//!   associated data.
//! - [`Atag`], built on an [`AuthServer`](crate::server::AuthServer) with the services and the
//!   vault keys: the layer, the routes and the vault.
//! - [`AtagLayer`] (from [`Atag::layer`]): for a `tools/call` that
//!   needs a service, injects the caller's token ([`ExternalToken`] in the request extensions,
//!   refreshed when expired, one refresh at a time per user and service), or answers with a
//!   challenge carrying a connect URL: URL-mode elicitation as the client's protocol revision
//!   has it (`-32042` for 2025-11-25 sessions, an `input_required` result with an
//!   integrity-protected `requestState` for 2026-07-28), a tool error any client can show, or
//!   the ATAG 401 for gateways.
//! - The routes `/atag/connect/{service}` and `/atag/callback/{service}` (in
//!   [`Atag::router`]) run the flow in the browser, refusing any browser
//!   whose signed-in user is not the one who called the tool; `/atag/connections` lists and
//!   disconnects services.
//!
//! The MCP client's token never reaches the third party, and the third party's token never
//! reaches the MCP client.

mod client;
mod layer;
mod routes;
mod services;
mod setup;
mod state;
mod stream;
mod vault;

pub(crate) use self::client::{authorization_url, exchange};
pub use self::layer::{AtagBody, AtagLayer, AtagService, ChallengeMode, URL_ELICITATION_REQUIRED};
pub use self::services::{ClientAuthMethod, ExternalService};
pub use self::setup::{Atag, AtagBuilder};
pub(crate) use self::state::{AtagState, LINK_TTL, Link, link_key};
pub use self::vault::{TokenSet, TokenVault, VaultError};

/// The user's token at a third-party service, put into the request extensions by
/// [`AtagLayer`] for tools that need the service. Its `Debug` output hides the secret.
#[derive(Clone)]
pub struct ExternalToken {
    service: std::sync::Arc<str>,
    access_token: std::sync::Arc<str>,
    scopes: std::sync::Arc<[String]>,
    expires_at: Option<u64>,
}

impl std::fmt::Debug for ExternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalToken")
            .field("service", &self.service)
            .field("access_token", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl ExternalToken {
    pub(crate) fn new(service: &str, tokens: &TokenSet) -> Self {
        ExternalToken {
            service: service.into(),
            access_token: tokens.access_token.as_str().into(),
            scopes: tokens.scopes.clone().into(),
            expires_at: tokens.expires_at,
        }
    }

    /// The service's id.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The access token, to send to the service (`Authorization: Bearer …`).
    pub fn secret(&self) -> &str {
        &self.access_token
    }

    /// The scopes granted at the service.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// When the token expires (seconds since the epoch), if known.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }
}

#[cfg(feature = "rmcp")]
pub use self::rmcp_support::External;

#[cfg(feature = "rmcp")]
mod rmcp_support {
    use rmcp::handler::server::common::{AsRequestContext, FromContextPart};
    use rmcp::model::ErrorData;

    use super::ExternalToken;

    /// The [`ExternalToken`] of the call, as an rmcp tool argument:
    /// `External(github): External`. A tool that needs a service but finds no token (the
    /// layer is missing) fails instead of running without one.
    ///
    /// ```
    /// use rmcp::{tool, tool_router};
    /// use tower_mcp_auth::atag::External;
    ///
    /// #[derive(Clone)]
    /// struct Repos { tool_router: rmcp::handler::server::router::tool::ToolRouter<Self> }
    ///
    /// #[tool_router(server_handler)]
    /// impl Repos {
    ///     #[tool(description = "Lists your repositories")]
    ///     async fn github_list_repos(&self, External(github): External) -> String {
    ///         // reqwest::Client::new().get("https://api.github.com/user/repos").bearer_auth(github.secret())…
    ///         format!("token for {}", github.service())
    ///     }
    /// }
    /// ```
    #[derive(Debug, Clone)]
    pub struct External(pub ExternalToken);

    impl<C: AsRequestContext> FromContextPart<C> for External {
        fn from_context_part(context: &mut C) -> Result<Self, ErrorData> {
            context
                .as_request_context()
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<ExternalToken>())
                .cloned()
                .map(External)
                .ok_or_else(|| {
                    // Not the client's fault: the stack serving this tool lacks an AtagLayer
                    // (normally the policy layer answers such calls before they get here).
                    ErrorData::internal_error(
                        "this tool needs a connected third-party account, and the server has no ATAG layer to provide it",
                        None,
                    )
                })
        }
    }

    impl std::ops::Deref for External {
        type Target = ExternalToken;
        fn deref(&self) -> &ExternalToken {
            &self.0
        }
    }
}

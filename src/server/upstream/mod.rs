//! Upstream identity providers: where the users of the authorization server sign in.
//!
//! The authorization server never sees a password of an upstream user: it sends the browser to
//! the provider (authorization code flow with PKCE and `state`, plus a `nonce` for OpenID
//! Connect), takes the code at its callback, and learns who signed in. Built in:
//! [`OidcProvider`] for any OpenID Connect provider (discovery, id_token validated against the
//! provider's JWKS), with [`OidcProvider::google`] preset, and [`GitHubProvider`] (OAuth App,
//! user API). Other providers implement [`IdentityProvider`].

use serde::{Deserialize, Serialize};

use crate::BoxFuture;
use crate::ConfigError;

mod code_flow;
mod github;
mod oidc;

pub use self::github::GitHubProvider;
pub use self::oidc::{OidcProvider, OidcProviderBuilder};

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

pub use crate::oauth_client::UpstreamError;

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

    /// Whether sign-ins can start now, for readiness probes: an OpenID provider fetches its
    /// discovery document afresh. The default says ready.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
        Box::pin(std::future::ready(Ok(())))
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
        return Err(ConfigError::InvalidProvider(format!(
            "identity provider id `{id}` must be 1 to 32 letters, digits, `-` or `_`"
        )));
    }
    Ok(())
}

//! Our OAuth client at third-party services, on the `oauth2` crate: authorization URLs with
//! PKCE and `state`, code exchange, refresh.

use std::time::Duration;

use oauth2::basic::BasicTokenType;
use oauth2::{AccessToken, RefreshToken, Scope, TokenResponse};
use serde::{Deserialize, Serialize};

use super::services::{ClientAuthMethod, ExternalService};
use super::vault::TokenSet;
use crate::oauth_client::{CodeClient, ScopeParam};
use crate::server::UpstreamError;

/// A token response as services send it. Slack puts user tokens under `authed_user`; GitHub
/// separates scopes with commas: both are read here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawTokens")]
pub(crate) struct ServiceTokens {
    access_token: AccessToken,
    #[serde(skip)]
    token_type: BasicTokenType,
    expires_in: Option<u64>,
    refresh_token: Option<RefreshToken>,
    scopes: Option<Vec<Scope>>,
}

#[derive(Deserialize)]
struct RawTokens {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    authed_user: Option<Box<RawTokens>>,
}

impl TryFrom<RawTokens> for ServiceTokens {
    type Error = &'static str;

    fn try_from(raw: RawTokens) -> Result<Self, Self::Error> {
        // Slack returns the user's own token under `authed_user`, beside any bot token: ATAG
        // acts as the user, so that one wins.
        let raw = match raw.authed_user {
            Some(user) if user.access_token.is_some() => *user,
            _ => raw,
        };
        let access_token = raw
            .access_token
            .ok_or("the token response has no access_token")?;
        Ok(ServiceTokens {
            access_token: AccessToken::new(access_token),
            token_type: BasicTokenType::Bearer,
            expires_in: raw.expires_in,
            refresh_token: raw.refresh_token.map(RefreshToken::new),
            scopes: raw.scope.map(|s| {
                s.split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(|s| Scope::new(s.to_owned()))
                    .collect()
            }),
        })
    }
}

impl TokenResponse for ServiceTokens {
    type TokenType = BasicTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &BasicTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

fn client(service: &ExternalService, http: &reqwest::Client) -> CodeClient<ServiceTokens> {
    CodeClient::new(
        service.client_id.clone(),
        service.client_secret.clone(),
        service.authorize_url.clone(),
        service.token_url.clone(),
        http.clone(),
    )
    .secret_in_body(matches!(service.auth_method, ClientAuthMethod::Post))
}

/// The authorization URL for `scopes`, carrying `state`; and the PKCE verifier to keep.
pub(crate) fn authorization_url(
    http: &reqwest::Client,
    service: &ExternalService,
    redirect_uri: &str,
    state: &str,
    scopes: &[String],
) -> Result<(String, String), UpstreamError> {
    let scope_param = match service.scope_param.as_deref() {
        None | Some("scope") => ScopeParam::Standard,
        Some(param) => ScopeParam::Named(param),
    };
    let extra: Vec<(String, String)> = service
        .extra_params
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    client(service, http).authorization_url(redirect_uri, state, scopes, scope_param, &extra)
}

fn token_set(
    tokens: ServiceTokens,
    previous_refresh: Option<String>,
    asked: &[String],
) -> TokenSet {
    let now = crate::server::unix_now();
    TokenSet {
        access_token: tokens.access_token.secret().clone(),
        // A refresh response without a new refresh token keeps the old one (RFC 6749 §6).
        refresh_token: tokens
            .refresh_token
            .map(|t| t.secret().clone())
            .or(previous_refresh),
        expires_at: tokens.expires_in.map(|s| now.saturating_add(s)),
        // A response without `scope` granted what was asked (RFC 6749 §5.1).
        scopes: tokens
            .scopes
            .map(|s| s.into_iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|| asked.to_vec()),
    }
}

/// Exchanges an authorization code (with its PKCE verifier).
pub(crate) async fn exchange(
    http: &reqwest::Client,
    service: &ExternalService,
    redirect_uri: &str,
    code: &str,
    verifier: &str,
    asked: &[String],
) -> Result<TokenSet, UpstreamError> {
    let tokens = client(service, http)
        .exchange_code(redirect_uri, code, verifier)
        .await?;
    Ok(token_set(tokens, None, asked))
}

/// Refreshes `current`.
pub(crate) async fn refresh(
    http: &reqwest::Client,
    service: &ExternalService,
    redirect_uri: &str,
    current: &TokenSet,
) -> Result<TokenSet, UpstreamError> {
    let Some(refresh_token) = &current.refresh_token else {
        return Err(UpstreamError::Refused("no refresh token".into()));
    };
    let tokens = client(service, http)
        .refresh(redirect_uri, refresh_token)
        .await?;
    Ok(token_set(
        tokens,
        current.refresh_token.clone(),
        &current.scopes,
    ))
}

//! Our OAuth 2.0 client at other authorization servers: upstream identity providers where
//! users sign in, and third-party services where ATAG connects their accounts. One code on the
//! `oauth2` crate for both: authorization URLs with PKCE S256 and `state`, the code exchange,
//! refresh, all through the bounded [`outbound`](crate::outbound) client.

use std::marker::PhantomData;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, StandardRevocableToken, TokenResponse, TokenUrl,
};

/// Why an exchange with another authorization server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The provider could not be reached or answered nonsense: try again later (502).
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused, or what it returned failed validation (403).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
}

/// How the scopes go into the authorization URL.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScopeParam<'a> {
    /// RFC 6749 `scope`, space-separated.
    Standard,
    /// A parameter of the provider's own, comma-separated (Slack's `user_scope`).
    #[cfg_attr(not(feature = "atag"), allow(dead_code))]
    Named(&'a str),
}

/// A client registered at one authorization server, whose token responses read as `T`.
#[derive(Debug, Clone)]
pub(crate) struct CodeClient<T> {
    client_id: String,
    client_secret: Option<String>,
    secret_in_body: bool,
    authorize_url: String,
    token_url: String,
    http: reqwest::Client,
    tokens: PhantomData<fn() -> T>,
}

type Oauth2Client<T> = oauth2::Client<
    BasicErrorResponse,
    T,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

impl<T> CodeClient<T>
where
    T: TokenResponse + serde::de::DeserializeOwned,
{
    /// `client_id` (with `client_secret` for confidential clients, sent with HTTP Basic) at the
    /// server with these endpoints.
    pub(crate) fn new(
        client_id: impl Into<String>,
        client_secret: Option<String>,
        authorize_url: impl Into<String>,
        token_url: impl Into<String>,
        http: reqwest::Client,
    ) -> Self {
        CodeClient {
            client_id: client_id.into(),
            client_secret,
            secret_in_body: false,
            authorize_url: authorize_url.into(),
            token_url: token_url.into(),
            http,
            tokens: PhantomData,
        }
    }

    /// Sends the secret in the request body (`client_secret_post`) instead of HTTP Basic.
    #[cfg_attr(not(feature = "atag"), allow(dead_code))]
    pub(crate) fn secret_in_body(mut self, in_body: bool) -> Self {
        self.secret_in_body = in_body;
        self
    }

    fn client(&self, redirect_uri: &str) -> Result<Oauth2Client<T>, UpstreamError> {
        let bad = |e: oauth2::url::ParseError| UpstreamError::Unavailable(e.to_string());
        let mut client = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::new(self.authorize_url.clone()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(self.token_url.clone()).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).map_err(bad)?)
            .set_auth_type(if self.secret_in_body {
                AuthType::RequestBody
            } else {
                AuthType::BasicAuth
            });
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        Ok(client)
    }

    /// The URL to send the browser to, carrying `state`, a fresh PKCE S256 challenge, the
    /// scopes and `extra` parameters; and the PKCE verifier to keep for the exchange.
    pub(crate) fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        scopes: &[String],
        scope_param: ScopeParam<'_>,
        extra: &[(String, String)],
    ) -> Result<(String, String), UpstreamError> {
        let client = self.client(redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(|| CsrfToken::new(state.to_owned()))
            .set_pkce_challenge(challenge);
        request = match scope_param {
            ScopeParam::Standard => request.add_scopes(scopes.iter().cloned().map(Scope::new)),
            ScopeParam::Named(param) => request.add_extra_param(param.to_owned(), scopes.join(",")),
        };
        for (name, value) in extra {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        let (url, _) = request.url();
        Ok((url.into(), verifier.secret().clone()))
    }

    /// Exchanges an authorization code, with its PKCE verifier.
    pub(crate) async fn exchange_code(
        &self,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
    ) -> Result<T, UpstreamError> {
        let client = self.client(redirect_uri)?;
        let http = self.http.clone();
        let caller = move |request| crate::outbound::send(http.clone(), request);
        client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&caller)
            .await
            .map_err(token_error)
    }

    /// Exchanges a refresh token.
    #[cfg_attr(not(feature = "atag"), allow(dead_code))]
    pub(crate) async fn refresh(
        &self,
        redirect_uri: &str,
        refresh_token: &str,
    ) -> Result<T, UpstreamError> {
        let client = self.client(redirect_uri)?;
        let http = self.http.clone();
        let caller = move |request| crate::outbound::send(http.clone(), request);
        client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_owned()))
            .request_async(&caller)
            .await
            .map_err(token_error)
    }
}

/// A failed token request: the server's refusal, or a failure to reach or understand it.
fn token_error<E: std::error::Error>(
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

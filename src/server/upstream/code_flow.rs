//! The authorization code flow with PKCE, `state` and `nonce` against an upstream provider,
//! on the `oauth2` crate with our outbound client.

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::{UpstreamError, UpstreamStart, token_error};

/// Token response fields beyond OAuth's: the OpenID Connect `id_token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

type CodeClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<IdTokenField, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// What one code flow against a provider needs.
#[derive(Clone)]
pub(super) struct CodeFlow {
    pub(super) client_id: String,
    pub(super) client_secret: Option<String>,
    pub(super) scopes: Vec<String>,
    pub(super) http: reqwest::Client,
}

/// What `start` keeps for `finish`.
#[derive(Serialize, Deserialize)]
pub(super) struct Kept {
    pub(super) verifier: String,
    #[serde(default)]
    pub(super) nonce: Option<String>,
}

impl CodeFlow {
    pub(super) fn client(
        &self,
        authorize: &str,
        token: &str,
        redirect_uri: &str,
    ) -> Result<CodeClient, UpstreamError> {
        let bad = |e: oauth2::url::ParseError| UpstreamError::Unavailable(e.to_string());
        let mut client = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::new(authorize.to_owned()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(token.to_owned()).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).map_err(bad)?);
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        Ok(client)
    }

    pub(super) fn start(
        &self,
        authorize: &str,
        token: &str,
        redirect_uri: &str,
        state: &str,
        nonce: Option<String>,
    ) -> Result<UpstreamStart, UpstreamError> {
        let client = self.client(authorize, token, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(|| CsrfToken::new(state.to_owned()))
            .add_scopes(self.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge);
        if let Some(nonce) = &nonce {
            request = request.add_extra_param("nonce", nonce.clone());
        }
        let (url, _) = request.url();
        let kept = serde_json::to_string(&Kept {
            verifier: verifier.secret().clone(),
            nonce,
        })
        .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        Ok(UpstreamStart {
            url: url.into(),
            kept,
        })
    }

    pub(super) async fn exchange(
        &self,
        authorize: &str,
        token: &str,
        redirect_uri: &str,
        code: &str,
        kept: &Kept,
    ) -> Result<StandardTokenResponse<IdTokenField, BasicTokenType>, UpstreamError> {
        let client = self.client(authorize, token, redirect_uri)?;
        let http = self.http.clone();
        let caller = move |request| crate::outbound::send(http.clone(), request);
        client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(kept.verifier.clone()))
            .request_async(&caller)
            .await
            .map_err(token_error)
    }
}

pub(super) fn random() -> Result<String, UpstreamError> {
    crate::server::random_token()
        .ok_or_else(|| UpstreamError::Unavailable("no randomness available".into()))
}

pub(super) fn read_kept(kept: &str) -> Result<Kept, UpstreamError> {
    serde_json::from_str(kept)
        .map_err(|_| UpstreamError::Refused("the sign-in state is invalid".into()))
}

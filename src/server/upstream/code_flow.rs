//! The authorization code flow with PKCE, `state` and `nonce` against an upstream provider,
//! on the `oauth2` crate with our outbound client.

use oauth2::basic::BasicTokenType;
use oauth2::{ExtraTokenFields, StandardTokenResponse};
use serde::{Deserialize, Serialize};

use super::{UpstreamError, UpstreamStart};
use crate::oauth_client::{CodeClient, ScopeParam};

/// Token response fields beyond OAuth's: the OpenID Connect `id_token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

/// A provider's token response, with the OpenID Connect `id_token` if there is one.
pub(super) type UpstreamTokens = StandardTokenResponse<IdTokenField, BasicTokenType>;

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
    fn client(&self, authorize: &str, token: &str) -> CodeClient<UpstreamTokens> {
        CodeClient::new(
            self.client_id.clone(),
            self.client_secret.clone(),
            authorize,
            token,
            self.http.clone(),
        )
    }

    pub(super) fn start(
        &self,
        authorize: &str,
        token: &str,
        redirect_uri: &str,
        state: &str,
        nonce: Option<String>,
    ) -> Result<UpstreamStart, UpstreamError> {
        let extra: Vec<(String, String)> = nonce
            .iter()
            .map(|n| ("nonce".to_owned(), n.clone()))
            .collect();
        let (url, verifier) = self.client(authorize, token).authorization_url(
            redirect_uri,
            state,
            &self.scopes,
            ScopeParam::Standard,
            &extra,
        )?;
        let kept = serde_json::to_string(&Kept { verifier, nonce })
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))?;
        Ok(UpstreamStart { url, kept })
    }

    pub(super) async fn exchange(
        &self,
        authorize: &str,
        token: &str,
        redirect_uri: &str,
        code: &str,
        kept: &Kept,
    ) -> Result<UpstreamTokens, UpstreamError> {
        self.client(authorize, token)
            .exchange_code(redirect_uri, code, &kept.verifier)
            .await
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

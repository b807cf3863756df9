//! The client registry: configured, registered and metadata-document clients, and client
//! authentication at the token endpoint.

use std::collections::HashMap;

use http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth_server::AuthServer;
use super::error::OAuthError;
use crate::Scopes;
use crate::audit;

/// A registered client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Client {
    pub(super) client_id: String,
    /// SHA-256 of the secret (none for public clients): secrets are 256-bit random, so a fast
    /// hash is enough and the secret itself is never stored.
    pub(super) secret_sha256: Option<[u8; 32]>,
    pub(super) scope: String,
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) redirect_uris: Vec<String>,
    #[serde(default)]
    pub(super) grant_types: Vec<String>,
    /// Configured by the operator in code (`client`, `public_client`): its scope list is a
    /// ceiling. Never stored, so every client read from the store (self-registered) is not.
    #[serde(skip)]
    pub(super) configured: bool,
    /// The registered `token_endpoint_auth_method` of a self-registered confidential client:
    /// the only one it may use. Configured clients may use either.
    #[serde(default)]
    pub(super) auth_method: Option<String>,
    /// A metadata-document client's home page and logo, kept only when on the host of its
    /// `client_id` URL (what the fetch verified): the consent page may show them.
    #[serde(default)]
    pub(super) client_uri: Option<String>,
    #[serde(default)]
    pub(super) logo_uri: Option<String>,
    /// A machine client's public keys (`private_key_jwt`): configured in code, never stored.
    #[serde(skip)]
    pub(super) assertion_keys: Option<super::assertion::AssertionKeys>,
}

/// Failed client authentications allowed per client and window: past it, 429 until the window
/// ends, so a client secret cannot be guessed online (it is 256-bit random anyway; this keeps
/// the endpoint from being a free oracle and the logs readable).
const MAX_AUTH_FAILURES: u64 = 10;
const AUTH_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

impl Client {
    /// What this client may ask for: a configured client its own list; a self-registered one
    /// (dynamic registration, metadata document) any scope the server supports. A client can
    /// register itself again with a wider `scope` at any time, so that self-declared list
    /// would be no security boundary, only a trap for step-up: what a user receives is decided
    /// by the user's own grants and consent.
    pub(super) fn scope_ceiling(&self, server: &AuthServer) -> Scopes {
        if !self.configured {
            return Scopes::new(&server.grants().scopes_supported);
        }
        // `openid` asks who the user is, not for a permission: any client of the code flow.
        let openid = (self.grant_types.iter().any(|g| g == "authorization_code")
            && server.code_flow())
        .then_some("openid");
        self.scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .chain(openid)
            .collect()
    }

    /// The scopes of a request for `requested`: the request itself if within the ceiling, the
    /// registered (recorded) scope if the request names none, `None` (`invalid_scope`) if it
    /// asks for more than the ceiling.
    pub(super) fn requested_scope(
        &self,
        server: &AuthServer,
        requested: Option<&str>,
    ) -> Option<Scopes> {
        match requested {
            None => Some(Scopes::from_space_separated(&self.scope)),
            Some(_) => self.scope_ceiling(server).narrow(requested),
        }
    }
}

/// How a request authenticated its client.
pub(super) enum ClientAuth {
    Basic,
    Post,
    /// `private_key_jwt`.
    Assertion,
}

impl AuthServer {
    pub(super) async fn lookup_client(&self, id: &str) -> Result<Option<Client>, OAuthError> {
        if let Some(client) = self.registry().clients.get(id) {
            return Ok(Some(client.clone()));
        }
        if self.code_flow() && super::cimd::is_document_id(id) {
            return match self.document_client(id).await {
                Ok(client) => Ok(client),
                Err(reason) => {
                    tracing::info!(target: audit::TARGET, client_id = %crate::audit::Escaped(&id), reason = %crate::audit::Escaped(&reason), "client metadata document refused");
                    Ok(None)
                }
            };
        }
        super::storage::load(self, &super::keyspace::client(id)).await
    }

    /// Client authentication (`client_secret_basic` or `client_secret_post`, not both), with
    /// the secret compared in constant time. Failures are 401 `invalid_client`, with a Basic
    /// challenge where Basic was used (RFC 6749 §5.2).
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<(Client, ClientAuth), OAuthError> {
        if form.contains_key("client_assertion") || form.contains_key("client_assertion_type") {
            return self.authenticate_assertion(headers, form).await;
        }
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, creds)| creds.trim());
        let (id, secret, how) = match (basic, form.get("client_id"), form.get("client_secret")) {
            (Some(_), _, Some(_)) => {
                return Err(OAuthError::InvalidRequest(
                    "use one client authentication method".into(),
                ));
            }
            (Some(creds), _, None) => {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(creds)
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok());
                let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
                    return Err(OAuthError::InvalidClient { basic: true });
                };
                let decode = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                };
                match (decode(id), decode(secret)) {
                    (Some(id), Some(secret)) => (id, secret, ClientAuth::Basic),
                    _ => return Err(OAuthError::InvalidClient { basic: true }),
                }
            }
            (None, Some(id), Some(secret)) => (id.clone(), secret.clone(), ClientAuth::Post),
            (None, _, _) => return Err(OAuthError::InvalidClient { basic: false }),
        };
        let basic = matches!(how, ClientAuth::Basic);
        let failures_key = self.refuse_locked_out(&id).await?;
        let client = self.lookup_client(&id).await?;
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let method = match how {
            ClientAuth::Basic => "client_secret_basic",
            _ => "client_secret_post",
        };
        match client {
            Some(client)
                if client
                    .secret_sha256
                    .is_some_and(|stored| bool::from(presented.ct_eq(&stored)))
                    && client.auth_method.as_deref().is_none_or(|m| m == method) =>
            {
                Ok((client, how))
            }
            _ => {
                tracing::info!(target: audit::TARGET, client_id = ?id, method, "client authentication failed");
                self.store()
                    .increment(&failures_key, AUTH_FAILURE_WINDOW)
                    .await?;
                Err(OAuthError::InvalidClient { basic })
            }
        }
    }

    /// Refuses a client locked out by failed authentications; otherwise the store key that
    /// counts its failures.
    async fn refuse_locked_out(&self, id: &str) -> Result<String, OAuthError> {
        let failures_key = super::keyspace::client_auth_failures(id);
        let failures = self
            .store()
            .get(&failures_key)
            .await?
            .and_then(|count| std::str::from_utf8(&count).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        if failures >= MAX_AUTH_FAILURES {
            tracing::warn!(target: audit::TARGET, client_id = ?id, "client authentication locked out");
            return Err(OAuthError::RateLimited {
                description: "too many failed client authentications; try again later".into(),
                retry_after: AUTH_FAILURE_WINDOW.as_secs(),
            });
        }
        Ok(failures_key)
    }

    /// `private_key_jwt`: the client named by the assertion's `sub` (and `client_id`, when
    /// sent, must be the same), one of its keys, and the checks of
    /// [`verify_assertion`](AuthServer::verify_assertion). Counted against the same lockout
    /// as secrets.
    async fn authenticate_assertion(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<(Client, ClientAuth), OAuthError> {
        if headers.contains_key(header::AUTHORIZATION) || form.contains_key("client_secret") {
            return Err(OAuthError::InvalidRequest(
                "use one client authentication method".into(),
            ));
        }
        if form.get("client_assertion_type").map(String::as_str)
            != Some(super::assertion::JWT_BEARER)
        {
            return Err(OAuthError::InvalidClient { basic: false });
        }
        let assertion = form
            .get("client_assertion")
            .ok_or(OAuthError::InvalidClient { basic: false })?;
        let Some(id) = super::assertion::unverified_claim(assertion, "sub") else {
            return Err(OAuthError::InvalidClient { basic: false });
        };
        if form.get("client_id").is_some_and(|named| *named != id) {
            return Err(OAuthError::InvalidClient { basic: false });
        }
        let failures_key = self.refuse_locked_out(&id).await?;
        let client = self.lookup_client(&id).await?;
        let verdict = match client.as_ref().and_then(|c| c.assertion_keys.as_ref()) {
            Some(keys) => self.verify_assertion(&id, keys, assertion).await,
            None => Err("no such client with keys".into()),
        };
        match (client, verdict) {
            (Some(client), Ok(())) => Ok((client, ClientAuth::Assertion)),
            (_, verdict) => {
                let reason = verdict.err().unwrap_or_default();
                tracing::info!(target: audit::TARGET, client_id = ?id, method = "private_key_jwt", reason = %crate::audit::Escaped(&reason), "client authentication failed");
                self.store()
                    .increment(&failures_key, AUTH_FAILURE_WINDOW)
                    .await?;
                Err(OAuthError::InvalidClient { basic: false })
            }
        }
    }
}

//! `private_key_jwt` client authentication (RFC 7523 §2.2, the MCP
//! `io.modelcontextprotocol/oauth-client-credentials` extension): machine clients prove who
//! they are with a JWT signed by a key they registered, instead of a shared secret.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::auth_server::AuthServer;
use crate::ConfigError;
use crate::address::AddressPolicy;
use crate::validate::{JwksValidator, JwtKey, JwtValidator, TokenValidator};

/// The `client_assertion_type` of a JWT client assertion.
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest an assertion may live (`exp` after now): every SDK signs for 300 s; a longer
/// one would be a reusable credential, and it bounds how long its `jti` is remembered.
const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// The algorithms an assertion may be signed with: asymmetric only (a shared secret would be
/// `client_secret_jwt`, which this server does not offer).
pub(super) const ASSERTION_ALGORITHMS: [&str; 9] = [
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

/// A machine client that authenticates with `private_key_jwt`: its id, the scopes it may be
/// granted (an enforced ceiling) and the public keys its assertions are checked with, given in
/// code or fetched from its JWKS URL.
///
/// Assertions must carry `iss` = `sub` = the client id, `aud` = this server's issuer (RFC
/// 7523bis: the token endpoint's URL is refused, which closes the audience-injection attack on
/// clients that talk to several servers), `exp` at most ten minutes ahead, and a `jti` used
/// once. The TypeScript SDK's `PrivateKeyJwtProvider`, rmcp's `ClientCredentialsConfig::
/// PrivateKeyJwt` and the Python SDK's `PrivateKeyJWTOAuthProvider` send exactly that.
///
/// ```
/// use jsonwebtoken::Algorithm;
/// use tower_mcp_auth::server::{AuthServer, MachineClient};
/// use tower_mcp_auth::validate::JwtKey;
///
/// # let pem = include_bytes!("../../tests/keys/ec256.pub.pem");
/// let reporter = MachineClient::new("nightly-report", ["mcp:tools", "notes:read"])
///     .key(JwtKey::ec_pem(pem, Algorithm::ES256).unwrap());
/// let auth = AuthServer::builder("https://mcp.example.com")
///     .resource("https://mcp.example.com/mcp")
///     .machine_client(reporter)
///     .build()
///     .unwrap();
/// # let _ = auth;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MachineClient {
    pub(super) id: String,
    pub(super) scopes: Vec<String>,
    keys: Vec<JwtKey>,
    jwks_uri: Option<(String, AddressPolicy)>,
    token_endpoint_audience: bool,
}

impl MachineClient {
    /// A machine client `id` allowed `scopes`. Give it a key or a JWKS URL.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(
        id: impl Into<String>,
        scopes: I,
    ) -> Self {
        MachineClient {
            id: id.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            keys: Vec::new(),
            jwks_uri: None,
            token_endpoint_audience: false,
        }
    }

    /// Also accepts assertions whose `aud` is the token endpoint's URL (RFC 7523 §3 allows
    /// it; rmcp 2.x and older clients send it). Off by default: RFC 7523bis makes the issuer
    /// the only audience, because a client that talks to several authorization servers can be
    /// led (audience injection) to sign an assertion for one server's token endpoint and hand
    /// it to another; the issuer cannot be confused that way.
    pub fn accept_token_endpoint_audience(mut self, accept: bool) -> Self {
        self.token_endpoint_audience = accept;
        self
    }

    /// A public key its assertions may be signed with (several for a rotation).
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Its keys are published at `url` (fetched and refreshed as a [`JwksValidator`] does),
    /// reachable under `policy`.
    pub fn jwks_uri(mut self, url: impl Into<String>, policy: AddressPolicy) -> Self {
        self.jwks_uri = Some((url.into(), policy));
        self
    }

    /// The verifier of its assertions, for `issuer`.
    pub(super) fn verifier(
        &self,
        issuer: &str,
        token_endpoint: &str,
    ) -> Result<AssertionKeys, ConfigError> {
        if self.keys.is_empty() == self.jwks_uri.is_none() {
            return Err(ConfigError::InvalidServer(format!(
                "machine client `{}` needs keys or a JWKS URL (one of the two)",
                self.id
            )));
        }
        if let Some(hmac) = self
            .keys
            .iter()
            .find(|k| k.algorithm().family() == jsonwebtoken::AlgorithmFamily::Hmac)
        {
            return Err(ConfigError::InvalidKey(format!(
                "machine client `{}`: {:?} is a shared secret, not a public key",
                self.id,
                hmac.algorithm()
            )));
        }
        let verifier: Arc<dyn TokenValidator> = match &self.jwks_uri {
            Some((url, policy)) => {
                let mut builder =
                    JwksValidator::builder(url, &self.id, issuer).address_policy(policy.clone());
                if self.token_endpoint_audience {
                    builder = builder.also_audience(token_endpoint);
                }
                Arc::new(builder.build()?)
            }
            None => {
                let mut builder = JwtValidator::builder(&self.id, issuer);
                if self.token_endpoint_audience {
                    builder = builder.also_audience(token_endpoint);
                }
                for key in &self.keys {
                    builder = builder.key(key.clone());
                }
                Arc::new(builder.build()?)
            }
        };
        Ok(AssertionKeys(verifier))
    }
}

/// How a machine client's assertions are checked (signature, `iss`, `aud`, `exp`).
#[derive(Clone)]
pub(super) struct AssertionKeys(Arc<dyn TokenValidator>);

impl std::fmt::Debug for AssertionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AssertionKeys")
    }
}

/// The string claim `name` of a JWT, read before its signature is checked: only to find the
/// keys that check it (an assertion's `sub`, which RFC 7523 §3 makes the client id; a grant's
/// `iss`), never to trust.
pub(super) fn unverified_claim(jwt: &str, name: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

impl AuthServer {
    /// Checks `assertion` for `client_id` with `keys`: signature, `iss` = `sub` = client id,
    /// `aud` = our issuer, `exp` within [`MAX_LIFETIME`], and its `jti` never seen before
    /// (remembered in the store until it expires, so every replica refuses a replay).
    pub(super) async fn verify_assertion(
        &self,
        client_id: &str,
        keys: &AssertionKeys,
        assertion: &str,
    ) -> Result<(), String> {
        let ctx = keys
            .0
            .validate(assertion)
            .await
            .map_err(|e| e.to_string())?;
        if ctx.subject() != client_id {
            return Err("the assertion's sub is not the client".into());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let exp = ctx
            .claim("exp")
            .and_then(Value::as_u64)
            .ok_or("the assertion has no exp")?;
        if exp > now + MAX_LIFETIME.as_secs() {
            return Err("the assertion lives longer than ten minutes".into());
        }
        let jti = ctx
            .claim("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or("the assertion has no jti")?;
        // Remembered past `exp` by the leeway the signature check allowed.
        let ttl = Duration::from_secs(exp.saturating_sub(now) + 60);
        let key = super::keyspace::assertion_jti(client_id, jti);
        let fresh = self
            .store()
            .put_if_absent(&key, bytes::Bytes::from_static(b"1"), ttl)
            .await
            .map_err(|e| format!("the store failed: {e}"))?;
        if !fresh {
            return Err("the assertion was used before (replay)".into());
        }
        Ok(())
    }
}

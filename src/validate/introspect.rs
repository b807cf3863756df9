//! Opaque token validation through OAuth 2.0 Token Introspection (RFC 7662): [`IntrospectionValidator`] and its defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::Digest;

use super::{BoxFuture, ClaimRules, TokenError, TokenValidator};
use crate::address::AddressPolicy;
use crate::outbound::{client as default_client, describe, read_limited};
use crate::resource::parse_http_url;
use crate::{AuthContext, ConfigError};

const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The default cap on how long an introspection result is reused.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// How this resource server authenticates to the introspection endpoint.
#[derive(Clone)]
enum ClientAuth {
    Basic { id: String, secret: String },
    Bearer(String),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::Basic { id, .. } => f.debug_struct("Basic").field("id", id).finish(),
            ClientAuth::Bearer(_) => f.write_str("Bearer(..)"),
        }
    }
}

/// Validates opaque access tokens by asking the authorization server (RFC 7662).
///
/// The server must answer `active: true` with an `aud` naming this resource (the audience check
/// is not optional), an `exp` in the future if it sends one, the configured issuer if one is
/// configured, and a subject (`sub`, or `client_id` for client-credentials tokens).
/// Results are cached by the bearer layer until the token's `exp`, but at most `cache_ttl`
/// (default 60 s), the window in which a revoked token may still be accepted. An unreachable or
/// failing endpoint gives [`TokenError::Unavailable`] (503).
///
/// ```no_run
/// use tower_mcp_auth::validate::IntrospectionValidator;
///
/// let validator = IntrospectionValidator::builder(
///     "https://auth.example.com/oauth/introspect",
///     "https://mcp.example.com/mcp",
/// )
/// .client_credentials("mcp-server", "s3cret")
/// .issuer("https://auth.example.com")
/// .build()
/// .unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct IntrospectionValidator(Arc<Shared>);

struct Shared {
    endpoint: String,
    client: reqwest::Client,
    auth: ClientAuth,
    rules: ClaimRules,
    cache_ttl: Duration,
    /// Tokens recently found inactive (by SHA-256), so a client replaying garbage costs the
    /// authorization server one call per token per `negative_ttl`, not one per request.
    inactive: Option<moka::sync::Cache<[u8; 32], ()>>,
    /// Bounds concurrent introspection calls: a flood of fresh tokens queues here instead of
    /// becoming a flood at the authorization server.
    in_flight: tokio::sync::Semaphore,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionValidator")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

/// The default time a token found inactive is remembered as such.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// The default number of concurrent introspection calls.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;

impl IntrospectionValidator {
    /// Starts a validator asking `endpoint` about tokens, accepting those issued for `audience`
    /// (the canonical URI of this resource).
    pub fn builder(
        endpoint: impl Into<String>,
        audience: impl Into<String>,
    ) -> IntrospectionValidatorBuilder {
        IntrospectionValidatorBuilder {
            endpoint: endpoint.into(),
            rules: ClaimRules::new(Vec::new(), vec![audience.into()], false),
            auth: None,
            leeway: None,
            cache_ttl: DEFAULT_CACHE_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            timeout: Duration::from_secs(5),
            client: None,
            allow_insecure_http: false,
            addresses: AddressPolicy::default(),
        }
    }
}

impl Shared {
    async fn introspect(&self, token: &str) -> Result<AuthContext, TokenError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if self
            .inactive
            .as_ref()
            .is_some_and(|c| c.contains_key(&digest))
        {
            return Err(TokenError::Inactive);
        }
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| TokenError::Unavailable("introspection is shut down".into()))?;
        let result = self.call_endpoint(token).await;
        if matches!(result, Err(TokenError::Inactive))
            && let Some(cache) = &self.inactive
        {
            cache.insert(digest, ());
        }
        result
    }

    async fn call_endpoint(&self, token: &str) -> Result<AuthContext, TokenError> {
        let request = self
            .client
            .post(&self.endpoint)
            .header(http::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        let request = match &self.auth {
            ClientAuth::Basic { id, secret } => {
                // RFC 6749 §2.3.1: form-urlencode id and secret before Basic encoding.
                request.basic_auth(form_encode(id), Some(form_encode(secret)))
            }
            ClientAuth::Bearer(token) => request.bearer_auth(token),
        };
        let unavailable = |e: String| {
            tracing::warn!(endpoint = %crate::audit::Escaped(&self.endpoint), error = %crate::audit::Escaped(&e), "token introspection failed");
            TokenError::Unavailable(e)
        };
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(format!("request failed: {}", describe(&e))))?;
        let body = read_limited(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(unavailable)?;
        let mut claims: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("response is not a JSON object: {e}")))?;
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenError::Inactive);
        }
        if let Some(Value::String(t)) = claims.get("token_type")
            && t.eq_ignore_ascii_case("refresh_token")
        {
            return Err(TokenError::WrongType);
        }
        // Client-credentials tokens name no user; the client is the principal.
        if !claims.contains_key("sub")
            && let Some(client_id) = claims.get("client_id").cloned()
        {
            claims.insert("sub".into(), client_id);
        }
        self.rules.check(claims)
    }
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl TokenValidator for IntrospectionValidator {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
        Box::pin(self.0.introspect(token))
    }

    fn cache_ttl(&self) -> Option<Duration> {
        Some(self.0.cache_ttl)
    }
}

/// Builder of [`IntrospectionValidator`].
#[derive(Debug, Clone)]
#[must_use]
pub struct IntrospectionValidatorBuilder {
    endpoint: String,
    rules: ClaimRules,
    auth: Option<ClientAuth>,
    leeway: Option<Duration>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    max_in_flight: usize,
    timeout: Duration,
    client: Option<reqwest::Client>,
    allow_insecure_http: bool,
    addresses: AddressPolicy,
}

impl IntrospectionValidatorBuilder {
    /// Which addresses the endpoint may be reached at (default
    /// [`AddressPolicy::public_only`]; an authorization server on the same machine needs
    /// `allow_loopback`, one inside the network `allow_private` or `allow_network`).
    pub fn address_policy(mut self, policy: AddressPolicy) -> Self {
        self.addresses = policy;
        self
    }

    /// How long a token found inactive is refused without asking again (default 10 s; zero
    /// turns this off). A token that becomes active later (clock skew at issuance) is accepted
    /// after this delay.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// The most introspection calls in flight at once (default 32); further ones wait.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls.max(1);
        self
    }

    /// Authenticates to the endpoint with HTTP Basic (`client_secret_basic`).
    pub fn client_credentials(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.auth = Some(ClientAuth::Basic {
            id: id.into(),
            secret: secret.into(),
        });
        self
    }

    /// Authenticates to the endpoint with a bearer token of its own.
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(ClientAuth::Bearer(token.into()));
        self
    }

    /// Requires the response's `iss` to be this issuer.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.rules.add_issuer(issuer.into());
        self
    }

    /// Accepts a further audience.
    pub fn also_audience(mut self, audience: impl AsRef<str>) -> Self {
        self.rules.add_audience(audience.as_ref());
        self
    }

    /// Clock-skew leeway for `exp` and `nbf` (default 30 s, at most 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = Some(leeway);
        self
    }

    /// The longest a positive result is reused (default 60 s): the window in which a revoked
    /// token is still accepted.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Timeout of an introspection request (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses this HTTP client instead of the default one (timeouts, no redirects).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Accepts a plain-http endpoint on a non-loopback host (test networks only).
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// Builds the validator; RFC 7662 endpoints require client authentication, so one of
    /// [`client_credentials`](Self::client_credentials) or [`bearer`](Self::bearer) must be set.
    pub fn build(mut self) -> Result<IntrospectionValidator, ConfigError> {
        parse_http_url(
            "introspection endpoint",
            &self.endpoint,
            self.allow_insecure_http,
        )?;
        self.addresses
            .check_url("introspection endpoint", &self.endpoint)?;
        if let Some(leeway) = self.leeway {
            self.rules.set_leeway(leeway)?;
        }
        let auth = self.auth.ok_or(ConfigError::MissingClientAuthentication)?;
        let client = match self.client {
            Some(client) => client,
            None => default_client(self.timeout, &self.addresses)?,
        };
        Ok(IntrospectionValidator(Arc::new(Shared {
            endpoint: self.endpoint,
            client,
            auth,
            rules: self.rules,
            cache_ttl: self.cache_ttl,
            inactive: (!self.negative_ttl.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(self.negative_ttl)
                    .build()
            }),
            in_flight: tokio::sync::Semaphore::new(self.max_in_flight),
        })))
    }
}

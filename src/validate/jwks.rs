//! JWT validation against an identity provider's published key set (RFC 7517 JWKS): [`JwksValidator`] and its defaults.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use serde_json::Value;

use super::jwt::{JoseHeader, JwtCore, JwtKey, install_crypto_provider, jwk_algorithm};
use super::{BoxFuture, ClaimRules, TokenError, TokenValidator};
use crate::address::AddressPolicy;
use crate::outbound::{client as default_client, describe, read_limited};
use crate::resource::parse_http_url;
use crate::{AuthContext, ConfigError};

/// How long a fetched key set is used before it is refreshed in the background.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// How long keys are trusted without a successful fetch (the identity provider unreachable)
/// before validation stops: a key the provider removed meanwhile must not validate forever.
pub const DEFAULT_KEY_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The least time between two fetches triggered by tokens naming unknown keys.
pub const DEFAULT_REFETCH_COOLDOWN: Duration = Duration::from_secs(10);
/// The asymmetric algorithms accepted by default. HMAC never: a published key is public.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Validates JWTs with the keys an identity provider publishes at its JWKS URL (Keycloak,
/// Auth0, Entra ID, Okta, Cognito, Google, or our own authorization server).
///
/// - Keys are fetched on first use and kept; after `max_age` they are refreshed in the
///   background while the old ones keep serving, so a JWKS outage does not stop tokens signed by
///   a known key.
/// - A token naming an unknown `kid` triggers one refetch (key rotation works without a
///   restart), then nothing for `refetch_cooldown`, so tokens with random `kid`s cannot
///   hammer the provider. Concurrent requests share one fetch (single-flight).
/// - When no fetch has succeeded, or the last one failed and the key is unknown, validation
///   fails with [`TokenError::Unavailable`] (503), not `invalid_token`.
/// - A key the provider removes stops validating within twice `max_age`, tokens in the bearer
///   layer's cache included: a validated token is served from the cache for at most `max_age`
///   (then its signature is checked again, against keys at most `max_age` old). Keys the
///   provider cannot be asked about for `key_max_age` (default 24 h) are dropped.
/// - Fetches go only to addresses the [`AddressPolicy`](crate::address::AddressPolicy) permits
///   (public addresses by default; see [`JwksValidatorBuilder::address_policy`]).
///
/// # What the identity provider must issue
///
/// - `iss` exactly the configured issuer: [`JwksValidatorBuilder::build_checked`] compares it
///   with the provider's discovery document at start-up (a trailing slash, or `localhost`
///   for `127.0.0.1`, would refuse every token) and names both values when they differ;
/// - `aud` holding this resource's canonical URI (RFC 8707 resource indicators, or an audience
///   mapper), or a value added with [`JwksValidatorBuilder::also_audience`];
/// - `sub` and `exp`; the scopes in `scope` (space-separated) or `scp` (string or array); the
///   client in `client_id`, `azp` or `cid` (optional);
/// - a signature by a key of its JWKS, with an accepted algorithm; and, with
///   [`JwksValidatorBuilder::expected_type`], the JOSE `typ` (`at+jwt` for RFC 9068 tokens).
///
/// Such tokens cannot be revoked before `exp`: keep them short-lived, or use opaque tokens
/// with [`IntrospectionValidator`](super::IntrospectionValidator). The README's "Use your
/// identity provider" says how to set up Keycloak, Auth0, Okta, Entra ID, Cognito and Google.
///
/// ```no_run
/// use tower_mcp_auth::validate::JwksValidator;
///
/// let validator = JwksValidator::builder(
///     "https://id.example.com/realms/mcp/protocol/openid-connect/certs",
///     "https://id.example.com/realms/mcp",
///     "https://mcp.example.com/mcp",
/// )
/// .build()
/// .unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct JwksValidator(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    url: String,
    client: reqwest::Client,
    core: JwtCore,
    keys: RwLock<Arc<KeySet>>,
    fetch: tokio::sync::Mutex<FetchState>,
    background_refresh: AtomicBool,
    max_age: Duration,
    key_max_age: Duration,
    cooldown: Duration,
}

#[derive(Debug, Default)]
struct KeySet {
    keys: Vec<JwtKey>,
    /// Bumped by every successful fetch; lets a waiter see that someone fetched meanwhile.
    generation: u64,
    fetched_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

impl JwksValidator {
    /// Starts a validator using the keys at `jwks_url`, accepting tokens from `issuer`
    /// (compared exactly) for `audience` (the canonical URI of this resource).
    pub fn builder(
        jwks_url: impl Into<String>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> JwksValidatorBuilder {
        JwksValidatorBuilder {
            url: jwks_url.into(),
            rules: ClaimRules::new(vec![issuer.into()], vec![audience.into()], true),
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            expected_type: None,
            leeway: None,
            max_age: DEFAULT_MAX_AGE,
            key_max_age: DEFAULT_KEY_MAX_AGE,
            cooldown: DEFAULT_REFETCH_COOLDOWN,
            timeout: Duration::from_secs(5),
            client: None,
            allow_insecure_http: false,
            addresses: AddressPolicy::default(),
        }
    }

    /// Fetches the key set now instead of at the first token, so a misconfigured URL shows at
    /// start-up. Validation works without calling this.
    pub async fn prefetch(&self) -> Result<(), TokenError> {
        let generation = self.0.current().generation;
        self.0.refresh(generation).await.map(|_| ())
    }

    /// The ids of the keys currently held (for diagnostics).
    pub fn key_ids(&self) -> Vec<String> {
        self.0
            .current()
            .keys
            .iter()
            .filter_map(|k| k.kid().map(str::to_owned))
            .collect()
    }
}

impl Shared {
    fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, set: KeySet) -> Arc<KeySet> {
        let set = Arc::new(set);
        match self.keys.write() {
            Ok(mut guard) => *guard = set.clone(),
            Err(poisoned) => *poisoned.into_inner() = set.clone(),
        }
        set
    }

    async fn validate(self: &Arc<Self>, token: &str) -> Result<AuthContext, TokenError> {
        let header = self.core.header(token)?;
        let mut set = self.current();
        match set.fetched_at {
            None => set = self.refresh(set.generation).await?,
            // Keys nobody could confirm for this long may have been removed: ask now, and
            // without an answer refuse to guess.
            Some(at) if at.elapsed() >= self.key_max_age => {
                set = self.refresh(set.generation).await?;
                if set
                    .fetched_at
                    .is_none_or(|at| at.elapsed() >= self.key_max_age)
                {
                    return Err(TokenError::Unavailable(
                        "the key set is older than its maximum age and cannot be refreshed".into(),
                    ));
                }
            }
            Some(at) if at.elapsed() >= self.max_age => self.refresh_in_background(),
            Some(_) => {}
        }
        if !has_candidate(&set, &header) {
            // An unknown key: perhaps the provider rotated. One refetch, then a cooldown.
            set = self.refresh(set.generation).await?;
            if !has_candidate(&set, &header) {
                return Err(TokenError::UnknownKey);
            }
        }
        self.core.verify(token, &header, set.keys.iter())
    }

    /// Fetches the key set unless another task did since `seen_generation` was read (then
    /// that result is used) or the last attempt was within the cooldown (then the current set,
    /// or the last error, stands). Concurrent callers queue on the lock: one fetch serves all.
    async fn refresh(&self, seen_generation: u64) -> Result<Arc<KeySet>, TokenError> {
        let mut state = self.fetch.lock().await;
        let current = self.current();
        if current.generation != seen_generation {
            return Ok(current);
        }
        if let Some(at) = state.last_attempt
            && at.elapsed() < self.cooldown
        {
            return match &state.last_error {
                Some(e) => Err(TokenError::Unavailable(e.clone())),
                // Never fetched successfully: we cannot tell a good token from a bad one.
                None if current.fetched_at.is_none() => {
                    Err(TokenError::Unavailable("no key set fetched yet".into()))
                }
                None => Ok(current),
            };
        }
        state.last_attempt = Some(Instant::now());
        // Recorded before awaiting: if this request is dropped mid-fetch (client gone), the
        // requests queued behind it must read "unavailable", not "no such key".
        state.last_error = Some("the previous JWKS fetch was interrupted".into());
        match self.fetch_keys().await {
            Ok(keys) => {
                state.last_error = None;
                crate::metrics::count!(crate::metrics::JWKS_FETCHES, "outcome" => "ok");
                tracing::debug!(url = %crate::audit::Escaped(&self.url), keys = keys.len(), "fetched JWKS");
                Ok(self.store(KeySet {
                    keys,
                    generation: current.generation + 1,
                    fetched_at: Some(Instant::now()),
                }))
            }
            Err(e) => {
                crate::metrics::count!(crate::metrics::JWKS_FETCHES, "outcome" => "error");
                tracing::warn!(url = %crate::audit::Escaped(&self.url), error = %crate::audit::Escaped(&e), "JWKS fetch failed; keeping the keys held");
                state.last_error = Some(e.clone());
                Err(TokenError::Unavailable(e))
            }
        }
    }

    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.background_refresh.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the in-progress flag however the task ends (finished, panicked, dropped with
        /// its runtime), so the periodic refresh can never be switched off for good.
        struct ClearOnDrop(Arc<Shared>);
        impl Drop for ClearOnDrop {
            fn drop(&mut self) {
                self.0.background_refresh.store(false, Ordering::Release);
            }
        }
        let guard = ClearOnDrop(self.clone());
        runtime.spawn(async move {
            let generation = guard.0.current().generation;
            // Failure keeps the held keys; it is logged in `refresh`.
            let _ = guard.0.refresh(generation).await;
        });
    }

    async fn fetch_keys(&self) -> Result<Vec<JwtKey>, String> {
        let response = self
            .client
            .get(&self.url)
            .header(
                http::header::ACCEPT,
                "application/json, application/jwk-set+json",
            )
            .send()
            .await
            .map_err(|e| format!("JWKS request failed: {}", describe(&e)))?;
        let body = read_limited(response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| format!("JWKS response refused: {e}"))?;
        let doc: Value =
            serde_json::from_slice(&body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err("JWKS has no `keys` array".into());
        };
        let mut keys = Vec::new();
        for entry in entries {
            // One odd key (an encryption key, a curve we do not support) must not take the
            // whole set down: skip it.
            match serde_json::from_value::<Jwk>(entry.clone()) {
                Ok(jwk) => self.add_jwk(&jwk, &mut keys),
                Err(e) => {
                    tracing::debug!(error = %crate::audit::Escaped(&e), "skipping unparseable JWK")
                }
            }
        }
        if keys.is_empty() {
            let published: Vec<&str> = entries
                .iter()
                .filter_map(|e| e.get("alg").or_else(|| e.get("kty")))
                .filter_map(Value::as_str)
                .collect();
            return Err(format!(
                "JWKS holds no usable verification key: it publishes {published:?}, the accepted algorithms are {:?}",
                self.core.algorithms
            ));
        }
        Ok(keys)
    }

    fn add_jwk(&self, jwk: &Jwk, keys: &mut Vec<JwtKey>) {
        let algorithms: Vec<Algorithm> = match jwk_algorithm(jwk) {
            Ok(Some(alg)) => vec![alg],
            // RSA without `alg`: usable with every accepted RSA algorithm.
            Ok(None) if matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) => self
                .core
                .algorithms
                .iter()
                .copied()
                .filter(|a| a.family() == jsonwebtoken::AlgorithmFamily::Rsa)
                .collect(),
            Ok(None) | Err(_) => return,
        };
        let mut shared_key = None;
        for alg in algorithms {
            if !self.core.algorithms.contains(&alg) {
                continue;
            }
            match &shared_key {
                None => match JwtKey::from_jwk_with(jwk, alg) {
                    Ok(key) => {
                        shared_key = Some(key.clone());
                        keys.push(key);
                    }
                    Err(e) => {
                        tracing::debug!(kid = ?jwk.common.key_id, error = %crate::audit::Escaped(&e), "skipping JWK");
                        return;
                    }
                },
                Some(key) => keys.push(JwtKey {
                    algorithm: alg,
                    ..key.clone()
                }),
            }
        }
    }
}

fn has_candidate(set: &KeySet, header: &JoseHeader) -> bool {
    set.keys.iter().any(|k| {
        k.algorithm() == header.alg
            && match (&header.kid, k.kid()) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    })
}

impl TokenValidator for JwksValidator {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
        Box::pin(self.0.validate(token))
    }

    /// A cached token is checked again after `max_age`, so a key the provider removed stops
    /// validating within a bound, not at the token's `exp`.
    fn cache_ttl(&self) -> Option<Duration> {
        Some(self.0.max_age)
    }
}

/// Builder of [`JwksValidator`].
#[derive(Debug, Clone)]
#[must_use]
pub struct JwksValidatorBuilder {
    url: String,
    rules: ClaimRules,
    algorithms: Vec<Algorithm>,
    expected_type: Option<String>,
    leeway: Option<Duration>,
    max_age: Duration,
    key_max_age: Duration,
    cooldown: Duration,
    timeout: Duration,
    client: Option<reqwest::Client>,
    allow_insecure_http: bool,
    addresses: AddressPolicy,
}

impl JwksValidatorBuilder {
    /// The signing algorithms accepted (default: [`DEFAULT_ALGORITHMS`]). HMAC algorithms are
    /// refused at build time.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Accepts a further issuer.
    pub fn also_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.rules.add_issuer(issuer.into());
        self
    }

    /// Accepts a further audience.
    pub fn also_audience(mut self, audience: impl AsRef<str>) -> Self {
        self.rules.add_audience(audience.as_ref());
        self
    }

    /// Requires the JOSE `typ` header (e.g. `at+jwt`).
    pub fn expected_type(mut self, typ: impl Into<String>) -> Self {
        self.expected_type = Some(typ.into());
        self
    }

    /// Clock-skew leeway for `exp` and `nbf` (default 30 s, at most 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = Some(leeway);
        self
    }

    /// How long a fetched key set is used before a background refresh, and the longest a
    /// validated token is served from the bearer layer's cache (default 10 minutes). A key the
    /// provider removes stops validating within twice this.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// How long keys are used while the provider cannot be reached to confirm them (default
    /// 24 hours); past it, tokens are refused with 503 until a fetch succeeds. Never less than
    /// `max_age`.
    pub fn key_max_age(mut self, key_max_age: Duration) -> Self {
        self.key_max_age = key_max_age;
        self
    }

    /// Which addresses the key set (and, in
    /// [`build_checked`](Self::build_checked), the discovery document) may be fetched from
    /// (default [`AddressPolicy::public_only`]). An identity provider on the same machine
    /// needs `allow_loopback`, one inside the network `allow_private` or `allow_network`.
    ///
    /// ```
    /// use tower_mcp_auth::address::AddressPolicy;
    /// use tower_mcp_auth::validate::JwksValidator;
    ///
    /// let validator = JwksValidator::builder(
    ///     "http://127.0.0.1:8080/realms/mcp/protocol/openid-connect/certs",
    ///     "http://127.0.0.1:8080/realms/mcp",
    ///     "http://127.0.0.1:3000/mcp",
    /// )
    /// .address_policy(AddressPolicy::public_only().allow_loopback())
    /// .build();
    /// assert!(validator.is_ok());
    /// ```
    pub fn address_policy(mut self, policy: AddressPolicy) -> Self {
        self.addresses = policy;
        self
    }

    /// The least time between two fetches caused by unknown key ids (default 10 s).
    pub fn refetch_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Timeout of a JWKS request (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Uses this HTTP client (proxies, custom roots) instead of the default one (timeouts, no
    /// redirects).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Accepts a plain-http JWKS URL on a non-loopback host (test networks only).
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// Builds the validator and checks it against the identity provider, so a configuration
    /// that would refuse every token fails at start-up instead, naming both values:
    ///
    /// - the provider's discovery document (see [`discover`](super::discovery::discover)) must
    ///   name exactly the configured issuer (a trailing slash, or `localhost` for
    ///   `127.0.0.1`, makes every token's `iss` differ);
    /// - the key set must be reachable, at the configured JWKS URL (a `jwks_uri` in the
    ///   document that differs is logged: a proxy may serve the same keys elsewhere);
    /// - some key must be usable with an accepted algorithm.
    ///
    /// The keys fetched are kept: the first request needs no fetch.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_mcp_auth::ConfigError> {
    /// use tower_mcp_auth::validate::JwksValidator;
    ///
    /// let validator = JwksValidator::builder(
    ///     "https://id.example.com/realms/mcp/protocol/openid-connect/certs",
    ///     "https://id.example.com/realms/mcp",
    ///     "https://mcp.example.com/mcp",
    /// )
    /// .build_checked()
    /// .await?;
    /// # let _ = validator; Ok(()) }
    /// ```
    pub async fn build_checked(self) -> Result<JwksValidator, ConfigError> {
        let insecure = self.allow_insecure_http;
        let addresses = self.addresses.clone();
        let validator = self.build()?;
        let shared = &validator.0;
        let issuers = shared.core.rules.issuers();
        let issuer = issuers.first().ok_or(ConfigError::NoKeys)?;
        addresses.check_url("issuer", issuer)?;
        let provider = super::discovery::discover(&shared.client, issuer, insecure).await?;
        match provider.jwks_uri.as_deref() {
            Some(published) if published != shared.url => {
                tracing::warn!(configured = %crate::audit::Escaped(&shared.url), published, "the JWKS URL differs from the provider's jwks_uri");
            }
            Some(_) => {}
            None => {
                tracing::warn!(issuer = %crate::audit::Escaped(&issuer), "the provider's discovery document has no jwks_uri");
            }
        }
        // A fetch succeeds only with a key usable with an accepted algorithm.
        validator
            .prefetch()
            .await
            .map_err(|e| ConfigError::ProviderUnavailable {
                url: shared.url.clone(),
                reason: match e {
                    super::TokenError::Unavailable(detail) => detail,
                    other => other.to_string(),
                },
            })?;
        Ok(validator)
    }

    /// Builds the validator. Nothing is fetched yet (see [`JwksValidator::prefetch`], and
    /// [`JwksValidatorBuilder::build_checked`] for start-up checks).
    pub fn build(mut self) -> Result<JwksValidator, ConfigError> {
        parse_http_url("JWKS URL", &self.url, self.allow_insecure_http)?;
        self.addresses.check_url("JWKS URL", &self.url)?;
        if let Some(leeway) = self.leeway {
            self.rules.set_leeway(leeway)?;
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::InvalidKey("no algorithm accepted".into()));
        }
        if let Some(hmac) = self
            .algorithms
            .iter()
            .find(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac)
        {
            return Err(ConfigError::InvalidKey(format!(
                "{hmac:?} cannot be verified with a published key"
            )));
        }
        install_crypto_provider();
        let client = match self.client {
            Some(client) => client,
            None => default_client(self.timeout, &self.addresses)?,
        };
        Ok(JwksValidator(Arc::new(Shared {
            url: self.url,
            client,
            core: JwtCore {
                rules: self.rules,
                algorithms: self.algorithms.into_iter().collect(),
                expected_type: self.expected_type,
            },
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            background_refresh: AtomicBool::new(false),
            max_age: self.max_age,
            key_max_age: self.key_max_age.max(self.max_age),
            cooldown: self.cooldown,
        })))
    }
}

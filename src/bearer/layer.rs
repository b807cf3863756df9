use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::BearerService;
use super::admission::Admission;
use super::cache::TokenCache;
use super::session::SessionBindings;
use crate::validate::TokenValidator;
use crate::{ProtectedResource, RequiredScopes, Scopes};

/// The default number of validated tokens kept.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 10_000;
/// The default number of MCP sessions whose owner is remembered.
pub const DEFAULT_SESSION_CAPACITY: u64 = 100_000;
/// The default idle time after which a session binding is forgotten.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Applies [`BearerService`]: requires a valid `Authorization: Bearer` token on every request.
///
/// Clones share the validator, the token cache and the session bindings.
#[derive(Debug)]
pub struct BearerLayer<V> {
    pub(crate) validator: Arc<V>,
    pub(crate) admission: Arc<Admission>,
}

impl<V> Clone for BearerLayer<V> {
    fn clone(&self) -> Self {
        BearerLayer {
            validator: self.validator.clone(),
            admission: self.admission.clone(),
        }
    }
}

impl<V: TokenValidator> BearerLayer<V> {
    /// Protects `resource` with tokens that `validator` accepts. The token cache (10,000 entries)
    /// and session binding are on; no scope is required beyond a valid token.
    pub fn new(validator: V, resource: ProtectedResource) -> Self {
        let cache = TokenCache::new(DEFAULT_TOKEN_CACHE_CAPACITY, validator.cache_ttl());
        BearerLayer {
            admission: Arc::new(Admission {
                challenge_scopes: resource.baseline_scopes().clone(),
                resource,
                required_scopes: RequiredScopes::default(),
                cache: Some(cache),
                sessions: Some(SessionBindings::new(
                    DEFAULT_SESSION_CAPACITY,
                    DEFAULT_SESSION_IDLE,
                )),
                token_header: http::header::AUTHORIZATION,
                dpop: crate::dpop::Dpop::new(),
                #[cfg(feature = "rate-limit")]
                failures: None,
            }),
            validator: Arc::new(validator),
        }
    }

    /// Scopes every request needs, whatever it does; a valid token without them gets 403
    /// `insufficient_scope` naming them. Per-tool scopes belong in the tool policy layer. They
    /// join the 401 challenge's `scope` too, so a client asks for them in its first
    /// authorization.
    #[must_use]
    pub fn require_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let admission = Arc::make_mut(&mut self.admission);
        admission.required_scopes = RequiredScopes::new(Scopes::new(scopes));
        admission.challenge_scopes = admission
            .challenge_scopes
            .iter()
            .chain(admission.required_scopes.scopes().iter())
            .collect();
        self
    }

    /// The `scope` of 401 challenges: what a client should ask for to start with. Defaults to
    /// the resource's [`baseline_scopes`](ProtectedResource::baseline_scopes) plus the required
    /// scopes; this replaces both.
    #[must_use]
    pub fn challenge_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Arc::make_mut(&mut self.admission).challenge_scopes = Scopes::new(scopes);
        self
    }

    /// How many validated tokens to keep (default 10,000); 0 turns the cache off, so every
    /// request pays for full validation.
    #[must_use]
    pub fn token_cache_capacity(mut self, capacity: u64) -> Self {
        Arc::make_mut(&mut self.admission).cache =
            (capacity > 0).then(|| TokenCache::new(capacity, self.validator.cache_ttl()));
        self
    }

    /// Whether stateful MCP sessions are bound to the principal that opened them (default on).
    /// Turn it off only if the inner service binds sessions itself.
    #[must_use]
    pub fn session_binding(mut self, enabled: bool) -> Self {
        Arc::make_mut(&mut self.admission).sessions =
            enabled.then(|| SessionBindings::new(DEFAULT_SESSION_CAPACITY, DEFAULT_SESSION_IDLE));
        self
    }

    /// How long an unused session's binding is remembered (default 24 hours). Set it at least
    /// as long as the MCP server keeps idle sessions: a forgotten binding makes the session
    /// unusable (the client must initialize a new one), never open to others.
    #[must_use]
    pub fn session_idle_timeout(mut self, idle: Duration) -> Self {
        let admission = Arc::make_mut(&mut self.admission);
        if admission.sessions.is_some() {
            admission.sessions = Some(SessionBindings::new(DEFAULT_SESSION_CAPACITY, idle));
        }
        self
    }

    /// Reads the token from `name` instead of `Authorization` (same syntax: `Bearer <token>`),
    /// for deployments where a proxy in front reserves `Authorization` for itself. Off by
    /// default; the 401 challenge is unchanged, so only clients configured for the header
    /// can use it.
    ///
    /// ```
    /// # use tower_mcp_auth::{BearerLayer, ProtectedResource, validate::JwtValidator};
    /// # fn layer(validator: JwtValidator, resource: ProtectedResource) {
    /// let layer = BearerLayer::new(validator, resource)
    ///     .token_header(http::HeaderName::from_static("x-authorization"));
    /// # let _ = layer;
    /// # }
    /// ```
    #[must_use]
    pub fn token_header(mut self, name: http::HeaderName) -> Self {
        Arc::make_mut(&mut self.admission).token_header = name;
        self
    }

    /// Limits the failed token validations each client address may cause (off by default):
    /// past the limit, tokens not validated before are refused with `429` before any
    /// signature work. See [`AuthFailureLimit`](super::AuthFailureLimit).
    ///
    /// ```
    /// # use tower_mcp_auth::{BearerLayer, ProtectedResource, validate::JwtValidator};
    /// use std::time::Duration;
    /// use tower_mcp_auth::bearer::AuthFailureLimit;
    ///
    /// # fn layer(validator: JwtValidator, resource: ProtectedResource) {
    /// let layer = BearerLayer::new(validator, resource)
    ///     .limit_auth_failures(AuthFailureLimit::new(20, Duration::from_secs(60)));
    /// # let _ = layer;
    /// # }
    /// ```
    #[cfg(feature = "rate-limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
    #[must_use]
    pub fn limit_auth_failures(mut self, limit: super::AuthFailureLimit) -> Self {
        Arc::make_mut(&mut self.admission).failures = limit.build();
        self
    }

    /// How `Authorization: DPoP` requests are checked (RFC 9449): on by default with
    /// [`Dpop::new`](crate::dpop::Dpop::new) (no server nonces); give one with
    /// [`require_nonces`](crate::dpop::Dpop::require_nonces) to demand them. Tokens bound to a
    /// key (`cnf.jkt`) are refused as plain bearer tokens whatever this says.
    #[must_use]
    pub fn dpop(mut self, dpop: crate::dpop::Dpop) -> Self {
        Arc::make_mut(&mut self.admission).dpop = dpop;
        self
    }

    /// The header the token is read from.
    pub fn token_header_name(&self) -> &http::HeaderName {
        &self.admission.token_header
    }

    /// The protected resource this layer answers for.
    pub fn resource(&self) -> &ProtectedResource {
        &self.admission.resource
    }
}

impl<S, V> Layer<S> for BearerLayer<V> {
    type Service = BearerService<S, V>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerService {
            inner,
            validator: self.validator.clone(),
            admission: self.admission.clone(),
        }
    }
}

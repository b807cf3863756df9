//! Access token validation: the [`TokenValidator`] trait and its implementations.
//!
//! - [`JwtValidator`]: JWTs verified with keys given in code (HMAC, RSA, RSA-PSS, ECDSA, EdDSA).
//! - [`JwksValidator`] (feature `jwks`): JWTs of an external identity provider, verified with
//!   keys fetched from its JWKS URL, cached, refetched on an unknown `kid` with a cooldown.
//! - [`IntrospectionValidator`] (feature `introspection`): opaque tokens, asked of the
//!   authorization server through RFC 7662 introspection.
//! - [`ByFormat`]: JWT-shaped tokens to one validator, opaque ones to another.
//!
//! Every validator checks the issuer, the audience (the canonical URI of this resource,
//! RFC 8707), `exp` and `nbf` with a bounded leeway, and refuses `alg: none` and every
//! algorithm not configured for the key that would verify it. Audience and issuer are
//! constructor arguments: they cannot be forgotten.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::AuthContext;
use crate::resource::canonical_audience;

mod jwt;
pub(crate) use jwt::install_crypto_provider;
pub use jwt::{JwtKey, JwtValidator, JwtValidatorBuilder};

#[cfg(feature = "jwks")]
pub mod discovery;
#[cfg(feature = "jwks")]
pub mod jwks;
#[cfg(feature = "jwks")]
pub use jwks::{JwksValidator, JwksValidatorBuilder};

#[cfg(feature = "introspection")]
pub mod introspect;
#[cfg(feature = "introspection")]
pub use introspect::{IntrospectionValidator, IntrospectionValidatorBuilder};

pub use crate::BoxFuture;

/// Turns a presented access token into an [`AuthContext`], or says why it is refused.
///
/// Implement it for token formats the library does not know; the bearer layer caches what it
/// returns (keyed by a hash of the token, until the token's expiry or [`cache_ttl`]), so
/// implementations need no cache of their own.
///
/// ```
/// use tower_mcp_auth::validate::{BoxFuture, TokenError, TokenValidator};
/// use tower_mcp_auth::AuthContext;
///
/// /// Accepts exactly one static API key (compared in constant time).
/// struct ApiKey(String);
///
/// impl TokenValidator for ApiKey {
///     fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
///         Box::pin(async move {
///             use subtle::ConstantTimeEq;
///             if bool::from(token.as_bytes().ct_eq(self.0.as_bytes())) {
///                 let claims = serde_json::json!({"sub": "service", "scope": "mcp:tools"});
///                 AuthContext::from_claims(claims.as_object().cloned().unwrap_or_default())
///                     .ok_or(TokenError::MissingClaim("sub"))
///             } else {
///                 Err(TokenError::InvalidSignature)
///             }
///         })
///     }
/// }
/// ```
///
/// [`cache_ttl`]: TokenValidator::cache_ttl
pub trait TokenValidator: Send + Sync + 'static {
    /// Validates `token` (the bearer credential, without the scheme).
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>>;

    /// The longest a validated token may be served from the bearer layer's cache. `None` (the
    /// default) caches until the token expires, right for self-contained tokens (JWTs); an
    /// introspection validator caps it so a revocation is noticed.
    fn cache_ttl(&self) -> Option<Duration> {
        None
    }

    /// Whether `ctx`, which this validator accepted before, was revoked since. The bearer layer
    /// asks on every hit of its token cache, so this must be a local lookup, never I/O; a
    /// revoked context leaves the cache and the token is validated again (and refused). The
    /// default: never, right for validators with no revocation list.
    fn revoked(&self, ctx: &AuthContext) -> bool {
        let _ = ctx;
        false
    }
}

impl<V: TokenValidator + ?Sized> TokenValidator for Arc<V> {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
        (**self).validate(token)
    }
    fn cache_ttl(&self) -> Option<Duration> {
        (**self).cache_ttl()
    }
    fn revoked(&self, ctx: &AuthContext) -> bool {
        (**self).revoked(ctx)
    }
}

impl<V: TokenValidator + ?Sized> TokenValidator for Box<V> {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
        (**self).validate(token)
    }
    fn cache_ttl(&self) -> Option<Duration> {
        (**self).cache_ttl()
    }
    fn revoked(&self, ctx: &AuthContext) -> bool {
        (**self).revoked(ctx)
    }
}

/// Why a token was refused. The `Display` text is what the client reads in
/// `error_description`, so it names the failed check and nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a well-formed token of the expected format.
    #[error("the access token is malformed")]
    Malformed,
    /// The JOSE header names an algorithm that is not accepted (`none` included).
    #[error("the token's signing algorithm `{0}` is not accepted")]
    UnsupportedAlgorithm(String),
    /// The JOSE header has a `crit` parameter: extensions this validator does not understand
    /// must be refused (RFC 7515 §4.1.11).
    #[error("the token uses critical header extensions that are not supported")]
    UnsupportedCriticalHeader,
    /// The `typ` header is not the one required (e.g. `at+jwt`, RFC 9068).
    #[error("the token type is not accepted")]
    WrongType,
    /// No configured or published key matches the token's `kid` and algorithm.
    #[error("no verification key matches the token")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    InvalidSignature,
    /// `exp` is past (beyond the leeway).
    #[error("the access token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// `iss` is not an accepted issuer.
    #[error("the token was not issued by an accepted issuer")]
    WrongIssuer,
    /// `aud` does not name this resource.
    #[error("the token was not issued for this resource")]
    WrongAudience,
    /// A claim every accepted token must carry is missing or of the wrong type.
    #[error("the token lacks a valid `{0}` claim")]
    MissingClaim(&'static str),
    /// The authorization server says the token is not active (revoked, expired or unknown).
    #[error("the access token is not active")]
    Inactive,
    /// The token could not be checked right now (the JWKS or introspection endpoint is
    /// unreachable). Answered with 503, not 401: a 401 would make clients throw away a token
    /// that may be perfectly good.
    #[error("token validation is temporarily unavailable")]
    Unavailable(String),
}

impl TokenError {
    /// Whether the failure is on the server's side (answered 503) rather than the token's.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TokenError::Unavailable(_))
    }
}

/// The claim checks shared by every validator.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    /// Accepted issuers; empty only for introspection without a configured issuer (the
    /// authorization server asked is then the authority).
    issuers: Vec<String>,
    /// Accepted audiences, canonicalized.
    audiences: Vec<String>,
    leeway: Duration,
    require_exp: bool,
}

/// The largest clock-skew leeway accepted: more would let expired tokens live on noticeably.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// 9999-12-31T23:59:59Z, the largest `exp` accepted.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// The default clock-skew leeway.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

impl ClaimRules {
    pub(crate) fn new(issuers: Vec<String>, audiences: Vec<String>, require_exp: bool) -> Self {
        ClaimRules {
            issuers,
            audiences: audiences
                .iter()
                .map(|a| canonical_audience(a).into_owned())
                .collect(),
            leeway: DEFAULT_LEEWAY,
            require_exp,
        }
    }

    pub(crate) fn set_leeway(&mut self, leeway: Duration) -> Result<(), crate::ConfigError> {
        if leeway > MAX_LEEWAY {
            return Err(crate::ConfigError::LeewayTooLarge(leeway));
        }
        self.leeway = leeway;
        Ok(())
    }

    /// The accepted issuers, the first one as configured first.
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    pub(crate) fn issuers(&self) -> &[String] {
        &self.issuers
    }

    pub(crate) fn add_issuer(&mut self, issuer: String) {
        self.issuers.push(issuer);
    }

    pub(crate) fn add_audience(&mut self, audience: &str) {
        self.audiences
            .push(canonical_audience(audience).into_owned());
    }

    /// Checks `exp`, `nbf`, `iss` and `aud`, then builds the context.
    pub(crate) fn check(&self, claims: Map<String, Value>) -> Result<AuthContext, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let leeway = self.leeway.as_secs_f64();
        match claims.get("exp") {
            Some(v) => {
                let exp = v.as_f64().ok_or(TokenError::MissingClaim("exp"))?;
                // Beyond year 9999 (or negative): not a date any issuer means, and one that
                // would not fit a `SystemTime` for the cache's expiry.
                if !(0.0..MAX_NUMERIC_DATE).contains(&exp) {
                    return Err(TokenError::MissingClaim("exp"));
                }
                if exp + leeway <= now {
                    return Err(TokenError::Expired);
                }
            }
            None if self.require_exp => return Err(TokenError::MissingClaim("exp")),
            None => {}
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = v.as_f64().ok_or(TokenError::MissingClaim("nbf"))?;
            if nbf - leeway > now {
                return Err(TokenError::NotYetValid);
            }
        }
        if !self.issuers.is_empty() {
            let iss = claims
                .get("iss")
                .and_then(Value::as_str)
                .ok_or(TokenError::MissingClaim("iss"))?;
            // Exact string comparison: RFC 8414 §3.3 and RFC 9207 allow no normalization.
            if !self.issuers.iter().any(|i| i == iss) {
                return Err(TokenError::WrongIssuer);
            }
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => self.accepts_audience(aud),
            Some(Value::Array(auds)) => auds
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| self.accepts_audience(aud)),
            Some(_) => return Err(TokenError::MissingClaim("aud")),
            None => return Err(TokenError::MissingClaim("aud")),
        };
        if !audience_ok {
            return Err(TokenError::WrongAudience);
        }
        AuthContext::from_claims(claims).ok_or(TokenError::MissingClaim("sub"))
    }

    fn accepts_audience(&self, aud: &str) -> bool {
        let aud = canonical_audience(aud);
        self.audiences.iter().any(|a| *a == *aud)
    }
}

/// Sends JWT-shaped tokens (three dot-separated parts) to `jwt` and everything else to
/// `opaque`: a server that accepts its own JWTs and an authorization server's opaque tokens.
#[derive(Debug, Clone)]
pub struct ByFormat<J, O> {
    jwt: J,
    opaque: O,
}

impl<J, O> ByFormat<J, O> {
    /// Combines a JWT validator with a validator for opaque tokens.
    pub fn new(jwt: J, opaque: O) -> Self {
        ByFormat { jwt, opaque }
    }
}

/// Whether a token has the compact JWS shape `header.payload.signature`.
pub(crate) fn is_jwt_shaped(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

impl<J: TokenValidator, O: TokenValidator> TokenValidator for ByFormat<J, O> {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
        if is_jwt_shaped(token) {
            self.jwt.validate(token)
        } else {
            self.opaque.validate(token)
        }
    }

    fn cache_ttl(&self) -> Option<Duration> {
        match (self.jwt.cache_ttl(), self.opaque.cache_ttl()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn revoked(&self, ctx: &AuthContext) -> bool {
        self.jwt.revoked(ctx) || self.opaque.revoked(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> ClaimRules {
        ClaimRules::new(
            vec!["https://as.example".into()],
            vec!["https://mcp.example/mcp".into()],
            true,
        )
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn check(v: Value) -> Result<AuthContext, TokenError> {
        rules().check(v.as_object().unwrap().clone())
    }

    #[test]
    fn claim_checks() {
        let base = json!({"sub": "a", "iss": "https://as.example", "aud": "https://MCP.example/mcp", "exp": now() + 60});
        assert!(check(base.clone()).is_ok());
        let mut v = base.clone();
        v["exp"] = json!(now() - 31);
        assert_eq!(check(v).unwrap_err(), TokenError::Expired);
        let mut v = base.clone();
        v["exp"] = json!(now() - 10);
        assert!(check(v).is_ok(), "within leeway");
        let mut v = base.clone();
        v["nbf"] = json!(now() + 120);
        assert_eq!(check(v).unwrap_err(), TokenError::NotYetValid);
        let mut v = base.clone();
        v["iss"] = json!("https://as.example/");
        assert_eq!(check(v).unwrap_err(), TokenError::WrongIssuer);
        let mut v = base.clone();
        v["aud"] = json!(["https://other.example/mcp"]);
        assert_eq!(check(v).unwrap_err(), TokenError::WrongAudience);
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(v).unwrap_err(), TokenError::MissingClaim("aud"));
        let mut v = base.clone();
        v["exp"] = json!("tomorrow");
        assert_eq!(check(v).unwrap_err(), TokenError::MissingClaim("exp"));
        for absurd in [json!(1e300), json!(u64::MAX), json!(-5)] {
            let mut v = base.clone();
            v["exp"] = absurd;
            assert_eq!(check(v).unwrap_err(), TokenError::MissingClaim("exp"));
        }
        // A fractional exp is a date like any other, and the context knows it.
        let mut v = base;
        let exp = now() as f64 + 60.5;
        v["exp"] = json!(exp);
        let ctx = check(v).unwrap();
        assert!(ctx.expires_at().is_some());
    }

    #[test]
    fn leeway_is_bounded() {
        assert!(rules().set_leeway(Duration::from_secs(301)).is_err());
        assert!(rules().set_leeway(Duration::from_secs(300)).is_ok());
    }
}

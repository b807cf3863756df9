//! JWT validation with keys given in code, and the verification core the JWKS validator shares.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{BoxFuture, ClaimRules, TokenError, TokenValidator};
use crate::{AuthContext, ConfigError};

/// Makes aws-lc-rs jsonwebtoken's process-wide crypto provider. jsonwebtoken picks one from its
/// cargo features, and panics at the first verification if a dependency graph enables both of
/// its backends; installing ours explicitly turns that panic into a non-event.
pub(crate) fn install_crypto_provider() {
    // An error only means a provider is installed already, which is all we need.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// A verification key bound to exactly one algorithm, optionally with a key id.
///
/// Binding the algorithm to the key is what defeats algorithm confusion: a token whose header
/// says `HS256` is never checked against an RSA key, whatever the header claims.
///
/// ```
/// use jsonwebtoken::Algorithm;
/// use tower_mcp_auth::validate::JwtKey;
///
/// let key = JwtKey::hmac(b"0123456789abcdef0123456789abcdef", Algorithm::HS256)
///     .unwrap()
///     .with_kid("dev-1");
/// assert_eq!(key.algorithm(), Algorithm::HS256);
/// assert!(JwtKey::hmac(b"too short", Algorithm::HS256).is_err());
/// ```
#[derive(Clone)]
pub struct JwtKey {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key: Arc<DecodingKey>,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// An HMAC secret for `HS256`, `HS384` or `HS512`. The secret must be at least as long as
    /// the hash output (RFC 7518 §3.2): 32, 48 or 64 bytes.
    pub fn hmac(secret: impl AsRef<[u8]>, algorithm: Algorithm) -> Result<Self, ConfigError> {
        let min = match algorithm {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            other => return Err(wrong_family(other, "an HMAC secret")),
        };
        let secret = secret.as_ref();
        if secret.len() < min {
            return Err(ConfigError::InvalidKey(format!(
                "{algorithm:?} needs a secret of at least {min} bytes, got {}",
                secret.len()
            )));
        }
        Ok(Self::from_parts(
            DecodingKey::from_secret(secret),
            algorithm,
        ))
    }

    /// An RSA public key (PEM, PKCS#1 or SPKI) for `RS256/384/512` or `PS256/384/512`.
    pub fn rsa_pem(pem: impl AsRef<[u8]>, algorithm: Algorithm) -> Result<Self, ConfigError> {
        if algorithm.family() != AlgorithmFamily::Rsa {
            return Err(wrong_family(algorithm, "an RSA key"));
        }
        let key = DecodingKey::from_rsa_pem(pem.as_ref()).map_err(key_error)?;
        Ok(Self::from_parts(key, algorithm))
    }

    /// An ECDSA public key (PEM) for `ES256` (P-256) or `ES384` (P-384).
    pub fn ec_pem(pem: impl AsRef<[u8]>, algorithm: Algorithm) -> Result<Self, ConfigError> {
        if algorithm.family() != AlgorithmFamily::Ec {
            return Err(wrong_family(algorithm, "an EC key"));
        }
        let key = DecodingKey::from_ec_pem(pem.as_ref()).map_err(key_error)?;
        Ok(Self::from_parts(key, algorithm))
    }

    /// An Ed25519 public key (PEM) for `EdDSA`.
    pub fn ed_pem(pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let key = DecodingKey::from_ed_pem(pem.as_ref()).map_err(key_error)?;
        Ok(Self::from_parts(key, Algorithm::EdDSA))
    }

    /// A public key from a JWK (RFC 7517). The algorithm is the JWK's `alg` where present, or
    /// the one its key type determines (EC P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA).
    /// RSA keys without `alg` need [`JwtKey::from_jwk_with`]. Symmetric (`oct`) keys and keys
    /// marked for encryption (`use: enc`) are refused: a published key set has no business
    /// holding secrets.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, ConfigError> {
        let alg = jwk_algorithm(jwk)?
            .ok_or_else(|| ConfigError::InvalidKey("RSA JWK without `alg`".into()))?;
        Self::from_jwk_with(jwk, alg)
    }

    /// A public key from a JWK, used with `algorithm` (which must agree with the JWK's `alg`
    /// and key type).
    pub fn from_jwk_with(jwk: &Jwk, algorithm: Algorithm) -> Result<Self, ConfigError> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err(ConfigError::InvalidKey(
                "JWK is for encryption (`use: enc`)".into(),
            ));
        }
        if let Some(declared) = jwk_algorithm(jwk)?
            && declared != algorithm
        {
            return Err(ConfigError::InvalidKey(format!(
                "JWK declares {declared:?}, not {algorithm:?}"
            )));
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            AlgorithmParameters::OctetKey(_) => {
                return Err(ConfigError::InvalidKey(
                    "symmetric (`oct`) JWKs are not accepted".into(),
                ));
            }
            _ => return Err(ConfigError::InvalidKey("unsupported JWK key type".into())),
        };
        if family != algorithm.family() {
            return Err(wrong_family(algorithm, "this JWK"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(key_error)?;
        let mut this = Self::from_parts(key, algorithm);
        this.kid = jwk.common.key_id.clone();
        Ok(this)
    }

    fn from_parts(key: DecodingKey, algorithm: Algorithm) -> Self {
        install_crypto_provider();
        JwtKey {
            kid: None,
            algorithm,
            key: Arc::new(key),
        }
    }

    /// Sets the key id (`kid`) tokens name this key by.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// The algorithm a JWK names or implies; `Ok(None)` for RSA keys without `alg`.
pub(crate) fn jwk_algorithm(jwk: &Jwk) -> Result<Option<Algorithm>, ConfigError> {
    if let Some(alg) = jwk.common.key_algorithm {
        return key_algorithm(alg).map(Some);
    }
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(Some(Algorithm::ES256)),
            EllipticCurve::P384 => Ok(Some(Algorithm::ES384)),
            _ => Err(ConfigError::InvalidKey("unsupported EC curve".into())),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Ok(Some(Algorithm::EdDSA))
        }
        AlgorithmParameters::OctetKeyPair(_) => {
            Err(ConfigError::InvalidKey("unsupported OKP curve".into()))
        }
        _ => Ok(None),
    }
}

fn key_algorithm(alg: KeyAlgorithm) -> Result<Algorithm, ConfigError> {
    Algorithm::from_str(&format!("{alg:?}"))
        .map_err(|_| ConfigError::InvalidKey(format!("JWK algorithm {alg:?} cannot sign JWTs")))
}

fn wrong_family(algorithm: Algorithm, what: &str) -> ConfigError {
    ConfigError::InvalidKey(format!("{algorithm:?} cannot be used with {what}"))
}

fn key_error(e: jsonwebtoken::errors::Error) -> ConfigError {
    ConfigError::InvalidKey(e.to_string())
}

/// The parts of a JOSE header this library reads.
#[derive(Debug)]
pub(crate) struct JoseHeader {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// The header checks and signature verification shared by the static-key and JWKS validators.
#[derive(Debug, Clone)]
pub(crate) struct JwtCore {
    pub(crate) rules: ClaimRules,
    /// The algorithms accepted at all; a key additionally accepts only its own.
    pub(crate) algorithms: HashSet<Algorithm>,
    pub(crate) expected_type: Option<String>,
}

impl JwtCore {
    /// Parses and checks the JOSE header before any key is looked up.
    pub(crate) fn header(&self, token: &str) -> Result<JoseHeader, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let raw: RawHeader = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if raw.crit.is_some() {
            return Err(TokenError::UnsupportedCriticalHeader);
        }
        // `none` and unknown names fail here, before anything else happens.
        let alg = Algorithm::from_str(&raw.alg)
            .map_err(|_| TokenError::UnsupportedAlgorithm(truncate(&raw.alg)))?;
        if !self.algorithms.contains(&alg) {
            return Err(TokenError::UnsupportedAlgorithm(raw.alg));
        }
        if let Some(expected) = &self.expected_type {
            // RFC 9068 §4: compare case-insensitively, with or without the `application/` prefix.
            let typ = raw.typ.as_deref().unwrap_or("");
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            if !typ.eq_ignore_ascii_case(expected) {
                return Err(TokenError::WrongType);
            }
        }
        Ok(JoseHeader { alg, kid: raw.kid })
    }

    /// Verifies the signature with the first candidate key that fits the header, then checks
    /// the claims. Keys of another algorithm are never tried.
    pub(crate) fn verify<'k>(
        &self,
        token: &str,
        header: &JoseHeader,
        keys: impl IntoIterator<Item = &'k JwtKey>,
    ) -> Result<AuthContext, TokenError> {
        let mut last = TokenError::UnknownKey;
        for key in keys {
            if key.algorithm != header.alg {
                continue;
            }
            if let Some(kid) = &header.kid
                && key.kid.as_deref().is_some_and(|k| k != kid)
            {
                continue;
            }
            let mut validation = Validation::new(header.alg);
            // Claims are checked by `ClaimRules`, the same code for every validator.
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            validation.required_spec_claims.clear();
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.rules.check(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => TokenError::InvalidSignature,
                        ErrorKind::InvalidAlgorithm => {
                            TokenError::UnsupportedAlgorithm(format!("{:?}", header.alg))
                        }
                        _ => TokenError::Malformed,
                    };
                }
            }
        }
        Err(last)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(16).collect()
}

/// Validates JWTs signed with keys given in code.
///
/// ```
/// use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
/// use tower_mcp_auth::validate::{JwtKey, JwtValidator, TokenValidator};
///
/// # tokio_test_block_on(async {
/// let secret = b"an example secret of 32 bytes!!!";
/// let validator = JwtValidator::builder("https://auth.example.com", "https://mcp.example.com/mcp")
///     .key(JwtKey::hmac(secret, Algorithm::HS256).unwrap())
///     .build()
///     .unwrap();
///
/// let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
/// let claims = serde_json::json!({
///     "iss": "https://auth.example.com", "aud": "https://mcp.example.com/mcp",
///     "sub": "alice", "scope": "mcp:tools", "exp": exp,
/// });
/// let token = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap();
/// let ctx = validator.validate(&token).await.unwrap();
/// assert_eq!(ctx.subject(), "alice");
/// assert!(ctx.has_scope("mcp:tools"));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct JwtValidator {
    core: Arc<JwtCore>,
    keys: Arc<[JwtKey]>,
}

impl JwtValidator {
    /// Starts a validator accepting tokens from `issuer` (compared exactly) for `audience` (the
    /// canonical URI of this resource; see [`ProtectedResource::resource`]).
    ///
    /// [`ProtectedResource::resource`]: crate::ProtectedResource::resource
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> JwtValidatorBuilder {
        JwtValidatorBuilder {
            rules: ClaimRules::new(vec![issuer.into()], vec![audience.into()], true),
            keys: Vec::new(),
            expected_type: None,
            leeway: None,
        }
    }
}

impl TokenValidator for JwtValidator {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
        let result = self
            .core
            .header(token)
            .and_then(|header| self.core.verify(token, &header, self.keys.iter()));
        Box::pin(std::future::ready(result))
    }
}

/// Builder of [`JwtValidator`].
#[derive(Debug, Clone)]
#[must_use]
pub struct JwtValidatorBuilder {
    rules: ClaimRules,
    keys: Vec<JwtKey>,
    expected_type: Option<String>,
    leeway: Option<std::time::Duration>,
}

impl JwtValidatorBuilder {
    /// Adds a verification key. Tokens with a `kid` are checked against keys with that id (or
    /// without one); the token's `alg` must be the key's algorithm.
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Accepts a further issuer.
    pub fn also_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.rules.add_issuer(issuer.into());
        self
    }

    /// Accepts a further audience (e.g. the same resource under a second host name).
    pub fn also_audience(mut self, audience: impl AsRef<str>) -> Self {
        self.rules.add_audience(audience.as_ref());
        self
    }

    /// Requires the JOSE `typ` header, e.g. `at+jwt` for RFC 9068 access tokens (which keeps ID
    /// tokens and other JWTs of the same issuer out).
    pub fn expected_type(mut self, typ: impl Into<String>) -> Self {
        self.expected_type = Some(typ.into());
        self
    }

    /// Clock-skew leeway for `exp` and `nbf` (default 30 s, at most 5 minutes).
    pub fn leeway(mut self, leeway: std::time::Duration) -> Self {
        self.leeway = Some(leeway);
        self
    }

    /// Builds the validator; fails without keys or with an excessive leeway.
    pub fn build(mut self) -> Result<JwtValidator, ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        if let Some(leeway) = self.leeway {
            self.rules.set_leeway(leeway)?;
        }
        let algorithms = self.keys.iter().map(JwtKey::algorithm).collect();
        Ok(JwtValidator {
            core: Arc::new(JwtCore {
                rules: self.rules,
                algorithms,
                expected_type: self.expected_type,
            }),
            keys: self.keys.into(),
        })
    }
}

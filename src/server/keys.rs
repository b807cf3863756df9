//! Key rings, one per purpose, each key with an id, so either kind rotates alone:
//!
//! - [`SigningKeys`]: ES256 keys that sign the access tokens we issue (RFC 9068, `typ: at+jwt`)
//!   and are published in the JWKS; after a rotation the previous keys stay published for a
//!   retention period (default 24 h, at least the token lifetime), so tokens they signed stay
//!   valid until they expire.
//! - [`EncryptionKeys`](super::EncryptionKeys) (in `sealing`): AES-256-GCM keys for secrets at
//!   rest.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::sealing::EncryptionKeys;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::Value;

use crate::BoxFuture;
use crate::validate::{JwtKey, JwtValidator, TokenError, TokenValidator};
use crate::{AuthContext, ConfigError};

/// How long a retired signing key stays published by default: longer than any access token
/// it signed lives, so rotation never invalidates a live token.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// A bound on retired keys kept, whatever the retention (rotations in a tight loop).
const MAX_RETIRED: usize = 16;

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    verify: JwtKey,
}

impl SigningKey {
    fn from_pkcs8_der(der: &[u8]) -> Result<Self, ConfigError> {
        // Parse once with aws-lc to refuse anything that is not a P-256 key up front.
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| ConfigError::InvalidKey(format!("not a P-256 PKCS#8 key: {e}")))?;
        let encoding = EncodingKey::from_ec_der(der);
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)
            .map_err(|e| ConfigError::InvalidKey(e.to_string()))?;
        // RFC 7638 thumbprint as key id: stable for the key, needs no bookkeeping.
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| ConfigError::InvalidKey(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let verify = JwtKey::from_jwk(&jwk)?;
        let jwk = serde_json::to_value(&jwk).map_err(|e| ConfigError::InvalidKey(e.to_string()))?;
        Ok(SigningKey {
            kid,
            encoding,
            jwk,
            verify,
        })
    }

    fn generate() -> Result<Self, ConfigError> {
        Self::from_pkcs8_der(&generate_pkcs8()?)
    }
}

fn generate_pkcs8() -> Result<Vec<u8>, ConfigError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| ConfigError::InvalidKey(format!("key generation failed: {e}")))?;
    Ok(doc.as_ref().to_vec())
}

/// Where [`SigningKeys::shared`] keeps the key, and how long (re-written by no one: a
/// deployment that outlives it gets a new key, and tokens signed with the old one expire).
const SHARED_KEY: &str = "keys:signing";
const SHARED_KEY_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

struct SigningRing {
    /// Bumped by every change to what verifies: validators rebuild their key set when it moves.
    generation: u64,
    current: Arc<SigningKey>,
    /// Retired keys, newest first, with the time they were retired.
    previous: Vec<(Arc<SigningKey>, Instant)>,
    retention: Duration,
}

impl SigningRing {
    /// The keys that verify: the current one and those retired within the retention.
    fn published(&self) -> impl Iterator<Item = &Arc<SigningKey>> {
        let retention = self.retention;
        std::iter::once(&self.current).chain(
            self.previous
                .iter()
                .filter(move |(_, retired)| retired.elapsed() < retention)
                .map(|(key, _)| key),
        )
    }
}

/// The ES256 keys that sign our access tokens. Cheap to clone; clones share the ring.
///
/// ```
/// use tower_mcp_auth::server::SigningKeys;
///
/// let keys = SigningKeys::generate().unwrap();
/// let first = keys.current_kid();
/// keys.rotate().unwrap();
/// // Both keys are published: tokens signed before the rotation still verify.
/// assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 2);
/// assert_ne!(keys.current_kid(), first);
/// ```
#[derive(Clone)]
pub struct SigningKeys(Arc<RwLock<SigningRing>>);

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("current", &self.current_kid())
            .finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// A ring with one freshly generated key (tokens die with the process unless the key is
    /// persisted: production deployments load theirs with [`SigningKeys::from_pkcs8_pem`]).
    pub fn generate() -> Result<Self, ConfigError> {
        Ok(Self::with(SigningKey::generate()?))
    }

    /// A ring whose current key is this P-256 private key (PKCS#8 PEM).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, ConfigError> {
        let der = pem_body(pem)?;
        Ok(Self::with(SigningKey::from_pkcs8_der(&der)?))
    }

    /// The signing key every replica sharing `store` uses, so a token minted by one verifies
    /// on all: the first replica to start generates it and keeps it in the store sealed with
    /// `sealing` (AES-256-GCM); the others load it. Every replica needs the same `sealing` keys
    /// (from configuration); a replica with other keys fails here instead of minting tokens
    /// the others refuse.
    ///
    /// ```
    /// use tower_mcp_auth::server::{EncryptionKeys, SigningKeys};
    /// use tower_mcp_auth::store::MemoryStore;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = MemoryStore::default();
    /// let sealing = EncryptionKeys::new("kek-1", &[7u8; 32]).unwrap();
    /// let a = SigningKeys::shared(&store, &sealing).await.unwrap();
    /// let b = SigningKeys::shared(&store, &sealing).await.unwrap();
    /// assert_eq!(a.current_kid(), b.current_kid());
    /// # });
    /// ```
    pub async fn shared(
        store: &dyn crate::store::Store,
        sealing: &EncryptionKeys,
    ) -> Result<Self, ConfigError> {
        let unavailable = |e: crate::store::StoreError| ConfigError::InvalidKey(e.to_string());
        let candidate = generate_pkcs8()?;
        let sealed = sealing
            .seal(&candidate, SHARED_KEY.as_bytes())
            .map_err(|e| ConfigError::InvalidKey(e.to_string()))?;
        // First writer wins; everyone then uses what is stored.
        store
            .put_if_absent(SHARED_KEY, bytes::Bytes::from(sealed), SHARED_KEY_TTL)
            .await
            .map_err(unavailable)?;
        let stored = store
            .get(SHARED_KEY)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ConfigError::InvalidKey("the shared signing key vanished".into()))?;
        let stored = std::str::from_utf8(&stored)
            .map_err(|_| ConfigError::InvalidKey("the shared signing key is not text".into()))?;
        let der = sealing
            .open(stored, SHARED_KEY.as_bytes())
            .map_err(|e| {
                ConfigError::InvalidKey(format!(
                    "the shared signing key does not open with these keys ({e}): every replica needs the same sealing keys"
                ))
            })?;
        Ok(Self::with(SigningKey::from_pkcs8_der(&der)?))
    }

    fn with(key: SigningKey) -> Self {
        crate::validate::install_crypto_provider();
        SigningKeys(Arc::new(RwLock::new(SigningRing {
            generation: 0,
            current: Arc::new(key),
            previous: Vec::new(),
            retention: DEFAULT_RETENTION,
        })))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SigningRing> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of the key that signs now.
    pub fn current_kid(&self) -> String {
        self.read().current.kid.clone()
    }

    /// How long retired keys stay published (default 24 hours). Keep it above the longest
    /// access token lifetime: a token outliving its key's retention no longer verifies.
    pub fn set_retention(&self, retention: Duration) {
        let mut ring = self.0.write().unwrap_or_else(|e| e.into_inner());
        ring.retention = retention;
        ring.generation += 1;
    }

    /// Raises the retention to at least `minimum` (the authorization server's token lifetime).
    pub(crate) fn ensure_retention(&self, minimum: Duration) {
        let mut ring = self.0.write().unwrap_or_else(|e| e.into_inner());
        ring.retention = ring.retention.max(minimum);
        ring.generation += 1;
    }

    /// Starts signing with a newly generated key; the old one stays published for
    /// verification for the retention period. Returns the new key id.
    pub fn rotate(&self) -> Result<String, ConfigError> {
        self.install(SigningKey::generate()?)
    }

    /// Like [`rotate`](Self::rotate), with a key of yours (PKCS#8 PEM).
    pub fn rotate_to_pem(&self, pem: &str) -> Result<String, ConfigError> {
        self.install(SigningKey::from_pkcs8_der(&pem_body(pem)?)?)
    }

    fn install(&self, key: SigningKey) -> Result<String, ConfigError> {
        let kid = key.kid.clone();
        let mut ring = self.0.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut ring.current, Arc::new(key));
        ring.previous.insert(0, (old, Instant::now()));
        let retention = ring.retention;
        ring.previous
            .retain(|(_, retired)| retired.elapsed() < retention);
        ring.previous.truncate(MAX_RETIRED);
        ring.generation += 1;
        Ok(kid)
    }

    /// Signs `claims` as a JWT with the current key (`alg: ES256`, its `kid`, the given
    /// `typ`, e.g. `at+jwt`).
    pub fn sign<T: Serialize>(
        &self,
        claims: &T,
        typ: &str,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let key = self.read().current.clone();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding)
    }

    /// The JWKS document: the current key and the retired ones still published.
    pub fn jwks(&self) -> Value {
        let ring = self.read();
        let keys: Vec<&Value> = ring.published().map(|k| &k.jwk).collect();
        serde_json::json!({ "keys": keys })
    }

    /// A validator for tokens these keys signed, checking `issuer`, `audience` and
    /// `typ: at+jwt`; it follows rotations (no HTTP round trip, unlike a JWKS validator).
    pub fn validator(
        &self,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> RingValidator {
        RingValidator {
            keys: self.clone(),
            issuer: issuer.into(),
            audience: audience.into(),
            built: Arc::default(),
        }
    }
}

impl SigningKeys {
    /// A validator of the id_tokens this ring signed for `client_id` (typed `JWT`), over the
    /// keys published now.
    pub(crate) fn id_token_validator(
        &self,
        issuer: &str,
        client_id: &str,
    ) -> Result<JwtValidator, ConfigError> {
        let ring = self.read();
        let mut builder = JwtValidator::builder(issuer, client_id).expected_type("JWT");
        for key in ring.published() {
            builder = builder.key(key.verify.clone());
        }
        builder.build()
    }
}

/// Validates tokens signed by a [`SigningKeys`] ring (see [`SigningKeys::validator`]).
#[derive(Debug, Clone)]
pub struct RingValidator {
    keys: SigningKeys,
    issuer: String,
    audience: String,
    /// The validator over the keys published now, shared by clones: built once per change of
    /// the ring (or when a retired key's retention ends), not once per token.
    built: Arc<RwLock<Option<Built>>>,
}

#[derive(Debug)]
struct Built {
    generation: u64,
    /// When the oldest retired key in it stops being published, if one is.
    stale_at: Option<Instant>,
    validator: Arc<JwtValidator>,
}

impl RingValidator {
    /// A validator over the keys published right now (a rotation shows at the next token).
    fn snapshot(&self) -> Result<Arc<JwtValidator>, TokenError> {
        let ring = self.keys.read();
        let fresh = |built: &Built| {
            built.generation == ring.generation
                && built.stale_at.is_none_or(|at| Instant::now() < at)
        };
        if let Some(built) = self
            .built
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|built| fresh(built))
        {
            return Ok(built.validator.clone());
        }
        let mut builder =
            JwtValidator::builder(&self.issuer, &self.audience).expected_type("at+jwt");
        for key in ring.published() {
            builder = builder.key(key.verify.clone());
        }
        let validator = Arc::new(
            builder
                .build()
                .map_err(|e| TokenError::Unavailable(e.to_string()))?,
        );
        let retention = ring.retention;
        let stale_at = ring
            .previous
            .iter()
            .filter(|(_, retired)| retired.elapsed() < retention)
            .map(|(_, retired)| *retired + retention)
            .min();
        *self.built.write().unwrap_or_else(|e| e.into_inner()) = Some(Built {
            generation: ring.generation,
            stale_at,
            validator: validator.clone(),
        });
        Ok(validator)
    }
}

impl TokenValidator for RingValidator {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
        let result = self.snapshot();
        Box::pin(async move { result?.validate(token).await })
    }
}

fn pem_body(pem: &str) -> Result<Vec<u8>, ConfigError> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| ConfigError::InvalidKey(format!("bad PEM: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(aud: &str) -> Value {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 300;
        json!({"iss": "https://as.example", "aud": aud, "sub": "alice", "exp": exp, "scope": "mcp:tools"})
    }

    #[tokio::test]
    async fn tokens_signed_before_a_rotation_still_verify() {
        let keys = SigningKeys::generate().unwrap();
        let validator = keys.validator("https://as.example", "https://mcp.example/mcp");
        let old = keys
            .sign(&claims("https://mcp.example/mcp"), "at+jwt")
            .unwrap();
        keys.rotate().unwrap();
        let new = keys
            .sign(&claims("https://mcp.example/mcp"), "at+jwt")
            .unwrap();
        assert_eq!(validator.validate(&old).await.unwrap().subject(), "alice");
        assert_eq!(validator.validate(&new).await.unwrap().subject(), "alice");
        // Rotations in quick succession keep every retired key within the retention: a
        // live token never loses its key to a burst of rotations.
        for _ in 0..3 {
            keys.rotate().unwrap();
        }
        assert_eq!(validator.validate(&old).await.unwrap().subject(), "alice");
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 5);
        // Past the retention, retired keys are withdrawn and their tokens refused.
        keys.set_retention(Duration::ZERO);
        assert_eq!(
            validator.validate(&old).await.unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    /// The validator keeps its key set between tokens: it must still see a rotation at once,
    /// and drop a retired key when its retention runs out with no change to the ring.
    #[tokio::test]
    async fn the_kept_key_set_follows_rotations_and_retention() {
        let keys = SigningKeys::generate().unwrap();
        keys.set_retention(Duration::from_millis(300));
        let validator = keys.validator("https://as.example", "https://mcp.example/mcp");
        let sign = || {
            keys.sign(&claims("https://mcp.example/mcp"), "at+jwt")
                .unwrap()
        };
        let old = sign();
        assert!(validator.validate(&old).await.is_ok());
        keys.rotate().unwrap();
        let new = sign();
        assert!(validator.validate(&new).await.is_ok());
        assert!(validator.validate(&old).await.is_ok());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            validator.validate(&old).await.unwrap_err(),
            TokenError::UnknownKey
        );
        assert!(validator.validate(&new).await.is_ok());
    }

    #[tokio::test]
    async fn ring_validator_requires_at_jwt_and_audience() {
        let keys = SigningKeys::generate().unwrap();
        let validator = keys.validator("https://as.example", "https://mcp.example/mcp");
        let id_token = keys
            .sign(&claims("https://mcp.example/mcp"), "JWT")
            .unwrap();
        assert_eq!(
            validator.validate(&id_token).await.unwrap_err(),
            TokenError::WrongType
        );
        let other = keys
            .sign(&claims("https://other.example/mcp"), "at+jwt")
            .unwrap();
        assert_eq!(
            validator.validate(&other).await.unwrap_err(),
            TokenError::WrongAudience
        );
    }

    #[test]
    fn published_jwks_has_kid_use_and_no_private_parts() {
        let keys = SigningKeys::generate().unwrap();
        let jwk = &keys.jwks()["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["kid"], keys.current_kid());
        assert!(jwk.get("d").is_none());
    }
}

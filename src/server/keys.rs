//! Key rings, one per purpose, each key with an id, so either kind rotates alone:
//!
//! - [`SigningKeys`]: ES256 keys that sign the access tokens we issue (RFC 9068, `typ: at+jwt`)
//!   and are published in the JWKS; after a rotation the previous keys stay published for a
//!   retention period (default 24 h, at least the token lifetime), so tokens they signed stay
//!   valid until they expire.
//! - [`EncryptionKeys`]: AES-256-GCM keys for secrets at rest (third-party tokens and other
//!   vault entries); each ciphertext names its key id, and a caller-chosen associated data
//!   (user and service, say) binds it to its place.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

/// AES-256-GCM keys for secrets at rest, each with an id; the first is current (seals), all
/// open. Ciphertexts are `v1.<kid>.<base64url(nonce ‖ ciphertext ‖ tag)>`.
///
/// ```
/// use tower_mcp_auth::server::EncryptionKeys;
///
/// let keys = EncryptionKeys::new("k1", &[7u8; 32]).unwrap();
/// let sealed = keys.seal(b"gho_secret", b"user:alice|service:github").unwrap();
/// assert_eq!(keys.open(&sealed, b"user:alice|service:github").unwrap(), b"gho_secret");
/// // Moved to another user, it no longer opens.
/// assert!(keys.open(&sealed, b"user:mallory|service:github").is_err());
/// ```
#[derive(Clone)]
pub struct EncryptionKeys(Arc<Vec<(String, RandomizedNonceKey)>>);

impl fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("EncryptionKeys").field("ids", &ids).finish()
    }
}

/// Why a sealed secret does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a ciphertext of this format.
    #[error("malformed ciphertext")]
    Malformed,
    /// Sealed under a key id this ring does not hold.
    #[error("unknown encryption key `{0}`")]
    UnknownKey(String),
    /// Tampered with, or opened with other associated data.
    #[error("ciphertext does not authenticate")]
    Forged,
}

impl EncryptionKeys {
    /// A ring with one freshly generated 256-bit key named `id` (what it seals is lost with
    /// the process unless the key is kept: production deployments load theirs with
    /// [`EncryptionKeys::new`]).
    pub fn generate(id: impl Into<String>) -> Result<Self, ConfigError> {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| ConfigError::InvalidKey("no randomness available".into()))?;
        Self::new(id, &key)
    }

    /// A ring with one 256-bit key.
    pub fn new(id: impl Into<String>, key: &[u8]) -> Result<Self, ConfigError> {
        Self::from_keys([(id.into(), key)])
    }

    /// A ring from (id, key) pairs, the first being current. Ids must be non-empty and free
    /// of `.`.
    pub fn from_keys<'a, I: IntoIterator<Item = (String, &'a [u8])>>(
        keys: I,
    ) -> Result<Self, ConfigError> {
        let mut ring = Vec::new();
        for (id, key) in keys {
            if id.is_empty() || id.contains('.') {
                return Err(ConfigError::InvalidKey(format!(
                    "bad encryption key id `{id}`"
                )));
            }
            if key.len() != 32 {
                return Err(ConfigError::InvalidKey(
                    "encryption keys are 32 bytes".into(),
                ));
            }
            let key = RandomizedNonceKey::new(&AES_256_GCM, key)
                .map_err(|_| ConfigError::InvalidKey("unusable AES key".into()))?;
            ring.push((id, key));
        }
        if ring.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        Ok(EncryptionKeys(Arc::new(ring)))
    }

    /// Encrypts `plaintext` under the current key, binding `aad` (which must be given again to
    /// open it). Nonces are random (96 bits): keep well under 2^32 seals per key, i.e. rotate.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, SealError> {
        let (id, key) = self.0.first().ok_or(SealError::Malformed)?;
        let mut data = plaintext.to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(bound_aad(id, aad)), &mut data)
            .map_err(|_| SealError::Malformed)?;
        let mut blob = nonce.as_ref().to_vec();
        blob.extend_from_slice(&data);
        Ok(format!("v1.{id}.{}", URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Decrypts a value sealed by this ring (under any key it holds) with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Malformed);
        };
        let key = self
            .0
            .iter()
            .find(|(kid, _)| kid == id)
            .map(|(_, key)| key)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if blob.len() < 12 + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut data = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(bound_aad(id, aad)), &mut data)
            .map_err(|_| SealError::Forged)?;
        Ok(plain.to_vec())
    }
}

/// The key id is authenticated too: a ciphertext relabelled with another id does not open.
fn bound_aad(id: &str, aad: &[u8]) -> Vec<u8> {
    let mut bound = Vec::with_capacity(id.len() + 1 + aad.len());
    bound.extend_from_slice(id.as_bytes());
    bound.push(0);
    bound.extend_from_slice(aad);
    bound
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

    #[test]
    fn sealed_secrets_resist_tampering_and_rotate() {
        let old = EncryptionKeys::new("k1", &[1u8; 32]).unwrap();
        let sealed = old.seal(b"token", b"alice|github").unwrap();
        let rotated = EncryptionKeys::from_keys([
            ("k2".to_owned(), &[2u8; 32][..]),
            ("k1".to_owned(), &[1u8; 32][..]),
        ])
        .unwrap();
        assert_eq!(rotated.open(&sealed, b"alice|github").unwrap(), b"token");
        assert!(rotated.seal(b"x", b"").unwrap().starts_with("v1.k2."));
        // Relabelled with another key id, flipped bits, wrong aad, garbage: all refused.
        let relabelled = sealed.replacen("v1.k1.", "v1.k2.", 1);
        assert_eq!(
            rotated.open(&relabelled, b"alice|github"),
            Err(SealError::Forged)
        );
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(
            rotated
                .open(std::str::from_utf8(&flipped).unwrap(), b"alice|github")
                .is_err()
        );
        assert_eq!(rotated.open(&sealed, b"bob|github"), Err(SealError::Forged));
        assert_eq!(
            rotated.open("v1.k9.AAAA", b""),
            Err(SealError::UnknownKey("k9".into()))
        );
        assert_eq!(rotated.open("nonsense", b""), Err(SealError::Malformed));
        assert!(EncryptionKeys::new("k", &[0u8; 16]).is_err());
    }
}

//! [`EncryptionKeys`]: AES-256-GCM keys for secrets at rest (third-party tokens and other vault
//! entries, the shared signing key); each ciphertext names its key id, and a caller-chosen
//! associated data (user and service, say) binds it to its place.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ConfigError;

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

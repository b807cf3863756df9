//! The vault of users' third-party tokens: on the [`Store`], each token set sealed with
//! AES-256-GCM under an [`EncryptionKeys`] ring (key id stored, so keys rotate), the user and
//! the service bound as associated data.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::server::EncryptionKeys;
use crate::store::{Store, StoreError};

/// A user's tokens at one service.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// The refresh token, if the service issued one.
    pub refresh_token: Option<String>,
    /// When the access token expires (seconds since the epoch), if the service said.
    pub expires_at: Option<u64>,
    /// The scopes granted.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl TokenSet {
    /// Whether the access token has expired, or will within `skew`.
    pub fn expires_within(&self, skew: Duration) -> bool {
        self.expires_at
            .is_some_and(|at| at <= crate::server::unix_now() + skew.as_secs())
    }

    /// Whether every one of `scopes` was granted.
    pub fn grants(&self, scopes: &[String]) -> bool {
        scopes.iter().all(|s| self.scopes.contains(s))
    }
}

/// Why the vault failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value did not open: tampered with, moved from another user or service, or
    /// sealed under a key no longer held.
    #[error("a vault entry does not open: {0}")]
    Sealed(#[from] crate::server::SealError),
    /// A stored value opened but is not a token set.
    #[error("a vault entry is corrupt")]
    Corrupt,
}

/// Users' third-party tokens, encrypted at rest. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use tower_mcp_auth::atag::{TokenSet, TokenVault};
/// use tower_mcp_auth::server::EncryptionKeys;
/// use tower_mcp_auth::store::MemoryStore;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let vault = TokenVault::new(MemoryStore::default(), EncryptionKeys::generate("k1").unwrap());
/// let tokens = TokenSet {
///     access_token: "gho_secret".into(), refresh_token: None, expires_at: None,
///     scopes: vec!["repo".into()],
/// };
/// vault.put("alice", "github", &tokens, Duration::from_secs(3600)).await.unwrap();
/// assert_eq!(vault.get("alice", "github").await.unwrap(), Some(tokens));
/// assert_eq!(vault.get("bob", "github").await.unwrap(), None);
/// # });
/// ```
#[derive(Clone)]
pub struct TokenVault {
    store: Arc<dyn Store>,
    keys: EncryptionKeys,
}

impl std::fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVault")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl TokenVault {
    /// A vault in `store`, sealing with `keys`.
    pub fn new(store: impl Store, keys: EncryptionKeys) -> Self {
        Self::shared(Arc::new(store), keys)
    }

    pub(crate) fn shared(store: Arc<dyn Store>, keys: EncryptionKeys) -> Self {
        TokenVault { store, keys }
    }

    /// The store key of a user's tokens at a service. The subject is hashed: subjects are
    /// free-form, store keys should not be. Pinned: a flood of other state never evicts a
    /// user's connection from the memory store.
    pub fn key(user: &str, service: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(user.as_bytes());
        let mut key = String::with_capacity(15 + 64 + 1 + service.len());
        key.push_str("pin:atag:vault:");
        for b in digest {
            key.push(char::from(HEX[usize::from(b >> 4)]));
            key.push(char::from(HEX[usize::from(b & 15)]));
        }
        key.push(':');
        key.push_str(service);
        key
    }

    /// Service ids are letters, digits, `-` and `_`, so `|service:` ends the user part
    /// unambiguously.
    fn aad(user: &str, service: &str) -> Vec<u8> {
        format!("atag-vault|user:{user}|service:{service}").into_bytes()
    }

    /// Stores `tokens` for `user` at `service`, for `ttl`.
    pub async fn put(
        &self,
        user: &str,
        service: &str,
        tokens: &TokenSet,
        ttl: Duration,
    ) -> Result<(), VaultError> {
        let plain = serde_json::to_vec(tokens).map_err(|_| VaultError::Corrupt)?;
        let sealed = self.keys.seal(&plain, &Self::aad(user, service))?;
        self.store
            .put(&Self::key(user, service), Bytes::from(sealed), ttl)
            .await?;
        Ok(())
    }

    /// The tokens of `user` at `service`.
    pub async fn get(&self, user: &str, service: &str) -> Result<Option<TokenSet>, VaultError> {
        let Some(sealed) = self.store.get(&Self::key(user, service)).await? else {
            return Ok(None);
        };
        let sealed = std::str::from_utf8(&sealed).map_err(|_| VaultError::Corrupt)?;
        let plain = self.keys.open(sealed, &Self::aad(user, service))?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|_| VaultError::Corrupt)
    }

    /// Forgets the tokens of `user` at `service`.
    pub async fn delete(&self, user: &str, service: &str) -> Result<(), VaultError> {
        self.store.delete(&Self::key(user, service)).await?;
        Ok(())
    }
}

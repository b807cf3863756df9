//! The validated-token cache: the reason the hot path does no signature work.

use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use sha2::{Digest, Sha256};

use crate::AuthContext;

/// Cache key: SHA-256 of the token. The raw token is never kept, and a 256-bit hash leaves no
/// room for a forged token to collide with a cached one.
pub(crate) type TokenKey = [u8; 32];

/// How long a cached entry lives when the token states no expiry (introspection answers may
/// omit `exp`) and the validator set no cap.
const NO_EXPIRY_TTL: Duration = Duration::from_secs(60);

pub(crate) fn token_key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

/// Validated tokens by hash, bounded in size; each entry expires no later than its token, and
/// no later than the validator's cache cap.
#[derive(Clone)]
pub(crate) struct TokenCache {
    entries: moka::sync::Cache<TokenKey, AuthContext>,
}

struct UntilTokenExpiry {
    cap: Option<Duration>,
}

impl Expiry<TokenKey, AuthContext> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        ctx: &AuthContext,
        _created_at: Instant,
    ) -> Option<Duration> {
        let until_exp = ctx
            .expires_at()
            .map(|exp| exp.duration_since(SystemTime::now()).unwrap_or_default());
        Some(match (until_exp, self.cap) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => NO_EXPIRY_TTL,
        })
    }
}

impl TokenCache {
    pub(crate) fn new(capacity: u64, cap: Option<Duration>) -> Self {
        TokenCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilTokenExpiry { cap })
                .build(),
        }
    }

    /// A cached context for the token, unless expired. Expiry is checked here too: the cache
    /// evicts lazily, and an expired token must never pass, not even for a millisecond.
    pub(crate) fn get(&self, key: &TokenKey) -> Option<AuthContext> {
        self.entries
            .get(key)
            .filter(|ctx| !ctx.is_expired_at(SystemTime::now()))
    }

    pub(crate) fn insert(&self, key: TokenKey, ctx: AuthContext) {
        self.entries.insert(key, ctx);
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

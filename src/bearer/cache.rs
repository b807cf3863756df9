//! The validated-token cache: the reason the hot path does no signature work.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;

use crate::AuthContext;

/// Cache key: a 64-bit hash of the token under a per-process random seed.
///
/// The key only locates an entry; a hit is accepted only if the stored token equals the
/// presented one byte for byte, so a hash collision can cost a cache miss, never a wrong
/// principal. A cryptographic hash (SHA-256 costs ~0.6 µs for a typical 800-byte token here) would
/// make the lookup several times dearer than everything else on the hot path put together.
pub(crate) type TokenKey = u64;

/// How long a cached entry lives when the token states no expiry (introspection answers may
/// omit `exp`) and the validator set no cap.
const NO_EXPIRY_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Entry {
    token: Arc<str>,
    ctx: AuthContext,
}

/// Validated tokens, bounded in size; each entry expires no later than its token, and no later
/// than the validator's cache cap.
#[derive(Clone)]
pub(crate) struct TokenCache {
    seed: foldhash::quality::RandomState,
    entries: moka::sync::Cache<TokenKey, Entry>,
}

struct UntilTokenExpiry {
    cap: Option<Duration>,
}

impl Expiry<TokenKey, Entry> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        entry: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        let until_exp = entry
            .ctx
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
            seed: foldhash::quality::RandomState::default(),
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilTokenExpiry { cap })
                .build(),
        }
    }

    pub(crate) fn key(&self, token: &[u8]) -> TokenKey {
        self.seed.hash_one(token)
    }

    /// The cached context for exactly this token, unless expired. Expiry is checked here too:
    /// the cache evicts lazily, and an expired token must never pass, not even for a
    /// millisecond.
    pub(crate) fn get(&self, key: TokenKey, token: &[u8]) -> Option<AuthContext> {
        // Plain comparison is fine here: an attacker reaches it only with a token whose keyed
        // hash equals a cached token's, which the secret seed makes unpredictable.
        self.entries
            .get(&key)
            .filter(|entry| entry.token.as_bytes() == token)
            .map(|entry| entry.ctx)
            .filter(|ctx| !ctx.is_expired_at(SystemTime::now()))
    }

    pub(crate) fn insert(&self, key: TokenKey, token: Arc<str>, ctx: AuthContext) {
        self.entries.insert(key, Entry { token, ctx });
    }

    pub(crate) fn remove(&self, key: TokenKey) {
        self.entries.invalidate(&key);
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

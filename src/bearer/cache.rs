//! The validated-token cache: the reason the hot path does no signature work.
//!
//! An entry holds no copy of the token: it is found and checked through a 128-bit keyed MAC of
//! the token (SipHash-1-3 under a per-process random key), so a cached token costs its
//! [`AuthContext`] and 32 bytes, whatever the token's length (a typical access token is
//! 600–900 bytes). A hit needs both halves of the MAC to match: forging one without the key is
//! breaking SipHash as a pseudo-random function, and the key never leaves the process.
//!
//! A miss is validated once however many requests present the token at the same moment
//! (single flight): the first starts the validation, the others wait for its answer, so a
//! burst of requests from a new user costs one signature check, not one per request.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use siphasher::sip128::{Hasher128, SipHasher13};
use tokio::sync::OnceCell;

use crate::AuthContext;
use crate::validate::{TokenError, TokenValidator};

/// How long a cached entry lives when the token states no expiry (introspection answers may
/// omit `exp`) and the validator set no cap.
const NO_EXPIRY_TTL: Duration = Duration::from_secs(60);

/// A token's keyed MAC: `key` locates the entry, `check` must match too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TokenMac {
    pub(crate) key: u64,
    check: u64,
}

#[derive(Clone)]
struct Entry {
    check: u64,
    ctx: AuthContext,
}

/// The map's keys are already uniformly distributed secret-keyed MAC halves: hashing them
/// again (moka's default is SipHash-1-3) would add a second hash to every lookup for nothing.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are ever hashed; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyHasher = BuildHasherDefault<PassThrough>;

/// One validation in progress, shared by every request presenting the same token.
type Flight = Arc<OnceCell<Result<AuthContext, TokenError>>>;

/// Validated tokens, bounded in size; each entry expires no later than its token, and no later
/// than the validator's cache cap.
#[derive(Clone)]
pub(crate) struct TokenCache {
    mac_key: [u8; 16],
    entries: moka::sync::Cache<u64, Entry, KeyHasher>,
    flights: Arc<Mutex<HashMap<TokenMac, Flight>>>,
}

struct UntilTokenExpiry {
    cap: Option<Duration>,
}

impl Expiry<u64, Entry> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &u64,
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
        let mut mac_key = [0u8; 16];
        if getrandom::fill(&mut mac_key).is_err() {
            // No operating-system randomness: a per-process key from the standard library's
            // randomly seeded hasher (itself seeded from the OS where it can be) is the best
            // left; the cache stays correct, only forging gets easier to reason about.
            let seed = std::hash::RandomState::new();
            mac_key[..8]
                .copy_from_slice(&std::hash::BuildHasher::hash_one(&seed, 1u8).to_le_bytes());
            mac_key[8..]
                .copy_from_slice(&std::hash::BuildHasher::hash_one(&seed, 2u8).to_le_bytes());
        }
        TokenCache {
            mac_key,
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilTokenExpiry { cap })
                .build_with_hasher(KeyHasher::default()),
            flights: Arc::default(),
        }
    }

    pub(crate) fn mac(&self, token: &[u8]) -> TokenMac {
        let mut hasher = SipHasher13::new_with_key(&self.mac_key);
        hasher.write(token);
        let mac = hasher.finish128();
        TokenMac {
            key: mac.h1,
            check: mac.h2,
        }
    }

    /// The cached context of the token with this MAC, unless expired. Expiry is checked here
    /// too: the cache evicts lazily, and an expired token must never pass, not even for a
    /// millisecond.
    pub(crate) fn get(&self, mac: TokenMac) -> Option<AuthContext> {
        // Plain comparison is fine: `check` is a MAC half no one outside the process can
        // compute, and timing it tells nothing about the key.
        self.entries
            .get(&mac.key)
            .filter(|entry| entry.check == mac.check)
            .map(|entry| entry.ctx)
            .filter(|ctx| !ctx.is_expired_at(SystemTime::now()))
    }

    pub(crate) fn remove(&self, mac: TokenMac) {
        self.entries.invalidate(&mac.key);
    }

    /// Validates `token` (whose MAC is `mac`) once for everyone presenting it now, and caches
    /// a success. A request that gives up while waiting (its client went away) hands the
    /// validation to the next waiter; an answer is shared only with requests that were waiting
    /// for it, so a failure is never cached.
    pub(crate) async fn validate_once<V: TokenValidator>(
        &self,
        mac: TokenMac,
        token: &str,
        validator: &V,
    ) -> Result<AuthContext, TokenError> {
        let flight = self
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(mac)
            .or_default()
            .clone();
        let boarded = Boarded {
            flights: &self.flights,
            mac,
            flight,
        };
        boarded
            .flight
            .get_or_init(|| async {
                let result = validator.validate(token).await;
                if let Ok(ctx) = &result {
                    self.entries.insert(
                        mac.key,
                        Entry {
                            check: mac.check,
                            ctx: ctx.clone(),
                        },
                    );
                }
                result
            })
            .await
            .clone()
    }

    #[cfg(test)]
    pub(crate) fn flights_in_progress(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A request's place on a flight. Leaving (answered, or dropped because the client went away)
/// retires the flight from the table once it has an answer or no one else is on it: no entry
/// outlives its requests, so tokens presented once and abandoned cannot pile up.
struct Boarded<'a> {
    flights: &'a Mutex<HashMap<TokenMac, Flight>>,
    mac: TokenMac,
    flight: Flight,
}

impl Drop for Boarded<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let MapEntry::Occupied(entry) = flights.entry(self.mac)
            && Arc::ptr_eq(entry.get(), &self.flight)
            // Counted under the lock, where every new passenger boards: the table and this
            // request are all that is left.
            && (self.flight.initialized() || Arc::strong_count(&self.flight) == 2)
        {
            entry.remove();
        }
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::BoxFuture;

    struct Slow {
        validations: AtomicUsize,
        answer: Result<(), TokenError>,
    }

    impl TokenValidator for Slow {
        fn validate<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
            Box::pin(async move {
                self.validations.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.answer.clone()?;
                let claims = serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64});
                AuthContext::from_claims(claims.as_object().cloned().unwrap_or_default())
                    .ok_or(TokenError::MissingClaim("sub"))
            })
        }
    }

    fn slow(answer: Result<(), TokenError>) -> Slow {
        Slow {
            validations: AtomicUsize::new(0),
            answer,
        }
    }

    #[test]
    fn mac_depends_on_every_byte_and_the_key() {
        let cache = TokenCache::new(10, None);
        let other = TokenCache::new(10, None);
        let token = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
        assert_eq!(cache.mac(token), cache.mac(token));
        assert_ne!(cache.mac(token), other.mac(token));
        for at in 0..token.len() {
            let mut changed = *token;
            changed[at] ^= 1;
            let (a, b) = (cache.mac(token), cache.mac(&changed));
            assert!(a.key != b.key && a.check != b.check, "byte {at}");
        }
    }

    #[test]
    fn a_hit_needs_both_halves_of_the_mac() {
        let cache = TokenCache::new(10, None);
        let mac = cache.mac(b"token");
        let ctx = AuthContext::from_claims(
            serde_json::json!({"sub": "alice"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let Some(ctx) = ctx else {
            panic!("a context with a subject")
        };
        cache.entries.insert(
            mac.key,
            Entry {
                check: mac.check,
                ctx,
            },
        );
        assert!(cache.get(mac).is_some());
        let forged = TokenMac {
            key: mac.key,
            check: mac.check ^ 1,
        };
        assert!(cache.get(forged).is_none());
        cache.remove(mac);
        assert!(cache.get(mac).is_none());
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_validation_and_leave_no_flight() {
        let cache = TokenCache::new(10, None);
        let validator = slow(Ok(()));
        let mac = cache.mac(b"token");
        let answers = futures_util::future::join_all(
            (0..16).map(|_| cache.validate_once(mac, "token", &validator)),
        )
        .await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(validator.validations.load(Ordering::SeqCst), 1);
        assert_eq!(cache.flights_in_progress(), 0);
        assert_eq!(
            cache.get(mac).map(|c| c.subject().to_owned()).as_deref(),
            Some("alice")
        );
    }

    #[tokio::test]
    async fn a_refusal_is_shared_with_waiters_but_not_cached() {
        let cache = TokenCache::new(10, None);
        let validator = slow(Err(TokenError::InvalidSignature));
        let mac = cache.mac(b"forged");
        let answers = futures_util::future::join_all(
            (0..4).map(|_| cache.validate_once(mac, "forged", &validator)),
        )
        .await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().err() == Some(&TokenError::InvalidSignature))
        );
        assert_eq!(validator.validations.load(Ordering::SeqCst), 1);
        assert!(cache.get(mac).is_none());
        assert_eq!(cache.flights_in_progress(), 0);
        let _ = cache.validate_once(mac, "forged", &validator).await;
        assert_eq!(validator.validations.load(Ordering::SeqCst), 2);
    }

    /// Requests that give up mid-validation (the client disconnects) must not leave their
    /// flight behind: otherwise one garbage token per dropped connection would grow the table
    /// without bound.
    #[tokio::test]
    async fn abandoned_validations_leave_no_flight_behind() {
        let cache = TokenCache::new(10, None);
        let validator = slow(Ok(()));
        for i in 0..100 {
            let token = format!("token-{i}");
            let mac = cache.mac(token.as_bytes());
            let abandoned = tokio::time::timeout(
                Duration::from_millis(5),
                cache.validate_once(mac, &token, &validator),
            )
            .await;
            assert!(abandoned.is_err());
        }
        assert_eq!(cache.flights_in_progress(), 0);

        // One waiter leaving does not strand the others: the next takes the validation over.
        let mac = cache.mac(b"shared");
        let leaver = tokio::time::timeout(
            Duration::from_millis(5),
            cache.validate_once(mac, "shared", &validator),
        );
        let (left, stayed) = tokio::join!(leaver, cache.validate_once(mac, "shared", &validator));
        assert!(left.is_err());
        assert!(stayed.is_ok());
        assert_eq!(cache.flights_in_progress(), 0);
    }
}

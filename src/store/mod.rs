//! Where state lives: the [`Store`] trait, and [`MemoryStore`], the in-process default.
//!
//! Every piece of state the library keeps across requests (authorization codes, refresh token
//! families, registered clients, consent, third-party tokens) goes through `Store`, so a
//! deployment becomes multi-instance by swapping the store ([`RedisStore`], feature `redis`)
//! and nothing else. The operations are the few that make single-use secrets safe:
//! [`Store::take`] (read and delete at once, so of two concurrent redemptions of one
//! authorization code exactly one wins) and [`Store::put_if_absent`]; and a log
//! ([`Store::append`], [`Store::read_log`]) through which instances hear of revocations.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::BoxFuture;

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use self::redis::{DEFAULT_PREFIX, RedisStore, RedisStoreBuilder};

/// Why a store operation failed: the backend is unreachable or broke. Callers answer it as a
/// transient server error (503), never as a bad grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct StoreError(pub String);

/// A key-value store with per-entry expiry.
///
/// Keys are namespaced by the caller (`code:…`, `rt:…`); values are opaque bytes. Every entry
/// has a time to live: state nobody cleans up must still disappear.
pub trait Store: Send + Sync + 'static {
    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores `value` under `key` for `ttl` only if no live entry exists; returns whether it
    /// did. Atomic.
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The live value under `key`.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;

    /// Removes the entry under `key` and returns its value if it was live. Atomic: of several
    /// concurrent `take`s of one key, at most one gets the value.
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;

    /// Removes the entry under `key`, if any.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Adds one to the counter under `key` and returns the new count. A counter that does not
    /// exist starts at 1 and lives `ttl`; later increments keep its expiry (a fixed window,
    /// as Redis `INCR` after `SET … EX`). Atomic: concurrent increments are all counted.
    fn increment<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Appends `event` to the log `log` and returns its position. Every instance sharing the
    /// store reads the log ([`read_log`](Self::read_log)); events older than `retention` may be
    /// dropped. Give one log one retention: the latest append's may apply to the events
    /// before it (Redis trims and expires the whole stream). Positions only grow.
    fn append<'a>(
        &'a self,
        log: &'a str,
        event: Bytes,
        retention: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Up to `limit` events of `log` after position `after` (0: from the oldest kept), oldest
    /// first, with their positions.
    fn read_log<'a>(
        &'a self,
        log: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>>;
}

#[cfg_attr(not(feature = "server"), allow(dead_code))]
/// Takes the lock `key` in `store` (so it holds across instances), retrying every 20 ms for
/// up to `wait`: `Ok(false)` if it stayed busy. The holder deletes `key` when done; one that
/// dies frees it after `ttl`, which must exceed the work done under the lock.
pub(crate) async fn lock(
    store: &dyn Store,
    key: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<bool, StoreError> {
    let started = Instant::now();
    loop {
        if store
            .put_if_absent(key, Bytes::from_static(b"1"), ttl)
            .await?
        {
            return Ok(true);
        }
        if started.elapsed() >= wait {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    expires_at: Instant,
}

struct UntilExpiry;

impl moka::Expiry<String, Entry> for UntilExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry, now: Instant) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(now))
    }
}

/// The in-process logs: each a queue of (position, written at, retention, event).
#[derive(Default)]
struct Logs {
    next: u64,
    logs: std::collections::HashMap<String, std::collections::VecDeque<LogEvent>>,
}

struct LogEvent {
    position: u64,
    drop_at: Instant,
    event: Bytes,
}

/// Keys under this prefix hold security markers (revocations, used authorization codes,
/// refresh-token records that detect reuse): the [`MemoryStore`] never evicts them before they
/// expire, whatever else it holds. Only authenticated actions create them.
pub const PINNED_PREFIX: &str = "pin:";

/// What an entry costs against the byte budget: key, value and bookkeeping.
#[expect(clippy::ptr_arg, reason = "moka's weigher takes the key type")]
fn weight(key: &String, entry: &Entry) -> u32 {
    u32::try_from(key.len() + entry.value.len() + 64).unwrap_or(u32::MAX)
}

/// The in-process store (moka): each entry expiring at its own time, bounded by a byte budget
/// (least recently used entries go first once it is reached), except the security markers
/// under [`PINNED_PREFIX`], which stay until they expire. Right for one instance; several
/// instances behind a load balancer need a shared store.
///
/// ```
/// use std::time::Duration;
/// use tower_mcp_auth::store::{MemoryStore, Store};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::with_max_bytes(64 * 1024 * 1024);
/// store.put("code:abc", "grant".into(), Duration::from_secs(60)).await.unwrap();
/// assert_eq!(store.take("code:abc").await.unwrap().as_deref(), Some(&b"grant"[..]));
/// assert_eq!(store.take("code:abc").await.unwrap(), None); // single use
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    entries: moka::sync::Cache<String, Entry>,
    pinned: moka::sync::Cache<String, Entry>,
    logs: std::sync::Arc<std::sync::Mutex<Logs>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.entry_count())
            .field("pinned", &self.pinned.entry_count())
            .finish()
    }
}

/// The default byte budget of [`MemoryStore::default`].
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_max_bytes(DEFAULT_MAX_BYTES)
    }
}

impl MemoryStore {
    /// A store holding at most about `max_bytes` of keys and values (each entry also counts 64
    /// bytes of bookkeeping), not counting the pinned security markers. Beyond it, the least
    /// recently used entries are evicted early: size it for the live state of the deployment.
    /// (It replaces `new(entries)`: a count of entries bounded nothing when values are large.)
    pub fn with_max_bytes(max_bytes: u64) -> Self {
        MemoryStore {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(weight)
                // LRU, not moka's default TinyLFU: TinyLFU may refuse to admit a new entry
                // when full, and a state store must keep what it was just given (a code just
                // issued, a session just opened).
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .expire_after(UntilExpiry)
                .build(),
            // No capacity: a flood of other entries never pushes a revocation out.
            pinned: moka::sync::Cache::builder()
                .expire_after(UntilExpiry)
                .build(),
            logs: std::sync::Arc::default(),
        }
    }

    /// The cache `key` lives in.
    fn cache(&self, key: &str) -> &moka::sync::Cache<String, Entry> {
        if key.starts_with(PINNED_PREFIX) {
            &self.pinned
        } else {
            &self.entries
        }
    }

    fn live(entry: Entry) -> Option<Bytes> {
        (entry.expires_at > Instant::now()).then_some(entry.value)
    }
}

/// `now + ttl`, or a century from now for a `ttl` too large to add (never a panic).
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Store for MemoryStore {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let entry = Entry {
            value,
            expires_at: deadline(Instant::now(), ttl),
        };
        self.cache(key).insert(key.to_owned(), entry);
        ready(Ok(()))
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = Instant::now();
        let entry = Entry {
            value,
            expires_at: deadline(now, ttl),
        };
        let mut inserted = self
            .cache(key)
            .entry_by_ref(key)
            .or_insert_with(|| entry.clone())
            .is_fresh();
        if !inserted {
            // An entry past its time but not yet evicted counts as absent: replace it, but
            // only if it is still that same expired entry (compare-and-swap on the instant).
            let replaced = self
                .cache(key)
                .entry_by_ref(key)
                .and_compute_with(|current| {
                    use moka::ops::compute::Op;
                    match current {
                        Some(e) if e.value().expires_at <= now => Op::Put(entry),
                        _ => Op::Nop,
                    }
                });
            inserted = matches!(replaced, moka::ops::compute::CompResult::ReplacedWith(_));
        }
        ready(Ok(inserted))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        ready(Ok(self.cache(key).get(key).and_then(Self::live)))
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        ready(Ok(self.cache(key).remove(key).and_then(Self::live)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.cache(key).invalidate(key);
        ready(Ok(()))
    }

    fn increment<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        use moka::ops::compute::{CompResult, Op};
        let now = Instant::now();
        // Counters are stored as decimal text, as Redis keeps them.
        let count_of = |value: &Bytes| {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        };
        let result = self
            .cache(key)
            .entry_by_ref(key)
            .and_compute_with(|current| {
                let (count, expires_at) = match current {
                    Some(e) if e.value().expires_at > now => match count_of(&e.value().value) {
                        Some(n) => (n.saturating_add(1), e.value().expires_at),
                        None => return Op::Nop,
                    },
                    _ => (1, deadline(now, ttl)),
                };
                Op::Put(Entry {
                    value: Bytes::from(count.to_string()),
                    expires_at,
                })
            });
        ready(match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => count_of(&e.value().value)
                .ok_or_else(|| StoreError(format!("`{key}` is not a counter"))),
            _ => Err(StoreError(format!("`{key}` is not a counter"))),
        })
    }

    fn append<'a>(
        &'a self,
        log: &'a str,
        event: Bytes,
        retention: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let now = Instant::now();
        // A poisoned lock only means another append panicked mid-way; the queue is intact.
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.next += 1;
        let position = logs.next;
        let queue = logs.logs.entry(log.to_owned()).or_default();
        while queue.front().is_some_and(|e| e.drop_at <= now) {
            queue.pop_front();
        }
        queue.push_back(LogEvent {
            position,
            drop_at: deadline(now, retention),
            event,
        });
        ready(Ok(position))
    }

    fn read_log<'a>(
        &'a self,
        log: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>> {
        let now = Instant::now();
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let events = logs.logs.get(log).map_or_else(Vec::new, |queue| {
            queue
                .iter()
                .filter(|e| e.position > after && e.drop_at > now)
                .take(limit)
                .map(|e| (e.position, e.event.clone()))
                .collect()
        });
        ready(Ok(events))
    }
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).put(key, value, ttl)
    }
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).put_if_absent(key, value, ttl)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        (**self).get(key)
    }
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        (**self).take(key)
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).delete(key)
    }
    fn increment<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        (**self).increment(key, ttl)
    }
    fn append<'a>(
        &'a self,
        log: &'a str,
        event: Bytes,
        retention: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        (**self).append(log, event, retention)
    }
    fn read_log<'a>(
        &'a self,
        log: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>> {
        (**self).read_log(log, after, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn entries_expire_at_their_own_time() {
        let store = MemoryStore::with_max_bytes(100 * 1024);
        store
            .put("a", "1".into(), Duration::from_millis(50))
            .await
            .unwrap();
        store
            .put("b", "2".into(), Duration::from_secs(60))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(store.get("a").await.unwrap(), None);
        assert_eq!(store.take("a").await.unwrap(), None);
        assert_eq!(store.get("b").await.unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[tokio::test]
    async fn put_if_absent_is_first_writer_wins_and_ignores_expired() {
        let store = MemoryStore::with_max_bytes(100 * 1024);
        assert!(
            store
                .put_if_absent("k", "1".into(), Duration::from_millis(40))
                .await
                .unwrap()
        );
        assert!(
            !store
                .put_if_absent("k", "2".into(), Duration::from_secs(1))
                .await
                .unwrap()
        );
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"1"[..]));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            store
                .put_if_absent("k", "3".into(), Duration::from_secs(1))
                .await
                .unwrap()
        );
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"3"[..]));
    }

    #[tokio::test]
    async fn a_full_store_keeps_what_it_was_just_given() {
        let store = MemoryStore::with_max_bytes(50 * 80);
        // Popular old entries, read often (what TinyLFU would favour over a newcomer).
        for i in 0..50 {
            let key = format!("old:{i}");
            store
                .put(&key, "x".into(), Duration::from_secs(60))
                .await
                .unwrap();
            for _ in 0..5 {
                store.get(&key).await.unwrap();
            }
        }
        for i in 0..20 {
            let key = format!("revoked-family:{i}");
            store
                .put(&key, "true".into(), Duration::from_secs(60))
                .await
                .unwrap();
            store.entries.run_pending_tasks();
            assert!(
                store.get(&key).await.unwrap().is_some(),
                "{key} was dropped"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_are_all_counted_in_a_fixed_window() {
        let store = Arc::new(MemoryStore::with_max_bytes(100 * 1024));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .increment("n", Duration::from_millis(300))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=64).collect::<Vec<u64>>());
        // The window does not slide with later increments.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            store.increment("n", Duration::from_secs(60)).await.unwrap(),
            1
        );
        store
            .put("text", "abc".into(), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            store
                .increment("text", Duration::from_secs(60))
                .await
                .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_takes_have_exactly_one_winner() {
        for round in 0..20 {
            let store = Arc::new(MemoryStore::with_max_bytes(100 * 1024));
            let key = format!("code:{round}");
            store
                .put(&key, "grant".into(), Duration::from_secs(60))
                .await
                .unwrap();
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (store, key) = (store.clone(), key.clone());
                    tokio::spawn(async move { store.take(&key).await.unwrap().is_some() })
                })
                .collect();
            let mut winners = 0;
            for task in tasks {
                winners += usize::from(task.await.unwrap());
            }
            assert_eq!(winners, 1, "round {round}");
        }
    }
}

//! What this process knows is revoked, so the bearer layer refuses a revoked token with a local
//! lookup, cached or not.
//!
//! A revocation (`/oauth/revoke`, a refresh token reused after rotation, a replayed
//! authorization code) is written three ways: the marker in the store (read on every token
//! validation that misses the bearer cache), an event in the store's log `revocations`, and this
//! process's list. Other replicas poll the log every [`POLL_INTERVAL`] and add what they read to
//! their own list; so a revocation holds at once on the replica that made it, and within about
//! a second (the interval and a store round trip) on every other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keyspace;
use crate::AuthContext;
use crate::audit;
use crate::store::{Store, StoreError};

/// How often a replica reads the revocations other replicas made.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The log revocations are published in.
const LOG: &str = "log:revocations";

/// Events read per store call while catching up.
const BATCH: usize = 1_000;

/// How many revocations the list holds (each lives until the tokens it covers expire). Past
/// it, the oldest leave the list and are found again in the store when the bearer cache lets
/// their token go (within its 30 s cap).
const CAPACITY: u64 = 1_000_000;

/// One revocation, as published in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Revoked {
    /// An access token, by `jti`.
    Token(String),
    /// A grant family, by `fid`: every access and refresh token issued in it.
    Family(String),
}

/// The revocations this process knows of, each kept as long as an access token it covers can
/// live.
pub(crate) struct RevocationList {
    tokens: moka::sync::Cache<String, ()>,
    families: moka::sync::Cache<String, ()>,
    /// Whether anything was ever revoked: until then the hot path skips the lookups.
    any: AtomicBool,
    /// The log position read up to.
    cursor: AtomicU64,
    /// Whether the log is being followed (one poller per list).
    following: AtomicBool,
    /// How long an event stays in the log: the longest an access token lives.
    retention: Duration,
}

impl RevocationList {
    /// A list for access tokens that live at most `token_ttl`.
    pub(crate) fn new(token_ttl: Duration) -> Self {
        // A little past the token lifetime: the validators allow clock-skew leeway on `exp`.
        let retention = token_ttl + Duration::from_secs(300);
        let cache = || {
            moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(retention)
                .build()
        };
        RevocationList {
            tokens: cache(),
            families: cache(),
            any: AtomicBool::new(false),
            cursor: AtomicU64::new(0),
            following: AtomicBool::new(false),
            retention,
        }
    }

    /// Whether `ctx` is revoked as far as this process knows: a token id or grant family on
    /// the list. Two hash lookups at most, none while nothing was ever revoked.
    pub(crate) fn contains(&self, ctx: &AuthContext) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let listed = |claim: &str, list: &moka::sync::Cache<String, ()>| {
            ctx.claim(claim)
                .and_then(Value::as_str)
                .is_some_and(|id| list.contains_key(id))
        };
        listed("jti", &self.tokens) || listed("fid", &self.families)
    }

    /// Adds a revocation to this process's list.
    pub(crate) fn add(&self, revoked: &Revoked) {
        match revoked {
            Revoked::Token(jti) => self.tokens.insert(jti.clone(), ()),
            Revoked::Family(fid) => self.families.insert(fid.clone(), ()),
        }
        self.any.store(true, Ordering::Release);
    }

    /// Records a revocation: the store marker every validation reads (kept `marker_ttl`: a
    /// family's as long as its refresh tokens), the log event the other replicas read, and this
    /// process's list. An error means it may not have reached the other replicas: the request
    /// answers 503 and the client retries.
    pub(crate) async fn revoke(
        &self,
        store: &dyn Store,
        revoked: Revoked,
        marker_ttl: Duration,
    ) -> Result<(), StoreError> {
        let marker = match &revoked {
            Revoked::Token(jti) => keyspace::revoked_token(jti).into_string(),
            Revoked::Family(fid) => keyspace::revoked_family(fid).into_string(),
        };
        self.add(&revoked);
        store
            .put(&marker, Bytes::from_static(b"true"), marker_ttl)
            .await?;
        let event = serde_json::to_vec(&revoked).map_err(|e| StoreError(e.to_string()))?;
        store
            .append(LOG, Bytes::from(event), self.retention)
            .await?;
        Ok(())
    }

    /// Starts following the log (once per list): a task that reads other replicas'
    /// revocations every [`POLL_INTERVAL`] and stops when the list is dropped. Call it from
    /// within a Tokio runtime.
    pub(crate) fn follow(self: &Arc<Self>, store: Arc<dyn Store>) {
        if self.following.swap(true, Ordering::AcqRel) {
            return;
        }
        let list = Arc::downgrade(self);
        tokio::spawn(poll(list, store));
    }

    /// Reads the log from the cursor to its end; returns how many events it applied.
    pub(crate) async fn catch_up(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let mut applied = 0;
        loop {
            let after = self.cursor.load(Ordering::Acquire);
            let events = store.read_log(LOG, after, BATCH).await?;
            let Some(&(last, _)) = events.last() else {
                return Ok(applied);
            };
            for (_, event) in &events {
                match serde_json::from_slice::<Revoked>(event) {
                    Ok(revoked) => self.add(&revoked),
                    // Another version's event: its marker in the store still refuses the
                    // token on validation.
                    Err(e) => {
                        tracing::warn!(target: audit::TARGET, error = %crate::audit::Escaped(&e), "unreadable revocation event skipped");
                    }
                }
            }
            applied += events.len();
            self.cursor.fetch_max(last, Ordering::AcqRel);
            if events.len() < BATCH {
                return Ok(applied);
            }
        }
    }
}

async fn poll(list: Weak<RevocationList>, store: Arc<dyn Store>) {
    let mut failing = false;
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(list) = list.upgrade() else {
            return;
        };
        match list.catch_up(store.as_ref()).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(target: audit::TARGET, "revocation log readable again");
            }
            Ok(_) => {}
            // Said once per outage, not every second.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(target: audit::TARGET, error = %crate::audit::Escaped(&e), "revocation log unreadable; revocations made elsewhere are not seen until it is back");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn context(jti: &str, fid: Option<&str>) -> AuthContext {
        let mut claims = serde_json::json!({"sub": "ada", "jti": jti});
        if let Some(fid) = fid {
            claims["fid"] = fid.into();
        }
        AuthContext::from_claims(claims.as_object().cloned().unwrap_or_default()).unwrap()
    }

    #[tokio::test]
    async fn a_revocation_on_one_list_reaches_another_through_the_log() {
        let store = MemoryStore::default();
        let (here, there) = (
            RevocationList::new(Duration::from_secs(3600)),
            RevocationList::new(Duration::from_secs(3600)),
        );
        let (token, in_family) = (context("t1", None), context("t2", Some("f1")));
        let ttl = Duration::from_secs(60);
        here.revoke(&store, Revoked::Token("t1".into()), ttl)
            .await
            .unwrap();
        here.revoke(&store, Revoked::Family("f1".into()), ttl)
            .await
            .unwrap();
        assert!(here.contains(&token) && here.contains(&in_family));
        assert!(!there.contains(&token) && !there.contains(&in_family));
        assert_eq!(there.catch_up(&store).await.unwrap(), 2);
        assert!(there.contains(&token) && there.contains(&in_family));
        assert!(!there.contains(&context("t3", Some("f2"))));
        // Read once: the cursor moved past both.
        assert_eq!(there.catch_up(&store).await.unwrap(), 0);
    }
}

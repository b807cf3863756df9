//! [`RedisStore`]: the [`Store`] on Redis 7 or Valkey (feature `redis`), shared by every replica.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, SetExpiry, SetOptions};

use super::{Store, StoreError};
use crate::BoxFuture;

/// The default key prefix: every key this library writes starts with it.
pub const DEFAULT_PREFIX: &str = "tower-mcp-auth:";

/// How long one command may take before the request that needs it gets a 503: a Redis that
/// stopped answering must not hold requests for minutes.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A counter starts with the window's expiry; later increments keep it (a fixed window).
const INCREMENT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
";

/// Appends to a stream, dropping entries older than the retention (by the server's clock), and
/// lets an idle log expire as a whole.
const APPEND: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = now - tonumber(ARGV[2])
local id = redis.call('XADD', KEYS[1], 'MINID', '~', oldest, '*', 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
";

/// Stream ids are `milliseconds-sequence`; a position packs both into a `u64` (sequence below
/// 2^20 per millisecond, far more than one deployment appends).
const SEQUENCE_BITS: u32 = 20;

fn position_of(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq) = (ms.parse::<u64>().ok()?, seq.parse::<u64>().ok()?);
    Some((ms << SEQUENCE_BITS) | seq.min((1 << SEQUENCE_BITS) - 1))
}

fn id_of(position: u64) -> String {
    format!(
        "{}-{}",
        position >> SEQUENCE_BITS,
        position & ((1 << SEQUENCE_BITS) - 1)
    )
}

/// One `XRANGE` entry: its id and its field-value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The [`Store`] on Redis 7 (or Valkey): several replicas of a server share codes, refresh
/// families, clients, consent, sign-in sessions, revocations, ATAG states and the vault.
///
/// Entries expire in Redis (`SET … PX`); single use is `GETDEL`; `put_if_absent` is
/// `SET … NX`; counters and the log are Lua scripts, so each operation is one atomic command.
/// The connection is a [`ConnectionManager`]: when Redis goes away, commands fail within a
/// short reconnection attempt (a closed port: milliseconds; an unreachable host: the time
/// limit), so the request gets a `503` with `Retry-After`; it reconnects by itself when Redis
/// returns. A `put` with a zero TTL lives one millisecond (Redis's least).
/// `redis://` and `rediss://` (TLS) URLs, with `user:password@` and a `/db` number.
///
/// ```no_run
/// use tower_mcp_auth::server::AuthServer;
/// use tower_mcp_auth::store::RedisStore;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://:secret@10.0.0.5:6379/0")
///     .prefix("notes-mcp:")
///     .connect()
///     .await?;
/// let auth = AuthServer::builder("https://mcp.example.com")
///     .resource("https://mcp.example.com/mcp")
///     .store(store)
///     .build()?;
/// # let _ = auth;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    increment: std::sync::Arc<Script>,
    append: std::sync::Arc<Script>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisStore`]: the key prefix and time limits.
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store at `url` (`redis://[user][:password@]host[:port][/db]`, or `rediss://` for TLS).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// Runs one command with the time limit; a failure or a timeout is a [`StoreError`].
    async fn run<T, F>(&self, command: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError(format!("redis: {e}"))),
            Err(_) => Err(StoreError(format!(
                "redis: no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key (default [`DEFAULT_PREFIX`]): one per deployment, so several
    /// deployments (or a staging and a production) can share one Redis.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a command, or a connection attempt, may take (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects (failing now if Redis cannot be reached, so a wrong URL or password shows at
    /// start-up); later outages are survived by reconnecting.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| StoreError(format!("redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // A reconnection tries a few times, quickly, then gives up: the commands waiting on
            // it fail (503) instead of waiting out their time limit, and the next command
            // starts a new reconnection. Endless retries here would hold every request of an
            // outage for the full time limit.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(250))
            .set_number_of_retries(2);
        let connection = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| StoreError("redis: no connection within the timeout".into()))?
        .map_err(|e| StoreError(format!("redis: {e}")))?;
        Ok(RedisStore {
            connection,
            prefix: self.prefix,
            timeout: self.timeout,
            increment: std::sync::Arc::new(Script::new(INCREMENT)),
            append: std::sync::Arc::new(Script::new(APPEND)),
        })
    }
}

impl Store for RedisStore {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let options = SetOptions::default().with_expiration(SetExpiry::PX(millis(ttl)));
            self.run(connection.set_options::<_, _, ()>(self.key(key), value.as_ref(), options))
                .await
        })
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let options = SetOptions::default()
                .conditional_set(redis::ExistenceCheck::NX)
                .with_expiration(SetExpiry::PX(millis(ttl)));
            let set: Option<String> = self
                .run(connection.set_options(self.key(key), value.as_ref(), options))
                .await?;
            Ok(set.is_some())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let value: Option<Vec<u8>> = self.run(connection.get(self.key(key))).await?;
            Ok(value.map(Bytes::from))
        })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            // GETDEL (Redis 6.2+): one command, so of two racing takes one gets the value.
            let value: Option<Vec<u8>> = self.run(connection.get_del(self.key(key))).await?;
            Ok(value.map(Bytes::from))
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            self.run(connection.del::<_, ()>(self.key(key))).await
        })
    }

    fn increment<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            self.run(
                self.increment
                    .key(self.key(key))
                    .arg(millis(ttl))
                    .invoke_async(&mut connection),
            )
            .await
        })
    }

    fn append<'a>(
        &'a self,
        log: &'a str,
        event: Bytes,
        retention: Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let id: String = self
                .run(
                    self.append
                        .key(self.key(log))
                        .arg(event.as_ref())
                        .arg(millis(retention))
                        .invoke_async(&mut connection),
                )
                .await?;
            position_of(&id).ok_or_else(|| StoreError(format!("redis: stream id `{id}`")))
        })
    }

    fn read_log<'a>(
        &'a self,
        log: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, Bytes)>, StoreError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let start = if after == 0 {
                "-".to_owned()
            } else {
                // Exclusive range start (Redis 6.2+).
                format!("({}", id_of(after))
            };
            let entries: Vec<StreamEntry> = self
                .run(
                    redis::cmd("XRANGE")
                        .arg(self.key(log))
                        .arg(start)
                        .arg("+")
                        .arg("COUNT")
                        // Redis takes a signed 64-bit count.
                        .arg(limit.min(1 << 20))
                        .query_async(&mut connection),
                )
                .await?;
            Ok(entries
                .into_iter()
                .filter_map(|(id, fields)| {
                    let position = position_of(&id)?;
                    let event = fields.into_iter().find(|(name, _)| name == "e")?.1;
                    Some((position, Bytes::from(event)))
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_stream_ids_round_trip() {
        for id in ["1764500000000-0", "1764500000000-7", "1-1048575"] {
            let position = position_of(id).unwrap();
            assert_eq!(id_of(position), id);
        }
        assert!(position_of("1764500000000-0") < position_of("1764500000000-1"));
        assert!(position_of("1764500000000-9") < position_of("1764500000001-0"));
        assert_eq!(position_of("garbage"), None);
    }
}

//! One generic store test suite run against both stores: every check of the [`Store`] contract
//! (expiry, first-writer-wins, single-use `take` under concurrency, fixed-window counters, the
//! log) is written once and run on [`MemoryStore`] and on [`RedisStore`] over a real
//! `redis-server` on loopback (`store::memory::…` and `store::redis::…`). Then what only Redis
//! has: key prefixes keep deployments apart, an outage gives errors within the command timeout
//! (never a hang) and the same store value works again once Redis is back, and a wrong address
//! or password fails at `connect`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Barrier;
use tower_mcp_auth::store::{RedisStore, Store, StoreError};

use crate::support::{RedisProcess, redis_url};

/// A TTL (or log retention) short enough to wait out in a test.
const SHORT: Duration = Duration::from_millis(300);
/// Waited after [`SHORT`]: twice it and more, so a slow machine still sees the entry gone.
const PAST_SHORT: Duration = Duration::from_millis(700);
/// A TTL no test outlives.
const LONG: Duration = Duration::from_secs(60);
/// Upper bound for "answers instead of hanging" (the command timeout is 2 s).
const NO_HANG: Duration = Duration::from_secs(5);

/// Generates, for each check `name(store: Arc<dyn Store>)` of this module, the tests
/// `memory::name` (a fresh [`MemoryStore`]) and `redis::name` (a store on the shared test Redis
/// under a prefix of its own).
macro_rules! store_suite {
    ($($check:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store = tower_mcp_auth::store::MemoryStore::default();
                    super::$check(std::sync::Arc::new(store)).await;
                }
            )+
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let store = crate::support::redis_store().await;
                    super::$check(std::sync::Arc::new(store)).await;
                }
            )+
        }
    };
}

store_suite!(
    put_then_get_round_trips_and_put_replaces,
    entry_is_gone_after_its_ttl,
    put_if_absent_first_writer_wins_until_expiry,
    put_if_absent_has_one_winner_under_concurrency,
    take_returns_the_value_once,
    take_is_single_use_under_concurrency,
    delete_removes_and_missing_key_is_ok,
    increment_counts_in_a_fixed_window,
    increment_counts_every_concurrent_call,
    increment_of_a_non_counter_is_an_error,
    log_positions_grow_and_read_log_pages_in_order,
    logs_are_separate,
    idle_log_is_gone_after_its_retention,
);

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn put_then_get_round_trips_and_put_replaces(store: Arc<dyn Store>) {
    assert_eq!(store.get("k").await.unwrap(), None, "nothing there yet");
    store.put("k", bytes("v1"), LONG).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("v1")));
    // `get` does not consume.
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("v1")));

    store.put("k", bytes("v2"), LONG).await.unwrap();
    assert_eq!(
        store.get("k").await.unwrap(),
        Some(bytes("v2")),
        "put replaces"
    );

    // Values are opaque bytes, not text.
    let binary = Bytes::from_static(&[0, 159, 146, 150, 255, b'\n', 0]);
    store.put("bin", binary.clone(), LONG).await.unwrap();
    assert_eq!(store.get("bin").await.unwrap(), Some(binary));
    // Other keys are untouched.
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("v2")));
}

async fn entry_is_gone_after_its_ttl(store: Arc<dyn Store>) {
    store.put("short", bytes("a"), SHORT).await.unwrap();
    store.put("long", bytes("b"), LONG).await.unwrap();
    // A replacing put replaces the expiry too: this one was long, now it is short.
    store.put("shortened", bytes("c"), LONG).await.unwrap();
    store.put("shortened", bytes("d"), SHORT).await.unwrap();
    assert_eq!(store.get("short").await.unwrap(), Some(bytes("a")));

    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(store.get("short").await.unwrap(), None);
    assert_eq!(store.take("short").await.unwrap(), None);
    assert_eq!(store.get("shortened").await.unwrap(), None);
    assert_eq!(store.get("long").await.unwrap(), Some(bytes("b")));
}

async fn put_if_absent_first_writer_wins_until_expiry(store: Arc<dyn Store>) {
    assert!(
        store
            .put_if_absent("k", bytes("first"), SHORT)
            .await
            .unwrap()
    );
    // A second writer loses, and neither its value nor its (longer) TTL is applied.
    assert!(
        !store
            .put_if_absent("k", bytes("second"), LONG)
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("first")));

    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(store.get("k").await.unwrap(), None, "the first TTL held");
    assert!(
        store
            .put_if_absent("k", bytes("third"), LONG)
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("third")));

    // An entry written by `put` counts as present too.
    store.put("p", bytes("put"), LONG).await.unwrap();
    assert!(!store.put_if_absent("p", bytes("nx"), LONG).await.unwrap());
    assert_eq!(store.get("p").await.unwrap(), Some(bytes("put")));
}

async fn put_if_absent_has_one_winner_under_concurrency(store: Arc<dyn Store>) {
    const WRITERS: usize = 50;
    for round in 0..5 {
        let key = format!("lock:{round}");
        let barrier = Arc::new(Barrier::new(WRITERS));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (store, key, barrier) = (store.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let won = store
                        .put_if_absent(&key, Bytes::from(i.to_string()), LONG)
                        .await
                        .unwrap();
                    won.then_some(i)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        // The value kept is the winner's.
        assert_eq!(
            store.get(&key).await.unwrap(),
            Some(Bytes::from(winners[0].to_string()))
        );
    }
}

async fn take_returns_the_value_once(store: Arc<dyn Store>) {
    assert_eq!(store.take("missing").await.unwrap(), None);
    store.put("code", bytes("grant"), LONG).await.unwrap();
    assert_eq!(store.take("code").await.unwrap(), Some(bytes("grant")));
    assert_eq!(store.take("code").await.unwrap(), None, "single use");
    assert_eq!(store.get("code").await.unwrap(), None, "take deletes");
    // The key is free again.
    assert!(
        store
            .put_if_absent("code", bytes("new"), LONG)
            .await
            .unwrap()
    );
}

async fn take_is_single_use_under_concurrency(store: Arc<dyn Store>) {
    const TAKERS: usize = 50;
    for round in 0..10 {
        let key = format!("code:{round}");
        let value = Bytes::from(format!("grant {round}"));
        store.put(&key, value.clone(), LONG).await.unwrap();
        let barrier = Arc::new(Barrier::new(TAKERS));
        let tasks: Vec<_> = (0..TAKERS)
            .map(|_| {
                let (store, key, barrier) = (store.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.take(&key).await.unwrap()
                })
            })
            .collect();
        let mut taken = Vec::new();
        for task in tasks {
            taken.extend(task.await.unwrap());
        }
        assert_eq!(taken, vec![value], "round {round}: exactly one take wins");
        assert_eq!(store.get(&key).await.unwrap(), None);
    }
}

async fn delete_removes_and_missing_key_is_ok(store: Arc<dyn Store>) {
    store.put("k", bytes("v"), LONG).await.unwrap();
    store.put("other", bytes("o"), LONG).await.unwrap();
    store.delete("k").await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    assert_eq!(store.take("k").await.unwrap(), None);
    assert_eq!(store.get("other").await.unwrap(), Some(bytes("o")));

    store.delete("k").await.unwrap();
    store.delete("never-written").await.unwrap();

    // The key is free again.
    assert!(
        store
            .put_if_absent("k", bytes("again"), LONG)
            .await
            .unwrap()
    );
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("again")));
}

async fn increment_counts_in_a_fixed_window(store: Arc<dyn Store>) {
    assert_eq!(store.increment("n", SHORT).await.unwrap(), 1);
    // Later increments (even with a long TTL) keep the first expiry: a fixed window.
    assert_eq!(store.increment("n", LONG).await.unwrap(), 2);
    assert_eq!(store.increment("n", LONG).await.unwrap(), 3);
    // Counters are separate per key.
    assert_eq!(store.increment("m", LONG).await.unwrap(), 1);

    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(store.increment("n", LONG).await.unwrap(), 1, "a new window");
    assert_eq!(store.increment("n", LONG).await.unwrap(), 2);
    assert_eq!(store.increment("m", LONG).await.unwrap(), 2);
}

async fn increment_counts_every_concurrent_call(store: Arc<dyn Store>) {
    const CALLS: u64 = 100;
    let barrier = Arc::new(Barrier::new(CALLS as usize));
    let tasks: Vec<_> = (0..CALLS)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.increment("hits", LONG).await.unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    seen.sort_unstable();
    // Every call counted once: each saw a different count, 1 to 100.
    assert_eq!(seen, (1..=CALLS).collect::<Vec<_>>());
    assert_eq!(store.increment("hits", LONG).await.unwrap(), CALLS + 1);
}

async fn increment_of_a_non_counter_is_an_error(store: Arc<dyn Store>) {
    store.put("text", bytes("abc"), LONG).await.unwrap();
    assert!(store.increment("text", LONG).await.is_err());
    // The value is left as it was.
    assert_eq!(store.get("text").await.unwrap(), Some(bytes("abc")));
}

async fn log_positions_grow_and_read_log_pages_in_order(store: Arc<dyn Store>) {
    assert_eq!(store.read_log("log", 0, 100).await.unwrap(), vec![]);
    let events: Vec<Bytes> = (1..=5).map(|i| Bytes::from(format!("event {i}"))).collect();
    let mut written = Vec::new();
    for event in &events {
        let position = store.append("log", event.clone(), LONG).await.unwrap();
        written.push((position, event.clone()));
    }
    assert!(
        written.windows(2).all(|w| w[0].0 < w[1].0),
        "positions strictly increase: {written:?}"
    );
    assert!(written[0].0 > 0, "0 means `from the oldest`");

    // From the oldest, all, in order, with the positions `append` returned.
    assert_eq!(store.read_log("log", 0, 100).await.unwrap(), written);
    // After the 2nd: the rest.
    assert_eq!(
        store.read_log("log", written[1].0, 100).await.unwrap(),
        written[2..]
    );
    // After the last: nothing.
    assert_eq!(
        store.read_log("log", written[4].0, 100).await.unwrap(),
        vec![]
    );
    // `limit` is respected, from either start.
    assert_eq!(store.read_log("log", 0, 2).await.unwrap(), written[..2]);
    assert_eq!(
        store.read_log("log", written[1].0, 2).await.unwrap(),
        written[2..4]
    );
    assert_eq!(store.read_log("log", 0, 1).await.unwrap(), written[..1]);
    assert_eq!(store.read_log("log", 0, 0).await.unwrap(), vec![]);

    // Paging by the last position seen reads every event exactly once.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_log("log", after, 2).await.unwrap();
        let Some(&(last, _)) = page.last() else {
            break;
        };
        after = last;
        paged.extend(page);
    }
    assert_eq!(paged, written);

    // A later append comes after all of them.
    let next = store.append("log", bytes("event 6"), LONG).await.unwrap();
    assert!(next > written[4].0);
    assert_eq!(
        store.read_log("log", written[4].0, 100).await.unwrap(),
        vec![(next, bytes("event 6"))]
    );
}

async fn logs_are_separate(store: Arc<dyn Store>) {
    let a1 = store.append("a", bytes("a1"), LONG).await.unwrap();
    let b1 = store.append("b", bytes("b1"), LONG).await.unwrap();
    let a2 = store.append("a", bytes("a2"), LONG).await.unwrap();
    assert_eq!(
        store.read_log("a", 0, 100).await.unwrap(),
        vec![(a1, bytes("a1")), (a2, bytes("a2"))]
    );
    assert_eq!(
        store.read_log("b", 0, 100).await.unwrap(),
        vec![(b1, bytes("b1"))]
    );
    assert_eq!(store.read_log("c", 0, 100).await.unwrap(), vec![]);
}

/// Retention, the part both stores share: a log nobody appends to is gone once its retention
/// has passed. (Whether an old event is dropped while newer ones keep the log alive is checked
/// only on the memory store, in [`memory_store_drops_events_past_retention_from_a_live_log`]:
/// Redis trims with `XADD … MINID ~`, which removes only whole stream nodes, so a few old
/// events may stay, which the contract allows: they "may be dropped".)
async fn idle_log_is_gone_after_its_retention(store: Arc<dyn Store>) {
    let old = store.append("log", bytes("old"), SHORT).await.unwrap();
    assert_eq!(
        store.read_log("log", 0, 100).await.unwrap(),
        vec![(old, bytes("old"))]
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(store.read_log("log", 0, 100).await.unwrap(), vec![]);
    // The log goes on, positions still growing.
    let new = store.append("log", bytes("new"), LONG).await.unwrap();
    assert!(new > old);
    assert_eq!(
        store.read_log("log", 0, 100).await.unwrap(),
        vec![(new, bytes("new"))]
    );
}

#[tokio::test]
async fn memory_store_drops_events_past_retention_from_a_live_log() {
    let store = tower_mcp_auth::store::MemoryStore::default();
    let old = store.append("log", bytes("old"), SHORT).await.unwrap();
    let kept = store.append("log", bytes("kept"), LONG).await.unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    // Past its retention, "old" is not returned, while the later event still is.
    assert_eq!(
        store.read_log("log", 0, 100).await.unwrap(),
        vec![(kept, bytes("kept"))]
    );
    // Appending trims it, and reading from before it does not bring it back.
    let new = store.append("log", bytes("new"), LONG).await.unwrap();
    assert_eq!(
        store.read_log("log", old - 1, 100).await.unwrap(),
        vec![(kept, bytes("kept")), (new, bytes("new"))]
    );
}

// Redis only.

#[tokio::test]
async fn redis_prefixes_keep_stores_apart() {
    let url = redis_url().await;
    let tag: u64 = rand::random();
    let connect = |prefix: String| RedisStore::builder(url.clone()).prefix(prefix).connect();
    let staging = connect(format!("test-{tag:x}-staging:")).await.unwrap();
    let production = connect(format!("test-{tag:x}-production:")).await.unwrap();

    staging.put("k", bytes("staging"), LONG).await.unwrap();
    assert_eq!(production.get("k").await.unwrap(), None);
    assert!(
        production
            .put_if_absent("k", bytes("production"), LONG)
            .await
            .unwrap()
    );
    assert_eq!(
        production.take("k").await.unwrap(),
        Some(bytes("production"))
    );
    assert_eq!(staging.get("k").await.unwrap(), Some(bytes("staging")));
    production.delete("k").await.unwrap();
    assert_eq!(staging.get("k").await.unwrap(), Some(bytes("staging")));

    assert_eq!(staging.increment("n", LONG).await.unwrap(), 1);
    assert_eq!(production.increment("n", LONG).await.unwrap(), 1);
    assert_eq!(staging.increment("n", LONG).await.unwrap(), 2);

    let s = staging.append("log", bytes("s"), LONG).await.unwrap();
    assert_eq!(production.read_log("log", 0, 100).await.unwrap(), vec![]);
    assert_eq!(
        staging.read_log("log", 0, 100).await.unwrap(),
        vec![(s, bytes("s"))]
    );

    // The same prefix is the same deployment: a second store value sees the first's keys.
    let staging_too = connect(format!("test-{tag:x}-staging:")).await.unwrap();
    assert_eq!(staging_too.take("k").await.unwrap(), Some(bytes("staging")));
    assert_eq!(staging.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn redis_take_is_single_use_across_store_values() {
    // Two replicas (same prefix, each its own connection) race to redeem one code.
    let url = redis_url().await;
    let tag: u64 = rand::random();
    let connect = || {
        RedisStore::builder(url.clone())
            .prefix(format!("test-{tag:x}:"))
            .connect()
    };
    let a = Arc::new(connect().await.unwrap());
    let b = Arc::new(connect().await.unwrap());
    for round in 0..10 {
        let key = format!("code:{round}");
        a.put(&key, bytes("grant"), LONG).await.unwrap();
        let barrier = Arc::new(Barrier::new(40));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let (key, barrier) = (key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.take(&key).await.unwrap().is_some()
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

/// Runs every operation against `store`, all at once, and asserts each fails with a
/// `StoreError` within [`NO_HANG`].
async fn every_operation_fails_fast(store: &RedisStore) {
    async fn timed<T: std::fmt::Debug>(
        what: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        assert!(elapsed < NO_HANG, "{what} took {elapsed:?} with Redis down");
        let error = result.expect_err(what);
        assert!(
            error.to_string().starts_with("store unavailable: redis"),
            "{error}"
        );
    }
    tokio::join!(
        timed("put", store.put("k", bytes("v"), LONG)),
        timed("put_if_absent", store.put_if_absent("k", bytes("v"), LONG)),
        timed("get", store.get("k")),
        timed("take", store.take("k")),
        timed("delete", store.delete("k")),
        timed("increment", store.increment("n", LONG)),
        timed("append", store.append("log", bytes("e"), LONG)),
        timed("read_log", store.read_log("log", 0, 10)),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_errors_not_hangs_and_the_same_store_recovers() {
    let mut redis = RedisProcess::start().await;
    let store = RedisStore::builder(redis.url())
        .prefix("outage:")
        .connect()
        .await
        .unwrap();
    store.put("k", bytes("before"), LONG).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("before")));
    let clone = store.clone();

    redis.stop().await;
    // Twice: the first round finds the connection broken (errors at once); the second meets
    // the manager reconnecting, and each command waits out the 2 s command timeout (the
    // manager retries without end and commands await that). Neither may hang.
    every_operation_fails_fast(&store).await;
    every_operation_fails_fast(&store).await;

    redis.resume().await;
    let resumed = Instant::now();
    let mut last_error = None;
    let recovered = loop {
        match store.put("k", bytes("after"), LONG).await {
            Ok(()) => break true,
            Err(e) => last_error = Some(e),
        }
        if resumed.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        recovered,
        "no recovery within 10 s after Redis came back: {last_error:?}"
    );
    // Every operation works again through the same store value.
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("after")));
    assert_eq!(store.take("k").await.unwrap(), Some(bytes("after")));
    assert!(store.put_if_absent("k", bytes("nx"), LONG).await.unwrap());
    store.delete("k").await.unwrap();
    assert_eq!(store.increment("n", LONG).await.unwrap(), 1);
    let position = store.append("log", bytes("e"), LONG).await.unwrap();
    assert_eq!(
        store.read_log("log", 0, 10).await.unwrap(),
        vec![(position, bytes("e"))]
    );
    // And a clone made before the outage shares the recovered connection.
    clone.put("c", bytes("clone"), LONG).await.unwrap();
    assert_eq!(store.get("c").await.unwrap(), Some(bytes("clone")));
    redis.stop().await;
}

#[tokio::test]
async fn redis_connect_to_a_closed_port_fails_fast() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let result = RedisStore::builder(format!("redis://127.0.0.1:{port}"))
        .connect()
        .await;
    assert!(result.is_err(), "connected to a closed port");
    assert!(started.elapsed() < NO_HANG, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn redis_connect_with_a_wrong_password_fails() {
    // A server of its own, without a password: AUTH is refused. (The connection manager
    // retries that refusal until the connect timeout, so the error says "no connection within
    // the timeout" rather than why.)
    let mut redis = RedisProcess::start().await;
    let started = Instant::now();
    let result = RedisStore::builder(format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port))
        .connect()
        .await;
    let elapsed = started.elapsed();
    redis.stop().await;
    let error = result.expect_err("connected with a wrong password");
    assert!(elapsed < NO_HANG, "took {elapsed:?}");
    // The error never shows the password.
    assert!(!error.to_string().contains("s3cret-pw"), "{error}");
}

#[tokio::test]
async fn redis_connect_with_a_bad_url_fails() {
    let error = RedisStore::builder("http://127.0.0.1:6379")
        .connect()
        .await
        .expect_err("not a redis URL");
    assert!(error.to_string().contains("redis URL"), "{error}");
}

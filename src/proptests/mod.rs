//! Property-based tests over the crate's parsers ("fuzzing on stable Rust", issue #13 item 6).
//!
//! One submodule per parser. Every property runs 256 cases by default (the HTTP round trips
//! fewer); `PROPTEST_CASES=20000 cargo test --all-features --lib proptests` runs each of them
//! that many times. Properties marked `#[ignore = "bug: …"]` fail today: each documents a bug
//! (with a minimal reproduction next to it) that is reported, not fixed, here.

use std::future::Future;
use std::sync::LazyLock;

use proptest::test_runner::Config as ProptestConfig;

/// `default_cases` cases, unless `PROPTEST_CASES` says otherwise. `ProptestConfig::default()`
/// reads the `PROPTEST_*` variables, but an explicit `cases` would override them: so it is set
/// only when the variable is absent. No regression files are written into the source tree.
fn config(default_cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config.failure_persistence = None;
    config
}

/// One runtime for every property that needs one (layers, routers, a local HTTP server).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.block_on(future)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

mod json;

mod envelope;

mod sse;

mod policy;

mod credentials;

mod jwt;

#[cfg(feature = "server")]
mod documents;
#[cfg(feature = "server")]
mod server;

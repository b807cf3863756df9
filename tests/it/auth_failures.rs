//! Failed authentications limited per client address (#17): a flood of bad tokens from one
//! address costs at most the configured number of signature verifications, other addresses
//! and tokens validated before the flood are unaffected, and successes never use the budget.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey};
use tower_mcp_auth::bearer::AuthFailureLimit;
use tower_mcp_auth::validate::{BoxFuture, JwtKey, JwtValidator, TokenError, TokenValidator};
use tower_mcp_auth::{AuthContext, BearerLayer};

use crate::support::*;

/// A real validator that counts how often it is asked: each call is one signature check.
struct Counting {
    inner: JwtValidator,
    calls: Arc<AtomicUsize>,
}

impl TokenValidator for Counting {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<AuthContext, TokenError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.validate(token)
    }
}

/// The address the test claims for a request (a stand-in for the TCP peer, so one test can
/// speak from several addresses).
const CLIENT: &str = "x-test-client";

async fn limited(failures: u32) -> (Protected, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = protected(
        move |r| Counting {
            inner: JwtValidator::builder(ISSUER, r.resource())
                .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
                .build()
                .unwrap(),
            calls: counter,
        },
        move |layer: BearerLayer<Counting>| {
            layer.limit_auth_failures(
                AuthFailureLimit::new(failures, Duration::from_secs(3600)).client_address(
                    |parts: &http::request::Parts| -> Option<IpAddr> {
                        parts.headers.get(CLIENT)?.to_str().ok()?.parse().ok()
                    },
                ),
            )
        },
    )
    .await;
    (server, calls)
}

fn good_token(server: &Protected, sub: &str) -> String {
    sign(
        Algorithm::HS256,
        &encoding_key(Algorithm::HS256),
        None,
        &claims(server.resource.resource(), sub, "mcp:tools"),
    )
}

/// Well-formed, distinct, signed with the wrong key: each needs a signature check to refuse.
fn bad_token(server: &Protected, n: usize) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"not the server's secret, 32 byte"),
        None,
        &claims(
            server.resource.resource(),
            &format!("forged-{n}"),
            "mcp:tools",
        ),
    )
}

async fn post_from(server: &Protected, address: &str, token: &str) -> reqwest::Response {
    // One client for the whole test: building one per request loads the root certificates
    // each time.
    static CLIENT_POOL: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT_POOL
        .get_or_init(client)
        .post(&server.url)
        .header(CLIENT, address)
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn credential_stuffing_10000_distinct_bad_tokens_from_one_address_cost_at_most_the_configured_verifications()
 {
    const LIMIT: usize = 20;
    let (server, calls) = limited(LIMIT as u32).await;
    let attacker = "203.0.113.5";
    // A user of the same address (a shared NAT) signed in before the flood.
    let earlier = good_token(&server, "early-bird");
    assert_eq!(post_from(&server, attacker, &earlier).await.status(), 200);
    let before = calls.load(Ordering::SeqCst);

    let server = Arc::new(server);
    let statuses: Vec<(u16, Option<u64>)> = futures_util::stream::iter(0..10_000)
        .map(|n| {
            let server = server.clone();
            async move {
                let response = post_from(&server, attacker, &bad_token(&server, n)).await;
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
                (response.status().as_u16(), retry_after)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let refused_by_validation = statuses.iter().filter(|(s, _)| *s == 401).count();
    let limited = statuses.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(refused_by_validation, LIMIT, "the budget, exactly");
    assert_eq!(limited, 10_000 - LIMIT);
    assert!(
        statuses
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, retry)| retry.is_some_and(|r| r >= 1)),
        "every 429 says when to retry"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst) - before,
        LIMIT,
        "10,000 bad tokens cost {LIMIT} verifications"
    );
    assert_eq!(server.calls(), 1, "nothing refused reached the service");

    // The token validated before the flood is cached: it never needed the budget.
    assert_eq!(post_from(&server, attacker, &earlier).await.status(), 200);
    // A new token from the locked address waits, whatever it holds (not validated at all).
    let late = good_token(&server, "late");
    let response = post_from(&server, attacker, &late).await;
    assert_eq!(response.status(), 429);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    // Another address is unaffected.
    assert_eq!(
        post_from(&server, "198.51.100.7", &late).await.status(),
        200
    );
}

#[tokio::test]
async fn valid_tokens_never_use_the_failure_budget() {
    let (server, calls) = limited(3).await;
    let address = "192.0.2.44";
    for user in 0..12 {
        let token = good_token(&server, &format!("user{user}"));
        assert_eq!(post_from(&server, address, &token).await.status(), 200);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 12);
    // The whole budget is still there for refusals: three, then the wait.
    for n in 0..3 {
        assert_eq!(
            post_from(&server, address, &bad_token(&server, n))
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        post_from(&server, address, &bad_token(&server, 3))
            .await
            .status(),
        429
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        15,
        "the refused fourth cost nothing"
    );
}

#[tokio::test]
async fn requests_whose_address_cannot_be_told_share_one_budget() {
    let (server, _) = limited(2).await;
    for n in 0..2 {
        assert_eq!(
            server.post(Some(&bad_token(&server, n))).await.status(),
            401
        );
    }
    // No address header: the same (unknown) budget, now empty.
    assert_eq!(
        server.post(Some(&bad_token(&server, 2))).await.status(),
        429
    );
    // A known address has its own.
    assert_eq!(
        post_from(&server, "192.0.2.9", &bad_token(&server, 3))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn an_ipv6_client_is_counted_by_its_64_block() {
    let (server, _) = limited(2).await;
    // Two addresses of one /64 share its budget...
    assert_eq!(
        post_from(&server, "2001:db8:1:2::1", &bad_token(&server, 0))
            .await
            .status(),
        401
    );
    assert_eq!(
        post_from(&server, "2001:db8:1:2::ffff", &bad_token(&server, 1))
            .await
            .status(),
        401
    );
    assert_eq!(
        post_from(&server, "2001:db8:1:2:abcd::9", &bad_token(&server, 2))
            .await
            .status(),
        429
    );
    // ...another /64 has its own.
    assert_eq!(
        post_from(&server, "2001:db8:1:3::1", &bad_token(&server, 3))
            .await
            .status(),
        401
    );
}

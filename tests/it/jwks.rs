//! JWKS validation against a key server on 127.0.0.1: rotation, cooldown, outages.

use std::sync::atomic::Ordering;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use tower_mcp_auth::validate::JwksValidator;

use crate::support::*;

fn rsa1() -> serde_json::Value {
    public_jwk(Algorithm::RS256, RSA1_KEY, "k1")
}
fn rsa2() -> serde_json::Value {
    public_jwk(Algorithm::RS256, RSA2_KEY, "k2")
}

async fn setup(keys: Vec<serde_json::Value>, cooldown: Duration) -> (JwksServer, Protected) {
    let jwks = JwksServer::start(keys).await;
    let url = jwks.url.clone();
    let server = protected(
        move |r| {
            JwksValidator::builder(url, ISSUER, r.resource())
                .address_policy(
                    tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                )
                .refetch_cooldown(cooldown)
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    (jwks, server)
}

fn token(server: &Protected, key: &[u8], kid: &str, sub: &str) -> String {
    sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(key).unwrap(),
        Some(kid),
        &claims(server.resource.resource(), sub, "mcp:tools"),
    )
}

#[tokio::test]
async fn keys_are_fetched_once_and_reused() {
    let (jwks, server) = setup(vec![rsa1()], Duration::from_secs(60)).await;
    for i in 0..5 {
        let t = token(&server, RSA1_KEY, "k1", &format!("user{i}"));
        assert_eq!(server.post(Some(&t)).await.status(), 200);
    }
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test]
async fn unknown_kid_triggers_refetch_and_rotated_key_is_accepted_without_restart() {
    // The servers run on this test's thread: its recorder counts the fetches (feature metrics).
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (jwks, server) = setup(vec![rsa1()], Duration::ZERO).await;
    assert_eq!(
        server
            .post(Some(&token(&server, RSA1_KEY, "k1", "a")))
            .await
            .status(),
        200
    );
    assert_eq!(jwks.hits(), 1);

    // The provider rotates: k2 signs from now on, k1 is withdrawn.
    jwks.set_keys(vec![rsa2()]);
    let response = server
        .post(Some(&token(&server, RSA2_KEY, "k2", "b")))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(jwks.hits(), 2, "exactly one refetch for the new kid");

    // A new token under the withdrawn key is no longer accepted.
    let response = server
        .post(Some(&token(&server, RSA1_KEY, "k1", "c")))
        .await;
    assert_eq!(response.status(), 401);
    assert!(www_authenticate(&response).contains("no verification key matches the token"));
    #[cfg(feature = "metrics")]
    {
        let fetched: u64 = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == tower_mcp_auth::metrics::JWKS_FETCHES)
            .map(|(.., value)| match value {
                metrics_util::debugging::DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum();
        // The first fetch, the refetch for k2, and one for the withdrawn k1 (no cooldown).
        assert_eq!(fetched, jwks.hits() as u64, "every fetch counted");
    }
    #[cfg(not(feature = "metrics"))]
    let _ = snapshotter;
}

#[tokio::test]
async fn random_kids_cannot_hammer_the_jwks_server() {
    let (jwks, server) = setup(vec![rsa1()], Duration::from_secs(60)).await;
    assert_eq!(
        server
            .post(Some(&token(&server, RSA1_KEY, "k1", "a")))
            .await
            .status(),
        200
    );
    for i in 0..50 {
        let t = token(&server, RSA1_KEY, &format!("random-{i}"), "attacker");
        let response = server.post(Some(&t)).await;
        assert_eq!(response.status(), 401);
    }
    // The first fetch, and at most one refetch caused by the unknown kids (the cooldown then
    // holds them all off).
    assert!(jwks.hits() <= 2, "JWKS fetched {} times", jwks.hits());
}

#[tokio::test]
async fn concurrent_requests_with_new_kid_share_one_fetch() {
    let (jwks, server) = setup(vec![rsa1()], Duration::ZERO).await;
    assert_eq!(
        server
            .post(Some(&token(&server, RSA1_KEY, "k1", "a")))
            .await
            .status(),
        200
    );
    jwks.set_keys(vec![rsa1(), rsa2()]);
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let server = server.clone();
        // Distinct subjects so no two requests share a token-cache entry.
        let t = token(&server, RSA2_KEY, "k2", &format!("user{i}"));
        tasks.push(tokio::spawn(
            async move { server.post(Some(&t)).await.status() },
        ));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(
        jwks.hits(),
        2,
        "single-flight: one fetch served all 32 requests"
    );
}

#[tokio::test]
async fn jwks_down_with_cached_key_still_validates() {
    let jwks = JwksServer::start(vec![rsa1()]).await;
    let url = jwks.url.clone();
    let server = protected(
        move |r| {
            JwksValidator::builder(url, ISSUER, r.resource())
                .address_policy(
                    tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                )
                // Every fetch is stale at once: the background refresh runs on each request
                // (within the cooldown) and fails, and the held key keeps working.
                .max_age(Duration::ZERO)
                .refetch_cooldown(Duration::ZERO)
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    assert_eq!(
        server
            .post(Some(&token(&server, RSA1_KEY, "k1", "a")))
            .await
            .status(),
        200
    );
    jwks.down.store(true, Ordering::SeqCst);
    for i in 0..3 {
        let t = token(&server, RSA1_KEY, "k1", &format!("fresh{i}"));
        assert_eq!(
            server.post(Some(&t)).await.status(),
            200,
            "known key during outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(jwks.hits() >= 2, "background refreshes were attempted");
}

#[tokio::test]
async fn jwks_unreachable_and_key_unknown_is_503_not_401() {
    let jwks = JwksServer::start(vec![rsa1()]).await;
    jwks.down.store(true, Ordering::SeqCst);
    let url = jwks.url.clone();
    let server = protected(
        move |r| {
            JwksValidator::builder(url, ISSUER, r.resource())
                .address_policy(
                    tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                )
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    let response = server
        .post(Some(&token(&server, RSA1_KEY, "k1", "a")))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert!(response.headers().get("www-authenticate").is_none());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // Within the cooldown the failure is remembered: no second fetch.
    let _ = server
        .post(Some(&token(&server, RSA1_KEY, "k1", "b")))
        .await;
    assert_eq!(jwks.hits(), 1);
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn jwks_with_unusable_entries_keeps_the_usable_keys() {
    let keys = vec![
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "sym", "alg": "HS256"}),
        json!({"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB", "alg": "RSA-OAEP"}),
        json!({"kty": "weird"}),
        rsa1(),
    ];
    let (_jwks, server) = setup(keys, Duration::from_secs(60)).await;
    assert_eq!(
        server
            .post(Some(&token(&server, RSA1_KEY, "k1", "a")))
            .await
            .status(),
        200
    );
    // A token claiming HS256 with the symmetric key published in the set is refused: HMAC is
    // never accepted from a JWKS.
    let c = claims(server.resource.resource(), "mallory", "mcp:tools");
    let forged = forge(&json!({"alg": "HS256", "kid": "sym"}), &c, Some(b"secret"));
    let response = server.post(Some(&forged)).await;
    assert_eq!(response.status(), 401);
    assert!(www_authenticate(&response).contains("`HS256` is not accepted"));
}

#[tokio::test]
async fn ec_and_eddsa_keys_from_jwks() {
    let keys = vec![
        public_jwk(Algorithm::ES256, EC256_KEY, "ec"),
        public_jwk(Algorithm::EdDSA, ED_KEY, "ed"),
    ];
    let (_jwks, server) = setup(keys, Duration::from_secs(60)).await;
    let c = claims(server.resource.resource(), "a", "mcp:tools");
    for (alg, kid) in [(Algorithm::ES256, "ec"), (Algorithm::EdDSA, "ed")] {
        let t = sign(alg, &encoding_key(alg), Some(kid), &c);
        assert_eq!(server.post(Some(&t)).await.status(), 200, "{alg:?}");
    }
    // The EC key does not verify an EdDSA token that names it.
    let t = sign(
        Algorithm::EdDSA,
        &encoding_key(Algorithm::EdDSA),
        Some("ec"),
        &c,
    );
    assert_eq!(server.post(Some(&t)).await.status(), 401);
}

#[test]
fn hmac_algorithms_cannot_be_configured_for_jwks() {
    let built =
        JwksValidator::builder("https://id.example/jwks", ISSUER, "https://mcp.example/mcp")
            .algorithms([Algorithm::RS256, Algorithm::HS256])
            .build();
    assert!(built.is_err());
    let built =
        JwksValidator::builder("http://id.example/jwks", ISSUER, "https://mcp.example/mcp").build();
    assert!(built.is_err(), "plain http JWKS on a public host");
}

async fn setup_aged(max_age: Duration, key_max_age: Duration) -> (JwksServer, Protected) {
    let jwks = JwksServer::start(vec![rsa1()]).await;
    let url = jwks.url.clone();
    let server = protected(
        move |r| {
            JwksValidator::builder(url, ISSUER, r.resource())
                .address_policy(
                    tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                )
                .max_age(max_age)
                .key_max_age(key_max_age)
                .refetch_cooldown(Duration::ZERO)
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    (jwks, server)
}

#[tokio::test]
async fn a_key_removed_by_the_provider_stops_validating_a_cached_token_within_twice_max_age() {
    let max_age = Duration::from_millis(300);
    let (jwks, server) = setup_aged(max_age, Duration::from_secs(3600)).await;
    // Valid for five minutes; without a bound it would be served from the cache that long.
    let t = token(&server, RSA1_KEY, "k1", "alice");
    assert_eq!(server.post(Some(&t)).await.status(), 200);
    assert_eq!(server.post(Some(&t)).await.status(), 200);
    assert_eq!(jwks.hits(), 1, "the second request was a cache hit");

    // The provider withdraws k1 (a leaked key, say).
    jwks.set_keys(vec![rsa2()]);
    let removed = std::time::Instant::now();
    let mut status = 200;
    while status == 200 && removed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = server.post(Some(&t)).await.status().as_u16();
    }
    assert_eq!(status, 401, "the cached token stopped validating");
    // The bound is 2 × max_age (plus this loop's step); ten seconds is only the test's
    // give-up point, the figure is reported, not asserted to the millisecond.
    eprintln!("refused {:?} after the key's removal", removed.elapsed());
    assert!(jwks.hits() >= 2, "the key set was fetched again");
}

#[tokio::test]
async fn keys_nobody_can_confirm_past_key_max_age_stop_validating() {
    let (jwks, server) = setup_aged(Duration::from_millis(50), Duration::from_millis(400)).await;
    assert_eq!(
        server
            .post(Some(&token(&server, RSA1_KEY, "k1", "a")))
            .await
            .status(),
        200
    );
    jwks.down.store(true, Ordering::SeqCst);
    // Within key_max_age the held key serves through the outage.
    assert_eq!(
        server
            .post(Some(&token(&server, RSA1_KEY, "k1", "b")))
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = server
        .post(Some(&token(&server, RSA1_KEY, "k1", "c")))
        .await;
    assert_eq!(
        response.status(),
        503,
        "an unconfirmable key is not trusted forever"
    );
    // Back online: validation resumes.
    jwks.down.store(false, Ordering::SeqCst);
    assert_eq!(
        server
            .post(Some(&token(&server, RSA1_KEY, "k1", "d")))
            .await
            .status(),
        200
    );
}

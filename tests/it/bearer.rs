//! The bearer layer over real HTTP: credentials parsing, challenges, scopes, statuses.

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tower_mcp_auth::validate::{JwtKey, JwtValidator};

use crate::support::*;

fn hs256(resource: &tower_mcp_auth::ProtectedResource) -> JwtValidator {
    JwtValidator::builder(ISSUER, resource.resource())
        .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
        .build()
        .unwrap()
}

fn token_for(server: &Protected, sub: &str, scope: &str) -> String {
    sign(
        Algorithm::HS256,
        &encoding_key(Algorithm::HS256),
        None,
        &claims(server.resource.resource(), sub, scope),
    )
}

#[tokio::test]
async fn no_token_gets_401_with_exact_challenge_and_no_error() {
    let server = protected(hs256, |l| l).await;
    let response = server.post(None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="mcp:tools""#,
            server.metadata_url()
        )
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn valid_token_reaches_inner_service_with_auth_context() {
    let server = protected(hs256, |l| l).await;
    let token = token_for(&server, "alice", "mcp:tools notes:read");
    let response = server.post(Some(&token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["client_id"], "test-client");
    assert_eq!(body["scopes"], json!(["mcp:tools", "notes:read"]));
    assert_eq!(body["aud"], json!([server.resource.resource()]));
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn scheme_is_case_insensitive() {
    let server = protected(hs256, |l| l).await;
    let token = token_for(&server, "alice", "mcp:tools");
    let response = client()
        .post(&server.url)
        .header("authorization", format!("bEARer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn malformed_authorization_header_is_invalid_request() {
    let server = protected(hs256, |l| l).await;
    for header in [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer a\"b",
        "Bearer ===",
    ] {
        let response = client()
            .post(&server.url)
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{header:?}");
        assert_eq!(
            www_authenticate(&response),
            format!(
                r#"Bearer resource_metadata="{}", error="invalid_request", error_description="the bearer token is malformed""#,
                server.metadata_url()
            ),
            "{header:?}"
        );
    }
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn other_auth_scheme_is_treated_as_no_token() {
    let server = protected(hs256, |l| l).await;
    let response = client()
        .post(&server.url)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="mcp:tools""#,
            server.metadata_url()
        )
    );
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let server = protected(hs256, |l| l).await;
    let token = token_for(&server, "alice", "mcp:tools");
    let response = client()
        .post(&server.url)
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", error="invalid_request", error_description="more than one Authorization header""#,
            server.metadata_url()
        )
    );
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn token_in_query_string_is_never_accepted() {
    let server = protected(hs256, |l| l).await;
    let token = token_for(&server, "alice", "mcp:tools");
    // Only in the query: unauthenticated, the token is not even read.
    let response = client()
        .post(format!("{}?access_token={token}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="mcp:tools""#,
            server.metadata_url()
        )
    );
    // In the query and the header: two methods at once, invalid_request.
    let response = client()
        .post(format!("{}?access_token={token}", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(www_authenticate(&response).contains(r#"error="invalid_request""#));
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn invalid_token_challenge_carries_error_and_description() {
    let server = protected(hs256, |l| l).await;
    let response = server.post(Some("not-a-jwt")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="mcp:tools", error="invalid_token", error_description="the access token is malformed""#,
            server.metadata_url()
        )
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "invalid_token", "error_description": "the access token is malformed"})
    );
}

#[tokio::test]
async fn missing_layer_scope_gets_403_insufficient_scope() {
    let server = protected(hs256, |l| l.require_scopes(["mcp:tools", "notes:read"])).await;
    let token = token_for(&server, "alice", "mcp:tools");
    let response = server.post(Some(&token)).await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="mcp:tools notes:read", error="insufficient_scope", error_description="this resource requires the scopes: mcp:tools notes:read""#,
            server.metadata_url()
        )
    );
    assert_eq!(server.calls(), 0);
    let token = token_for(&server, "alice", "notes:read mcp:tools extra");
    assert_eq!(server.post(Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn challenge_scopes_are_configurable() {
    let server = protected(hs256, |l| l.challenge_scopes(["a:b", "c:d"])).await;
    let response = server.post(None).await;
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="a:b c:d""#,
            server.metadata_url()
        )
    );
}

#[tokio::test]
async fn cached_token_is_refused_once_expired() {
    // Zero leeway, so the only thing that could accept the token after `exp` is a cache
    // entry outliving the token: the layer must not let that happen.
    let server = protected(
        |r| {
            JwtValidator::builder(ISSUER, r.resource())
                .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
                .leeway(std::time::Duration::ZERO)
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
    c["exp"] = json!(now() + 2);
    let token = sign(Algorithm::HS256, &encoding_key(Algorithm::HS256), None, &c);
    assert_eq!(server.post(Some(&token)).await.status(), 200);
    assert_eq!(server.post(Some(&token)).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = server.post(Some(&token)).await;
    assert_eq!(response.status(), 401);
    assert!(
        www_authenticate(&response).contains(r#"error_description="the access token has expired""#)
    );
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn refusals_carry_no_store_and_json() {
    let server = protected(hs256, |l| l).await;
    for response in [server.post(None).await, server.post(Some("x.y.z")).await] {
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn fractional_exp_is_honoured_by_the_cache() {
    // RFC 7519 NumericDate may be fractional; the cache must still expire the entry with the
    // token (a fractional exp once read as "no expiry" would keep it for a minute).
    let server = protected(
        |r| {
            JwtValidator::builder(ISSUER, r.resource())
                .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
                .leeway(std::time::Duration::ZERO)
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
    c["exp"] = json!(now() as f64 + 1.5);
    let token = sign(Algorithm::HS256, &encoding_key(Algorithm::HS256), None, &c);
    assert_eq!(server.post(Some(&token)).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_eq!(server.post(Some(&token)).await.status(), 401);
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn absurd_exp_is_refused_without_panicking() {
    let server = protected(hs256, |l| l).await;
    for exp in [json!(1e300), json!(u64::MAX)] {
        let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
        c["exp"] = exp;
        let token = sign(Algorithm::HS256, &encoding_key(Algorithm::HS256), None, &c);
        let response = server.post(Some(&token)).await;
        assert_eq!(response.status(), 401);
        assert!(www_authenticate(&response).contains("`exp` claim"));
    }
}

/// Counts validations, each taking a while (as a JWKS fetch or an introspection call does).
struct SlowCounted {
    inner: JwtValidator,
    validations: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tower_mcp_auth::validate::TokenValidator for SlowCounted {
    fn validate<'a>(
        &'a self,
        token: &'a str,
    ) -> tower_mcp_auth::BoxFuture<
        'a,
        Result<tower_mcp_auth::AuthContext, tower_mcp_auth::validate::TokenError>,
    > {
        Box::pin(async move {
            self.validations
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            self.inner.validate(token).await
        })
    }
}

/// A burst of requests from a user the cache has not seen (a thundering herd, or an attacker
/// replaying one token to multiply signature work): one validation, every request answered.
#[tokio::test]
async fn concurrent_first_uses_of_a_token_validate_it_once() {
    let validations = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = validations.clone();
    let server = protected(
        move |resource| SlowCounted {
            inner: hs256(resource),
            validations: counted,
        },
        |l| l,
    )
    .await;
    let token = token_for(&server, "alice", "mcp:tools");
    let burst = (0..24).map(|_| server.post(Some(&token)));
    let statuses: Vec<u16> = futures_util::future::join_all(burst)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses, vec![200; 24]);
    assert_eq!(validations.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Cached now: no further validation.
    assert_eq!(server.post(Some(&token)).await.status(), 200);
    assert_eq!(validations.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A bad token is shared with those waiting on it, never cached: tried again later, it is
    // validated again (and refused again).
    let at = token.len() - 10;
    let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    let burst = (0..8).map(|_| server.post(Some(&forged)));
    for response in futures_util::future::join_all(burst).await {
        assert_eq!(response.status(), 401);
    }
    assert_eq!(validations.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(server.post(Some(&forged)).await.status(), 401);
    assert_eq!(validations.load(std::sync::atomic::Ordering::SeqCst), 3);
}

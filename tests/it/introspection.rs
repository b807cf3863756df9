//! RFC 7662 introspection against an authorization server double on 127.0.0.1.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tower_mcp_auth::validate::{ByFormat, IntrospectionValidator, JwtKey, JwtValidator};

use crate::support::*;

async fn setup(cache_ttl: Duration) -> (IntrospectionServer, Protected) {
    let idp = IntrospectionServer::start().await;
    let url = idp.url.clone();
    let server = protected(
        move |r| {
            IntrospectionValidator::builder(url, r.resource())
                .address_policy(
                    tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                )
                .client_credentials("rs", "rs-secret")
                .issuer(ISSUER)
                .cache_ttl(cache_ttl)
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    (idp, server)
}

fn active(server: &Protected, sub: &str) -> Value {
    json!({
        "active": true, "sub": sub, "client_id": "c1", "scope": "mcp:tools notes:read",
        "aud": server.resource.resource(), "iss": ISSUER, "exp": now() + 300,
        "token_type": "Bearer",
    })
}

#[tokio::test]
async fn active_token_is_accepted_and_cached() {
    let (idp, server) = setup(Duration::from_secs(60)).await;
    idp.answer("opaque-1", active(&server, "alice"));
    let response = server.post(Some("opaque-1")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["scopes"], json!(["mcp:tools", "notes:read"]));
    for _ in 0..5 {
        assert_eq!(server.post(Some("opaque-1")).await.status(), 200);
    }
    assert_eq!(idp.hits(), 1, "results are cached");
}

#[tokio::test]
async fn inactive_token_is_refused() {
    let (idp, server) = setup(Duration::from_secs(60)).await;
    let response = server.post(Some("revoked-token")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="mcp:tools", error="invalid_token", error_description="the access token is not active""#,
            server.metadata_url()
        )
    );
    assert_eq!(idp.hits(), 1);
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn active_token_for_another_audience_is_refused() {
    let (idp, server) = setup(Duration::from_secs(60)).await;
    let mut answer = active(&server, "alice");
    answer["aud"] = json!("https://other.example/mcp");
    idp.answer("t-other", answer.clone());
    let response = server.post(Some("t-other")).await;
    assert_eq!(response.status(), 401);
    assert!(www_authenticate(&response).contains("not issued for this resource"));
    // No audience at all: refused as well, the check is not optional.
    answer.as_object_mut().unwrap().remove("aud");
    idp.answer("t-noaud", answer);
    assert_eq!(server.post(Some("t-noaud")).await.status(), 401);
}

#[tokio::test]
async fn active_token_from_another_issuer_or_expired_is_refused() {
    let (idp, server) = setup(Duration::from_secs(60)).await;
    let mut answer = active(&server, "alice");
    answer["iss"] = json!("https://evil.example");
    idp.answer("t-iss", answer);
    assert_eq!(server.post(Some("t-iss")).await.status(), 401);
    let mut answer = active(&server, "alice");
    answer["exp"] = json!(now() - 100);
    idp.answer("t-exp", answer);
    let response = server.post(Some("t-exp")).await;
    assert_eq!(response.status(), 401);
    assert!(www_authenticate(&response).contains("has expired"));
}

#[tokio::test]
async fn refresh_token_presented_as_access_token_is_refused() {
    let (idp, server) = setup(Duration::from_secs(60)).await;
    let mut answer = active(&server, "alice");
    answer["token_type"] = json!("refresh_token");
    idp.answer("rt", answer);
    assert_eq!(server.post(Some("rt")).await.status(), 401);
}

#[tokio::test]
async fn client_credentials_token_uses_client_as_subject() {
    let (idp, server) = setup(Duration::from_secs(60)).await;
    let mut answer = active(&server, "x");
    answer.as_object_mut().unwrap().remove("sub");
    idp.answer("m2m", answer);
    let body: Value = server.post(Some("m2m")).await.json().await.unwrap();
    assert_eq!(body["sub"], "c1");
}

#[tokio::test]
async fn revocation_is_noticed_after_cache_ttl() {
    let (idp, server) = setup(Duration::from_millis(300)).await;
    idp.answer("t", active(&server, "alice"));
    assert_eq!(server.post(Some("t")).await.status(), 200);
    idp.answer("t", json!({"active": false}));
    assert_eq!(
        server.post(Some("t")).await.status(),
        200,
        "served from cache"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        server.post(Some("t")).await.status(),
        401,
        "revocation seen after the TTL"
    );
    assert_eq!(idp.hits(), 2);
}

#[tokio::test]
async fn replayed_garbage_tokens_are_not_reintrospected() {
    let (idp, server) = setup(Duration::from_secs(60)).await;
    for _ in 0..20 {
        assert_eq!(server.post(Some("garbage-token")).await.status(), 401);
    }
    assert_eq!(idp.hits(), 1, "inactive results are remembered for a while");
}

#[tokio::test]
async fn introspection_endpoint_down_is_503() {
    let (idp, server) = setup(Duration::from_secs(60)).await;
    idp.down.store(true, Ordering::SeqCst);
    let response = server.post(Some("anything")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn wrong_resource_server_credentials_are_503_not_invalid_token() {
    let idp = IntrospectionServer::start().await;
    let url = idp.url.clone();
    let server = protected(
        move |r| {
            IntrospectionValidator::builder(url, r.resource())
                .address_policy(
                    tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                )
                .client_credentials("rs", "wrong")
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    idp.answer("t", active(&server, "alice"));
    assert_eq!(server.post(Some("t")).await.status(), 503);
}

#[tokio::test]
async fn by_format_routes_jwts_and_opaque_tokens() {
    let idp = IntrospectionServer::start().await;
    let url = idp.url.clone();
    let server = protected(
        move |r| {
            ByFormat::new(
                JwtValidator::builder(ISSUER, r.resource())
                    .key(JwtKey::ed_pem(ED_PUB).unwrap())
                    .build()
                    .unwrap(),
                IntrospectionValidator::builder(url, r.resource())
                    .address_policy(
                        tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                    )
                    .client_credentials("rs", "rs-secret")
                    .build()
                    .unwrap(),
            )
        },
        |l| l,
    )
    .await;
    idp.answer("opaque", active(&server, "bob"));
    let jwt = sign(
        jsonwebtoken::Algorithm::EdDSA,
        &encoding_key(jsonwebtoken::Algorithm::EdDSA),
        None,
        &claims(server.resource.resource(), "alice", "mcp:tools"),
    );
    let a: Value = server.post(Some(&jwt)).await.json().await.unwrap();
    let b: Value = server.post(Some("opaque")).await.json().await.unwrap();
    assert_eq!(
        (a["sub"].as_str(), b["sub"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert_eq!(idp.hits(), 1, "the JWT never went to introspection");
}

//! JWT validation with static keys over real HTTP: every algorithm, every claim check, and the
//! classic forgeries.

use jsonwebtoken::Algorithm;
use serde_json::json;
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::validate::{JwtKey, JwtValidator};

use crate::support::*;

fn rs256(resource: &ProtectedResource) -> JwtValidator {
    JwtValidator::builder(ISSUER, resource.resource())
        .key(JwtKey::rsa_pem(RSA1_PUB, Algorithm::RS256).unwrap())
        .build()
        .unwrap()
}

async fn refused_with(server: &Protected, token: &str, description: &str) {
    let response = server.post(Some(token)).await;
    assert_eq!(response.status(), 401, "{description}");
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="mcp:tools", error="invalid_token", error_description="{description}""#,
            server.metadata_url()
        )
    );
}

#[tokio::test]
async fn every_supported_algorithm_verifies() {
    let cases: Vec<(Algorithm, JwtKey)> = vec![
        (
            Algorithm::HS256,
            JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap(),
        ),
        (
            Algorithm::HS384,
            JwtKey::hmac(hmac_secret(Algorithm::HS384), Algorithm::HS384).unwrap(),
        ),
        (
            Algorithm::HS512,
            JwtKey::hmac(hmac_secret(Algorithm::HS512), Algorithm::HS512).unwrap(),
        ),
        (
            Algorithm::RS256,
            JwtKey::rsa_pem(RSA1_PUB, Algorithm::RS256).unwrap(),
        ),
        (
            Algorithm::RS384,
            JwtKey::rsa_pem(RSA1_PUB, Algorithm::RS384).unwrap(),
        ),
        (
            Algorithm::RS512,
            JwtKey::rsa_pem(RSA1_PUB, Algorithm::RS512).unwrap(),
        ),
        (
            Algorithm::PS256,
            JwtKey::rsa_pem(RSA1_PUB, Algorithm::PS256).unwrap(),
        ),
        (
            Algorithm::PS384,
            JwtKey::rsa_pem(RSA1_PUB, Algorithm::PS384).unwrap(),
        ),
        (
            Algorithm::PS512,
            JwtKey::rsa_pem(RSA1_PUB, Algorithm::PS512).unwrap(),
        ),
        (
            Algorithm::ES256,
            JwtKey::ec_pem(EC256_PUB, Algorithm::ES256).unwrap(),
        ),
        (
            Algorithm::ES384,
            JwtKey::ec_pem(EC384_PUB, Algorithm::ES384).unwrap(),
        ),
        (Algorithm::EdDSA, JwtKey::ed_pem(ED_PUB).unwrap()),
    ];
    for (alg, key) in cases {
        let server = protected(
            |r| {
                JwtValidator::builder(ISSUER, r.resource())
                    .key(key)
                    .build()
                    .unwrap()
            },
            |l| l,
        )
        .await;
        let token = sign(
            alg,
            &encoding_key(alg),
            None,
            &claims(server.resource.resource(), "alice", "mcp:tools"),
        );
        let response = server.post(Some(&token)).await;
        assert_eq!(response.status(), 200, "{alg:?}");
    }
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let server = protected(rs256, |l| l).await;
    let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
    c["iss"] = json!("https://evil.example");
    let token = sign(Algorithm::RS256, &encoding_key(Algorithm::RS256), None, &c);
    refused_with(
        &server,
        &token,
        "the token was not issued by an accepted issuer",
    )
    .await;
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn wrong_audience_is_refused_with_401() {
    let server = protected(rs256, |l| l).await;
    for aud in [
        json!("https://other.example/mcp"),
        json!(["https://a.example", "https://b.example"]),
    ] {
        let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
        c["aud"] = aud;
        let token = sign(Algorithm::RS256, &encoding_key(Algorithm::RS256), None, &c);
        refused_with(
            &server,
            &token,
            "the token was not issued for this resource",
        )
        .await;
    }
    let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
    c.as_object_mut().unwrap().remove("aud");
    let token = sign(Algorithm::RS256, &encoding_key(Algorithm::RS256), None, &c);
    refused_with(&server, &token, "the token lacks a valid `aud` claim").await;
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn audience_among_several_and_canonical_forms_are_accepted() {
    let server = protected(rs256, |l| l).await;
    let resource = server.resource.resource().to_owned();
    let upper = resource.replace("http://", "HTTP://");
    for aud in [
        json!(["https://other.example", resource.clone()]),
        json!(upper),
    ] {
        let mut c = claims(&resource, "alice", "mcp:tools");
        c["aud"] = aud.clone();
        let token = sign(Algorithm::RS256, &encoding_key(Algorithm::RS256), None, &c);
        assert_eq!(server.post(Some(&token)).await.status(), 200, "{aud}");
    }
}

#[tokio::test]
async fn expired_token_is_refused() {
    let server = protected(rs256, |l| l).await;
    let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
    c["exp"] = json!(now() - 120);
    let token = sign(Algorithm::RS256, &encoding_key(Algorithm::RS256), None, &c);
    refused_with(&server, &token, "the access token has expired").await;
}

#[tokio::test]
async fn token_without_exp_is_refused() {
    let server = protected(rs256, |l| l).await;
    let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
    c.as_object_mut().unwrap().remove("exp");
    let token = sign(Algorithm::RS256, &encoding_key(Algorithm::RS256), None, &c);
    refused_with(&server, &token, "the token lacks a valid `exp` claim").await;
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let server = protected(rs256, |l| l).await;
    let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
    c["nbf"] = json!(now() + 600);
    let token = sign(Algorithm::RS256, &encoding_key(Algorithm::RS256), None, &c);
    refused_with(&server, &token, "the access token is not valid yet").await;
}

#[tokio::test]
async fn token_without_subject_is_refused() {
    let server = protected(rs256, |l| l).await;
    let mut c = claims(server.resource.resource(), "alice", "mcp:tools");
    c.as_object_mut().unwrap().remove("sub");
    let token = sign(Algorithm::RS256, &encoding_key(Algorithm::RS256), None, &c);
    refused_with(&server, &token, "the token lacks a valid `sub` claim").await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let server = protected(rs256, |l| l).await;
    let c = claims(server.resource.resource(), "alice", "mcp:tools");
    for alg in ["none", "None", "NONE"] {
        let token = forge(&json!({"alg": alg, "typ": "JWT"}), &c, None);
        refused_with(
            &server,
            &token,
            &format!("the token's signing algorithm `{alg}` is not accepted"),
        )
        .await;
    }
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn hs_rs_confusion_rsa_public_key_as_hmac_secret_is_refused() {
    // The classic attack: the verifier holds an RSA public key; the attacker signs with HS256
    // using that (public) PEM as the HMAC secret and hopes the library feeds the PEM to HMAC.
    let server = protected(rs256, |l| l).await;
    let c = claims(server.resource.resource(), "mallory", "mcp:tools admin");
    let token = forge(&json!({"alg": "HS256", "typ": "JWT"}), &c, Some(RSA1_PUB));
    refused_with(
        &server,
        &token,
        "the token's signing algorithm `HS256` is not accepted",
    )
    .await;

    // Even where the validator also accepts HS256 (with its own secret), the forged token
    // only ever meets the HMAC key, never the RSA one.
    let server = protected(
        |r| {
            JwtValidator::builder(ISSUER, r.resource())
                .key(JwtKey::rsa_pem(RSA1_PUB, Algorithm::RS256).unwrap())
                .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    let c = claims(server.resource.resource(), "mallory", "mcp:tools admin");
    let token = forge(&json!({"alg": "HS256", "typ": "JWT"}), &c, Some(RSA1_PUB));
    refused_with(&server, &token, "the token signature is invalid").await;
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn algorithm_not_configured_for_key_is_refused() {
    // An RS256 key does not verify RS512 or PS256, even though the key type fits.
    let server = protected(rs256, |l| l).await;
    let c = claims(server.resource.resource(), "alice", "mcp:tools");
    for alg in [Algorithm::RS512, Algorithm::PS256] {
        let token = sign(alg, &encoding_key(alg), None, &c);
        refused_with(
            &server,
            &token,
            &format!("the token's signing algorithm `{alg:?}` is not accepted"),
        )
        .await;
    }
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let server = protected(rs256, |l| l).await;
    let token = sign(
        Algorithm::RS256,
        &encoding_key(Algorithm::RS256),
        None,
        &claims(server.resource.resource(), "alice", "mcp:tools"),
    );
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims(server.resource.resource(), "admin", "mcp:tools admin");
    forged["exp"] = json!(now() + 300);
    use base64::Engine;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    refused_with(&server, &parts.join("."), "the token signature is invalid").await;
}

#[tokio::test]
async fn signature_by_another_key_is_refused() {
    let server = protected(rs256, |l| l).await;
    let other = jsonwebtoken::EncodingKey::from_rsa_pem(RSA2_KEY).unwrap();
    let token = sign(
        Algorithm::RS256,
        &other,
        None,
        &claims(server.resource.resource(), "alice", "mcp:tools"),
    );
    refused_with(&server, &token, "the token signature is invalid").await;
}

#[tokio::test]
async fn critical_header_extension_is_refused() {
    let server = protected(
        |r| {
            JwtValidator::builder(ISSUER, r.resource())
                .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    let c = claims(server.resource.resource(), "alice", "mcp:tools");
    let token = forge(
        &json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        &c,
        Some(&hmac_secret(Algorithm::HS256)),
    );
    refused_with(
        &server,
        &token,
        "the token uses critical header extensions that are not supported",
    )
    .await;
}

#[tokio::test]
async fn unknown_kid_with_static_keys_is_refused() {
    let server = protected(
        |r| {
            JwtValidator::builder(ISSUER, r.resource())
                .key(
                    JwtKey::rsa_pem(RSA1_PUB, Algorithm::RS256)
                        .unwrap()
                        .with_kid("k1"),
                )
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    let c = claims(server.resource.resource(), "alice", "mcp:tools");
    let good = sign(
        Algorithm::RS256,
        &encoding_key(Algorithm::RS256),
        Some("k1"),
        &c,
    );
    assert_eq!(server.post(Some(&good)).await.status(), 200);
    let bad = sign(
        Algorithm::RS256,
        &encoding_key(Algorithm::RS256),
        Some("k9"),
        &c,
    );
    refused_with(&server, &bad, "no verification key matches the token").await;
}

#[tokio::test]
async fn id_token_typ_is_refused_when_at_jwt_required() {
    let server = protected(
        |r| {
            JwtValidator::builder(ISSUER, r.resource())
                .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
                .expected_type("at+jwt")
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await;
    let c = claims(server.resource.resource(), "alice", "mcp:tools");
    let secret = hmac_secret(Algorithm::HS256);
    let jwt = forge(&json!({"alg": "HS256", "typ": "JWT"}), &c, Some(&secret));
    refused_with(&server, &jwt, "the token type is not accepted").await;
    let at = forge(&json!({"alg": "HS256", "typ": "at+jwt"}), &c, Some(&secret));
    assert_eq!(server.post(Some(&at)).await.status(), 200);
    let at = forge(
        &json!({"alg": "HS256", "typ": "application/AT+JWT"}),
        &c,
        Some(&secret),
    );
    assert_eq!(server.post(Some(&at)).await.status(), 200);
}

#[test]
fn weak_hmac_secrets_and_mismatched_key_types_are_refused_at_build() {
    assert!(JwtKey::hmac(b"short", Algorithm::HS256).is_err());
    assert!(JwtKey::hmac([0u8; 32], Algorithm::HS384).is_err());
    assert!(JwtKey::hmac([0u8; 32], Algorithm::RS256).is_err());
    assert!(JwtKey::rsa_pem(RSA1_PUB, Algorithm::ES256).is_err());
    assert!(JwtKey::rsa_pem(EC256_PUB, Algorithm::RS256).is_err());
    assert!(JwtKey::ec_pem(EC256_PUB, Algorithm::RS256).is_err());
    assert!(
        JwtValidator::builder(ISSUER, "https://mcp.example/mcp")
            .build()
            .is_err(),
        "a validator without keys"
    );
    assert!(
        JwtValidator::builder(ISSUER, "https://mcp.example/mcp")
            .key(JwtKey::ed_pem(ED_PUB).unwrap())
            .leeway(std::time::Duration::from_secs(3600))
            .build()
            .is_err(),
        "an hour of leeway"
    );
}

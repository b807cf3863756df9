//! DPoP (RFC 9449, #18): the authorization server binds tokens to the key of a token request's
//! proof (`cnf.jkt`, `token_type` `DPoP`); the bearer layer accepts such a token only as
//! `Authorization: DPoP` with a fresh proof by that key for this method and URL, and never as a
//! plain bearer token. Nonces are asked for and honoured on both sides. Tested with a client
//! written here (jsonwebtoken) and the TypeScript SDK v2 client's `DpopSession`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_mcp_auth::dpop::Dpop;
use tower_mcp_auth::server::MachineClient;
use tower_mcp_auth::validate::JwtKey;

use crate::support::*;

const CLIENT: &str = "dpop-job";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A DPoP key of the client: the EC P-256 key pair on disk (`which` picks one of two).
struct ProofKey {
    signing: EncodingKey,
    jwk: jsonwebtoken::jwk::Jwk,
}

impl ProofKey {
    fn new(private_pem: &[u8]) -> ProofKey {
        let jwk = public_jwk(Algorithm::ES256, private_pem, "dpop");
        let mut jwk: serde_json::Map<String, Value> = serde_json::from_value(jwk).unwrap();
        jwk.remove("kid");
        ProofKey {
            signing: EncodingKey::from_ec_pem(private_pem).unwrap(),
            jwk: serde_json::from_value(Value::Object(jwk)).unwrap(),
        }
    }

    fn thumbprint(&self) -> String {
        let jwk = serde_json::to_value(&self.jwk).unwrap();
        tower_mcp_auth::dpop::thumbprint(jwk.as_object().unwrap()).unwrap()
    }

    /// A proof for `method` `url`, for `token` (adds `ath`), with `nonce`, `iat` shifted by
    /// `age` seconds into the past.
    fn proof(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        nonce: Option<&str>,
        age: i64,
    ) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        let mut claims = json!({
            "jti": format!("{:x}", rand::random::<u128>()), "htm": method, "htu": url,
            "iat": now() as i64 - age,
        });
        if let Some(token) = token {
            claims["ath"] = json!(B64.encode(Sha256::digest(token.as_bytes())));
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        jsonwebtoken::encode(&header, &claims, &self.signing).unwrap()
    }
}

fn key_a() -> ProofKey {
    ProofKey::new(EC256_KEY)
}

fn key_b() -> ProofKey {
    ProofKey::new(include_bytes!("../keys/ec256-b.key.pem"))
}

/// The quickstart with the machine client `dpop-job` (its assertion key is `ec384`), and the
/// authorization server's DPoP checks as `dpop` says.
async fn stack(dpop: Dpop) -> QuickstartStack {
    start_quickstart_with(|builder| {
        builder.dpop(dpop).machine_client(
            MachineClient::new(CLIENT, ["mcp:tools", "notes:read", "notes:write"])
                .key(JwtKey::ec_pem(EC384_PUB, Algorithm::ES384).unwrap()),
        )
    })
    .await
}

fn assertion(stack: &QuickstartStack) -> String {
    let claims = json!({
        "iss": CLIENT, "sub": CLIENT, "aud": stack.base, "iat": now(), "exp": now() + 120,
        "jti": format!("{:x}", rand::random::<u128>()),
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::ES384),
        &claims,
        &EncodingKey::from_ec_pem(EC384_KEY).unwrap(),
    )
    .unwrap()
}

async fn token_request(stack: &QuickstartStack, proof: Option<&str>) -> reqwest::Response {
    let mut request = client().post(format!("{}/oauth/token", stack.base)).form(&[
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion(stack).as_str()),
        ("resource", stack.mcp_url.as_str()),
    ]);
    if let Some(proof) = proof {
        request = request.header("dpop", proof);
    }
    request.send().await.unwrap()
}

/// A DPoP-bound token for `key`, from the quickstart's token endpoint.
async fn bound_token(stack: &QuickstartStack, key: &ProofKey) -> String {
    let token_url = format!("{}/oauth/token", stack.base);
    let response = token_request(stack, Some(&key.proof("POST", &token_url, None, None, 0))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn mcp(
    stack: &QuickstartStack,
    authorization: &str,
    proof: Option<&str>,
) -> reqwest::Response {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "dpop", "version": "1"}}});
    let mut request = client()
        .post(&stack.mcp_url)
        .header("authorization", authorization)
        .header("accept", "application/json, text/event-stream")
        .json(&init);
    if let Some(proof) = proof {
        request = request.header("dpop", proof);
    }
    request.send().await.unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    www_authenticate(response)
}

#[tokio::test]
async fn a_proof_at_the_token_endpoint_binds_the_token_and_the_bound_token_works_with_proofs() {
    let stack = stack(Dpop::new()).await;
    let key = key_a();
    let token = bound_token(&stack, &key).await;
    let claims: Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
    let metadata = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        stack.base
    ))
    .await;
    assert!(
        metadata["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
    // Twice, with two fresh proofs: the cached token still needs a proof each time.
    for _ in 0..2 {
        let proof = key.proof("POST", &stack.mcp_url, Some(&token), None, 0);
        let response = mcp(&stack, &format!("DPoP {token}"), Some(&proof)).await;
        assert_eq!(response.status(), 200, "{}", challenge(&response));
    }
    // Without a proof at the token endpoint, tokens stay bearer tokens.
    let body: Value = token_request(&stack, None).await.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
}

#[tokio::test]
async fn dpop_bound_token_presented_as_a_bearer_token_is_refused() {
    let stack = stack(Dpop::new()).await;
    let token = bound_token(&stack, &key_a()).await;
    let response = mcp(&stack, &format!("Bearer {token}"), None).await;
    assert_eq!(response.status(), 401);
    assert!(
        challenge(&response).contains("invalid_token"),
        "{}",
        challenge(&response)
    );
    // And a bearer token presented with the DPoP scheme (and a valid proof) is refused too.
    let bearer: Value = token_request(&stack, None).await.json().await.unwrap();
    let bearer = bearer["access_token"].as_str().unwrap();
    let proof = key_a().proof("POST", &stack.mcp_url, Some(bearer), None, 0);
    let response = mcp(&stack, &format!("DPoP {bearer}"), Some(&proof)).await;
    assert_eq!(response.status(), 401);
    assert!(
        challenge(&response).starts_with("DPoP "),
        "{}",
        challenge(&response)
    );
}

#[tokio::test]
async fn dpop_proofs_for_another_url_method_key_or_token_stale_replayed_or_missing_are_refused() {
    let stack = stack(Dpop::new()).await;
    let key = key_a();
    let token = bound_token(&stack, &key).await;
    let authorization = format!("DPoP {token}");
    let elsewhere = format!("{}/other", stack.base);
    let replayed = key.proof("POST", &stack.mcp_url, Some(&token), None, 0);
    assert_eq!(
        mcp(&stack, &authorization, Some(&replayed)).await.status(),
        200
    );
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "another URL",
            Some(key.proof("POST", &elsewhere, Some(&token), None, 0)),
            "invalid_dpop_proof",
        ),
        (
            "another method",
            Some(key.proof("GET", &stack.mcp_url, Some(&token), None, 0)),
            "invalid_dpop_proof",
        ),
        (
            "a stale iat",
            Some(key.proof("POST", &stack.mcp_url, Some(&token), None, 3600)),
            "invalid_dpop_proof",
        ),
        (
            "another token's ath",
            Some(key.proof("POST", &stack.mcp_url, Some("another-token"), None, 0)),
            "invalid_dpop_proof",
        ),
        (
            "no ath",
            Some(key.proof("POST", &stack.mcp_url, None, None, 0)),
            "invalid_dpop_proof",
        ),
        ("a replay", Some(replayed), "invalid_dpop_proof"),
        ("no proof", None, "invalid_dpop_proof"),
        (
            "another key",
            Some(key_b().proof("POST", &stack.mcp_url, Some(&token), None, 0)),
            "invalid_token",
        ),
    ];
    for (what, proof, error) in cases {
        let response = mcp(&stack, &authorization, proof.as_deref()).await;
        assert_eq!(response.status(), 401, "{what}");
        let challenge = challenge(&response);
        assert!(challenge.starts_with("DPoP "), "{what}: {challenge}");
        assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{what}: {challenge}"
        );
        assert!(
            challenge.contains("resource_metadata="),
            "{what}: {challenge}"
        );
    }
    // A proof carrying its private key, or typed otherwise, is refused before anything else.
    let mut leaky = Header::new(Algorithm::ES256);
    leaky.typ = Some("JWT".into());
    leaky.jwk = Some(key.jwk.clone());
    let claims = json!({"jti": "x", "htm": "POST", "htu": stack.mcp_url, "iat": now()});
    let typed = jsonwebtoken::encode(&leaky, &claims, &key.signing).unwrap();
    assert_eq!(
        mcp(&stack, &authorization, Some(&typed)).await.status(),
        401
    );
}

#[tokio::test]
async fn token_endpoint_refuses_bad_proofs_and_asks_for_nonces_when_configured() {
    let stack = stack(Dpop::new().require_nonces(b"a nonce key for this test, 32 b!")).await;
    let key = key_a();
    let token_url = format!("{}/oauth/token", stack.base);
    // No nonce: 400 use_dpop_nonce with the nonce to use.
    let response = token_request(&stack, Some(&key.proof("POST", &token_url, None, None, 0))).await;
    assert_eq!(response.status(), 400);
    let nonce = response.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce");
    // With it: a bound token.
    let response = token_request(
        &stack,
        Some(&key.proof("POST", &token_url, None, Some(&nonce), 0)),
    )
    .await;
    assert_eq!(response.status(), 200);
    // A made-up nonce is the same as none.
    let response = token_request(
        &stack,
        Some(&key.proof("POST", &token_url, None, Some("1.forged"), 0)),
    )
    .await;
    assert_eq!(response.status(), 400);
    // A proof for another endpoint is invalid_dpop_proof.
    let response = token_request(
        &stack,
        Some(&key.proof("POST", &stack.mcp_url, None, Some(&nonce), 0)),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_dpop_proof");
}

/// A resource server taking an external identity provider's tokens (HS256 here), configured
/// by `configure`, and one of that provider's tokens bound to `key` (`cnf.jkt`).
async fn external_bound(
    key: &ProofKey,
    configure: impl FnOnce(
        tower_mcp_auth::BearerLayer<tower_mcp_auth::validate::JwtValidator>,
    ) -> tower_mcp_auth::BearerLayer<tower_mcp_auth::validate::JwtValidator>,
) -> (Protected, String) {
    let server = protected(
        |r| {
            tower_mcp_auth::validate::JwtValidator::builder(ISSUER, r.resource())
                .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
                .build()
                .unwrap()
        },
        configure,
    )
    .await;
    let mut claims = claims(server.resource.resource(), "alice", "mcp:tools");
    claims["cnf"] = json!({"jkt": key.thumbprint()});
    let token = sign(
        Algorithm::HS256,
        &encoding_key(Algorithm::HS256),
        None,
        &claims,
    );
    (server, token)
}

#[tokio::test]
async fn bearer_layer_asks_for_a_nonce_and_accepts_the_retry() {
    let key = key_a();
    let (server, token) = external_bound(&key, |layer| {
        layer.dpop(Dpop::new().require_nonces(b"resource server nonce key, 32 b!"))
    })
    .await;
    let send = |proof: String| {
        client()
            .post(&server.url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .body("{}")
            .send()
    };
    let response = send(key.proof("POST", &server.url, Some(&token), None, 0))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = www_authenticate(&response);
    assert!(
        challenge.starts_with("DPoP error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    let nonce = response.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_owned();
    let response = send(key.proof("POST", &server.url, Some(&token), Some(&nonce), 0))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn typescript_v2_client_with_a_dpop_session_gets_a_bound_token_and_calls_tools() {
    crate::ts_sdk::install_sdk().await;
    let stack = start_quickstart_with(|builder| {
        builder.machine_client(
            MachineClient::new(CLIENT, ["mcp:tools", "notes:read", "notes:write"])
                .key(JwtKey::ec_pem(EC256_PUB, Algorithm::ES256).unwrap()),
        )
    })
    .await;
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/ec256.key.pem");
    let report = crate::ts_sdk::run_node(
        "machine.mjs",
        &[&stack.mcp_url, CLIENT, key.to_str().unwrap(), "dpop"],
    )
    .await;
    assert!(report.get("fatal").is_none(), "{report}");
    assert_eq!(report["tokenType"], "DPoP", "{report}");
    assert_eq!(report["cnf"]["jkt"], report["thumbprint"], "{report}");
    assert_eq!(report["added"], "1 notes", "{report}");
}

#[tokio::test]
async fn authorization_server_endpoints_take_a_bound_token_only_with_its_proof() {
    let stack = stack(Dpop::new()).await;
    let key = key_a();
    let token = bound_token(&stack, &key).await;
    let userinfo = format!("{}/oauth/userinfo", stack.base);
    let as_bearer = client()
        .get(&userinfo)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(as_bearer.status(), 401);
    let with_proof = client()
        .get(&userinfo)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("GET", &userinfo, Some(&token), None, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(with_proof.status(), 200);
    let body: Value = with_proof.json().await.unwrap();
    assert_eq!(body["sub"], CLIENT);
    let other_key = client()
        .get(&userinfo)
        .header("authorization", format!("DPoP {token}"))
        .header(
            "dpop",
            key_b().proof("GET", &userinfo, Some(&token), None, 0),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(other_key.status(), 401);
}

#[tokio::test]
async fn refused_dpop_proofs_use_the_failure_budget() {
    use tower_mcp_auth::bearer::AuthFailureLimit;
    let key = key_a();
    let (server, token) = external_bound(&key, |layer| {
        layer.limit_auth_failures(
            AuthFailureLimit::new(3, std::time::Duration::from_secs(3600))
                .client_address(|_: &http::request::Parts| "192.0.2.1".parse().ok()),
        )
    })
    .await;
    let send = |proof: String| {
        client()
            .post(&server.url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .body("{}")
            .send()
    };
    // Three proofs for another URL are refused after a signature check each...
    for _ in 0..3 {
        let proof = key.proof(
            "POST",
            "https://elsewhere.example/mcp",
            Some(&token),
            None,
            0,
        );
        assert_eq!(send(proof).await.unwrap().status(), 401);
    }
    // ...then the address waits, even with a good proof.
    let good = key.proof("POST", &server.url, Some(&token), None, 0);
    assert_eq!(send(good).await.unwrap().status(), 429);
}

#[tokio::test]
async fn nonce_challenges_at_the_authorization_servers_own_endpoints_are_401_dpop_challenges() {
    let stack = stack(Dpop::new().require_nonces(b"a nonce key for this test, 32 b!")).await;
    let key = key_a();
    let token_url = format!("{}/oauth/token", stack.base);
    let first = token_request(&stack, Some(&key.proof("POST", &token_url, None, None, 0))).await;
    let nonce = first.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let response = token_request(
        &stack,
        Some(&key.proof("POST", &token_url, None, Some(&nonce), 0)),
    )
    .await;
    let token = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let userinfo = format!("{}/oauth/userinfo", stack.base);
    let send = |nonce: Option<String>| {
        client()
            .get(&userinfo)
            .header("authorization", format!("DPoP {token}"))
            .header(
                "dpop",
                key.proof("GET", &userinfo, Some(&token), nonce.as_deref(), 0),
            )
            .send()
    };
    let challenged = send(None).await.unwrap();
    assert_eq!(challenged.status(), 401);
    assert!(www_authenticate(&challenged).starts_with("DPoP error=\"use_dpop_nonce\""));
    let nonce = challenged.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(send(Some(nonce)).await.unwrap().status(), 200);
}

#[tokio::test]
async fn nonce_challenges_do_not_use_the_failure_budget() {
    use tower_mcp_auth::bearer::AuthFailureLimit;
    let key = key_a();
    let (server, token) = external_bound(&key, |layer| {
        layer
            .dpop(Dpop::new().require_nonces(b"resource server nonce key, 32 b!"))
            .limit_auth_failures(
                AuthFailureLimit::new(1, std::time::Duration::from_secs(3600))
                    .client_address(|_: &http::request::Parts| "192.0.2.2".parse().ok()),
            )
    })
    .await;
    let send = |nonce: Option<String>| {
        client()
            .post(&server.url)
            .header("authorization", format!("DPoP {token}"))
            .header(
                "dpop",
                key.proof("POST", &server.url, Some(&token), nonce.as_deref(), 0),
            )
            .body("{}")
            .send()
    };
    // Three challenges in a row, with a budget of one failure: none of them counts.
    let mut nonce = String::new();
    for _ in 0..3 {
        let response = send(None).await.unwrap();
        assert_eq!(response.status(), 401);
        nonce = response.headers()["dpop-nonce"]
            .to_str()
            .unwrap()
            .to_owned();
    }
    assert_eq!(send(Some(nonce)).await.unwrap().status(), 200);
}

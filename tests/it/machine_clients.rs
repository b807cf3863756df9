//! Machine clients with `private_key_jwt` (#18, the `oauth-client-credentials` extension): the
//! TypeScript SDK v2 client's `PrivateKeyJwtProvider` and rmcp's `PrivateKeyJwt` client
//! credentials get tokens from the quickstart's authorization server and call tools; every
//! forged, replayed or misdirected assertion is `invalid_client` and changes nothing.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower_mcp_auth::server::MachineClient;
use tower_mcp_auth::validate::JwtKey;

use crate::support::*;

const CLIENT: &str = "nightly-report";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn key_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

/// The quickstart with the machine client `nightly-report`, whose public key is `ec256.pub.pem`,
/// and a secret client `secret-job` beside it.
async fn stack() -> QuickstartStack {
    start_quickstart_with(|builder| {
        builder
            .machine_client(
                MachineClient::new(CLIENT, ["mcp:tools", "notes:read", "notes:write"])
                    .key(JwtKey::ec_pem(EC256_PUB, Algorithm::ES256).unwrap()),
            )
            .client(
                "secret-job",
                "a-secret-of-at-least-32-characters!!",
                ["mcp:tools"],
            )
    })
    .await
}

fn assertion_with(header: Header, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn claims(stack: &QuickstartStack, jti: &str) -> Value {
    json!({
        "iss": CLIENT, "sub": CLIENT, "aud": stack.base, "jti": jti,
        "iat": now(), "exp": now() + 300,
    })
}

fn assertion(stack: &QuickstartStack, jti: &str) -> String {
    assertion_with(
        Header::new(Algorithm::ES256),
        &EncodingKey::from_ec_pem(EC256_KEY).unwrap(),
        claims(stack, jti),
    )
}

async fn token_request(
    stack: &QuickstartStack,
    assertion: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
        ("resource", stack.mcp_url.as_str()),
        ("scope", "mcp:tools notes:read"),
    ];
    form.extend_from_slice(extra);
    client()
        .post(format!("{}/oauth/token", stack.base))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn refused(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client", "{body}");
    body
}

#[tokio::test]
async fn metadata_advertises_private_key_jwt_and_its_algorithms() {
    let stack = stack().await;
    let metadata = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        stack.base
    ))
    .await;
    let methods = metadata["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&json!("private_key_jwt")), "{metadata}");
    let algorithms = metadata["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    for alg in ["ES256", "RS256", "EdDSA"] {
        assert!(algorithms.contains(&json!(alg)), "{alg}");
    }
    assert!(
        !algorithms
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.starts_with("HS")))
    );
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("client_credentials"))
    );
}

#[tokio::test]
async fn a_signed_assertion_gets_a_token_for_the_machine_client() {
    let stack = stack().await;
    let response = token_request(&stack, &assertion(&stack, "first"), &[]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "mcp:tools notes:read");
    assert!(body.get("refresh_token").is_none());
    // The token works at the MCP endpoint, as the client itself.
    let token = body["access_token"].as_str().unwrap();
    let introspection: Value = client()
        .post(format!("{}/oauth/introspect", stack.base))
        .basic_auth("secret-job", Some("a-secret-of-at-least-32-characters!!"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(introspection["sub"], CLIENT);
    assert_eq!(introspection["client_id"], CLIENT);
    // A trailing slash on the issuer (the Python SDK's form) is the same audience.
    let mut with_slash = claims(&stack, "slash");
    with_slash["aud"] = json!(format!("{}/", stack.base));
    let signed = assertion_with(
        Header::new(Algorithm::ES256),
        &EncodingKey::from_ec_pem(EC256_KEY).unwrap(),
        with_slash,
    );
    assert_eq!(token_request(&stack, &signed, &[]).await.status(), 200);
    // Asking for more than the client may hold is invalid_scope, not a wider token.
    let response = token_request(
        &stack,
        &assertion(&stack, "greedy"),
        &[("scope", "notes:admin")],
    )
    .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn replayed_client_assertion_is_refused() {
    let stack = stack().await;
    let signed = assertion(&stack, "once");
    assert_eq!(token_request(&stack, &signed, &[]).await.status(), 200);
    let body = refused(token_request(&stack, &signed, &[]).await).await;
    assert!(body.get("access_token").is_none());
}

#[tokio::test]
async fn client_assertion_signed_by_another_key_is_refused() {
    let stack = stack().await;
    // Another P-256 key: the same algorithm, the wrong signature.
    let other = EncodingKey::from_ec_pem(include_bytes!("../keys/ec256-b.key.pem")).unwrap();
    let signed = assertion_with(
        Header::new(Algorithm::ES256),
        &other,
        claims(&stack, "foreign"),
    );
    refused(token_request(&stack, &signed, &[]).await).await;
    // Another algorithm and curve altogether.
    let p384 = EncodingKey::from_ec_pem(EC384_KEY).unwrap();
    let signed = assertion_with(Header::new(Algorithm::ES384), &p384, claims(&stack, "p384"));
    refused(token_request(&stack, &signed, &[]).await).await;
}

#[tokio::test]
async fn client_assertion_for_another_audience_or_the_token_endpoint_is_refused() {
    let stack = stack().await;
    for aud in [
        json!("https://other-as.example"),
        // RFC 7523bis: the token endpoint's URL is not our identifier (audience injection).
        json!(format!("{}/oauth/token", stack.base)),
        json!([]),
    ] {
        let mut c = claims(&stack, &format!("aud-{aud}"));
        c["aud"] = aud.clone();
        let signed = assertion_with(
            Header::new(Algorithm::ES256),
            &EncodingKey::from_ec_pem(EC256_KEY).unwrap(),
            c,
        );
        refused(token_request(&stack, &signed, &[]).await).await;
    }
}

#[tokio::test]
async fn expired_long_lived_or_jti_less_client_assertions_are_refused() {
    let stack = stack().await;
    let key = EncodingKey::from_ec_pem(EC256_KEY).unwrap();
    let mut expired = claims(&stack, "expired");
    expired["exp"] = json!(now() - 120);
    let mut forever = claims(&stack, "forever");
    forever["exp"] = json!(now() + 86_400);
    let mut no_jti = claims(&stack, "x");
    no_jti.as_object_mut().unwrap().remove("jti");
    for c in [expired, forever, no_jti] {
        let signed = assertion_with(Header::new(Algorithm::ES256), &key, c.clone());
        refused(token_request(&stack, &signed, &[]).await).await;
    }
}

#[tokio::test]
async fn client_assertion_naming_another_client_is_refused() {
    let stack = stack().await;
    let key = EncodingKey::from_ec_pem(EC256_KEY).unwrap();
    // iss differs from sub.
    let mut c = claims(&stack, "mixed");
    c["iss"] = json!("secret-job");
    refused(
        token_request(
            &stack,
            &assertion_with(Header::new(Algorithm::ES256), &key, c),
            &[],
        )
        .await,
    )
    .await;
    // A client_id that is not the assertion's subject.
    refused(
        token_request(
            &stack,
            &assertion(&stack, "named"),
            &[("client_id", "secret-job")],
        )
        .await,
    )
    .await;
    // A secret client has no keys: an assertion for it cannot authenticate it.
    let mut c = claims(&stack, "as-secret-job");
    c["iss"] = json!("secret-job");
    c["sub"] = json!("secret-job");
    refused(
        token_request(
            &stack,
            &assertion_with(Header::new(Algorithm::ES256), &key, c),
            &[],
        )
        .await,
    )
    .await;
    // An unknown client.
    let mut c = claims(&stack, "ghost");
    c["iss"] = json!("ghost");
    c["sub"] = json!("ghost");
    refused(
        token_request(
            &stack,
            &assertion_with(Header::new(Algorithm::ES256), &key, c),
            &[],
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn hmac_or_unsigned_client_assertions_and_two_methods_at_once_are_refused() {
    let stack = stack().await;
    // HS256 keyed with the public key's bytes (key confusion).
    let confused = assertion_with(
        Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(EC256_PUB),
        claims(&stack, "hs"),
    );
    refused(token_request(&stack, &confused, &[]).await).await;
    let unsigned = forge(
        &json!({"alg": "none", "typ": "JWT"}),
        &claims(&stack, "none"),
        None,
    );
    refused(token_request(&stack, &unsigned, &[]).await).await;
    let wrong_type = client()
        .post(format!("{}/oauth/token", stack.base))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            ),
            ("client_assertion", assertion(&stack, "saml").as_str()),
        ])
        .send()
        .await
        .unwrap();
    refused(wrong_type).await;
    let both = client()
        .post(format!("{}/oauth/token", stack.base))
        .basic_auth("secret-job", Some("a-secret-of-at-least-32-characters!!"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion(&stack, "both").as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    // None of it used up a real assertion: a fresh one still works.
    assert_eq!(
        token_request(&stack, &assertion(&stack, "after"), &[])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn typescript_v2_private_key_jwt_provider_calls_tools_as_the_machine_client() {
    crate::ts_sdk::install_sdk().await;
    let stack = stack().await;
    let key = key_dir().join("ec256.key.pem");
    let report = crate::ts_sdk::run_node(
        "machine.mjs",
        &[&stack.mcp_url, CLIENT, key.to_str().unwrap()],
    )
    .await;
    assert!(report.get("fatal").is_none(), "{report}");
    assert_eq!(report["added"], "1 notes", "{report}");
    assert!(
        report["whoami"].as_str().unwrap().contains(CLIENT),
        "{report}"
    );
    assert!(
        report["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("add_note")),
        "{report}"
    );
}

#[tokio::test]
async fn rmcp_private_key_jwt_client_calls_tools_as_the_machine_client() {
    use rmcp::transport::auth::{ClientCredentialsConfig, JwtSigningAlgorithm, OAuthState};
    let stack = stack().await;
    let mut oauth = OAuthState::new(&stack.mcp_url, None).await.unwrap();
    oauth
        .authenticate_client_credentials(ClientCredentialsConfig::PrivateKeyJwt {
            client_id: CLIENT.into(),
            signing_key: EC256_KEY.to_vec(),
            signing_algorithm: JwtSigningAlgorithm::ES256,
            token_endpoint_audience: None,
            scopes: vec!["mcp:tools".into(), "notes:write".into()],
            resource: Some(stack.mcp_url.clone()),
        })
        .await
        .unwrap();
    let (client, _) = authorized_client(oauth, &stack.mcp_url).await;
    let result = client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("add_note")
                .with_arguments(json!({"text": "from rmcp"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert!(text_of(&result).contains("1 notes"), "{}", text_of(&result));
    let who = client
        .call_tool(rmcp::model::CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    assert!(text_of(&who).contains(CLIENT), "{}", text_of(&who));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_quickstarts_machine_client_key_signs_assertions_it_accepts() {
    let (machine, pem) = crate::quickstart::machine_client().unwrap();
    let stack = start_quickstart_with(|b| b.machine_client(machine)).await;
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut c = claims(&stack, "quickstart");
    c["iss"] = json!(crate::quickstart::MACHINE_CLIENT_ID);
    c["sub"] = json!(crate::quickstart::MACHINE_CLIENT_ID);
    let signed = assertion_with(Header::new(Algorithm::ES256), &key, c);
    let response = token_request(&stack, &signed, &[]).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn machine_client_naming_itself_without_an_assertion_is_refused() {
    let stack = stack().await;
    let response = client()
        .post(format!("{}/oauth/token", stack.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("resource", stack.mcp_url.as_str()),
        ])
        .send()
        .await
        .unwrap();
    refused(response).await;
}

#[tokio::test]
async fn token_endpoint_audience_is_accepted_only_when_the_operator_opts_in() {
    let stack = start_quickstart_with(|builder| {
        builder.machine_client(
            MachineClient::new("legacy-job", ["mcp:tools", "notes:read"])
                .key(JwtKey::ec_pem(EC256_PUB, Algorithm::ES256).unwrap())
                .accept_token_endpoint_audience(true),
        )
    })
    .await;
    let key = EncodingKey::from_ec_pem(EC256_KEY).unwrap();
    let signed = |aud: String, jti: &str| {
        assertion_with(
            Header::new(Algorithm::ES256),
            &key,
            json!({"iss": "legacy-job", "sub": "legacy-job", "aud": aud, "jti": jti, "iat": now(), "exp": now() + 60}),
        )
    };
    let response = token_request(
        &stack,
        &signed(format!("{}/oauth/token", stack.base), "old"),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let response = token_request(&stack, &signed(stack.base.clone(), "new"), &[]).await;
    assert_eq!(response.status(), 200);
}

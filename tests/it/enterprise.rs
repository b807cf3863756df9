//! Enterprise-managed authorization (#18, SEP-990, ID-JAG): an in-process enterprise IdP (our
//! own `AuthServer`, issuing ID-JAGs by token exchange for its users' id_tokens) and the
//! quickstart's authorization server redeeming them. Driven by the TypeScript SDK v2
//! `CrossAppAccessProvider`, rmcp's enterprise-managed client, and by hand for the attacks:
//! an untrusted issuer, another audience, resource or client, a replay, an expired grant.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower_mcp_auth::address::AddressPolicy;
use tower_mcp_auth::server::{AuthServer, EnterpriseIdp, IdJagAudience};
use tower_mcp_auth::validate::JwtKey;

use crate::code_flow::{VERIFIER, challenge, query};
use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:4567/callback";
/// Our client at the MCP server's authorization server.
const AS_CLIENT: &str = "acme-assistant";
const AS_SECRET: &str = "acme-assistant-secret-of-32-chars-or-more";
/// An IdP trusted with the key `ec256` (the tests sign its grants).
const LAB_IDP: &str = "https://lab-idp.example";
/// Another client the MCP server's authorization server lets redeem the IdP's grants.
const OTHER_CLIENT: &str = "other-assistant";
/// The same application, as the enterprise IdP knows it (a public client that signs users in).
const IDP_CLIENT: &str = "assistant-at-idp";

struct World {
    idp: String,
    stack: QuickstartStack,
}

async fn world() -> World {
    // The IdP's address first: the MCP server's authorization server must name it.
    let (idp_listener, idp_addr) = listener().await;
    let idp = format!("http://{idp_addr}");
    let stack = start_quickstart_with(|builder| {
        builder
            .client(
                AS_CLIENT,
                AS_SECRET,
                ["mcp:tools", "notes:read", "notes:write"],
            )
            .client(OTHER_CLIENT, AS_SECRET, ["mcp:tools", "notes:read"])
            .trust_enterprise_idp(
                EnterpriseIdp::new("acme", &idp)
                    .jwks_uri(
                        format!("{idp}/oauth/jwks"),
                        AddressPolicy::public_only().allow_loopback(),
                    )
                    .allowed_clients([AS_CLIENT, OTHER_CLIENT]),
            )
            // A second trusted IdP whose key the tests hold, to sign grants of every shape.
            .trust_enterprise_idp(
                EnterpriseIdp::new("lab", LAB_IDP)
                    .key(JwtKey::ec_pem(EC256_PUB, Algorithm::ES256).unwrap())
                    .allowed_clients([AS_CLIENT]),
            )
    })
    .await;
    let auth = AuthServer::builder(&idp)
        .resource(format!("{idp}/profile"))
        .dev_user_in_groups("alice", "wonderland", ["engineering"])
        .public_client(IDP_CLIENT, [REDIRECT], ["openid"])
        .issue_id_jags_for(IdJagAudience::new(&stack.base).client(IDP_CLIENT, AS_CLIENT))
        .build()
        .unwrap();
    spawn(idp_listener, auth.router());
    World { idp, stack }
}

/// Alice signs in at the IdP; her client gets an id_token.
async fn id_token(world: &World) -> String {
    id_token_at(&world.idp, IDP_CLIENT, REDIRECT, "alice", "wonderland").await
}

/// `user` signs in at the IdP `idp` through its client `client_id`, which gets an id_token.
async fn id_token_at(
    idp: &str,
    client_id: &str,
    redirect: &str,
    user: &str,
    password: &str,
) -> String {
    let tokens = sign_in_tokens(idp, client_id, redirect, user, password).await;
    tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"))
        .to_owned()
}

/// The token response `client_id` gets when `user` signs in at `idp`.
async fn sign_in_tokens(
    idp: &str,
    client_id: &str,
    redirect: &str,
    user: &str,
    password: &str,
) -> Value {
    let browser = browser();
    let mut url = url::Url::parse(&format!("{idp}/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("scope", "openid")
        .append_pair("resource", &format!("{idp}/profile"));
    let html = browser
        .get(url.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let back = sign_in_and_approve(&browser, idp, &html, user, password).await;
    let code = query(back.headers()["location"].to_str().unwrap())["code"].clone();
    let tokens: Value = client()
        .post(format!("{idp}/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", VERIFIER),
            ("resource", &format!("{idp}/profile")),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens
}

async fn exchange(
    world: &World,
    id_token: &str,
    audience: &str,
    resource: &str,
) -> reqwest::Response {
    client()
        .post(format!("{}/oauth/token", world.idp))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:id-jag",
            ),
            ("subject_token", id_token),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("audience", audience),
            ("resource", resource),
            ("scope", "mcp:tools notes:read"),
            ("client_id", IDP_CLIENT),
        ])
        .send()
        .await
        .unwrap()
}

async fn id_jag(world: &World) -> String {
    let id_token = id_token(world).await;
    let response = exchange(world, &id_token, &world.stack.base, &world.stack.mcp_url).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:id-jag"
    );
    assert_eq!(body["token_type"], "N_A");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn redeem(
    world: &World,
    assertion: &str,
    client_id: &str,
    secret: &str,
) -> reqwest::Response {
    client()
        .post(format!("{}/oauth/token", world.stack.base))
        .basic_auth(client_id, Some(secret))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .unwrap()
}

async fn invalid_grant(response: reqwest::Response) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        ["invalid_grant", "invalid_target"].contains(&body["error"].as_str().unwrap()),
        "{body}"
    );
}

#[tokio::test]
async fn an_id_jag_from_the_enterprise_idp_gets_a_token_for_its_user() {
    let world = world().await;
    let metadata = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        world.stack.base
    ))
    .await;
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:ietf:params:oauth:grant-type:jwt-bearer"))
    );
    let idp_metadata = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        world.idp
    ))
    .await;
    assert!(
        idp_metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:ietf:params:oauth:grant-type:token-exchange"))
    );
    let assertion = id_jag(&world).await;
    let response = redeem(&world, &assertion, AS_CLIENT, AS_SECRET).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "mcp:tools notes:read");
    assert!(
        body.get("refresh_token").is_none(),
        "a fresh ID-JAG, not a refresh token"
    );
    let token = body["access_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "acme|alice");
    assert_eq!(claims["client_id"], AS_CLIENT);
    assert_eq!(claims["aud"], world.stack.mcp_url);
}

#[tokio::test]
async fn replayed_id_jag_is_refused() {
    let world = world().await;
    let assertion = id_jag(&world).await;
    assert_eq!(
        redeem(&world, &assertion, AS_CLIENT, AS_SECRET)
            .await
            .status(),
        200
    );
    invalid_grant(redeem(&world, &assertion, AS_CLIENT, AS_SECRET).await).await;
}

#[tokio::test]
async fn id_jag_for_another_audience_resource_or_client_is_refused() {
    let world = world().await;
    let id_token = id_token(&world).await;
    // The IdP issues only for audiences it is configured for.
    assert_eq!(
        exchange(
            &world,
            &id_token,
            "https://elsewhere.example",
            &world.stack.mcp_url
        )
        .await
        .status(),
        400
    );
    // A grant for another resource of this server (none exists) is invalid_target.
    let response = exchange(
        &world,
        &id_token,
        &world.stack.base,
        "https://other.example/mcp",
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "the IdP does not know our resources"
    );
    let other_resource = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    invalid_grant(redeem(&world, &other_resource, AS_CLIENT, AS_SECRET).await).await;
    // Another authenticated (and trusted) client cannot redeem a grant made out to AS_CLIENT.
    let response = exchange(&world, &id_token, &world.stack.base, &world.stack.mcp_url).await;
    let assertion = response.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    invalid_grant(redeem(&world, &assertion, OTHER_CLIENT, AS_SECRET).await).await;
    // ...and the grant was not used up by that attempt.
    assert_eq!(
        redeem(&world, &assertion, AS_CLIENT, AS_SECRET)
            .await
            .status(),
        200
    );
    // A made-up id_token is refused by the IdP.
    assert_eq!(
        exchange(
            &world,
            "not.a.token",
            &world.stack.base,
            &world.stack.mcp_url
        )
        .await
        .status(),
        400
    );
}

#[tokio::test]
async fn id_jag_forged_expired_long_lived_untyped_or_misaddressed_is_refused() {
    let world = world().await;
    let lab = EncodingKey::from_ec_pem(EC256_KEY).unwrap();
    let claims = || {
        json!({
            "iss": LAB_IDP, "sub": "bob", "aud": world.stack.base, "client_id": AS_CLIENT,
            "resource": world.stack.mcp_url, "jti": format!("{:x}", rand::random::<u64>()),
            "iat": now(), "exp": now() + 120, "scope": "mcp:tools",
        })
    };
    let typed = || {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("oauth-id-jag+jwt".into());
        header
    };
    let sign = |header: Header, claims: Value, key: &EncodingKey| {
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    // The well-formed grant works: every refusal below is for the one thing changed.
    let good = sign(typed(), claims(), &lab);
    assert_eq!(
        redeem(&world, &good, AS_CLIENT, AS_SECRET).await.status(),
        200
    );
    let other_key = EncodingKey::from_ec_pem(include_bytes!("../keys/ec256-b.key.pem")).unwrap();
    let mut expired = claims();
    expired["exp"] = json!(now() - 120);
    let mut long_lived = claims();
    long_lived["exp"] = json!(now() + 86_400);
    let mut other_audience = claims();
    other_audience["aud"] = json!("https://another-as.example");
    let mut stranger = claims();
    stranger["iss"] = json!("https://evil.example");
    let mut no_jti = claims();
    no_jti.as_object_mut().unwrap().remove("jti");
    let mut no_resource = claims();
    no_resource.as_object_mut().unwrap().remove("resource");
    let cases = [
        ("signed by another key", sign(typed(), claims(), &other_key)),
        ("expired", sign(typed(), expired, &lab)),
        ("a day long", sign(typed(), long_lived, &lab)),
        ("for another audience", sign(typed(), other_audience, &lab)),
        ("from an untrusted issuer", sign(typed(), stranger, &lab)),
        ("without jti", sign(typed(), no_jti, &lab)),
        ("without resource", sign(typed(), no_resource, &lab)),
        (
            "typed JWT",
            sign(Header::new(Algorithm::ES256), claims(), &lab),
        ),
    ];
    for (what, grant) in cases {
        let response = redeem(&world, &grant, AS_CLIENT, AS_SECRET).await;
        assert_eq!(response.status(), 400, "{what}");
    }
    // An id_token of the real IdP offered as a grant is not an ID-JAG.
    let id_token = id_token(&world).await;
    invalid_grant(redeem(&world, &id_token, AS_CLIENT, AS_SECRET).await).await;
}

#[tokio::test]
async fn typescript_v2_cross_app_access_provider_calls_tools_for_the_enterprise_user() {
    crate::ts_sdk::install_sdk().await;
    let world = world().await;
    let id_token = id_token(&world).await;
    let report = crate::ts_sdk::run_node(
        "enterprise.mjs",
        &[
            &world.stack.mcp_url,
            &format!("{}/oauth/token", world.idp),
            &id_token,
            IDP_CLIENT,
            AS_CLIENT,
            AS_SECRET,
        ],
    )
    .await;
    assert!(report.get("fatal").is_none(), "{report}");
    assert!(
        report["whoami"].as_str().unwrap().contains("acme|alice"),
        "{report}"
    );
    assert_eq!(report["added"], "1 notes", "{report}");
}

#[tokio::test]
async fn rmcp_enterprise_managed_client_calls_tools_for_the_enterprise_user() {
    use rmcp::transport::auth::enterprise::{
        EmaAuthorizationServer, EmaClientAuthentication, EmaExchangeRequest,
    };
    let world = world().await;
    let id_token = id_token(&world).await;
    let idp =
        EmaAuthorizationServer::new(&world.idp, format!("{}/oauth/token", world.idp), IDP_CLIENT);
    let resource_as = EmaAuthorizationServer::new(
        &world.stack.base,
        format!("{}/oauth/token", world.stack.base),
        AS_CLIENT,
    )
    .with_client_authentication(EmaClientAuthentication::ClientSecretBasic(
        oauth2::ClientSecret::new(AS_SECRET.into()),
    ));
    let http = rmcp::transport::auth::default_oauth_http_client().unwrap();
    let token =
        EmaExchangeRequest::new_with_id_token(idp, resource_as, &world.stack.mcp_url, &id_token)
            .with_scopes(["mcp:tools", "notes:write"])
            .exchange(&http, &http)
            .await
            .unwrap();
    let response = client()
        .post(&world.stack.mcp_url)
        .bearer_auth(token.access_token.secret())
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "rmcp-ema", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("mcp-session-id"));
    assert!(token.scopes.contains("notes:write"));
}

#[tokio::test]
async fn the_quickstarts_enterprise_idp_issues_grants_the_quickstart_redeems() {
    use crate::quickstart::{ENTERPRISE_APP, ENTERPRISE_CLIENT};
    crate::ts_sdk::install_sdk().await;
    let (idp_listener, idp_addr) = listener().await;
    let idp = format!("http://{idp_addr}");
    let secret = crate::quickstart::enterprise_client_secret(QUICKSTART_PASSWORD);
    let stack =
        start_quickstart_with(|b| crate::quickstart::trust_enterprise_idp(b, &idp, &secret)).await;
    let idp_app =
        crate::quickstart::enterprise_idp(&idp, &stack.base, QUICKSTART_PASSWORD).unwrap();
    spawn(idp_listener, idp_app);
    let id_token = id_token_at(
        &idp,
        ENTERPRISE_APP,
        "http://127.0.0.1:4567/callback",
        "demo",
        QUICKSTART_PASSWORD,
    )
    .await;
    let report = crate::ts_sdk::run_node(
        "enterprise.mjs",
        &[
            &stack.mcp_url,
            &format!("{idp}/oauth/token"),
            &id_token,
            ENTERPRISE_APP,
            ENTERPRISE_CLIENT,
            &secret,
        ],
    )
    .await;
    assert!(report.get("fatal").is_none(), "{report}");
    assert!(
        report["whoami"]
            .as_str()
            .unwrap()
            .contains("enterprise|demo"),
        "{report}"
    );
}

#[tokio::test]
async fn id_jag_scope_is_narrowed_by_the_group_mapping() {
    use crate::quickstart::{ENTERPRISE_APP, ENTERPRISE_CLIENT};
    let (idp_listener, idp_addr) = listener().await;
    let idp = format!("http://{idp_addr}");
    let secret = crate::quickstart::enterprise_client_secret(QUICKSTART_PASSWORD);
    let stack =
        start_quickstart_with(|b| crate::quickstart::trust_enterprise_idp(b, &idp, &secret)).await;
    spawn(
        idp_listener,
        crate::quickstart::enterprise_idp(&idp, &stack.base, QUICKSTART_PASSWORD).unwrap(),
    );
    // Both ask for administration; only demo is in the admins group.
    for (user, expected) in [
        ("demo", "mcp:tools notes:admin notes:read"),
        ("reader", "mcp:tools notes:read"),
    ] {
        let id_token = id_token_at(
            &idp,
            ENTERPRISE_APP,
            "http://127.0.0.1:4567/callback",
            user,
            QUICKSTART_PASSWORD,
        )
        .await;
        let grant: Value = client()
            .post(format!("{idp}/oauth/token"))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:id-jag",
                ),
                ("subject_token", id_token.as_str()),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
                ("audience", stack.base.as_str()),
                ("resource", stack.mcp_url.as_str()),
                ("scope", "mcp:tools notes:read notes:admin"),
                ("client_id", ENTERPRISE_APP),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let assertion = grant["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{grant}"));
        let token: Value = client()
            .post(format!("{}/oauth/token", stack.base))
            .basic_auth(ENTERPRISE_CLIENT, Some(&secret))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(token["scope"], expected, "{user}: {token}");
    }
}

#[tokio::test]
async fn groups_of_an_idp_not_trusted_for_groups_grant_nothing() {
    use crate::quickstart::ENTERPRISE_CLIENT;
    let secret = crate::quickstart::enterprise_client_secret(QUICKSTART_PASSWORD);
    let stack = start_quickstart_with(|b| {
        crate::quickstart::trust_enterprise_idp(b, "https://idp.unused.example", &secret)
            .trust_enterprise_idp(
                EnterpriseIdp::new("lab", LAB_IDP)
                    .key(JwtKey::ec_pem(EC256_PUB, Algorithm::ES256).unwrap())
                    .allowed_clients([ENTERPRISE_CLIENT]),
            )
    })
    .await;
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("oauth-id-jag+jwt".into());
    let grant = jsonwebtoken::encode(
        &header,
        &json!({
            "iss": LAB_IDP, "sub": "eve", "aud": stack.base, "client_id": ENTERPRISE_CLIENT,
            "resource": stack.mcp_url, "jti": "groups-1", "iat": now(), "exp": now() + 60,
            "scope": "mcp:tools notes:admin", "groups": ["admins"],
        }),
        &EncodingKey::from_ec_pem(EC256_KEY).unwrap(),
    )
    .unwrap();
    let token: Value = client()
        .post(format!("{}/oauth/token", stack.base))
        .basic_auth(ENTERPRISE_CLIENT, Some(&secret))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", grant.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        token["scope"], "mcp:tools",
        "the claimed admins group counts for nothing: {token}"
    );
}

#[test]
fn an_enterprise_idp_cannot_share_an_id_with_another_identity_provider() {
    let oidc =
        tower_mcp_auth::server::OidcProvider::builder("acme", "https://login.acme.example", "c")
            .build()
            .unwrap();
    let refused = AuthServer::builder("https://as.example")
        .resource("https://as.example/mcp")
        .identity_provider(oidc)
        .trust_enterprise_idp(
            EnterpriseIdp::new("acme", "https://other.acme.example")
                .key(JwtKey::ec_pem(EC256_PUB, Algorithm::ES256).unwrap()),
        )
        .build();
    assert!(refused.is_err());
}

#[tokio::test]
async fn an_id_token_whose_sign_in_was_revoked_is_not_exchanged() {
    let world = world().await;
    let tokens = sign_in_tokens(&world.idp, IDP_CLIENT, REDIRECT, "alice", "wonderland").await;
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(
        exchange(&world, id_token, &world.stack.base, &world.stack.mcp_url)
            .await
            .status(),
        200
    );
    // The user's app signs out: its refresh token is revoked, and the grant family with it.
    let revoked = client()
        .post(format!("{}/oauth/revoke", world.idp))
        .form(&[
            ("token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", IDP_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    invalid_grant(exchange(&world, id_token, &world.stack.base, &world.stack.mcp_url).await).await;
}

#[tokio::test]
async fn an_id_jag_refused_for_too_wide_a_scope_stays_usable() {
    let world = world().await;
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("oauth-id-jag+jwt".into());
    let grant = jsonwebtoken::encode(
        &header,
        &json!({
            "iss": LAB_IDP, "sub": "carol", "aud": world.stack.base, "client_id": AS_CLIENT,
            "resource": world.stack.mcp_url, "jti": "wide-1", "iat": now(), "exp": now() + 60,
            "scope": "mcp:tools",
        }),
        &EncodingKey::from_ec_pem(EC256_KEY).unwrap(),
    )
    .unwrap();
    let too_wide = client()
        .post(format!("{}/oauth/token", world.stack.base))
        .basic_auth(AS_CLIENT, Some(AS_SECRET))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", grant.as_str()),
            ("scope", "mcp:tools notes:write"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(too_wide.status(), 400);
    assert_eq!(
        redeem(&world, &grant, AS_CLIENT, AS_SECRET).await.status(),
        200
    );
}

//! The authorization server (feature `server`) over real HTTP: discovery, registration,
//! client_credentials tokens used against a protected MCP endpoint, revocation, introspection.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_mcp_auth::server::AuthServer;
use tower_mcp_auth::{AuthContext, BearerLayer, ProtectedResource};

use crate::support::*;

struct Setup {
    base: String,
    mcp: String,
    auth: AuthServer,
}

const SECRET: &str = "pre-registered-secret-of-32-chars!!";

async fn setup(issuer_path: &str) -> Setup {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let issuer = format!("{base}{issuer_path}");
    let mcp = format!("{base}/mcp");
    let auth = AuthServer::builder(&issuer)
        .resource(&mcp)
        .scopes_supported(["mcp:tools", "notes:read"])
        .client("job", SECRET, ["mcp:tools"])
        .build()
        .unwrap();
    let resource = ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .scopes_supported(["mcp:tools"])
        .build()
        .unwrap();
    let echo = tower::service_fn(|req: Request<axum::body::Body>| async move {
        let ctx = req.extensions().get::<AuthContext>().cloned();
        let body = json!({"sub": ctx.as_ref().map(|c| c.subject().to_owned()), "scope": ctx.map(|c| c.scopes().to_string())});
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
    });
    let app = axum::Router::new()
        .nest_service(
            "/mcp",
            ServiceBuilder::new()
                .layer(BearerLayer::new(
                    auth.validator(&mcp).unwrap(),
                    resource.clone(),
                ))
                .service(echo),
        )
        .merge(resource.router())
        .merge(auth.router());
    spawn(listener, app);
    Setup { base, mcp, auth }
}

impl Setup {
    async fn token(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> reqwest::Response {
        let mut req = client()
            .post(format!("{}/oauth/token", self.auth.issuer()))
            .form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.unwrap()
    }

    async fn access_token(&self) -> String {
        let response = self
            .token(
                &[("grant_type", "client_credentials")],
                Some(("job", SECRET)),
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn discovery_metadata_is_exact_and_points_at_served_endpoints() {
    for path in ["", "/tenant1"] {
        let s = setup(path).await;
        let issuer = s.auth.issuer().to_owned();
        let urls: Vec<String> = if path.is_empty() {
            vec![
                format!("{}/.well-known/oauth-authorization-server", s.base),
                format!("{}/.well-known/openid-configuration", s.base),
            ]
        } else {
            vec![
                format!("{}/.well-known/oauth-authorization-server/tenant1", s.base),
                format!("{}/.well-known/openid-configuration/tenant1", s.base),
                format!("{}/tenant1/.well-known/openid-configuration", s.base),
            ]
        };
        for url in urls {
            let response = client().get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            let doc: Value = response.json().await.unwrap();
            assert_eq!(doc["issuer"], issuer, "{url}");
            assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
            assert_eq!(doc["grant_types_supported"], json!(["client_credentials"]));
            let jwks: Value = client()
                .get(doc["jwks_uri"].as_str().unwrap())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(jwks["keys"][0]["kid"], s.auth.signing_keys().current_kid());
        }
    }
}

#[tokio::test]
async fn client_credentials_token_opens_the_protected_resource() {
    let s = setup("").await;
    let response = s
        .token(
            &[("grant_type", "client_credentials")],
            Some(("job", SECRET)),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "mcp:tools");
    let token = body["access_token"].as_str().unwrap();
    let answer: Value = client()
        .post(&s.mcp)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"sub": "job", "scope": "mcp:tools"}));
    // The token's audience is the resource (RFC 8707), typ at+jwt (RFC 9068).
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
}

#[tokio::test]
async fn machine_clients_cannot_register_themselves() {
    // Open registration of client_credentials clients would hand anyone tokens with no user.
    let s = setup("").await;
    let response = client()
        .post(format!("{}/oauth/register", s.base))
        .json(
            &json!({"client_name": "nightly report", "grant_types": ["client_credentials"],
                      "token_endpoint_auth_method": "client_secret_post", "scope": "mcp:tools"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // The configured client authenticates with client_secret_post too.
    let response = s
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "job"),
                ("client_secret", SECRET),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn token_endpoint_refusals_are_rfc6749_errors() {
    let s = setup("").await;
    let cc = ("grant_type", "client_credentials");
    // Wrong secret with Basic: 401 invalid_client and a Basic challenge.
    let response = s
        .token(
            &[cc],
            Some(("job", "wrong-secret-wrong-secret-wrong-secret")),
        )
        .await;
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    // Wrong secret in the body: 401 without a Basic challenge.
    let response = s
        .token(&[cc, ("client_id", "job"), ("client_secret", "nope")], None)
        .await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("www-authenticate").is_none());
    // Unknown client, no client, two methods at once.
    assert_eq!(s.token(&[cc], Some(("ghost", SECRET))).await.status(), 401);
    assert_eq!(s.token(&[cc], None).await.status(), 401);
    let both = s
        .token(&[cc, ("client_secret", SECRET)], Some(("job", SECRET)))
        .await;
    assert_eq!(both.status(), 400);
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("grant_type", "password")], "unsupported_grant_type"),
        (
            &[("grant_type", "authorization_code"), ("code", "x")],
            "unsupported_grant_type",
        ),
        (&[cc, ("scope", "mcp:tools admin")], "invalid_scope"),
        (
            &[cc, ("resource", "https://other.example/mcp")],
            "invalid_target",
        ),
        (
            &[cc, ("scope", "mcp:tools"), ("scope", "admin")],
            "invalid_request",
        ),
    ];
    for (form, error) in cases {
        let response = s.token(form, Some(("job", SECRET))).await;
        assert_eq!(response.status(), 400, "{form:?}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            error,
            "{form:?}"
        );
    }
    let huge = "x".repeat(100 * 1024);
    let response = s.token(&[cc, ("pad", &huge)], Some(("job", SECRET))).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn registration_refuses_what_this_server_cannot_serve() {
    let s = setup("").await;
    for doc in [
        json!({"grant_types": ["authorization_code"], "redirect_uris": ["https://app.example/cb"]}),
        json!({"grant_types": ["client_credentials"], "scope": "root"}),
        json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
        json!({"grant_types": ["client_credentials"], "redirect_uris": ["https://app.example/cb"]}),
        json!(["not", "an", "object"]),
    ] {
        let response = client()
            .post(format!("{}/oauth/register", s.base))
            .json(&doc)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{doc}");
    }
}

#[tokio::test]
async fn revoked_token_is_refused_and_introspects_inactive() {
    let s = setup("").await;
    let token = s.access_token().await;
    let introspect_url = format!("{}/oauth/introspect", s.base);
    let introspect = |token: String| {
        let url = introspect_url.clone();
        async move {
            client()
                .post(url)
                .basic_auth("job", Some(SECRET))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let before = introspect(token.clone()).await;
    assert_eq!(before["active"], true);
    assert_eq!(before["aud"], s.mcp);
    assert_eq!(before["client_id"], "job");
    let response = client()
        .post(format!("{}/oauth/revoke", s.base))
        .basic_auth("job", Some(SECRET))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(introspect(token.clone()).await, json!({"active": false}));
    let response = client()
        .post(&s.mcp)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(www_authenticate(&response).contains("not active"));
    // Introspection needs client authentication; garbage is simply inactive.
    let response = client()
        .post(format!("{}/oauth/introspect", s.base))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(introspect("garbage".into()).await, json!({"active": false}));
}

#[tokio::test]
async fn key_rotation_keeps_issued_tokens_valid() {
    let s = setup("").await;
    let before = s.access_token().await;
    s.auth.signing_keys().rotate().unwrap();
    let after = s.access_token().await;
    assert_ne!(
        jsonwebtoken::decode_header(&before).unwrap().kid,
        jsonwebtoken::decode_header(&after).unwrap().kid
    );
    for token in [before, after] {
        assert_eq!(
            client()
                .post(&s.mcp)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let jwks: Value = client()
        .get(format!("{}/oauth/jwks", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn browser_clients_get_cors_on_api_endpoints_only() {
    let s = setup("").await;
    let preflight = client()
        .request(reqwest::Method::OPTIONS, format!("{}/oauth/token", s.base))
        .header("Origin", "http://localhost:6274")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let token = s
        .token(
            &[("grant_type", "client_credentials")],
            Some(("job", SECRET)),
        )
        .await;
    assert!(
        token
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
}

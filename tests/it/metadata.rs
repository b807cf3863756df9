//! RFC 9728 protected resource metadata, served beside the protected endpoint.

use serde_json::{Value, json};
use tower_mcp_auth::validate::{JwtKey, JwtValidator};

use crate::support::*;

async fn server() -> Protected {
    protected(
        |r| {
            JwtValidator::builder(ISSUER, r.resource())
                .key(JwtKey::ed_pem(ED_PUB).unwrap())
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await
}

#[tokio::test]
async fn metadata_is_served_at_path_inserted_and_root_locations_without_token() {
    let server = server().await;
    let expected = json!({
        "resource": server.resource.resource(),
        "authorization_servers": [ISSUER],
        "scopes_supported": ["mcp:tools"],
        "bearer_methods_supported": ["header"],
    });
    for url in [
        server.metadata_url(),
        format!("{}/.well-known/oauth-protected-resource", server.base),
    ] {
        let response = client()
            .get(&url)
            .header("MCP-Protocol-Version", "2025-11-25")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, expected, "{url}");
    }
}

#[tokio::test]
async fn challenge_points_at_a_document_naming_this_resource() {
    let server = server().await;
    let challenge = www_authenticate(&server.post(None).await);
    let url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let body: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["resource"], server.resource.resource());
}

#[tokio::test]
async fn preflight_is_answered_for_browser_clients() {
    let server = server().await;
    let response = client()
        .request(reqwest::Method::OPTIONS, server.metadata_url())
        .header("Origin", "http://localhost:6274")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "mcp-protocol-version")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

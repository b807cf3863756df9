//! Outbound fetches under the address policy (#17): a JWKS URL whose name resolves inward, an
//! IP-literal URL, and a discovery document naming the cloud metadata endpoint are refused
//! unless the operator allowed them; the embedded server's readiness follows its providers.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use tower_mcp_auth::ConfigError;
use tower_mcp_auth::address::AddressPolicy;
use tower_mcp_auth::server::{AuthServer, IdentityProvider, OidcProvider};
use tower_mcp_auth::validate::{IntrospectionValidator, JwksValidator};

use crate::support::*;

fn token(server: &Protected, sub: &str) -> String {
    sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA1_KEY).unwrap(),
        Some("k1"),
        &claims(server.resource.resource(), sub, "mcp:tools"),
    )
}

async fn behind_jwks(url: String, policy: AddressPolicy) -> Protected {
    protected(
        move |r| {
            JwksValidator::builder(url, ISSUER, r.resource())
                .address_policy(policy)
                .build()
                .unwrap()
        },
        |l| l,
    )
    .await
}

#[tokio::test]
async fn ssrf_jwks_url_whose_name_resolves_to_loopback_is_refused_unless_allowed() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let jwks = JwksServer::start(vec![public_jwk(Algorithm::RS256, RSA1_KEY, "k1")]).await;
    // A name, not a literal: only resolution tells where it goes.
    let by_name = jwks.url.replace("127.0.0.1", "localhost");

    let refused = behind_jwks(by_name.clone(), AddressPolicy::public_only()).await;
    let response = refused.post(Some(&token(&refused, "a"))).await;
    assert_eq!(
        response.status(),
        503,
        "the keys cannot be had: unavailable"
    );
    assert_eq!(jwks.hits(), 0, "no connection was made");
    let refusals: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "mcp_auth_outbound_refused_total")
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert!(refusals >= 1, "the refusal is counted");

    let allowed = behind_jwks(by_name, AddressPolicy::public_only().allow_loopback()).await;
    assert_eq!(
        allowed.post(Some(&token(&allowed, "a"))).await.status(),
        200
    );
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test]
async fn ssrf_jwks_url_at_a_private_or_metadata_address_is_refused_at_build_unless_allowed() {
    let build = |url: &str, policy: AddressPolicy| {
        JwksValidator::builder(url, ISSUER, "https://mcp.example/mcp")
            .allow_insecure_http()
            .address_policy(policy)
            .build()
    };
    for url in [
        "http://10.1.2.3/jwks",
        "http://192.168.0.10/jwks",
        "http://[fd00::5]/jwks",
        "http://169.254.169.254/latest/meta-data/jwks",
        "http://[::ffff:127.0.0.1]/jwks",
    ] {
        let refused = build(url, AddressPolicy::public_only()).unwrap_err();
        assert!(
            matches!(refused, ConfigError::AddressRefused { .. }),
            "{url}: {refused}"
        );
        assert!(
            refused.to_string().contains("allow"),
            "says how to allow: {refused}"
        );
    }
    assert!(
        build(
            "http://10.1.2.3/jwks",
            AddressPolicy::public_only().allow_private()
        )
        .is_ok()
    );
    assert!(
        build(
            "http://10.1.2.3/jwks",
            AddressPolicy::public_only()
                .allow_network("10.1.0.0/16")
                .unwrap()
        )
        .is_ok()
    );
    // Private does not include the metadata endpoint: that needs its own, explicit allowance.
    assert!(
        build(
            "http://169.254.169.254/jwks",
            AddressPolicy::public_only().allow_private()
        )
        .is_err()
    );
    // Introspection endpoints are screened the same way.
    let introspection =
        IntrospectionValidator::builder("http://10.9.9.9/introspect", "https://mcp.example/mcp")
            .allow_insecure_http()
            .client_credentials("rs", "secret")
            .build();
    assert!(matches!(
        introspection,
        Err(ConfigError::AddressRefused { .. })
    ));
}

/// An OpenID provider on 127.0.0.1 whose discovery document names `token_endpoint` and
/// `jwks_uri` on the given base.
async fn provider_naming(endpoints: &str) -> String {
    let (listener, addr) = listener().await;
    let issuer = format!("http://{addr}");
    let document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{endpoints}/token"),
        "jwks_uri": format!("{endpoints}/jwks"),
        "response_types_supported": ["code"],
    });
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let document = document.clone();
            async move { axum::Json(document) }
        }),
    );
    spawn(listener, app);
    issuer
}

#[tokio::test]
async fn ssrf_discovery_document_naming_the_cloud_metadata_endpoint_is_refused() {
    let issuer = provider_naming("http://169.254.169.254/latest/meta-data").await;
    // The provider itself is allowed (loopback); what its document names is not.
    let provider = OidcProvider::builder("corp", &issuer, "mcp")
        .address_policy(AddressPolicy::public_only().allow_loopback())
        .build()
        .unwrap();
    let refused = provider.check_ready().await.unwrap_err().to_string();
    assert!(refused.contains("169.254.169.254"), "{refused}");
    assert!(refused.contains("address policy"), "{refused}");

    // A document naming its own (allowed) host passes discovery.
    let issuer = provider_naming("http://127.0.0.1:9").await;
    let provider = OidcProvider::builder("corp", &issuer, "mcp")
        .address_policy(AddressPolicy::public_only().allow_loopback())
        .build()
        .unwrap();
    provider.check_ready().await.unwrap();
}

#[tokio::test]
async fn embedded_server_readiness_follows_its_identity_providers() {
    let live = provider_naming("http://127.0.0.1:9").await;
    let (dead_listener, dead) = listener().await;
    drop(dead_listener);
    let loopback = AddressPolicy::public_only().allow_loopback();
    let serve = |providers: Vec<OidcProvider>| async move {
        let (listener, addr) = listener().await;
        let base = format!("http://{addr}");
        let mut builder = AuthServer::builder(&base).resource(format!("{base}/mcp"));
        for provider in providers {
            builder = builder.identity_provider(provider);
        }
        let auth = builder.build().unwrap();
        spawn(listener, auth.router().merge(auth.health_router()));
        base
    };
    let oidc = |id: &str, issuer: &str| {
        OidcProvider::builder(id, issuer, "mcp")
            .address_policy(loopback.clone())
            .build()
            .unwrap()
    };

    let ready = serve(vec![oidc("live", &live)]).await;
    let response = client()
        .get(format!("{ready}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"ready": true, "checks": {"store": "ok", "identity_providers": {"live": "ok"}}})
    );

    let degraded = serve(vec![
        oidc("live", &live),
        oidc("gone", &format!("http://{dead}")),
    ])
    .await;
    let response = client()
        .get(format!("{degraded}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["checks"]["identity_providers"],
        json!({"live": "ok", "gone": "unavailable"})
    );
    // Liveness is not readiness: the process answers.
    let health = client()
        .get(format!("{degraded}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

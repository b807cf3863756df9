//! Dynamic registration limits and policy (feature `server`): the per-source limit keyed on the
//! client address (TCP peer, or trusted proxies' `X-Forwarded-For`), and the registration
//! policy hook for registrations and client ID metadata documents.

use std::time::Duration;

use serde_json::{Value, json};
use tower_mcp_auth::server::{AuthServer, AuthServerBuilder, TrustedProxies};

use crate::code_flow::{VERIFIER, challenge, metadata_host};
use crate::support::*;

async fn serve(configure: impl FnOnce(AuthServerBuilder) -> AuthServerBuilder) -> String {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let builder = AuthServer::builder(&base)
        .resource(format!("{base}/mcp"))
        .scopes_supported(["mcp:tools"])
        .dev_user("demo", "demo")
        .allow_development_client_metadata();
    let auth = configure(builder).build().unwrap();
    spawn_with_peer(listener, auth.router());
    base
}

async fn register(base: &str, forwarded_for: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = client().post(format!("{base}/oauth/register")).json(&body);
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    request.send().await.unwrap()
}

fn app() -> Value {
    json!({"client_name": "App", "redirect_uris": ["http://127.0.0.1/cb"]})
}

#[tokio::test]
async fn registration_flood_from_one_address_is_throttled() {
    let base = serve(|b| {
        b.registration_limit(Some((3, Duration::from_secs(3600))))
            .registration_limit_loopback(true)
    })
    .await;
    // Invalid requests store nothing and do not count.
    for _ in 0..5 {
        let bad = register(
            &base,
            None,
            json!({"redirect_uris": ["javascript:alert(1)"]}),
        )
        .await;
        assert_eq!(bad.status(), 400);
    }
    for _ in 0..3 {
        assert_eq!(register(&base, None, app()).await.status(), 201);
    }
    let refused = register(&base, None, app()).await;
    assert_eq!(
        refused.status(),
        429,
        "an exhausted limit is 429, never 401"
    );
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}

#[tokio::test]
async fn forged_forwarded_for_cannot_dodge_the_registration_limit() {
    // The test client (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is ignored.
    let base = serve(|b| {
        b.registration_limit(Some((2, Duration::from_secs(3600))))
            .client_address(TrustedProxies::new(["10.0.0.0/8"]).unwrap())
    })
    .await;
    for (i, ip) in ["198.51.100.1", "198.51.100.2"].iter().enumerate() {
        assert_eq!(register(&base, Some(ip), app()).await.status(), 201, "{i}");
    }
    let refused = register(&base, Some("198.51.100.3"), app()).await;
    assert_eq!(refused.status(), 429);
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_get_their_own_buckets() {
    let base = serve(|b| {
        b.registration_limit(Some((2, Duration::from_secs(3600))))
            .client_address(TrustedProxies::new(["127.0.0.1"]).unwrap())
    })
    .await;
    for _ in 0..2 {
        let ok = register(&base, Some("198.51.100.1"), app()).await;
        assert_eq!(ok.status(), 201);
    }
    let refused = register(&base, Some("198.51.100.1"), app()).await;
    assert_eq!(refused.status(), 429);
    // Another client behind the same proxy is not throttled by the first one.
    let other = register(&base, Some("198.51.100.2"), app()).await;
    assert_eq!(other.status(), 201);
    // IPv6 clients are counted per /64: rotating addresses within it does not help.
    for (i, ip) in ["2001:db8:1:2::1", "2001:db8:1:2::2"].iter().enumerate() {
        assert_eq!(register(&base, Some(ip), app()).await.status(), 201, "{i}");
    }
    let rotated = register(&base, Some("2001:db8:1:2:ffff::9"), app()).await;
    assert_eq!(rotated.status(), 429);
    let next_net = register(&base, Some("2001:db8:1:3::1"), app()).await;
    assert_eq!(next_net.status(), 201);
}

#[tokio::test]
async fn loopback_clients_are_not_locked_out_but_remote_ones_are_limited() {
    // The default limit (20 an hour), clients behind a proxy on this machine told apart.
    let base = serve(|b| b.client_address(TrustedProxies::new(["127.0.0.1"]).unwrap())).await;
    // A person restarting a desktop client on the server's machine, fifty times.
    for i in 0..50 {
        assert_eq!(register(&base, None, app()).await.status(), 201, "{i}");
    }
    // A client elsewhere, relayed by the proxy: twenty, then 429.
    for i in 0..20 {
        let ok = register(&base, Some("203.0.113.9"), app()).await;
        assert_eq!(ok.status(), 201, "{i}");
    }
    let refused = register(&base, Some("203.0.113.9"), app()).await;
    assert_eq!(refused.status(), 429);
    // Loopback clients are still welcome.
    assert_eq!(register(&base, None, app()).await.status(), 201);
}

#[tokio::test]
async fn registration_flood_through_a_tunnel_to_a_public_issuer_is_counted() {
    // A public server reached through a proxy or tunnel on its own machine that adds no
    // forwarding header: every client arrives from 127.0.0.1 with nothing to tell them apart.
    // Only a loopback issuer (a developer's machine) exempts its own clients.
    let (listener, _) = listener().await;
    let addr = listener.local_addr().unwrap();
    let auth = AuthServer::builder("https://mcp.example.com")
        .resource("https://mcp.example.com/mcp")
        .scopes_supported(["mcp:tools"])
        .dev_user("demo", "demo")
        .registration_limit(Some((3, Duration::from_secs(3600))))
        // The tunnel delivers under the local name.
        .allowed_hosts(["127.0.0.1"])
        .build()
        .unwrap();
    spawn_with_peer(listener, auth.router());
    let base = format!("http://{addr}");
    let app = json!({"client_name": "App", "redirect_uris": ["https://app.example.com/cb"]});
    for i in 0..3 {
        assert_eq!(
            register(&base, None, app.clone()).await.status(),
            201,
            "{i}"
        );
    }
    assert_eq!(register(&base, None, app).await.status(), 429);
}

#[tokio::test]
async fn registration_flood_through_a_local_proxy_is_not_exempt_as_loopback() {
    // The quickstart as it runs (peer address, no trusted proxy): a request relayed by a
    // proxy on the same machine has a loopback peer but says it was forwarded; it is counted.
    let base = start_quickstart().await.base;
    for i in 0..20 {
        let ok = register(&base, Some("198.51.100.7"), app()).await;
        assert_eq!(ok.status(), 201, "{i}");
    }
    let refused = register(&base, Some("198.51.100.7"), app()).await;
    assert_eq!(refused.status(), 429);
    // One CORS layer answers: one Vary header, not one per layer.
    assert_eq!(refused.headers().get_all("vary").iter().count(), 1);
    assert!(refused.headers().contains_key("retry-after"));
    // The person on the machine itself is not locked out.
    assert_eq!(register(&base, None, app()).await.status(), 201);
}

#[tokio::test]
async fn registration_policy_refuses_unapproved_clients() {
    let base = serve(|b| {
        b.registration_policy(
            |client| match (client.metadata_document, client.client_name) {
                (Some(_), _) => Ok(()),
                (None, _) if client.source.is_none() => Err("no client address".into()),
                (None, Some("Approved")) => Ok(()),
                (None, _) => Err("only approved clients may register".into()),
            },
        )
    })
    .await;
    let refused = register(&base, None, app()).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata");
    assert_eq!(
        body["error_description"],
        "only approved clients may register"
    );
    let approved = register(
        &base,
        None,
        json!({"client_name": "Approved", "redirect_uris": ["http://127.0.0.1/cb"]}),
    )
    .await;
    assert_eq!(approved.status(), 201);
}

fn authorize_url(base: &str, client_id: &str) -> String {
    let mut url = url::Url::parse(&format!("{base}/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", "http://127.0.0.1:4567/callback")
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256");
    url.to_string()
}

#[tokio::test]
async fn registration_policy_also_screens_client_metadata_documents() {
    let (host, _) = metadata_host().await;
    let client_id = format!("{host}/client.json");
    let open = serve(|b| b.registration_policy(|_| Ok(()))).await;
    let page = browser()
        .get(authorize_url(&open, &client_id))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the sign-in page");
    let closed = serve(|b| {
        b.registration_policy(|client| match client.metadata_document {
            Some(url) if !url.starts_with("https://apps.example.com/") => {
                Err("unknown client publisher".into())
            }
            _ => Ok(()),
        })
    })
    .await;
    let refused = browser()
        .get(authorize_url(&closed, &client_id))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.headers().get("location").is_none());
}

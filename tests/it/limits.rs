//! Tool-call limits per principal (#17): one subject past its limit on a tool gets 429 with
//! `Retry-After` and a JSON-RPC error while another subject is unaffected; other tools and
//! the limit's window behave as configured.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::policy::{RateLimits, ToolPolicy};
use tower_mcp_auth::server::AuthServer;

use crate::support::*;

#[tokio::test]
async fn one_subject_past_its_tool_limit_gets_429_while_another_is_unaffected() {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp = format!("{base}/mcp");
    let auth = AuthServer::builder(&base).resource(&mcp).build().unwrap();
    let resource = ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .build()
        .unwrap();
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .build()
        .unwrap();
    let limits = RateLimits::new()
        .per_tool("send_email", 3, Duration::from_secs(3600))
        .per_subject(100, Duration::from_secs(3600));
    let ok = tower::service_fn(
        |_: http::Request<http_body_util::Full<bytes::Bytes>>| async {
            let mut response = http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#),
            ));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, std::convert::Infallible>(response)
        },
    );
    let app = axum::Router::new().nest_service(
        "/mcp",
        ServiceBuilder::new()
            .layer(auth.bearer_layer(&resource).unwrap())
            .layer(policy.layer(&resource).rate_limits(limits))
            .service(ok),
    );
    spawn(listener, app);
    let token = |sub: &str| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"iss": auth.issuer(), "sub": sub, "client_id": "app", "aud": mcp,
            "scope": "mcp:tools", "iat": now, "exp": now + 600, "jti": sub});
        auth.signing_keys().sign(&claims, "at+jwt").unwrap()
    };
    let call = |token: String, tool: &'static str| {
        client()
            .post(&mcp)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                          "params": {"name": tool, "arguments": {}}}))
            .send()
    };
    let (alice, bob) = (token("alice"), token("bob"));
    for _ in 0..3 {
        assert_eq!(
            call(alice.clone(), "send_email").await.unwrap().status(),
            200
        );
    }
    let limited = call(alice.clone(), "send_email").await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry), "{retry}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["id"], 7);
    assert_eq!(body["error"]["code"], -32029);
    assert_eq!(body["error"]["data"]["retry_after"], retry);
    // Other tools still work for Alice; Bob's budget is his own.
    assert_eq!(call(alice, "read_inbox").await.unwrap().status(), 200);
    for _ in 0..3 {
        assert_eq!(call(bob.clone(), "send_email").await.unwrap().status(), 200);
    }
}

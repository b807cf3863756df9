//! ATAG (feature `atag`): tools that act at a third-party service with the user's own token.
//! The third party is a second instance of our authorization server on loopback, with its own
//! dev login; the MCP endpoint is an echo service behind the bearer, policy and ATAG layers
//! that shows the token it was handed. Everything is real HTTP on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_mcp_auth::atag::{
    Atag, ChallengeMode, ExternalService, ExternalToken, TokenSet, TokenVault,
};
use tower_mcp_auth::policy::ToolPolicy;
use tower_mcp_auth::server::{AuthServer, EncryptionKeys, SigningKeys};
use tower_mcp_auth::store::{MemoryStore, Store};
use tower_mcp_auth::{BearerLayer, ProtectedResource};

use crate::code_flow::{VERIFIER, challenge, query};
use crate::support::*;

const VAULT_KEY: &[u8; 32] = b"an-atag-vault-key-of-32-bytes!!!";

struct World {
    base: String,
    mcp: String,
    third_party: String,
    atag: Atag,
    /// Requests to the third party's token endpoint.
    token_hits: Arc<AtomicUsize>,
    store: Arc<MemoryStore>,
    keys: SigningKeys,
}

/// The MCP stand-in: answers `initialize` with a session id, and `tools/call` with the
/// third-party token it received.
async fn echo(
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<http::Response<EchoBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    if request.method() == http::Method::GET {
        // The standalone SSE stream: a priming event, then open until the client leaves.
        let events = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(bytes::Bytes::from_static(b"id: 0\ndata: \n\n")),
        )])
        .chain(futures_util::stream::pending());
        return Ok(http::Response::builder()
            .header("content-type", "text/event-stream")
            .body(http_body_util::StreamBody::new(events).boxed_unsync())
            .unwrap());
    }
    let token = request.extensions().get::<ExternalToken>().cloned();
    let forwarded = request
        .headers()
        .get("x-service-token")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let message: Value = serde_json::from_slice(&body).unwrap();
    let mut response = http::Response::builder().header("content-type", "application/json");
    if message["method"] == "initialize" {
        response = response.header("mcp-session-id", format!("session-{}", message["id"]));
    }
    let result = json!({"jsonrpc": "2.0", "id": message["id"], "result": {
        "content": [{"type": "text", "text": "ok"}],
        "service": token.as_ref().map(|t| t.service().to_owned()),
        "secret": token.as_ref().map(|t| t.secret().to_owned()),
        "forwarded": forwarded,
    }});
    Ok(response
        .body(http_body_util::Full::new(bytes::Bytes::from(result.to_string())).boxed_unsync())
        .unwrap())
}

type EchoBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::convert::Infallible>;

async fn world(mode: ChallengeMode) -> World {
    let (down_listener, down_addr) = listener().await;
    let (tp_listener, tp_addr) = listener().await;
    let base = format!("http://{down_addr}");
    let third_party = format!("http://{tp_addr}");

    // The third party: our own server, its own users, the gateway registered as a client.
    let tp = AuthServer::builder(&third_party)
        .resource(format!("{third_party}/api"))
        .scopes_supported(["repo"])
        .dev_user("tp-alice", "pw")
        .dev_user("tp-bob", "pw")
        .public_client(
            "mcp-gateway",
            [format!("{base}/atag/callback/tp")],
            ["repo"],
        )
        .build()
        .unwrap();
    let token_hits = Arc::new(AtomicUsize::new(0));
    let hits = token_hits.clone();
    let tp_app = tp.router().layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            if request.uri().path() == "/oauth/token" {
                hits.fetch_add(1, Ordering::SeqCst);
            }
            next.run(request)
        },
    ));
    spawn(tp_listener, tp_app);

    let mcp = format!("{base}/mcp");
    let store = Arc::new(MemoryStore::default());
    let keys = SigningKeys::generate().unwrap();
    let (atag, app) = gateway(&base, &third_party, store.clone(), keys.clone(), mode);
    spawn(down_listener, app);
    World {
        base,
        mcp,
        third_party,
        atag,
        token_hits,
        store,
        keys,
    }
}

/// One instance of the MCP server: its authorization server (issuer `base`) and the MCP
/// endpoint behind the bearer, policy and ATAG layers. Instances given the same store and
/// keys act as one deployment.
fn gateway(
    base: &str,
    third_party: &str,
    store: Arc<MemoryStore>,
    keys: SigningKeys,
    mode: ChallengeMode,
) -> (Atag, axum::Router) {
    let mcp = format!("{base}/mcp");
    let auth = AuthServer::builder(base)
        .resource(&mcp)
        .scopes_supported(["mcp:tools"])
        .store(store)
        .signing_keys(keys)
        .dev_user("alice", "wonderland")
        .dev_user("bob", "builder")
        .public_client("app", ["http://127.0.0.1/callback"], ["mcp:tools"])
        .build()
        .unwrap();
    let gateway = Atag::builder(&auth)
        .address_policy(tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback())
        .service(
            ExternalService::custom(
                "tp",
                format!("{third_party}/oauth/authorize"),
                format!("{third_party}/oauth/token"),
                "mcp-gateway",
                None,
            )
            .display_name("Third Party"),
        )
        .vault_keys(EncryptionKeys::new("v1", VAULT_KEY).unwrap())
        .build()
        .unwrap();
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .tool("tp_*", ["mcp:tools"])
        .needs_service("tp", ["repo"])
        .build()
        .unwrap();
    let resource = ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .build()
        .unwrap();
    let atag = gateway
        .layer(&policy)
        .unwrap()
        .mode(mode)
        .forward_header(http::HeaderName::from_static("x-service-token"));
    let app = axum::Router::new()
        .nest_service(
            "/mcp",
            ServiceBuilder::new()
                .layer(BearerLayer::new(
                    auth.validator(&mcp).unwrap(),
                    resource.clone(),
                ))
                .layer(policy.layer(&resource))
                .layer(atag)
                .service(tower::service_fn(echo)),
        )
        .merge(auth.router())
        .merge(gateway.router());
    (gateway, app)
}

/// Signs `user` in at the MCP server's authorization server in `browser` and returns an
/// access token for the MCP endpoint.
async fn mcp_token(world: &World, browser: &reqwest::Client, user: &str, password: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/oauth/authorize", world.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "app")
        .append_pair("redirect_uri", "http://127.0.0.1:4567/callback")
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("scope", "mcp:tools");
    let html = browser
        .get(url.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let back = sign_in_and_approve(browser, &world.base, &html, user, password).await;
    let code = query(back.headers()["location"].to_str().unwrap())["code"].clone();
    let tokens: Value = client()
        .post(format!("{}/oauth/token", world.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "app"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:4567/callback"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["access_token"].as_str().unwrap().to_owned()
}

fn call_body(id: u64, tool: &str, params: Value) -> Value {
    let mut body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": tool, "arguments": {}}});
    if let Value::Object(extra) = params {
        for (k, v) in extra {
            body["params"][k] = v;
        }
    }
    body
}

async fn call(
    world: &World,
    token: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(&world.mcp)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

async fn call_json(world: &World, token: &str, body: &Value, headers: &[(&str, &str)]) -> Value {
    call(world, token, body, headers)
        .await
        .json()
        .await
        .unwrap()
}

/// Runs the connect flow behind `url` in `browser`, signing in at the third party as
/// `tp_user`; returns the callback URL (not yet opened).
async fn to_callback(world: &World, browser: &reqwest::Client, url: &str, tp_user: &str) -> String {
    let connect = browser.get(url).send().await.unwrap();
    assert_eq!(connect.status(), 303, "{}", connect.text().await.unwrap());
    let at_tp = connect.headers()["location"].to_str().unwrap().to_owned();
    assert!(at_tp.starts_with(&format!("{}/oauth/authorize?", world.third_party)));
    assert_eq!(query(&at_tp)["code_challenge_method"], "S256");
    let html = browser
        .get(&at_tp)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let back = sign_in_and_approve(browser, &world.third_party, &html, tp_user, "pw").await;
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    assert!(callback.starts_with(&format!("{}/atag/callback/tp?", world.base)));
    callback
}

/// Connects `browser`'s user through the link in `url`.
async fn connect(world: &World, browser: &reqwest::Client, url: &str) {
    let callback = to_callback(world, browser, url, "tp-alice").await;
    let done = browser.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Third Party connected"));
}

/// Calls `tp_list` as `token` and returns the connect link of the tool error it answers.
async fn tool_error_link(world: &World, token: &str) -> String {
    let challenge = call_json(world, token, &call_body(1, "tp_list", json!({})), &[]).await;
    assert_eq!(challenge["result"]["isError"], true, "{challenge}");
    url_in(challenge["result"]["content"][0]["text"].as_str().unwrap())
}

fn url_in(text: &str) -> String {
    let start = text.find("http://").unwrap();
    text[start..].split_whitespace().next().unwrap().to_owned()
}

fn subject_of(jwt: &str) -> String {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tool_error_challenge_connect_flow_retry_and_disconnect() {
    let world = world(ChallengeMode::Auto).await;
    let alice = browser();
    let token = mcp_token(&world, &alice, "alice", "wonderland").await;

    // A client cannot pose as the layer: its own forwarding header never reaches the tool.
    let posing = call(
        &world,
        &token,
        &call_body(9, "whoami", json!({})),
        &[("x-service-token", "Bearer forged")],
    )
    .await
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(posing["result"]["forwarded"], Value::Null);
    // Tools that need no service pass untouched.
    let plain = call_json(&world, &token, &call_body(1, "whoami", json!({})), &[]).await;
    assert_eq!(plain["result"]["service"], Value::Null);

    // A client that declared no URL elicitation gets a tool error carrying the link.
    let challenge = call_json(&world, &token, &call_body(2, "tp_list", json!({})), &[]).await;
    assert_eq!(challenge["id"], 2);
    assert_eq!(challenge["result"]["isError"], true);
    let text = challenge["result"]["content"][0]["text"].as_str().unwrap();
    let url = url_in(text);
    assert!(url.starts_with(&format!("{}/atag/connect/tp?link=", world.base)));
    assert!(!url.contains("alice"), "no identity in the URL");

    connect(&world, &alice, &url).await;

    // The retried call reaches the tool with alice's third-party token.
    let retried = call_json(&world, &token, &call_body(3, "tp_list", json!({})), &[]).await;
    assert_eq!(retried["result"]["service"], "tp");
    let secret = retried["result"]["secret"].as_str().unwrap();
    assert_eq!(subject_of(secret), "tp-alice");
    assert_eq!(retried["result"]["forwarded"], format!("Bearer {secret}"));
    // The token works at the third party's API (its OpenID userinfo endpoint).
    let me: Value = client()
        .get(format!("{}/oauth/userinfo", world.third_party))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["sub"], "tp-alice");
    let forged = client()
        .get(format!("{}/oauth/userinfo", world.third_party))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401, "a token of another issuer is refused");

    // The connection is listed, and disconnecting it brings the challenge back.
    let listed: Value = client()
        .get(format!("{}/atag/connections", world.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["connections"][0]["service"], "tp");
    assert!(
        !listed.to_string().contains(secret),
        "the secret is never listed"
    );
    let unauthenticated = client()
        .get(format!("{}/atag/connections", world.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let gone = client()
        .delete(format!("{}/atag/connections/tp", world.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let again = call_json(&world, &token, &call_body(4, "tp_list", json!({})), &[]).await;
    assert_eq!(again["result"]["isError"], true);
}

#[tokio::test]
async fn url_elicitation_required_error_for_2025_11_25_sessions() {
    let world = world(ChallengeMode::Auto).await;
    let alice = browser();
    let token = mcp_token(&world, &alice, "alice", "wonderland").await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"form": {}, "url": {}}},
        "clientInfo": {"name": "test", "version": "1"}}});
    let initialized = call(&world, &token, &init, &[]).await;
    assert_eq!(initialized.headers()["mcp-session-id"], "session-0");
    let headers = [
        ("mcp-session-id", "session-0"),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let response = call_json(
        &world,
        &token,
        &call_body(5, "tp_list", json!({})),
        &headers,
    )
    .await;
    assert_eq!(response["id"], 5);
    assert_eq!(response["error"]["code"], -32042);
    let elicitation = &response["error"]["data"]["elicitations"][0];
    assert_eq!(elicitation["mode"], "url");
    assert!(elicitation["elicitationId"].as_str().unwrap().len() >= 43);
    let url = elicitation["url"].as_str().unwrap().to_owned();
    assert!(
        elicitation["message"]
            .as_str()
            .unwrap()
            .contains("Third Party")
    );
    // A session that did not declare URL elicitation gets the tool error instead.
    let form_only = json!({"jsonrpc": "2.0", "id": 10, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "test", "version": "1"}}});
    call(&world, &token, &form_only, &[]).await;
    let other = [
        ("mcp-session-id", "session-10"),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let fallback = call_json(&world, &token, &call_body(6, "tp_list", json!({})), &other).await;
    assert_eq!(fallback["result"]["isError"], true, "{fallback}");

    // The session's open stream hears of the completion.
    let stream = client()
        .get(&world.mcp)
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", "session-0")
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();
    connect(&world, &alice, &url).await;
    let mut seen = String::new();
    while !seen.contains("notifications/elicitation/complete") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the completion notification arrives")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains(elicitation["elicitationId"].as_str().unwrap()),
        "{seen}"
    );
    let retried = call_json(
        &world,
        &token,
        &call_body(7, "tp_list", json!({})),
        &headers,
    )
    .await;
    assert_eq!(retried["result"]["service"], "tp");
}

fn modern(request_state: Option<&str>) -> Value {
    let mut params = json!({"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}},
    }});
    if let Some(state) = request_state {
        params["requestState"] = json!(state);
        params["inputResponses"] = json!({"connect_tp": {"action": "accept"}});
    }
    params
}

#[tokio::test]
async fn input_required_for_2026_07_28_with_a_guarded_request_state() {
    let world = world(ChallengeMode::Auto).await;
    let alice = browser();
    let alice_token = mcp_token(&world, &alice, "alice", "wonderland").await;
    let bob_token = mcp_token(&world, &browser(), "bob", "builder").await;
    let headers = [("mcp-protocol-version", "2026-07-28")];

    let first = call_json(
        &world,
        &alice_token,
        &call_body(1, "tp_list", modern(None)),
        &headers,
    )
    .await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required");
    let request = &result["inputRequests"]["connect_tp"];
    assert_eq!(request["method"], "elicitation/create");
    assert_eq!(request["params"]["mode"], "url");
    let url = request["params"]["url"].as_str().unwrap().to_owned();
    let state = result["requestState"].as_str().unwrap().to_owned();

    // Retrying before the flow completed: another input_required (the state is spent).
    let early = call_json(
        &world,
        &alice_token,
        &call_body(2, "tp_list", modern(Some(&state))),
        &headers,
    )
    .await;
    assert_eq!(early["result"]["resultType"], "input_required");
    let state = early["result"]["requestState"].as_str().unwrap().to_owned();

    // Tampered: one character changed.
    let mut tampered = state.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    // Another user's state, and another tool's.
    for (token, tool, state, why) in [
        (&alice_token, "tp_list", tampered.as_str(), "tampered"),
        (&bob_token, "tp_list", state.as_str(), "other user"),
        (&alice_token, "tp_other", state.as_str(), "other tool"),
    ] {
        let refused = call_json(
            &world,
            token,
            &call_body(3, tool, modern(Some(state))),
            &headers,
        )
        .await;
        assert_eq!(refused["error"]["code"], -32602, "{why}: {refused}");
    }
    // Expired: sealed with the server's key, but past its time.
    let keys = EncryptionKeys::new("v1", VAULT_KEY).unwrap();
    let expired_state = "atag1.".to_owned()
        + &keys
            .seal(
                json!({"sub": "alice", "cid": "app", "svc": "tp", "tool": "tp_list",
                   "exp": now() - 1, "nonce": "n-expired"})
                .to_string()
                .as_bytes(),
                b"atag-request-state",
            )
            .unwrap();
    let expired = call_json(
        &world,
        &alice_token,
        &call_body(4, "tp_list", modern(Some(&expired_state))),
        &headers,
    )
    .await;
    assert_eq!(expired["error"]["code"], -32602);
    assert!(
        expired["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    connect(&world, &alice, &url).await;
    let done = call_json(
        &world,
        &alice_token,
        &call_body(5, "tp_list", modern(Some(&state))),
        &headers,
    )
    .await;
    assert_eq!(done["result"]["service"], "tp", "{done}");
    // A requestState that is not ours (the tool's own multi-round-trip state) passes untouched.
    let mut foreign = modern(None);
    foreign["requestState"] = json!("the-tools-own-state");
    let own = call_json(
        &world,
        &alice_token,
        &call_body(7, "tp_list", foreign),
        &headers,
    )
    .await;
    assert_eq!(own["result"]["service"], "tp", "{own}");
    // Replayed.
    let replayed = call_json(
        &world,
        &alice_token,
        &call_body(6, "tp_list", modern(Some(&state))),
        &headers,
    )
    .await;
    assert_eq!(replayed["error"]["code"], -32602);
    assert!(
        replayed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
}

/// A 2026-07-28 retry answering our prompt with `action`.
fn answered(request_state: &str, action: &str) -> Value {
    let mut params = modern(Some(request_state));
    params["inputResponses"] = json!({"connect_tp": {"action": action}});
    params
}

#[tokio::test]
async fn declined_or_cancelled_connection_ends_the_call_and_a_later_call_asks_again() {
    let world = world(ChallengeMode::Auto).await;
    let token = mcp_token(&world, &browser(), "alice", "wonderland").await;
    let headers = [("mcp-protocol-version", "2026-07-28")];
    for (i, (action, word)) in [("decline", "declined"), ("cancel", "cancelled")]
        .into_iter()
        .enumerate()
    {
        let id = 10 * i as u64;
        let first = call_json(
            &world,
            &token,
            &call_body(id, "tp_list", modern(None)),
            &headers,
        )
        .await;
        assert_eq!(first["result"]["resultType"], "input_required");
        let state = first["result"]["requestState"].as_str().unwrap().to_owned();
        // A forged state is refused even with a decline: the state is checked first.
        let forged = call_json(
            &world,
            &token,
            &call_body(id + 1, "tp_list", answered("atag1.forged", action)),
            &headers,
        )
        .await;
        assert_eq!(forged["error"]["code"], -32602, "{forged}");
        let ended = call_json(
            &world,
            &token,
            &call_body(id + 2, "tp_list", answered(&state, action)),
            &headers,
        )
        .await;
        let result = &ended["result"];
        assert_eq!(result["resultType"], "complete", "{ended}");
        assert_eq!(result["isError"], true);
        assert!(result.get("inputRequests").is_none());
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(word) && text.contains("tp_list"), "{text}");
        // The state was spent by that answer.
        let replayed = call_json(
            &world,
            &token,
            &call_body(id + 3, "tp_list", answered(&state, action)),
            &headers,
        )
        .await;
        assert_eq!(replayed["error"]["code"], -32602, "{replayed}");
        // A later call asks again.
        let later = call_json(
            &world,
            &token,
            &call_body(id + 4, "tp_list", modern(None)),
            &headers,
        )
        .await;
        assert_eq!(later["result"]["resultType"], "input_required");
    }
    // A 2026-07-28 client without URL elicitation: the tool error says what it is.
    let plain = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}});
    let error = call_json(&world, &token, &call_body(99, "tp_list", plain), &headers).await;
    assert_eq!(error["result"]["resultType"], "complete", "{error}");
    assert_eq!(error["result"]["isError"], true);
}

#[tokio::test]
async fn atag_401_mode_cannot_be_mistaken_for_a_bad_mcp_token() {
    let world = world(ChallengeMode::Atag401).await;
    let token = mcp_token(&world, &browser(), "alice", "wonderland").await;
    let response = call(&world, &token, &call_body(1, "tp_list", json!({})), &[]).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("ATAG "), "{challenge}");
    assert!(!challenge.contains("Bearer"));
    assert!(challenge.contains("service=\"tp\""));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["service"], "tp");
    assert!(
        body["auth_url"]
            .as_str()
            .unwrap()
            .contains("/atag/connect/tp?link=")
    );
}

#[tokio::test]
async fn connect_link_opened_by_another_user_is_refused() {
    let world = world(ChallengeMode::ToolError).await;
    let alice = browser();
    let token = mcp_token(&world, &alice, "alice", "wonderland").await;
    let url = tool_error_link(&world, &token).await;
    // Phishing: alice's link sent to bob, who is signed in as himself.
    let bob = browser();
    mcp_token(&world, &bob, "bob", "builder").await;
    assert_eq!(bob.get(&url).send().await.unwrap().status(), 403);
    // A browser signed in as nobody.
    assert_eq!(browser().get(&url).send().await.unwrap().status(), 401);
    // Refusals spent nothing: alice's own browser still connects, once.
    connect(&world, &alice, &url).await;
    let reused = alice.get(&url).send().await.unwrap();
    assert_eq!(reused.status(), 400);
}

#[tokio::test]
async fn replayed_callback_state_is_refused() {
    let world = world(ChallengeMode::ToolError).await;
    let alice = browser();
    let token = mcp_token(&world, &alice, "alice", "wonderland").await;
    let url = tool_error_link(&world, &token).await;
    let callback = to_callback(&world, &alice, &url, "tp-alice").await;
    // Carried to bob's browser: refused, and nothing spent.
    let bob = browser();
    mcp_token(&world, &bob, "bob", "builder").await;
    assert_eq!(bob.get(&callback).send().await.unwrap().status(), 403);
    assert_eq!(alice.get(&callback).send().await.unwrap().status(), 200);
    let replay = alice.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert!(!replay.text().await.unwrap().contains("connected"));
}

/// Connects alice, ages her stored token, then sends 20 concurrent calls spread over `mcps`
/// (MCP endpoints of instances sharing one store): exactly one refresh reaches the third party.
async fn refresh_race(world: World, extra_mcps: Vec<String>) {
    let alice = browser();
    let token = mcp_token(&world, &alice, "alice", "wonderland").await;
    let url = tool_error_link(&world, &token).await;
    connect(&world, &alice, &url).await;
    // Age the stored token: it expired a minute ago.
    let vault = world.atag.vault().clone();
    let mut tokens = vault.get("alice", "tp").await.unwrap().unwrap();
    let old_secret = tokens.access_token.clone();
    tokens.expires_at = Some(now() - 60);
    vault
        .put("alice", "tp", &tokens, Duration::from_secs(3600))
        .await
        .unwrap();
    let before = world.token_hits.load(Ordering::SeqCst);
    let mut endpoints = vec![world.mcp.clone()];
    endpoints.extend(extra_mcps);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let endpoint = endpoints[i % endpoints.len()].clone();
            let token = token.clone();
            tokio::spawn(async move {
                client()
                    .post(endpoint)
                    .bearer_auth(token)
                    .header("accept", "application/json, text/event-stream")
                    .json(&call_body(100 + i as u64, "tp_list", json!({})))
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut secrets = std::collections::HashSet::new();
    for c in calls {
        let response = c.await.unwrap();
        let secret = response["result"]["secret"].as_str();
        secrets.insert(secret.unwrap_or_else(|| panic!("{response}")).to_owned());
    }
    assert_eq!(
        world.token_hits.load(Ordering::SeqCst) - before,
        1,
        "exactly one refresh"
    );
    assert_eq!(secrets.len(), 1, "every call used the refreshed token");
    assert!(!secrets.contains(&old_secret));
    let stored = vault.get("alice", "tp").await.unwrap().unwrap();
    assert!(stored.expires_at.unwrap() > now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_once_under_20_concurrent_calls() {
    refresh_race(world(ChallengeMode::ToolError).await, Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_once_across_two_instances() {
    let world = world(ChallengeMode::ToolError).await;
    // A second instance of the same deployment (same issuer, keys and store), on another port.
    let (listener, addr) = listener().await;
    let (_, app) = gateway(
        &world.base,
        &world.third_party,
        world.store.clone(),
        world.keys.clone(),
        ChallengeMode::ToolError,
    );
    spawn(listener, app);
    refresh_race(world, vec![format!("http://{addr}/mcp")]).await;
}

#[tokio::test]
async fn vault_ciphertext_swapped_between_users_fails_to_decrypt() {
    let store = Arc::new(MemoryStore::default());
    let vault = TokenVault::new(store.clone(), EncryptionKeys::new("v1", VAULT_KEY).unwrap());
    let set = |secret: &str| TokenSet {
        access_token: secret.into(),
        refresh_token: None,
        expires_at: None,
        scopes: vec!["repo".into()],
    };
    let ttl = Duration::from_secs(60);
    vault
        .put("alice", "tp", &set("alice-secret"), ttl)
        .await
        .unwrap();
    vault
        .put("mallory", "tp", &set("mallory-secret"), ttl)
        .await
        .unwrap();
    // The stored values hold no plaintext.
    let raw = store
        .get(&TokenVault::key("alice", "tp"))
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("alice-secret"));
    // Mallory's ciphertext moved under alice's key (or to another service) does not open.
    let mallory = store
        .get(&TokenVault::key("mallory", "tp"))
        .await
        .unwrap()
        .unwrap();
    store
        .put(&TokenVault::key("alice", "tp"), mallory.clone(), ttl)
        .await
        .unwrap();
    assert!(vault.get("alice", "tp").await.is_err());
    store
        .put(&TokenVault::key("mallory", "other"), mallory, ttl)
        .await
        .unwrap();
    assert!(vault.get("mallory", "other").await.is_err());
    assert_eq!(
        vault
            .get("mallory", "tp")
            .await
            .unwrap()
            .unwrap()
            .access_token,
        "mallory-secret"
    );
}

#[tokio::test]
async fn vault_keys_rotate_without_losing_stored_tokens() {
    let store = Arc::new(MemoryStore::default());
    let set = TokenSet {
        access_token: "sealed-under-k1".into(),
        refresh_token: None,
        expires_at: None,
        scopes: vec![],
    };
    let ttl = Duration::from_secs(60);
    let old = TokenVault::new(store.clone(), EncryptionKeys::new("k1", VAULT_KEY).unwrap());
    old.put("alice", "tp", &set, ttl).await.unwrap();
    // The new key seals, the old one still opens what it sealed.
    let k2 = [9u8; 32];
    let ring = EncryptionKeys::from_keys([
        ("k2".to_owned(), &k2[..]),
        ("k1".to_owned(), &VAULT_KEY[..]),
    ])
    .unwrap();
    let rotated = TokenVault::new(store.clone(), ring);
    assert_eq!(rotated.get("alice", "tp").await.unwrap(), Some(set.clone()));
    rotated.put("bob", "tp", &set, ttl).await.unwrap();
    let raw = store
        .get(&TokenVault::key("bob", "tp"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        raw.starts_with(b"v1.k2."),
        "sealed under the current key, its id stored"
    );
    // A ring that dropped k1 can no longer open alice's entry: it reads as not connected.
    let only_k2 = TokenVault::new(store, EncryptionKeys::new("k2", &k2).unwrap());
    assert!(only_k2.get("alice", "tp").await.is_err());
}

#[tokio::test]
async fn batched_calls_of_service_tools_are_refused() {
    let world = world(ChallengeMode::Auto).await;
    let token = mcp_token(&world, &browser(), "alice", "wonderland").await;
    let batch = json!([
        call_body(1, "whoami", json!({})),
        call_body(2, "tp_list", json!({}))
    ]);
    let response = call(&world, &token, &batch, &[]).await;
    assert_eq!(response.status(), 400);
}

#[test]
fn policies_naming_unknown_services_are_refused() {
    let auth = AuthServer::builder("https://mcp.example.com")
        .resource("https://mcp.example.com/mcp")
        .dev_user("demo", "demo")
        .build()
        .unwrap();
    let atag = Atag::builder(&auth)
        .service(ExternalService::github("id", "secret"))
        .build()
        .unwrap();
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .tool("jira_*", ["mcp:tools"])
        .needs_service("atlassian", ["read:jira-work"])
        .build()
        .unwrap();
    assert!(atag.layer(&policy).is_err());
    let presets = [
        ExternalService::google("id", "s"),
        ExternalService::slack("id", "s"),
        ExternalService::atlassian("id", "s"),
        ExternalService::microsoft("common", "id", "s"),
    ];
    let ids: Vec<String> = presets.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids, ["google", "slack", "atlassian", "microsoft"]);
    let mut builder = Atag::builder(&auth);
    for preset in presets {
        builder = builder.service(preset);
    }
    assert!(builder.build().is_ok());
    // No service at all, or two with one id: refused at build time.
    assert!(Atag::builder(&auth).build().is_err());
    let twice = Atag::builder(&auth)
        .service(ExternalService::github("a", "s"))
        .service(ExternalService::github("b", "s"));
    assert!(twice.build().is_err());
}

#[tokio::test]
async fn a_refresh_counts_in_the_metrics_by_service() {
    // The servers run on this test's single thread: its recorder sees their counts.
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let world = world(ChallengeMode::ToolError).await;
    let alice = browser();
    let token = mcp_token(&world, &alice, "alice", "wonderland").await;
    let url = tool_error_link(&world, &token).await;
    connect(&world, &alice, &url).await;
    let vault = world.atag.vault().clone();
    let mut tokens = vault.get("alice", "tp").await.unwrap().unwrap();
    tokens.expires_at = Some(now() - 60);
    vault
        .put("alice", "tp", &tokens, Duration::from_secs(3600))
        .await
        .unwrap();
    let response: Value = client()
        .post(&world.mcp)
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .json(&call_body(7, "tp_list", json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(response["result"]["secret"].is_string(), "{response}");
    let events: std::collections::HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "mcp_auth_atag_events_total")
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == "service" && l.value() == "tp")
        })
        .filter_map(|(key, _, _, value)| {
            let event = key
                .key()
                .labels()
                .find(|l| l.key() == "event")?
                .value()
                .to_owned();
            match value {
                metrics_util::debugging::DebugValue::Counter(n) => Some((event, n)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(events.get("refreshed"), Some(&1), "{events:?}");
    assert_eq!(events.get("injected"), Some(&1), "{events:?}");
    assert!(!events.contains_key("refresh_failed"), "{events:?}");
}

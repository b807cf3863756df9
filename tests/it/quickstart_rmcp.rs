//! The quickstart's rmcp server driven by a real rmcp client, and session binding against the
//! real rmcp session manager.

use jsonwebtoken::Algorithm;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::validate::{JwtKey, JwtValidator};

use crate::quickstart;
use crate::support::*;

struct Quickstart {
    url: String,
    resource: ProtectedResource,
}

async fn start() -> Quickstart {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let resource = ProtectedResource::builder(format!("{base}/mcp"))
        .authorization_server(&base)
        .scopes_supported([quickstart::BASE_SCOPE])
        .build()
        .unwrap();
    let validator = JwtValidator::builder(&base, resource.resource())
        .key(JwtKey::hmac(HMAC_SECRET, Algorithm::HS256).unwrap())
        .build()
        .unwrap();
    spawn(listener, quickstart::app(resource.clone(), validator));
    Quickstart {
        url: format!("{base}/mcp"),
        resource,
    }
}

impl Quickstart {
    fn token(&self, sub: &str, scope: &str) -> String {
        let issuer = self.url.trim_end_matches("/mcp");
        mint_hs256(issuer, self.resource.resource(), sub, scope)
    }
}

#[tokio::test]
async fn rmcp_client_lists_and_calls_tools_and_tool_reads_auth_context() {
    let server = start().await;
    let token = server.token("alice", quickstart::DEMO_SCOPES);
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(server.url.as_str()).auth_header(token),
    );
    let client = ().serve(transport).await.expect("initialize through the bearer layer");
    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    // `purge_all_notes` needs notes:admin: the policy layer hides it from this caller; and
    // `third_party_profile` needs a third-party account, which this stack (external identity
    // provider mode: no ATAG layer) cannot connect.
    assert_eq!(names, ["add_note", "list_notes", "whoami"]);
    let unserved = client
        .call_tool(CallToolRequestParams::new("third_party_profile"))
        .await
        .expect("a tool result, not a JSON-RPC error");
    assert_eq!(unserved.is_error, Some(true));
    let text = serde_json::to_value(&unserved.content).unwrap().to_string();
    assert!(text.contains("no ATAG layer"), "{text}");

    let result = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    let text = serde_json::to_value(&result.content).unwrap().to_string();
    assert!(
        text.contains("subject=alice client=quickstart-dev scopes=mcp:tools"),
        "{text}"
    );

    let args = json!({"text": "buy milk"}).as_object().cloned().unwrap();
    client
        .call_tool(CallToolRequestParams::new("add_note").with_arguments(args))
        .await
        .unwrap();
    let listed = client
        .call_tool(CallToolRequestParams::new("list_notes"))
        .await
        .unwrap();
    assert!(
        serde_json::to_value(&listed.content)
            .unwrap()
            .to_string()
            .contains("buy milk")
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn rmcp_client_without_token_is_refused() {
    let server = start().await;
    let transport = StreamableHttpClientTransport::from_uri(server.url.as_str());
    assert!(().serve(transport).await.is_err());
}

#[tokio::test]
async fn token_without_base_scope_is_refused_with_403() {
    let server = start().await;
    let response = client()
        .post(&server.url)
        .bearer_auth(server.token("alice", "other:scope"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        www_authenticate(&response).contains(r#"scope="mcp:tools", error="insufficient_scope""#)
    );
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

async fn mcp_post(url: &str, token: &str, session: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = client()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_owned());
    if let Some(session) = session {
        req = req.header("mcp-session-id", session);
    }
    req.send().await.unwrap()
}

/// The `data:` payload of the SSE event carrying the JSON-RPC response.
async fn sse_result(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn session_hijacking_with_another_users_token_is_refused() {
    let server = start().await;
    let alice = server.token("alice", "mcp:tools");
    let bob = server.token("bob", "mcp:tools");

    let response = mcp_post(&server.url, &alice, None, INIT).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(
        mcp_post(&server.url, &alice, Some(&session), initialized)
            .await
            .status(),
        202
    );

    let whoami = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#;
    let ok = mcp_post(&server.url, &alice, Some(&session), whoami).await;
    assert_eq!(ok.status(), 200);
    assert!(sse_result(ok).await.to_string().contains("subject=alice"));

    // Bob holds a perfectly valid token and Alice's session id.
    let hijack = mcp_post(&server.url, &bob, Some(&session), whoami).await;
    assert_eq!(hijack.status(), 404);
    let body: Value = hijack.json().await.unwrap();
    assert_eq!(body["error"], "session_not_found");

    // Nor may he end her session.
    let delete = client()
        .delete(&server.url)
        .bearer_auth(&bob)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);

    // Alice's session is untouched; once she ends it, it is gone for her too.
    assert_eq!(
        mcp_post(&server.url, &alice, Some(&session), whoami)
            .await
            .status(),
        200
    );
    let delete = client()
        .delete(&server.url)
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert!(delete.status().is_success(), "{}", delete.status());
    assert_eq!(
        mcp_post(&server.url, &alice, Some(&session), whoami)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn same_user_with_a_new_token_keeps_the_session() {
    let server = start().await;
    let response = mcp_post(&server.url, &server.token("alice", "mcp:tools"), None, INIT).await;
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // A refreshed token (different bytes, same principal) keeps working on the session.
    let refreshed = server.token("alice", "mcp:tools other");
    let ping = r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#;
    assert_eq!(
        mcp_post(&server.url, &refreshed, Some(&session), ping)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn made_up_session_id_is_refused_before_reaching_rmcp() {
    let server = start().await;
    let ping = r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#;
    let response = mcp_post(
        &server.url,
        &server.token("eve", "mcp:tools"),
        Some("guessed-session"),
        ping,
    )
    .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "session_not_found");
}

#[tokio::test]
async fn duplicate_or_malformed_session_id_headers_are_refused() {
    let server = start().await;
    let alice = server.token("alice", "mcp:tools");
    let response = mcp_post(&server.url, &alice, None, INIT).await;
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let ping = r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#;
    let response = client()
        .post(&server.url)
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-session-id", "other")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client()
        .post(&server.url)
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header(
            "mcp-session-id",
            http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        )
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn session_mode_sse_list_is_filtered_and_keeps_event_ids() {
    let server = start().await;
    let demo = server.token("demo", quickstart::DEMO_SCOPES);
    let response = mcp_post(&server.url, &demo, None, INIT).await;
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    mcp_post(&server.url, &demo, Some(&session), initialized).await;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let text = mcp_post(&server.url, &demo, Some(&session), list)
        .await
        .text()
        .await
        .unwrap();
    let event = text
        .split("\n\n")
        .find(|e| e.contains("\"tools\""))
        .unwrap_or_else(|| panic!("no list event in {text}"));
    assert!(!event.contains("purge_all_notes"), "{event}");
    assert!(event.contains("add_note"), "{event}");
    // The SSE event keeps its id (resumption) and stays one event.
    assert!(event.lines().any(|l| l.starts_with("id: ")), "{event}");
    assert_eq!(
        event.lines().filter(|l| l.starts_with("data:")).count(),
        1,
        "{event}"
    );
}

/// Submits a prefilled dev login form of the server at `base` as shown, then approves the
/// consent page: the person's clicks. Returns the redirect back to the client.
async fn submit_prefilled_login_and_approve(
    browser: &reqwest::Client,
    base: &str,
    login: &str,
) -> reqwest::Response {
    let (user, password) = (form_field(login, "username"), form_field(login, "password"));
    sign_in_and_approve(browser, base, login, &user, &password).await
}

/// rmcp's own OAuth client (an independent implementation) against the quickstart's embedded
/// stack: it discovers the authorization server from the 401, registers itself, is sent to our
/// dev login (driven here like a browser), exchanges the code with PKCE, and calls tools; a tool
/// needing more scope answers 403 step-up.
#[tokio::test]
async fn rmcp_oauth_client_discovers_registers_logs_in_and_calls_tools() {
    use rmcp::transport::auth::{AuthClient, AuthorizationRequest, OAuthState};

    // The quickstart's stack, with its stand-in third party on another port.
    let QuickstartStack {
        base,
        mcp_url,
        third_party: third_party_url,
    } = start_quickstart().await;

    let mut oauth = OAuthState::new(mcp_url.as_str(), None).await.unwrap();
    oauth
        .start_authorization(
            AuthorizationRequest::new("http://127.0.0.1:4567/callback")
                .with_client_name("rmcp e2e")
                .with_scopes(["mcp:tools", "notes:read", "notes:write"]),
        )
        .await
        .expect("discovery and dynamic registration");
    let authorize_url = oauth.get_authorization_url().await.unwrap();

    // The person's part, in a cookie-keeping browser that does not follow redirects.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = browser
        .get(&authorize_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.contains("name=\"csrf\""), "{authorize_url}\n{login}");
    // The quickstart prefills the form: submitting it as shown signs in.
    assert!(login.contains("name=\"username\" value=\"demo\""));
    let redirect = submit_prefilled_login_and_approve(&browser, &base, &login).await;
    let callback = redirect.headers()["location"].to_str().unwrap().to_owned();
    oauth
        .handle_callback_url(&callback)
        .await
        .expect("code exchange with PKCE and iss check");

    let manager = oauth.into_authorization_manager().unwrap();
    let transport = StreamableHttpClientTransport::with_client(
        AuthClient::new(reqwest::Client::new(), manager),
        StreamableHttpClientTransportConfig::with_uri(mcp_url.as_str()),
    );
    let client = ().serve(transport).await.expect("initialize with the issued token");
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["add_note", "list_notes", "third_party_profile", "whoami"]
    );
    let who = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    let text = serde_json::to_value(&who.content).unwrap().to_string();
    assert!(text.contains("subject=demo"), "{text}");
    assert!(
        client
            .call_tool(CallToolRequestParams::new("purge_all_notes"))
            .await
            .is_err()
    );

    // The tool acting at the third party: rmcp's client declared no URL elicitation, so the
    // first call answers with a tool error carrying the connect link.
    let first = client
        .call_tool(CallToolRequestParams::new("third_party_profile"))
        .await
        .unwrap();
    assert_eq!(first.is_error, Some(true));
    let text = serde_json::to_value(&first.content).unwrap().to_string();
    let start = text.find(&format!("{base}/atag/connect/")).unwrap();
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\\')
        .collect();
    // The person opens it in the browser signed in at the MCP server, signs in at the third
    // party (prefilled too), approves, and lands on our callback.
    let to_third_party = browser.get(&link).send().await.unwrap();
    assert_eq!(to_third_party.status(), 303);
    let tp_login = browser
        .get(to_third_party.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let back = submit_prefilled_login_and_approve(&browser, &third_party_url, &tp_login).await;
    let connected = browser
        .get(back.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(connected.status(), 200);
    let again = client
        .call_tool(CallToolRequestParams::new("third_party_profile"))
        .await
        .unwrap();
    let text = serde_json::to_value(&again.content).unwrap().to_string();
    assert!(text.contains("At the third party you are"), "{text}");
    assert!(text.contains("demo"), "{text}");
    client.cancel().await.unwrap();
}

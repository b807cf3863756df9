//! The tool policy layer in front of a real rmcp server, over real HTTP.

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_router};
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_mcp_auth::policy::{
    ClaimCondition, Decision, GroupMapping, Kind, PolicyConfig, Rule, ToolPolicy,
};
use tower_mcp_auth::validate::{JwtKey, JwtValidator};
use tower_mcp_auth::{AuthContext, BearerLayer, ProtectedResource, Scopes};

use crate::support::*;

#[derive(Clone)]
struct Notes;

#[tool_router(server_handler)]
impl Notes {
    #[tool(description = "read")]
    async fn read_notes(&self) -> String {
        "the notes".into()
    }
    #[tool(description = "write")]
    async fn write_note(&self) -> String {
        "written".into()
    }
    #[tool(description = "delete")]
    async fn delete_note(&self) -> String {
        "deleted".into()
    }
    #[tool(description = "reset")]
    async fn admin_reset(&self) -> String {
        "reset".into()
    }
    #[tool(description = "covered by no rule")]
    async fn misc(&self) -> String {
        "misc".into()
    }
}

fn notes_policy() -> ToolPolicy {
    ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .tool("read_*", ["notes:read"])
        .tool("write_note", ["notes:write"])
        .tool_regex("^delete_.*$", ["notes:admin"])
        .rule(
            Rule::tool("admin_reset")
                .all_of(["notes:admin"])
                .when(ClaimCondition::ends_with("email", "@corp.example")),
        )
        .resource("file:///private/*", ["files:private"])
        .method("GET", ["mcp:stream"])
        .scope_separator(":")
        .groups(GroupMapping {
            claim: "groups".into(),
            scopes: [("mcp-admins".to_owned(), vec!["notes:admin".to_owned()])].into(),
            tool_group_template: Some("mcp-server-notes-tool-{tool}".into()),
        })
        .build()
        .unwrap()
}

struct Server {
    url: String,
    resource: ProtectedResource,
}

async fn serve(policy: ToolPolicy, json_response: bool, max_body: usize) -> Server {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let resource = ProtectedResource::builder(format!("{base}/mcp"))
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:tools"])
        .build()
        .unwrap();
    let validator = JwtValidator::builder(ISSUER, resource.resource())
        .key(JwtKey::hmac(hmac_secret(Algorithm::HS256), Algorithm::HS256).unwrap())
        .build()
        .unwrap();
    let mcp = StreamableHttpService::new(
        || Ok(Notes),
        Arc::new(NeverSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(json_response)
            .with_sse_keep_alive(None),
    );
    let app = axum::Router::new().nest_service(
        "/mcp",
        ServiceBuilder::new()
            .layer(BearerLayer::new(validator, resource.clone()))
            .layer(policy.layer(&resource).max_body_bytes(max_body))
            .service(mcp),
    );
    spawn(listener, app);
    Server {
        url: format!("{base}/mcp"),
        resource,
    }
}

impl Server {
    fn token(&self, scope: &str, extra: Value) -> String {
        let mut c = claims(self.resource.resource(), "alice", scope);
        if let Value::Object(extra) = extra {
            c.as_object_mut().unwrap().extend(extra);
        }
        sign(Algorithm::HS256, &encoding_key(Algorithm::HS256), None, &c)
    }

    fn metadata_url(&self) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            self.url.trim_end_matches("/mcp")
        )
    }

    async fn post(&self, token: &str, body: &str) -> reqwest::Response {
        self.post_with(token, body, &[]).await
    }

    async fn post_with(
        &self,
        token: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = client()
            .post(&self.url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }
}

fn call(id: u64, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}).to_string()
}

/// The JSON-RPC message of a JSON or SSE response.
async fn message(response: reqwest::Response) -> Value {
    let sse = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream");
    let text = response.text().await.unwrap();
    if !sse {
        return serde_json::from_str(&text).unwrap();
    }
    text.split("\n\n")
        .flat_map(|event| event.lines())
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or(Value::Null)
}

fn tool_names(message: &Value) -> Vec<String> {
    let mut names: Vec<String> = message["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn allowed_call_reaches_the_tool() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let response = server
        .post(
            &server.token("mcp:tools notes:read", json!({})),
            &call(1, "read_notes"),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(message(response).await.to_string().contains("the notes"));
}

#[tokio::test]
async fn denied_call_gets_403_step_up_with_jsonrpc_error() {
    let server = serve(notes_policy(), false, 1 << 20).await;
    let response = server
        .post(
            &server.token("mcp:tools notes:read", json!({})),
            &call(5, "delete_note"),
        )
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        www_authenticate(&response),
        format!(
            r#"Bearer resource_metadata="{}", scope="notes:admin", error="insufficient_scope", error_description="tools/call delete_note requires the scopes: notes:admin""#,
            server.metadata_url()
        )
    );
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": 5, "error": {
            "code": -32003,
            "message": "tools/call delete_note requires the scopes: notes:admin",
            "data": {"required_scopes": ["notes:admin"]}
        }})
    );
}

#[tokio::test]
async fn step_up_token_then_succeeds_first_time() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let refused = server
        .post(
            &server.token("mcp:tools", json!({})),
            &call(1, "write_note"),
        )
        .await;
    let challenge = www_authenticate(&refused);
    let scope = challenge
        .split("scope=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let retried = server
        .post(
            &server.token(&format!("mcp:tools {scope}"), json!({})),
            &call(2, "write_note"),
        )
        .await;
    assert_eq!(retried.status(), 200);
}

#[tokio::test]
async fn tools_list_is_filtered_in_json_mode() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let list = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
    let response = server
        .post(&server.token("mcp:tools notes:read", json!({})), list)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(tool_names(&message(response).await), ["misc", "read_notes"]);
    let response = server
        .post(&server.token("mcp:tools notes", json!({})), list)
        .await;
    // `notes` covers every `notes:*` scope; admin_reset still needs a corporate email.
    assert_eq!(
        tool_names(&message(response).await),
        ["delete_note", "misc", "read_notes", "write_note"]
    );
}

#[tokio::test]
async fn tools_list_is_filtered_in_sse_mode() {
    let server = serve(notes_policy(), false, 1 << 20).await;
    let list = r#"{"jsonrpc":"2.0","id":"l1","method":"tools/list"}"#;
    let response = server
        .post(&server.token("mcp:tools notes:write", json!({})), list)
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(tool_names(&message(response).await), ["misc", "write_note"]);
}

#[tokio::test]
async fn filtered_list_is_cache_private_for_2026_07_28_clients() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let list = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }}})
    .to_string();
    let response = server
        .post_with(
            &server.token("mcp:tools", json!({})),
            &list,
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let message = message(response).await;
    assert_eq!(message["result"]["cacheScope"], "private", "{message}");
    assert_eq!(tool_names(&message), ["misc"]);
}

#[tokio::test]
async fn batch_with_one_forbidden_element_is_refused_whole() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let batch = format!("[{},{}]", call(1, "read_notes"), call(2, "delete_note"));
    let response = server
        .post(&server.token("mcp:tools notes:read", json!({})), &batch)
        .await;
    assert_eq!(response.status(), 403);
    assert!(www_authenticate(&response).contains(r#"scope="notes:admin""#));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], Value::Null);
    // An all-allowed batch is passed on, and rmcp (no batches since 2025-06-18) refuses it.
    let batch = format!("[{},{}]", call(1, "read_notes"), call(2, "misc"));
    let response = server
        .post(&server.token("mcp:tools notes:read", json!({})), &batch)
        .await;
    assert_ne!(response.status(), 200);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let server = serve(notes_policy(), true, 1024).await;
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "read_notes", "arguments": {"pad": "x".repeat(2000)}}})
    .to_string();
    let response = server
        .post(&server.token("mcp:tools notes:read", json!({})), &big)
        .await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn malformed_and_ambiguous_bodies_are_refused() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let token = server.token("mcp:tools notes:read", json!({}));
    let cases = [
        ("{not json", -32700),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_notes","name":"delete_note"}}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_note"]}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            -32600,
        ),
        (
            r#"{"id":1,"method":"tools/call","params":{"name":"delete_note"}}"#,
            -32600,
        ),
    ];
    for (body, code) in cases {
        let response = server.post(&token, body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{body}");
    }
    let response = client()
        .post(&server.url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(call(1, "delete_note"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn case_and_unicode_tricks_do_not_slip_through() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let token = server.token("mcp:tools notes:read", json!({}));
    // A method spelled in another case.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"delete_note"}}"#;
    assert_eq!(server.post(&token, body).await.status(), 400);
    // A tool name in another case must pass the rules of the lower-case name too.
    let response = server.post(&token, &call(1, "Delete_Note")).await;
    assert_eq!(response.status(), 403);
    assert!(www_authenticate(&response).contains(r#"scope="notes:admin""#));
    // JSON escapes are decoded before matching.
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0064elete_note"}}"#;
    assert_eq!(server.post(&token, body).await.status(), 403);
    // Fullwidth letters and other Unicode forms of a name are refused outright.
    for name in ["ｄelete_note", "delete\u{200b}_note", "dele\u{0301}te_note"] {
        let response = server.post(&token, &call(1, name)).await;
        assert_eq!(response.status(), 403, "{name}");
        assert!(
            response.headers().get("www-authenticate").is_none(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn claim_conditions_are_enforced() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let outsider = server.token(
        "mcp:tools notes:admin",
        json!({"email": "eve@evil.example"}),
    );
    let response = server.post(&outsider, &call(1, "admin_reset")).await;
    assert_eq!(response.status(), 403);
    // No scope can help, so no step-up challenge.
    assert!(response.headers().get("www-authenticate").is_none());
    let insider = server.token(
        "mcp:tools notes:admin",
        json!({"email": "ann@corp.example"}),
    );
    assert_eq!(
        server
            .post(&insider, &call(2, "admin_reset"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn group_mapping_grants_scopes_and_tools() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let admin = server.token("mcp:tools", json!({"groups": ["mcp-admins"]}));
    assert_eq!(
        server.post(&admin, &call(1, "delete_note")).await.status(),
        200
    );
    let one_tool = server.token(
        "mcp:tools",
        json!({"groups": ["mcp-server-notes-tool-write_note"]}),
    );
    assert_eq!(
        server
            .post(&one_tool, &call(1, "write_note"))
            .await
            .status(),
        200
    );
    assert_eq!(
        server
            .post(&one_tool, &call(2, "delete_note"))
            .await
            .status(),
        403
    );
    let other_server = server.token(
        "mcp:tools",
        json!({"groups": ["mcp-server-other-tool-write_note"]}),
    );
    assert_eq!(
        server
            .post(&other_server, &call(1, "write_note"))
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn header_disagreeing_with_body_is_400_header_mismatch() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let token = server.token("mcp:tools notes:read notes:admin", json!({}));
    let response = server
        .post_with(
            &token,
            &call(4, "delete_note"),
            &[("mcp-name", "read_notes")],
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32020);
    assert_eq!(body["id"], 4);
    let response = server
        .post_with(
            &token,
            &call(4, "delete_note"),
            &[("mcp-method", "tools/list")],
        )
        .await;
    assert_eq!(response.status(), 400);
    // Base64-encoded header values are decoded before comparing.
    let response = server
        .post_with(
            &token,
            &call(4, "read_notes"),
            &[("mcp-name", "=?base64?cmVhZF9ub3Rlcw==?=")],
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn default_deny_without_default_scopes() {
    let policy = ToolPolicy::builder()
        .tool("read_*", ["notes:read"])
        .build()
        .unwrap();
    let server = serve(policy, true, 1 << 20).await;
    let token = server.token("mcp:tools notes:read everything", json!({}));
    assert_eq!(
        server.post(&token, &call(1, "read_notes")).await.status(),
        200
    );
    let response = server.post(&token, &call(2, "misc")).await;
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("www-authenticate").is_none());
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("default deny")
    );
    let list = r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#;
    assert_eq!(
        tool_names(&message(server.post(&token, list).await).await),
        ["read_notes"]
    );
}

#[tokio::test]
async fn resources_read_is_judged_by_uri_and_get_by_method_rule() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let token = server.token("mcp:tools", json!({}));
    let read = r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///private/keys.txt"}}"#;
    let response = server.post(&token, read).await;
    assert_eq!(response.status(), 403);
    assert!(www_authenticate(&response).contains(r#"scope="files:private""#));
    let response = client()
        .get(&server.url)
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(www_authenticate(&response).contains(r#"scope="mcp:stream""#));
}

#[tokio::test]
async fn notifications_and_responses_pass_untouched() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let token = server.token("mcp:tools", json!({}));
    let notification = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(server.post(&token, notification).await.status(), 202);
    let response = r#"{"jsonrpc":"2.0","id":"srv-1","result":{}}"#;
    // The layer passes it on; the stateless rmcp server itself declines client responses.
    let body: Value = server.post(&token, response).await.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "stateless server does not accept JSON-RPC responses"
    );
}

fn ctx(scopes: &str) -> AuthContext {
    AuthContext::from_claims(
        json!({"sub": "u", "scope": scopes})
            .as_object()
            .unwrap()
            .clone(),
    )
    .unwrap()
}

#[test]
fn precedence_table() {
    let policy = ToolPolicy::builder()
        .default_scopes(["default"])
        .rule(Rule::tool_regex("^notes_.*$").all_of(["regex"]))
        .tool("notes_*", ["glob"])
        .tool("notes_admin_*", ["longer-glob"])
        .tool("notes_read", ["exact"])
        .deny_tool("notes_admin_drop")
        .rule(Rule::tool_regex("^notes_secret$").deny())
        .build()
        .unwrap();
    let needs = |tool: &str| match policy.decide(Kind::Tool, tool, &ctx("")) {
        Decision::InsufficientScope { scopes } => scopes.to_string(),
        Decision::Forbidden { reason } => format!("forbidden: {reason}"),
        Decision::Allow => "allow".into(),
    };
    let table = [
        ("notes_read", "exact"),             // exact over glob and regex
        ("notes_list", "glob"),              // glob over regex
        ("notes_admin_view", "longer-glob"), // the more literal glob
        ("notes_admin_drop", "forbidden: denied by policy"), // deny over a matching glob
        ("notes_secret", "forbidden: denied by policy"), // deny by regex over the glob
        ("other", "default"),                // no rule: the default scopes
    ];
    for (tool, expected) in table {
        assert_eq!(needs(tool), expected, "{tool}");
    }
    assert!(policy.permits(Kind::Tool, "notes_read", &ctx("exact")));
    assert!(!policy.permits(Kind::Tool, "notes_read", &ctx("glob regex")));
}

#[test]
fn scope_hierarchy_and_implications() {
    let policy = ToolPolicy::builder()
        .tool("t", ["files:read:own"])
        .tool("u", ["notes:write"])
        .scope_separator(":")
        .scope_implies("admin", ["notes:write"])
        .build()
        .unwrap();
    for granted in ["files", "files:read", "files:read:own"] {
        assert!(policy.permits(Kind::Tool, "t", &ctx(granted)), "{granted}");
    }
    for granted in ["files:write", "file", "files:readx", "fil"] {
        assert!(!policy.permits(Kind::Tool, "t", &ctx(granted)), "{granted}");
    }
    assert!(policy.permits(Kind::Tool, "u", &ctx("admin")));
    assert_eq!(
        policy.decide(Kind::Tool, "u", &ctx("notes:read")),
        Decision::InsufficientScope {
            scopes: Scopes::new(["notes:write"])
        }
    );
}

#[test]
fn policy_loads_from_configuration() {
    let config: PolicyConfig = serde_json::from_value(json!({
        "default_scopes": ["mcp:tools"],
        "scope_separator": ":",
        "rules": [
            {"glob": "read_*", "all_of": ["notes:read"]},
            {"regex": "^delete_.*$", "any_of": ["notes:admin", "root"]},
            {"kind": "resource", "glob": "file:///private/*", "all_of": ["files"]},
            {"name": "admin_reset", "all_of": ["notes:admin"],
             "claims": [{"op": "contains", "claim": "groups", "value": "mcp-admin"}]},
            {"name": "shutdown", "deny": true}
        ]
    }))
    .unwrap();
    let policy = ToolPolicy::from_config(config).unwrap();
    assert!(policy.permits(Kind::Tool, "read_x", &ctx("notes")));
    assert!(policy.permits(Kind::Tool, "delete_x", &ctx("root")));
    assert_eq!(
        policy.decide(Kind::Tool, "delete_x", &ctx("")),
        Decision::InsufficientScope {
            scopes: Scopes::new(["notes:admin"])
        }
    );
    assert!(!policy.permits(Kind::Tool, "shutdown", &ctx("mcp:tools root notes")));
    assert!(!policy.permits(Kind::Resource, "file:///private/a", &ctx("mcp:tools")));
    assert!(
        ToolPolicy::from_config(
            serde_json::from_value(json!({
                "rules": [{"name": "a", "glob": "b*"}]
            }))
            .unwrap()
        )
        .is_err()
    );
    assert!(
        ToolPolicy::builder()
            .tool_regex("([", ["x"])
            .build()
            .is_err()
    );
    assert!(
        ToolPolicy::builder()
            .tool("x", ["bad scope"])
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn list_with_float_id_is_still_filtered() {
    // rmcp answers `"id": 1.0` as `"id": 1`; the filter must not depend on the id at all.
    let server = serve(notes_policy(), true, 1 << 20).await;
    for id in ["1.0", "1e0", "-0"] {
        let list = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
        let response = server
            .post(&server.token("mcp:tools", json!({})), &list)
            .await;
        assert_eq!(response.status(), 200, "{id}");
        assert_eq!(tool_names(&message(response).await), ["misc"], "{id}");
    }
}

#[tokio::test]
async fn method_and_tool_scopes_come_in_one_challenge() {
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .method("tools/call", ["mcp:call"])
        .tool("delete_note", ["notes:admin"])
        .build()
        .unwrap();
    let server = serve(policy, true, 1 << 20).await;
    let response = server
        .post(
            &server.token("mcp:tools", json!({})),
            &call(1, "delete_note"),
        )
        .await;
    assert_eq!(response.status(), 403);
    assert!(www_authenticate(&response).contains(r#"scope="mcp:call notes:admin""#));
    let retried = server
        .post(
            &server.token("mcp:tools mcp:call notes:admin", json!({})),
            &call(2, "delete_note"),
        )
        .await;
    assert_eq!(retried.status(), 200);
}

#[tokio::test]
async fn resource_uri_path_tricks_are_refused() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let token = server.token("mcp:tools", json!({}));
    for uri in [
        "file:///public/../private/keys.txt",
        "file:///%70rivate/keys.txt%2e",
        "file:///public/%2e%2e/private/keys.txt",
        "FILE:///private/keys.txt",
        "file:///public/./../private/keys.txt",
    ] {
        let read =
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}})
                .to_string();
        let status = server.post(&token, &read).await.status();
        assert!(status == 400 || status == 403, "{uri}: {status}");
    }
}

#[tokio::test]
async fn other_methods_naming_protected_things_are_judged() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let token = server.token("mcp:tools", json!({}));
    let bodies = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "file:///private/k"}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "completion/complete",
               "params": {"ref": {"type": "ref/resource", "uri": "file:///private/k"}, "argument": {"name": "a", "value": "b"}}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "skills/get", "params": {"uri": "file:///private/k"}}),
        // A notification-shaped tools/call (null id) is judged like any other.
        json!({"jsonrpc": "2.0", "id": null, "method": "tools/call", "params": {"name": "delete_note"}}),
    ];
    for body in bodies {
        let response = server.post(&token, &body.to_string()).await;
        assert_eq!(response.status(), 403, "{body}");
    }
}

#[tokio::test]
async fn unusual_http_methods_are_refused() {
    let server = serve(notes_policy(), true, 1 << 20).await;
    let response = client()
        .put(&server.url)
        .bearer_auth(server.token("mcp:tools", json!({})))
        .body(call(1, "delete_note"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[test]
fn every_decision_is_an_audit_event() {
    use tower::{Layer, ServiceExt};
    let capture = AuditLog::default();
    let subscriber = capture.subscriber();
    let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
        .authorization_server(ISSUER)
        .build()
        .unwrap();
    let service = notes_policy().layer(&resource).layer(tower::service_fn(
        |_req: http::Request<http_body_util::Full<bytes::Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"{}"),
            )))
        },
    ));
    let ctx = AuthContext::from_claims(
        json!({"sub": "alice", "client_id": "cli-1", "scope": "mcp:tools notes:read"})
            .as_object()
            .unwrap()
            .clone(),
    )
    .unwrap();
    let request = |tool: &str| {
        let mut req = http::Request::post("/mcp")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(call(1, tool))))
            .unwrap();
        req.extensions_mut().insert(ctx.clone());
        req
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let allowed = service
                .clone()
                .oneshot(request("read_notes"))
                .await
                .unwrap();
            assert_eq!(allowed.status(), 200);
            let denied = service
                .clone()
                .oneshot(request("delete_note"))
                .await
                .unwrap();
            assert_eq!(denied.status(), 403);
        })
    });
    let log = capture.text();
    let lines: Vec<&str> = log.lines().collect();
    let allow = lines
        .iter()
        .find(|l| l.contains("read_notes"))
        .expect("allow event");
    assert!(
        allow.contains("DEBUG") && allow.contains("decision=\"allow\""),
        "{allow}"
    );
    assert!(
        allow.contains("subject=\"alice\"") && allow.contains("client_id=\"cli-1\""),
        "{allow}"
    );
    let deny = lines
        .iter()
        .find(|l| l.contains("delete_note"))
        .expect("deny event");
    assert!(
        deny.contains("INFO") && deny.contains("decision=\"deny\""),
        "{deny}"
    );
    assert!(
        deny.contains("method=\"tools/call\"") && deny.contains("reason=\"insufficient scope\""),
        "{deny}"
    );
}

type Answer = http::Response<http_body_util::Full<bytes::Bytes>>;

/// A service answering every request with `body` as `content_type`.
#[derive(Clone)]
struct Answering {
    content_type: &'static str,
    body: &'static str,
}

impl tower::Service<http::Request<http_body_util::Full<bytes::Bytes>>> for Answering {
    type Response = Answer;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Answer, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<http_body_util::Full<bytes::Bytes>>) -> Self::Future {
        std::future::ready(Ok(http::Response::builder()
            .header("content-type", self.content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                self.body.as_bytes(),
            )))
            .unwrap()))
    }
}

async fn list_through_policy(content_type: &'static str, body: &'static str) -> (u16, String) {
    answer_through_policy(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        content_type,
        body,
    )
    .await
}

/// `request` through the notes policy to a server answering `body`: the status and the body the
/// caller gets.
async fn answer_through_policy(
    request: &'static str,
    content_type: &'static str,
    body: &'static str,
) -> (u16, String) {
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};
    let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
        .authorization_server("https://auth.example.com")
        .build()
        .unwrap();
    let service = notes_policy()
        .layer(&resource)
        .layer(Answering { content_type, body });
    let mut request = http::Request::post("https://mcp.example.com/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(axum::body::Body::from(request))
        .unwrap();
    request.extensions_mut().insert(ctx("mcp:tools"));
    let response = service.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let text = match response.into_body().collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(e) => format!("stream error: {e}"),
    };
    (status, text)
}

#[tokio::test]
async fn unparseable_json_list_response_is_refused_not_passed_unfiltered() {
    // Invalid JSON that still names the hidden tool: it must not reach the caller.
    let (status, body) = list_through_policy(
        "application/json",
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_note"}]}"#,
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("delete_note"), "{body}");
}

/// A list the caller may not see, answered where a list could hide: a batch holding a list
/// request beside a call, a method the layer does not know, a task's result. Each is filtered;
/// only answers the schema never makes lists of (a tool's output) pass unread.
#[tokio::test]
async fn hidden_tools_cannot_ride_on_an_answer_the_filter_skips() {
    const HIDDEN: &str =
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_note"},{"name":"whoami"}]}}"#;
    const BATCH_ANSWER: &str = r#"[{"jsonrpc":"2.0","id":1,"result":{"content":[]}},{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"delete_note"},{"name":"whoami"}]}}]"#;
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami"}},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
    let (status, body) = answer_through_policy(batch, "application/json", BATCH_ANSWER).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("delete_note") && body.contains("whoami"),
        "{body}"
    );
    for request in [
        r#"{"jsonrpc":"2.0","id":1,"method":"custom/list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tasks/result","params":{"taskId":"t1"}}"#,
    ] {
        let (status, body) = answer_through_policy(request, "application/json", HIDDEN).await;
        assert_eq!(status, 200, "{request}: {body}");
        assert!(
            !body.contains("delete_note") && body.contains("whoami"),
            "{request}: {body}"
        );
    }
}

/// A tool's output is not read, rewritten or buffered by the list filter: it reaches the caller
/// byte for byte, whatever words it holds.
#[tokio::test]
async fn a_tool_result_passes_the_list_filter_untouched() {
    const OUTPUT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""tools": a word a tool may say"}],"tools":["not","a","list","result"]}}"#;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami"}}"#;
    let (status, body) = answer_through_policy(call, "application/json", OUTPUT).await;
    assert_eq!(status, 200);
    assert_eq!(body, OUTPUT);
}

#[tokio::test]
async fn unparseable_sse_list_event_ends_the_stream_instead_of_passing() {
    let (status, body) = list_through_policy(
        "text/event-stream",
        "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_note\"}]\n\n",
    )
    .await;
    assert_eq!(status, 200, "the stream had started");
    assert!(body.starts_with("stream error"), "{body}");
    assert!(!body.contains("delete_note"), "{body}");
}

//! Gateway mode (feature `gateway`): one authorization server and one protected route per
//! backend in front of real rmcp servers the test starts on loopback (a stateful one, a
//! stateless one), plus misbehaving backends (dead, slow, rude, garbled). Clients speak real
//! HTTP to the gateway; the backends show what they received.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::HeaderName;
use rmcp::handler::server::tool::Extension;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, tool, tool_router};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tower_mcp_auth::atag::{ExternalService, TokenSet};
use tower_mcp_auth::gateway::{Backend, Gateway};
use tower_mcp_auth::policy::ToolPolicy;
use tower_mcp_auth::server::AuthServer;

use crate::code_flow::{VERIFIER, challenge, query};
use crate::support::*;

const ACCEPT: &str = "application/json, text/event-stream";
const REDIRECT: &str = "http://127.0.0.1:4567/callback";
const THIRD_PARTY_SECRET: &str = "tp-token-of-alice";

/// A backend rmcp server: shows the headers it received, streams, sleeps, answers big.
#[derive(Clone)]
struct Tools {
    name: &'static str,
    release: Arc<Notify>,
}

fn received(name: &str, parts: &http::request::Parts) -> String {
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                json!(v.to_str().unwrap_or("<binary>")),
            )
        })
        .collect();
    json!({"backend": name, "headers": headers}).to_string()
}

#[tool_router(server_handler)]
impl Tools {
    #[tool(description = "What the gateway sent this backend")]
    async fn whoami(&self, Extension(parts): Extension<http::request::Parts>) -> String {
        received(self.name, &parts)
    }

    #[tool(description = "Needs the third-party service: shows what the gateway sent")]
    async fn tp_whoami(&self, Extension(parts): Extension<http::request::Parts>) -> String {
        received(self.name, &parts)
    }

    #[tool(description = "Writes a note")]
    async fn notes_write(&self) -> String {
        "written".into()
    }

    #[tool(description = "Reports progress, then waits until the test releases it")]
    async fn stream(&self, ctx: RequestContext<RoleServer>) -> String {
        if let Some(token) = ctx.meta.get_progress_token() {
            let _ = ctx
                .peer
                .notify_progress(rmcp::model::ProgressNotificationParam::new(token, 1.0))
                .await;
        }
        self.release.notified().await;
        "finished".into()
    }

    #[tool(description = "Answers after five seconds")]
    async fn slow(&self) -> String {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "late".into()
    }

    #[tool(description = "Answers two megabytes")]
    async fn big(&self) -> String {
        "x".repeat(2 << 20)
    }
}

/// Serves `tools` at `http://127.0.0.1:{port}/mcp`, stateful or stateless (JSON answers).
async fn rmcp_backend(tools: Tools, stateful: bool) -> String {
    let (listener, addr) = listener().await;
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(["127.0.0.1"])
        .with_sse_keep_alive(None);
    let app = if stateful {
        let service = StreamableHttpService::new(
            move || Ok(tools.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        axum::Router::new().nest_service("/mcp", service)
    } else {
        let service = StreamableHttpService::new(
            move || Ok(tools.clone()),
            Arc::new(NeverSessionManager::default()),
            config
                .with_legacy_session_mode(false)
                .with_json_response(true),
        );
        axum::Router::new().nest_service("/mcp", service)
    };
    spawn(listener, app);
    format!("http://{addr}/mcp")
}

/// A backend that misbehaves on purpose, chosen by the body: truncates a list, sets a cookie,
/// or demands credentials of its own.
async fn rude_backend() -> String {
    use axum::response::IntoResponse;
    let (listener, addr) = listener().await;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: String| async move {
            let json = (http::header::CONTENT_TYPE, "application/json");
            if body.contains("tools/list") {
                // A list cut off mid-way: the policy filter cannot read it.
                return (
                    [json],
                    r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"x""#,
                )
                    .into_response();
            }
            if body.contains("redirect_me") {
                let location = (http::header::LOCATION, "http://10.1.2.3:8080/internal");
                return (http::StatusCode::TEMPORARY_REDIRECT, [location], "").into_response();
            }
            if body.contains("set_cookie") {
                let cookie = (http::header::SET_COOKIE, "__Host-session=planted; Path=/");
                return (
                    [json, cookie],
                    r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#,
                )
                    .into_response();
            }
            let challenge = (http::header::WWW_AUTHENTICATE, r#"Bearer realm="backend""#);
            (http::StatusCode::UNAUTHORIZED, [challenge], "").into_response()
        }),
    );
    spawn(listener, app);
    format!("http://{addr}/mcp")
}

/// A "backend" that answers every connection with bytes that are not HTTP.
async fn garbage_backend() -> String {
    let (listener, addr) = listener().await;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket
                    .write_all(b"NOT HTTP AT ALL\r\n\x00\xff\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://{addr}/mcp")
}

/// A port nothing listens on.
async fn dead_backend() -> String {
    let (listener, addr) = listener().await;
    drop(listener);
    format!("http://{addr}/mcp")
}

struct World {
    base: String,
    gateway: Gateway,
    release: Arc<Notify>,
}

impl World {
    fn url(&self, backend: &str) -> String {
        format!("{}/{backend}/mcp", self.base)
    }
}

/// The gateway on a loopback port, in front of: `notes` (stateful rmcp; `notes_write` needs
/// `notes:write`, `tp_*` needs the third party), `search` (stateless rmcp, 300 ms to answer,
/// 1 MiB answers at most), `rude`, `garbage` and `dead`.
async fn world_with(
    configure: impl FnOnce(
        tower_mcp_auth::gateway::GatewayBuilder,
    ) -> tower_mcp_auth::gateway::GatewayBuilder,
) -> World {
    let release = Arc::new(Notify::new());
    let notes = rmcp_backend(
        Tools {
            name: "notes",
            release: release.clone(),
        },
        true,
    )
    .await;
    let search = rmcp_backend(
        Tools {
            name: "search",
            release: release.clone(),
        },
        false,
    )
    .await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let notes_policy = ToolPolicy::builder()
        .default_scopes(["notes:read"])
        .tool("notes_write", ["notes:write"])
        .tool("tp_*", ["notes:read"])
        .needs_service("tp", ["repo"])
        .build()
        .unwrap();
    let search_policy = ToolPolicy::builder()
        .default_scopes(["search"])
        .deny_tool("notes_write")
        .build()
        .unwrap();
    let auth = AuthServer::builder(&base)
        .dev_user("alice", "wonderland")
        .dev_user("bob", "builder")
        .public_client(
            "app",
            [REDIRECT],
            ["notes:read", "notes:write", "search", "misc"],
        );
    let third_party = ExternalService::custom(
        "tp",
        "https://tp.example/authorize",
        "https://tp.example/token",
        "gateway",
        None,
    );
    let builder = Gateway::builder(auth)
        .backend(
            Backend::new("notes", notes)
                .description("Team notes")
                .policy(notes_policy)
                .require_scopes(["notes:read"]),
        )
        .backend(
            Backend::new("search", search)
                .policy(search_policy)
                .response_timeout(Duration::from_millis(300))
                .max_response_bytes(1 << 20),
        )
        .backend(Backend::new("rude", rude_backend().await))
        .backend(Backend::new("garbage", garbage_backend().await))
        .backend(Backend::new("dead", dead_backend().await))
        .third_party(third_party)
        .allow_loopback_origins();
    let gateway = configure(builder).build().unwrap();
    spawn_with_peer(listener, gateway.router());
    World {
        base,
        gateway,
        release,
    }
}

async fn world() -> World {
    world_with(|b| b).await
}

/// Signs `user` in at the gateway and returns an access token for `backend` with `scope`.
async fn token(world: &World, user: &str, password: &str, backend: &str, scope: &str) -> String {
    let grant = CodeGrant {
        authorize_at: &world.base,
        redeem_at: &world.base,
        client_id: "app",
        resource: &world.url(backend),
        scope,
    };
    grant.token(user, password).await
}

/// An authorization code grant driven like a person and a client would: sign-in and consent
/// at `authorize_at` (the dev login), the code redeemed at `redeem_at` (another replica, say).
pub(crate) struct CodeGrant<'a> {
    pub authorize_at: &'a str,
    pub redeem_at: &'a str,
    pub client_id: &'a str,
    pub resource: &'a str,
    pub scope: &'a str,
}

impl CodeGrant<'_> {
    /// The access token `user` gets.
    pub async fn token(&self, user: &str, password: &str) -> String {
        let browser = browser();
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", self.authorize_at)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", self.client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("code_challenge", &challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256")
            .append_pair("scope", self.scope)
            .append_pair("resource", self.resource);
        let html = browser
            .get(url.as_str())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let back = sign_in_and_approve(&browser, self.authorize_at, &html, user, password).await;
        let code = query(back.headers()["location"].to_str().unwrap())["code"].clone();
        let tokens: Value = client()
            .post(format!("{}/oauth/token", self.redeem_at))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", self.client_id),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("resource", self.resource),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {tokens}"))
            .to_owned()
    }
}

/// Registers a public client at `base` (RFC 7591) redirecting to the tests' callback.
pub(crate) async fn register_public_client(base: &str) -> String {
    let registered: Value = client()
        .post(format!("{base}/oauth/register"))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    registered["client_id"].as_str().unwrap().to_owned()
}

/// A JSON-RPC request to `backend` through the gateway.
fn post(world: &World, backend: &str, token: &str, body: &Value) -> reqwest::RequestBuilder {
    client()
        .post(world.url(backend))
        .bearer_auth(token)
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "2025-06-18")
        .json(body)
}

fn call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": {}}})
}

/// The JSON-RPC message of a response, JSON or SSE (the last `data:` line holding an `id`).
async fn message(response: reqwest::Response) -> Value {
    let is_sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    if !is_sse {
        return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    }
    text.lines()
        .rev()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|m| m.get("id").is_some())
        .unwrap_or_else(|| panic!("no message in {text}"))
}

/// Opens a stateful session at `backend` (initialize + initialized); its id.
async fn open_session(world: &World, backend: &str, token: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "gateway-test", "version": "1"}}});
    let response = post(world, backend, token, &init).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(message(response).await["result"]["serverInfo"].is_object());
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = post(world, backend, token, &initialized)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    session
}

/// The headers a backend's `whoami`-style tool reported.
fn reported(answer: &Value) -> Value {
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {answer}"));
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn each_backend_is_its_own_resource_and_a_token_for_one_is_refused_by_another() {
    let world = world().await;
    let notes_token = token(&world, "alice", "wonderland", "notes", "notes:read").await;

    let session = open_session(&world, "notes", &notes_token).await;
    let answer = message(
        post(&world, "notes", &notes_token, &call(1, "whoami"))
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reported(&answer)["backend"], "notes");

    // The same token at another backend: wrong audience, a 401 naming that backend's metadata.
    let refused = post(&world, "search", &notes_token, &call(1, "whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = www_authenticate(&refused);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    let search_metadata = format!(
        "{}/.well-known/oauth-protected-resource/search/mcp",
        world.base
    );
    assert!(
        challenge.contains(&format!("resource_metadata=\"{search_metadata}\"")),
        "{challenge}"
    );

    // Each backend's metadata names its own resource and the gateway as authorization server.
    let document = get_json(&search_metadata).await;
    assert_eq!(document["resource"], world.url("search"));
    assert_eq!(document["authorization_servers"], json!([world.base]));
    let notes_document = get_json(&format!(
        "{}/.well-known/oauth-protected-resource/notes/mcp",
        world.base
    ))
    .await;
    assert_eq!(notes_document["resource"], world.url("notes"));
    assert_eq!(notes_document["resource_name"], "Team notes");
    assert_eq!(
        world.gateway.resource("notes").unwrap().resource(),
        world.url("notes")
    );

    // Without a token: the challenge of the backend asked for.
    let anonymous = client()
        .post(world.url("notes"))
        .json(&call(1, "whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        www_authenticate(&anonymous).contains("/.well-known/oauth-protected-resource/notes/mcp")
    );
}

#[tokio::test]
async fn backends_get_user_headers_never_the_clients_token_and_forged_headers_are_replaced() {
    let world = world().await;
    let token = token(&world, "alice", "wonderland", "search", "search").await;
    let answer = message(
        post(&world, "search", &token, &call(1, "whoami"))
            .header("x-mcp-user-subject", "admin")
            .header("x-mcp-user-email", "ceo@example.com")
            .header("x-mcp-user-provider", "corp-sso")
            .header("x-mcp-service-token", "Bearer forged")
            .header("cookie", "__Host-session=the-users-session")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let headers = &reported(&answer)["headers"];
    assert_eq!(headers["x-mcp-user-subject"], "alice");
    assert_eq!(headers["x-mcp-user-provider"], "local");
    assert_eq!(headers["x-mcp-client-id"], "app");
    assert_eq!(headers["x-mcp-user-scopes"], "search");
    // Dev users have no email claim: the forged one is removed, not passed on.
    assert!(headers.get("x-mcp-user-email").is_none(), "{headers}");
    for never in [
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-mcp-service-token",
    ] {
        assert!(
            headers.get(never).is_none(),
            "{never} reached the backend: {headers}"
        );
    }
    assert!(
        !headers.to_string().contains(&token),
        "the client's token reached the backend"
    );
}

#[tokio::test]
async fn a_third_party_token_reaches_only_the_backend_whose_tool_needs_it() {
    // The servers run on this test's thread: its recorder sees their metrics.
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let world = world().await;
    let tokens = TokenSet {
        access_token: THIRD_PARTY_SECRET.into(),
        refresh_token: None,
        expires_at: None,
        scopes: vec!["repo".into()],
    };
    let vault = world.gateway.atag().unwrap().vault();
    vault
        .put("alice", "tp", &tokens, Duration::from_secs(3600))
        .await
        .unwrap();
    let notes_token = token(&world, "alice", "wonderland", "notes", "notes:read").await;
    let session = open_session(&world, "notes", &notes_token).await;
    let send = |tool: &'static str| {
        post(&world, "notes", &notes_token, &call(1, tool))
            .header("mcp-session-id", &session)
            .send()
    };
    let with_service = reported(&message(send("tp_whoami").await.unwrap()).await);
    assert_eq!(
        with_service["headers"]["x-mcp-service-token"],
        format!("Bearer {THIRD_PARTY_SECRET}")
    );
    let without = reported(&message(send("whoami").await.unwrap()).await);
    assert!(
        without["headers"].get("x-mcp-service-token").is_none(),
        "{without}"
    );

    let search_token = token(&world, "alice", "wonderland", "search", "search").await;
    let elsewhere = reported(
        &message(
            post(&world, "search", &search_token, &call(1, "tp_whoami"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    assert!(
        !elsewhere.to_string().contains(THIRD_PARTY_SECRET),
        "{elsewhere}"
    );
    // Counted by service and event, with nothing about the user.
    let injected = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == tower_mcp_auth::metrics::ATAG_EVENTS)
        .filter(|(key, ..)| {
            let labels: Vec<_> = key.key().labels().map(|l| (l.key(), l.value())).collect();
            labels == [("service", "tp"), ("event", "injected")]
        })
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum::<u64>();
    assert_eq!(injected, 1, "one call needed the service");
}

#[tokio::test]
async fn each_backend_enforces_its_own_policy_lists_filtered_and_step_up_challenged() {
    let world = world().await;
    let reader = token(&world, "alice", "wonderland", "notes", "notes:read").await;
    let session = open_session(&world, "notes", &reader).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let tools = message(
        post(&world, "notes", &reader, &list)
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"whoami"), "{names:?}");
    assert!(!names.contains(&"notes_write"), "{names:?}");

    let refused = post(&world, "notes", &reader, &call(3, "notes_write"))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let challenge = www_authenticate(&refused);
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert!(challenge.contains("notes:write"), "{challenge}");
    assert!(
        challenge.contains("/.well-known/oauth-protected-resource/notes/mcp"),
        "{challenge}"
    );

    let writer = token(
        &world,
        "alice",
        "wonderland",
        "notes",
        "notes:read notes:write",
    )
    .await;
    let session = open_session(&world, "notes", &writer).await;
    let written = message(
        post(&world, "notes", &writer, &call(4, "notes_write"))
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(written["result"]["content"][0]["text"], "written");

    // The search backend's own policy denies the same tool to everyone.
    let search = token(&world, "alice", "wonderland", "search", "search").await;
    let denied = post(&world, "search", &search, &call(5, "notes_write"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let listed = message(post(&world, "search", &search, &list).send().await.unwrap()).await;
    assert!(!listed.to_string().contains("notes_write"), "{listed}");
}

#[tokio::test]
async fn a_long_sse_answer_streams_through_before_the_backend_finishes() {
    let world = world().await;
    let token = token(&world, "alice", "wonderland", "notes", "notes:read").await;
    let session = open_session(&world, "notes", &token).await;
    let mut request = call(6, "stream");
    request["params"]["_meta"] = json!({"progressToken": "p1"});
    let response = post(&world, "notes", &token, &request)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    // The backend is still waiting: only a streamed first event can arrive now.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("notifications/progress") {
            let chunk = stream.next().await.expect("stream ended").unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the first event did not arrive before the backend finished");
    assert!(!seen.contains("finished"), "{seen}");
    world.release.notify_one();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("finished") {
            let chunk = stream.next().await.expect("stream ended").unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the result did not arrive");
}

#[tokio::test]
async fn stateful_sessions_are_proxied_and_bound_to_the_user_who_opened_them() {
    let world = world().await;
    let alice = token(&world, "alice", "wonderland", "notes", "notes:read").await;
    let bob = token(&world, "bob", "builder", "notes", "notes:read").await;
    let session = open_session(&world, "notes", &alice).await;

    // Bob with Alice's session id: refused before it reaches the backend.
    let hijack = post(&world, "notes", &bob, &call(7, "whoami"))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(hijack.status(), 404);

    let mine = message(
        post(&world, "notes", &alice, &call(8, "whoami"))
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // The backend sees its own id; the client holds it sealed for Alice and this backend.
    let (inner, _) = session.rsplit_once('.').unwrap();
    assert_eq!(reported(&mine)["headers"]["mcp-session-id"], inner);
    // The bare backend id (leaked from a backend log, say) is refused, even to Alice.
    let bare = post(&world, "notes", &alice, &call(9, "whoami"))
        .header("mcp-session-id", inner)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 404);

    // The event stream (GET) and the end of the session (DELETE) are proxied too.
    let events = client()
        .get(world.url("notes"))
        .bearer_auth(&alice)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(events);
    let ended = client()
        .delete(world.url("notes"))
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    let after = post(&world, "notes", &alice, &call(9, "whoami"))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404);
}

#[tokio::test]
async fn a_dead_backend_answers_502_and_a_slow_one_504() {
    let world = world().await;
    let dead = token(&world, "alice", "wonderland", "dead", "misc").await;
    let response = post(&world, "dead", &dead, &call(1, "whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32603);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`dead`"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "the backend's address leaked: {body}"
    );

    let search = token(&world, "alice", "wonderland", "search", "search").await;
    let response = post(&world, "search", &search, &call(2, "slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    // The gateway keeps serving that backend.
    let fine = post(&world, "search", &search, &call(3, "whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);
}

#[tokio::test]
async fn oversized_or_malformed_backend_answers_cannot_crash_the_gateway() {
    let world = world().await;
    let search = token(&world, "alice", "wonderland", "search", "search").await;
    let big = post(&world, "search", &search, &call(1, "big"))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 502, "an answer over the 1 MiB limit");

    let garbage = token(&world, "alice", "wonderland", "garbage", "misc").await;
    let response = post(&world, "garbage", &garbage, &call(2, "whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502, "bytes that are not HTTP");

    let rude = token(&world, "alice", "wonderland", "rude", "misc").await;
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let response = post(&world, "rude", &rude, &list).send().await.unwrap();
    assert_eq!(
        response.status(),
        502,
        "a list the filter cannot read is never passed on"
    );

    let fine = post(&world, "search", &search, &call(4, "whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200, "the gateway still serves");
}

#[tokio::test]
async fn a_backend_cannot_plant_cookies_or_send_clients_to_authorize_again() {
    let world = world().await;
    let rude = token(&world, "alice", "wonderland", "rude", "misc").await;
    let planted = post(&world, "rude", &rude, &call(1, "set_cookie"))
        .send()
        .await
        .unwrap();
    assert_eq!(planted.status(), 200);
    assert!(planted.headers().get("set-cookie").is_none());

    let challenged = post(&world, "rude", &rude, &call(2, "anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        challenged.status(),
        502,
        "a backend's own 401 is the gateway's problem"
    );
    assert!(challenged.headers().get("www-authenticate").is_none());

    let redirected = post(&world, "rude", &rude, &call(3, "redirect_me"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        redirected.status(),
        502,
        "a redirect is neither followed nor passed on"
    );
    assert!(redirected.headers().get("location").is_none());
    assert!(!redirected.text().await.unwrap().contains("10.1.2.3"));
}

#[tokio::test]
async fn the_ingress_header_carries_the_token_and_never_reaches_the_backend() {
    let ingress = HeaderName::from_static("x-authorization");
    let world = world_with(|b| b.ingress_header(ingress)).await;
    let token = token(&world, "alice", "wonderland", "search", "search").await;
    let answer = message(
        client()
            .post(world.url("search"))
            .header("x-authorization", format!("Bearer {token}"))
            .header("authorization", "Basic cHJveHk6c2VjcmV0")
            .header("accept", ACCEPT)
            .json(&call(1, "whoami"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let headers = &reported(&answer)["headers"];
    assert_eq!(headers["x-mcp-user-subject"], "alice");
    assert!(headers.get("x-authorization").is_none(), "{headers}");
    assert!(headers.get("authorization").is_none(), "{headers}");

    // `Authorization: Bearer` alone is not read when the ingress header is configured.
    let plain = post(&world, "search", &token, &call(2, "whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);
    // The service list reads the token where the MCP routes do.
    let listed = client()
        .get(format!("{}/services", world.base))
        .header("x-authorization", format!("Bearer {token}"))
        .header("authorization", "Basic cHJveHk6c2VjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
}

#[tokio::test]
async fn the_service_list_shows_what_the_caller_may_use_and_health_reports_the_store() {
    let world = world().await;
    let listed = |token: String| {
        let url = format!("{}/services", world.base);
        async move {
            let response = client().get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["cache-control"], "no-store");
            let body: Value = response.json().await.unwrap();
            body["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // `notes` requires `notes:read`: a token without it does not list it.
    let search_only = token(&world, "alice", "wonderland", "search", "search").await;
    let names = listed(search_only).await;
    assert!(
        names.contains(&"search".to_owned()) && !names.contains(&"notes".to_owned()),
        "{names:?}"
    );
    let reader = token(&world, "alice", "wonderland", "notes", "notes:read").await;
    assert!(listed(reader).await.contains(&"notes".to_owned()));

    let anonymous = client()
        .get(format!("{}/services", world.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let health = client()
        .get(format!("{}/healthz", world.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = get_json(&format!("{}/readyz", world.base)).await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["store"], "ok");
}

/// An OpenID provider's discovery document on loopback that can be switched off.
async fn switchable_discovery() -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (listener, addr) = listener().await;
    let issuer = format!("http://{addr}");
    let up = Arc::new(AtomicBool::new(true));
    let document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    });
    let serving = up.clone();
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let (up, document) = (serving.load(Ordering::SeqCst), document.clone());
            async move {
                if up {
                    Ok(axum::Json(document))
                } else {
                    Err(http::StatusCode::SERVICE_UNAVAILABLE)
                }
            }
        }),
    );
    spawn(listener, app);
    (issuer, up)
}

#[tokio::test]
async fn readiness_follows_the_upstream_identity_providers_metadata_and_the_store() {
    use std::sync::atomic::Ordering;
    let (issuer, up) = switchable_discovery().await;
    let oidc = tower_mcp_auth::server::OidcProvider::builder("corp", &issuer, "gateway")
        .address_policy(tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback())
        .allow_insecure_http()
        .build()
        .unwrap();
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    #[cfg(feature = "redis")]
    let mut redis = RedisProcess::start().await;
    let auth = AuthServer::builder(&base).identity_provider(oidc);
    #[cfg(feature = "redis")]
    let auth = auth.store(
        tower_mcp_auth::store::RedisStore::builder(redis.url())
            .connect()
            .await
            .unwrap(),
    );
    let gateway = Gateway::builder(auth)
        .backend(Backend::new("notes", dead_backend().await))
        .build()
        .unwrap();
    spawn(listener, gateway.router());
    let readiness = || async {
        let response = client().get(format!("{base}/readyz")).send().await.unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    };

    let (status, body) = readiness().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["identity_providers"]["corp"], "ok");

    up.store(false, Ordering::SeqCst);
    let (status, body) = readiness().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["identity_providers"]["corp"], "unavailable");
    assert_eq!(body["checks"]["store"], "ok");
    // Liveness is not readiness: the process still answers.
    let alive = client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), 200);
    up.store(true, Ordering::SeqCst);
    assert_eq!(readiness().await.0, 200);

    #[cfg(feature = "redis")]
    {
        redis.stop().await;
        let (status, body) = readiness().await;
        assert_eq!(status, 503, "{body}");
        assert_ne!(body["checks"]["store"], "ok", "{body}");
        redis.resume().await;
    }
}

#[tokio::test]
async fn without_third_parties_a_forged_service_token_still_never_reaches_the_backend() {
    let search = rmcp_backend(
        Tools {
            name: "search",
            release: Arc::new(Notify::new()),
        },
        false,
    )
    .await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let auth = AuthServer::builder(&base)
        .dev_user("alice", "wonderland")
        .public_client("app", [REDIRECT], ["search"]);
    let gateway = Gateway::builder(auth)
        .backend(Backend::new("search", search))
        .build()
        .unwrap();
    assert!(gateway.atag().is_none());
    spawn_with_peer(listener, gateway.router());
    let world = World {
        base,
        gateway,
        release: Arc::new(Notify::new()),
    };
    let token = token(&world, "alice", "wonderland", "search", "search").await;
    let answer = message(
        post(&world, "search", &token, &call(1, "tp_whoami"))
            .header("x-mcp-service-token", "Bearer forged-third-party-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let headers = &reported(&answer)["headers"];
    assert!(headers.get("x-mcp-service-token").is_none(), "{headers}");
    assert_eq!(headers["x-mcp-user-subject"], "alice");
}

#[tokio::test]
async fn one_user_cannot_hold_every_backend_slot_with_open_streams() {
    let notes = rmcp_backend(
        Tools {
            name: "notes",
            release: Arc::new(Notify::new()),
        },
        true,
    )
    .await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let auth = AuthServer::builder(&base)
        .dev_user("alice", "wonderland")
        .dev_user("bob", "builder")
        .public_client("app", [REDIRECT], ["notes"]);
    let gateway = Gateway::builder(auth)
        .backend(Backend::new("notes", notes).max_in_flight_per_user(2))
        .build()
        .unwrap();
    spawn_with_peer(listener, gateway.router());
    let world = World {
        base,
        gateway,
        release: Arc::new(Notify::new()),
    };
    let alice = token(&world, "alice", "wonderland", "notes", "notes").await;
    let bob = token(&world, "bob", "builder", "notes", "notes").await;
    // Alice opens two sessions and keeps an event stream open on each: her whole share.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let session = open_session(&world, "notes", &alice).await;
        let stream = client()
            .get(world.url("notes"))
            .bearer_auth(&alice)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "gateway-test", "version": "1"}}});
    let refused = post(&world, "notes", &alice, &init).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    // Bob is not affected.
    let session = open_session(&world, "notes", &bob).await;
    assert!(!session.is_empty());
    // Closing a stream gives Alice's slot back.
    drop(streams.pop());
    let mut again = 0;
    for _ in 0..50 {
        again = post(&world, "notes", &alice, &init)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if again == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again, 200, "the closed stream's slot came back");
}

type Configure =
    fn(tower_mcp_auth::gateway::GatewayBuilder) -> tower_mcp_auth::gateway::GatewayBuilder;

fn refusal(configure: Configure, backend: Backend) -> String {
    configure(Gateway::builder(AuthServer::builder("http://127.0.0.1:9")).backend(backend))
        .build()
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn header_names_the_gateway_manages_cannot_be_configured() {
    use tower_mcp_auth::gateway::{UserField, UserHeaders};
    let url = "http://127.0.0.1:1/mcp";
    let host = refusal(
        |b| {
            b.user_headers(
                UserHeaders::default().rename(UserField::Name, HeaderName::from_static("host")),
            )
        },
        Backend::new("a", url),
    );
    assert!(host.contains("`host`"), "{host}");
    let auth = refusal(
        |b| b,
        Backend::new("a", url).service_token_header(HeaderName::from_static("authorization")),
    );
    assert!(auth.contains("`authorization`"), "{auth}");
    let clash = refusal(
        |b| b,
        Backend::new("a", url).service_token_header(HeaderName::from_static("x-mcp-user-subject")),
    );
    assert!(clash.contains("also a user"), "{clash}");
}

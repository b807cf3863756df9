//! The gateway example (`examples/gateway.rs`) run from its sample configuration
//! (`examples/gateway.toml`) in front of the quickstart's notes server (`--behind-gateway`):
//! the official TypeScript and Python SDK clients sign in at the gateway and call the
//! backend's tools through it; the backend refuses whatever did not come through the gateway; and with the
//! store on Redis, several gateway replicas serve one deployment.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use tower_mcp_auth::config::Config;

use crate::gateway::{CodeGrant, register_public_client};
use crate::support::*;
use crate::{gateway_example, quickstart, ts_sdk};

const GATEWAY_SECRET: &str = "a-gateway-secret-of-32-characters!";
const PASSWORD: &str = "demo-password";

fn sample_config() -> Config {
    Config::load(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml"))
        .expect("the sample configuration loads")
}

fn environment(extra: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DEMO_PASSWORD".to_owned(), PASSWORD.to_owned()),
        ("GATEWAY_SECRET".to_owned(), GATEWAY_SECRET.to_owned()),
    ]);
    for (k, v) in extra {
        vars.insert((*k).to_owned(), v.clone());
    }
    move |name| vars.get(name).cloned()
}

/// The quickstart's notes server behind the gateway, on loopback; the backend's URL.
async fn notes_backend() -> String {
    let (listener, addr) = listener().await;
    spawn(
        listener,
        quickstart::behind_gateway_app(Some(GATEWAY_SECRET)),
    );
    format!("http://{addr}/mcp")
}

/// The sample configuration pointed at `backend`, served on `listener` as `base`.
async fn start_gateway(
    config: &mut Config,
    listener: tokio::net::TcpListener,
    base: &str,
    backend: &str,
    env: &dyn Fn(&str) -> Option<String>,
) {
    config.public_url = base.to_owned();
    config.services[0].url = Some(backend.to_owned());
    let gateway = gateway_example::gateway(config, env).await.unwrap();
    let banner = gateway_example::banner(config, &gateway);
    assert!(
        banner.contains(&format!("{base}/notes/mcp -> {backend}")),
        "{banner}"
    );
    spawn_with_peer(listener, gateway.router());
}

#[tokio::test]
async fn typescript_sdk_client_signs_in_at_the_gateway_example_and_calls_the_notes_server() {
    let backend = notes_backend().await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mut config = sample_config();
    start_gateway(&mut config, listener, &base, &backend, &environment(&[])).await;

    ts_sdk::install_sdk().await;
    let report = ts_sdk::run_node("gateway.mjs", &[&format!("{base}/notes/mcp")]).await;
    // It discovered the gateway from the service's 401 and asked for the challenge's scopes.
    assert!(
        report["authorization"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/oauth/authorize")),
        "{report}"
    );
    assert_eq!(
        report["scope"], "mcp:tools notes:read notes:write",
        "{report}"
    );
    // The gateway's policy: no admin scope, the third-party tool denied: neither is listed.
    assert_eq!(report["tools"], json!(["add_note", "list_notes", "whoami"]));
    // The backend knows the caller from the gateway's headers: its own `Auth` extractor works.
    let who = report["who"].as_str().unwrap();
    assert!(who.starts_with("subject=demo client=app-"), "{who}");
    assert!(
        who.ends_with("scopes=mcp:tools notes:read notes:write"),
        "{who}"
    );
    assert_eq!(report["notes"], "through the gateway");
    assert!(
        report["denied"]
            .as_str()
            .unwrap()
            .contains("denied by policy"),
        "{report}"
    );
    // A stateful session, opened through the gateway, kept by the client.
    assert!(report["sessionId"].is_string(), "{report}");
}

fn py_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

/// Installs the pinned Python SDK (`tests/py/requirements.txt`) into `tests/py/.venv` once per
/// test run, again only when the pins change. `PYTHON` names the interpreter (default
/// `python3`, 3.10 or later).
async fn install_python_sdk() -> PathBuf {
    static INSTALLED: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let venv = py_dir().join(".venv");
            let python = venv.join("bin/python");
            let pins = std::fs::read_to_string(py_dir().join("requirements.txt")).unwrap();
            let marker = venv.join("installed-requirements.txt");
            if std::fs::read_to_string(&marker).ok().as_deref() == Some(pins.as_str()) {
                return python;
            }
            let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
            let run = |program: &std::path::Path, args: &[&str]| {
                let status = std::process::Command::new(program)
                    .args(args)
                    .current_dir(py_dir())
                    .status()
                    .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
                assert!(status.success(), "{} {args:?} failed", program.display());
            };
            run(std::path::Path::new(&interpreter), &["-m", "venv", ".venv"]);
            run(
                &python,
                &[
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                    "requirements.txt",
                ],
            );
            std::fs::write(&marker, pins).unwrap();
            python
        })
        .await
        .clone()
}

#[tokio::test]
async fn python_sdk_client_signs_in_at_the_gateway_example_and_calls_the_notes_server() {
    let backend = notes_backend().await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mut config = sample_config();
    start_gateway(&mut config, listener, &base, &backend, &environment(&[])).await;

    let python = install_python_sdk().await;
    let run = tokio::process::Command::new(python)
        .arg(py_dir().join("gateway.py"))
        .arg(format!("{base}/notes/mcp"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(90), run)
        .await
        .expect("the Python client finishes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON report");
    assert!(
        report["authorization"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/oauth/authorize")),
        "{report}"
    );
    // RFC 9207: the authorization response names the gateway as issuer.
    assert_eq!(report["iss"], base);
    assert_eq!(
        report["scope"], "mcp:tools notes:read notes:write",
        "{report}"
    );
    assert_eq!(report["tools"], json!(["add_note", "list_notes", "whoami"]));
    let who = report["who"].as_str().unwrap();
    let client_id = report["client_id"].as_str().unwrap();
    assert_eq!(
        who,
        format!("subject=demo client={client_id} scopes=mcp:tools notes:read notes:write")
    );
    assert_eq!(report["notes"], "from the Python SDK");
    assert!(
        report["denied"].to_string().contains("denied by policy"),
        "{report}"
    );
}

#[tokio::test]
async fn the_notes_backend_refuses_requests_that_did_not_come_through_the_gateway() {
    let backend = notes_backend().await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "attacker", "version": "1"}}});
    let send = |secret: Option<&str>| {
        let mut request = client()
            .post(&backend)
            .header("accept", "application/json, text/event-stream")
            .header("x-mcp-user-subject", "demo")
            .header("x-mcp-user-scopes", "mcp:tools notes:admin")
            .json(&initialize);
        if let Some(secret) = secret {
            request = request.header("x-mcp-gateway-secret", secret);
        }
        request.send()
    };
    assert_eq!(
        send(None).await.unwrap().status(),
        401,
        "forged headers alone"
    );
    assert_eq!(
        send(Some("a-gateway-secret-of-32-characters?"))
            .await
            .unwrap()
            .status(),
        401,
        "a wrong secret"
    );
    assert_eq!(
        send(Some(GATEWAY_SECRET)).await.unwrap().status(),
        200,
        "the gateway's"
    );
}

#[tokio::test]
async fn the_sample_configuration_keeps_secrets_out_of_the_file() {
    let config = sample_config();
    // Without the variables it names, nothing is built.
    let missing = config.gateway_builder(&|_| None).await.unwrap_err();
    assert!(missing.to_string().contains("DEMO_PASSWORD"), "{missing}");
    // A secret written inline is refused: unknown fields are errors.
    let inline = r#"
        public_url = "http://127.0.0.1:8090"
        [[users]]
        name = "demo"
        password = "hunter2"
    "#;
    let refused = Config::from_toml(inline).unwrap_err().to_string();
    assert!(refused.contains("unknown field `password`"), "{refused}");
    // The same file drives an embedded server: its policy, without the gateway.
    let policy = config.policy("notes").unwrap();
    assert!(policy.scopes().contains("notes:admin"));
}

/// Several gateway replicas from one configuration with the store on Redis: a user signs in
/// at one and uses the token at the other; a session opened through one continues through the
/// other (no sticky routing); the service list and readiness answer on both.
#[cfg(feature = "redis")]
#[tokio::test]
async fn gateway_replicas_on_redis_serve_one_deployment() {
    let backend = notes_backend().await;
    let (listener_a, addr_a) = listener().await;
    let (listener_b, addr_b) = listener().await;
    let public = format!("http://{addr_a}");
    let prefix = format!("gateway-replicas-{}:", rand::random::<u64>());
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/gateway.toml"),
    )
    .unwrap();
    // The sample's Redis settings, uncommented.
    let redis = format!(
        "secret_key_env = \"SECRET_KEY\"\n{text}\n[store]\nkind = \"redis\"\nurl_env = \"REDIS_URL\"\nprefix = \"{prefix}\"\n"
    );
    let env = environment(&[
        ("REDIS_URL", redis_url().await),
        ("SECRET_KEY", "a-deployment-secret-of-32-chars!!".to_owned()),
    ]);
    for listener in [listener_a, listener_b] {
        let mut config = Config::from_toml(&redis).unwrap();
        start_gateway(&mut config, listener, &public, &backend, &env).await;
    }
    let (a, b) = (public.clone(), format!("http://{addr_b}"));

    // Registration and sign-in at A, the code redeemed at B.
    let client_id = register_public_client(&a).await;
    let resource = format!("{public}/notes/mcp");
    let grant = CodeGrant {
        authorize_at: &a,
        redeem_at: &b,
        client_id: &client_id,
        resource: &resource,
        scope: "mcp:tools notes:read",
    };
    let token = &grant.token("demo", PASSWORD).await;

    // The token works at both replicas (one signing key, sealed in Redis).
    let mut sessions = Vec::new();
    for replica in [&a, &b] {
        let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "replicas", "version": "1"}}});
        let response = client()
            .post(format!("{replica}/notes/mcp"))
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "initialize at {replica}");
        sessions.push(
            response.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let listed: Value = client()
            .get(format!("{replica}/services"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["services"][0]["name"], "notes", "{listed}");
        let ready = get_json(&format!("{replica}/readyz")).await;
        assert_eq!(ready["ready"], true, "{ready}");
    }

    // A session opened through A, continued through B, and the other way round.
    for (session, replica) in sessions.iter().zip([&b, &a]) {
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        for body in [initialized, list] {
            let response = client()
                .post(format!("{replica}/notes/mcp"))
                .bearer_auth(token)
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-06-18")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{} at {replica}",
                response.status()
            );
            if body["id"] == 2 {
                assert!(response.text().await.unwrap().contains("list_notes"));
            }
        }
    }
}

/// The gateway's configuration file drives an embedded server too: its users, scopes and the
/// notes service's policy, loaded into the builders around the quickstart's notes server.
#[tokio::test]
async fn the_same_file_drives_an_embedded_server_without_the_proxy() {
    use tower::ServiceBuilder;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mut config = sample_config();
    config.public_url = base.clone();
    let env = environment(&[]);
    let mcp = format!("{base}/mcp");
    let auth = config
        .auth_server_builder(&env)
        .await
        .unwrap()
        .resource(&mcp)
        .build()
        .unwrap();
    let policy = config.policy("notes").unwrap();
    let resource = tower_mcp_auth::ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .policy(&policy)
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(auth.bearer_layer(&resource).unwrap())
        .layer(policy.layer(&resource))
        .service(quickstart::mcp_service(
            &resource,
            quickstart::Notes::default(),
        ));
    let app = axum::Router::new()
        .nest_service("/mcp", stack)
        .merge(resource.router())
        .merge(auth.router());
    spawn_with_peer(listener, app);

    // The file's dev user signs in; the file's policy decides what the embedded server lists.
    let client_id = register_public_client(&base).await;
    let grant = CodeGrant {
        authorize_at: &base,
        redeem_at: &base,
        client_id: &client_id,
        resource: &mcp,
        scope: "mcp:tools notes:read",
    };
    let token = &grant.token("demo", PASSWORD).await;
    let send = |body: Value, session: Option<String>| {
        let mut request = client()
            .post(&mcp)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request.send()
    };
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "embedded", "version": "1"}}});
    let opened = send(initialize, None).await.unwrap();
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    send(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(session.clone()),
    )
    .await
    .unwrap();
    let listed = send(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        Some(session),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for shown in ["list_notes", "whoami"] {
        assert!(
            listed.contains(&format!("\"{shown}\"")),
            "{shown}: {listed}"
        );
    }
    for hidden in ["add_note", "purge_all_notes", "third_party_profile"] {
        assert!(
            !listed.contains(&format!("\"{hidden}\"")),
            "{hidden}: {listed}"
        );
    }
}

//! Live policy reload (#17): a `PolicyHandle` swapped under concurrent traffic judges every
//! request by one whole policy; a policy file that does not parse is refused and the old
//! policy keeps serving; a watched file is picked up when it changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::policy::{PolicyHandle, ToolPolicy};
use tower_mcp_auth::server::AuthServer;

use crate::support::*;

/// A policy that shows `shown` and denies `hidden`.
fn showing(shown: &str, hidden: &str) -> ToolPolicy {
    ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .tool(shown, ["mcp:tools"])
        .deny_tool(hidden)
        .build()
        .unwrap()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"alpha","inputSchema":{"type":"object"}},{"name":"beta","inputSchema":{"type":"object"}}]}}"#;

struct Served {
    mcp: String,
    token: String,
}

/// The policy layer following `handle`, in front of a server listing `alpha` and `beta`.
async fn serve(handle: &PolicyHandle) -> Served {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp = format!("{base}/mcp");
    let auth = AuthServer::builder(&base).resource(&mcp).build().unwrap();
    let resource = ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .build()
        .unwrap();
    let lister = tower::service_fn(
        |_: http::Request<http_body_util::Full<bytes::Bytes>>| async {
            let mut response = http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(LIST.as_bytes()),
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
            .layer(handle.layer(&resource))
            .service(lister),
    );
    spawn(listener, app);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": auth.issuer(), "sub": "alice", "aud": mcp, "scope": "mcp:tools",
        "iat": now, "exp": now + 600, "jti": "reload"});
    let token = auth.signing_keys().sign(&claims, "at+jwt").unwrap();
    Served { mcp, token }
}

/// The tool names a `tools/list` through the layer shows.
async fn listed(served: &Served) -> Vec<String> {
    let answer: Value = client()
        .post(&served.mcp)
        .bearer_auth(&served.token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_swapped_under_concurrent_traffic_judges_each_request_whole() {
    let handle = PolicyHandle::new(showing("alpha", "beta"));
    let served = Arc::new(serve(&handle).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (served, stop) = (served.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = [0usize; 2];
            while !stop.load(Ordering::SeqCst) {
                let names = listed(&served).await;
                // One whole policy: exactly one of the two, never both or neither.
                match names.as_slice() {
                    [one] if one == "alpha" => seen[0] += 1,
                    [one] if one == "beta" => seen[1] += 1,
                    other => panic!("a request saw a mix of two policies: {other:?}"),
                }
            }
            seen
        }));
    }
    for round in 0..200 {
        if round % 2 == 0 {
            handle.replace(showing("beta", "alpha"));
        } else {
            handle.replace(showing("alpha", "beta"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = [0usize; 2];
    for client in clients {
        let seen = client.await.unwrap();
        total[0] += seen[0];
        total[1] += seen[1];
    }
    assert!(
        total[0] > 0 && total[1] > 0,
        "both policies served: {total:?}"
    );
}

#[tokio::test]
async fn a_broken_policy_file_is_refused_and_the_old_policy_keeps_serving() {
    let dir = std::env::temp_dir().join(format!("tower-mcp-auth-reload-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.toml");
    let alpha = "default_scopes = [\"mcp:tools\"]\nrules = [{ name = \"alpha\", all_of = [\"mcp:tools\"] }, { name = \"beta\", deny = true }]\n";
    let beta = "default_scopes = [\"mcp:tools\"]\nrules = [{ name = \"beta\", all_of = [\"mcp:tools\"] }, { name = \"alpha\", deny = true }]\n";
    std::fs::write(&file, alpha).unwrap();
    let handle = PolicyHandle::new(ToolPolicy::builder().build().unwrap());
    handle.reload_from(&file).unwrap();
    let served = serve(&handle).await;
    assert_eq!(listed(&served).await, ["alpha"]);

    // Broken files: not TOML, a bad regex, an unknown field. Each is refused; alpha stays.
    for broken in [
        "rules = [",
        "rules = [{ regex = \"(\", all_of = [\"x\"] }]",
        "rules = [{ name = \"alpha\", all_of = [\"x\"], shell = \"rm -rf /\" }]",
    ] {
        std::fs::write(&file, broken).unwrap();
        assert!(handle.reload_from(&file).is_err(), "{broken}");
        assert_eq!(listed(&served).await, ["alpha"], "after {broken}");
    }

    // Watched: a good version is picked up by itself.
    let watcher = handle.watch(&file, Duration::from_millis(20));
    std::fs::write(&file, beta).unwrap();
    let mut now = Vec::new();
    for _ in 0..100 {
        now = listed(&served).await;
        if now == ["beta"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(now, ["beta"], "the watched file was reloaded");
    watcher.abort();
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Metrics (feature `metrics`): real HTTP traffic through the bearer and policy layers and the
//! gateway, read back from a test recorder. The recorder is this test thread's (the servers
//! run on the test's single-threaded runtime), so parallel tests do not mix their counts.

use std::time::{SystemTime, UNIX_EPOCH};

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// One snapshot (taking one drains the recorder's histograms and counters).
type Snapshot = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;
use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::gateway::{Backend, Gateway};
use tower_mcp_auth::policy::ToolPolicy;
use tower_mcp_auth::server::AuthServer;

use crate::support::*;

/// The value of counter `name` with exactly `labels` (0 when never incremented).
fn counter(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == name)
        .filter(|(key, ..)| {
            let mut got: Vec<(&str, &str)> =
                key.key().labels().map(|l| (l.key(), l.value())).collect();
            let mut want = labels.to_vec();
            got.sort();
            want.sort();
            got == want
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

/// How many values histogram `name` recorded with `labels`.
fn observations(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> usize {
    snapshot
        .iter()
        .filter(|(key, ..)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .map(|l| (l.key(), l.value()))
                    .collect::<Vec<_>>()
                    == labels.to_vec()
        })
        .map(|(.., value)| match value {
            DebugValue::Histogram(values) => values.len(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

fn token(auth: &AuthServer, audience: &str, scope: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": auth.issuer(), "sub": "alice", "client_id": "app", "aud": audience,
        "scope": scope, "iat": now, "exp": now + 600, "jti": format!("{scope}-{now}")});
    auth.signing_keys().sign(&claims, "at+jwt").unwrap()
}

fn call(tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
}

#[tokio::test]
async fn bearer_and_policy_decisions_are_counted_with_bounded_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp = format!("{base}/mcp");
    let auth = AuthServer::builder(&base).resource(&mcp).build().unwrap();
    let policy = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .tool("list_notes", ["notes:read"])
        .tool("purge_*", ["notes:admin"])
        .build()
        .unwrap();
    let resource = ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .build()
        .unwrap();
    let echo = tower::service_fn(
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
            .layer(policy.layer(&resource))
            .service(echo),
    );
    spawn(listener, app);
    let send = |token: Option<String>, body: Value| {
        let mut request = client()
            .post(&mcp)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    assert_eq!(send(None, call("whoami")).await.unwrap().status(), 401);
    let forged = format!("{}x", token(&auth, &mcp, "mcp:tools"));
    assert_eq!(
        send(Some(forged), call("whoami")).await.unwrap().status(),
        401
    );
    let user = token(&auth, &mcp, "mcp:tools");
    assert_eq!(
        send(Some(user.clone()), call("whoami"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(Some(user.clone()), call("whoami"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(Some(user.clone()), call("list_notes"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send(Some(user.clone()), call("purge_everything"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        send(Some(user), call("tool-name-an-attacker-chose"))
            .await
            .unwrap()
            .status(),
        200
    );

    let snapshot = snapshotter.snapshot().into_vec();
    let requests = tower_mcp_auth::metrics::REQUESTS;
    let bearer = |decision, reason| {
        counter(
            &snapshot,
            requests,
            &[
                ("layer", "bearer"),
                ("decision", decision),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(bearer("401", "no_token"), 1);
    assert_eq!(bearer("401", "invalid_token"), 1);
    assert_eq!(bearer("allowed", ""), 5);
    let cache = tower_mcp_auth::metrics::TOKEN_CACHE;
    assert_eq!(
        counter(&snapshot, cache, &[("result", "miss")]),
        2,
        "the forged token and the first use"
    );
    assert_eq!(counter(&snapshot, cache, &[("result", "hit")]), 4);
    let validation = tower_mcp_auth::metrics::VALIDATION_SECONDS;
    assert_eq!(
        observations(&snapshot, validation, &[("outcome", "valid")]),
        1
    );
    assert_eq!(
        observations(&snapshot, validation, &[("outcome", "invalid")]),
        1
    );

    let policy_requests = |decision, reason| {
        counter(
            &snapshot,
            requests,
            &[
                ("layer", "policy"),
                ("decision", decision),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(policy_requests("allowed", ""), 3);
    assert_eq!(policy_requests("403", "insufficient_scope"), 2);
    let denials = tower_mcp_auth::metrics::POLICY_DENIALS;
    // An exact rule's tool is named; a glob's match, chosen by the caller, is not.
    assert_eq!(
        counter(
            &snapshot,
            denials,
            &[
                ("kind", "tool"),
                ("name", "list_notes"),
                ("reason", "insufficient_scope")
            ]
        ),
        1
    );
    assert_eq!(
        counter(
            &snapshot,
            denials,
            &[
                ("kind", "tool"),
                ("name", "other"),
                ("reason", "insufficient_scope")
            ]
        ),
        1
    );
    // No label anywhere carries the subject, the client or a name the caller chose.
    for (key, ..) in &snapshot {
        for label in key.key().labels() {
            for secret in [
                "alice",
                "app",
                "purge_everything",
                "tool-name-an-attacker-chose",
            ] {
                assert_ne!(label.value(), secret, "{key:?}");
            }
        }
    }
}

#[tokio::test]
async fn gateway_backend_answers_are_counted_by_backend_and_status_class() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let (dead, dead_addr) = listener().await;
    drop(dead);
    let (backend_listener, backend_addr) = listener().await;
    spawn(
        backend_listener,
        axum::Router::new().route(
            "/mcp",
            axum::routing::post(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                )
            }),
        ),
    );
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let gateway = Gateway::builder(AuthServer::builder(&base))
        .backend(Backend::new("up", format!("http://{backend_addr}/mcp")))
        .backend(Backend::new("down", format!("http://{dead_addr}/mcp")))
        .build()
        .unwrap();
    let auth = gateway.auth_server().clone();
    spawn(listener, gateway.router());
    for (backend, status) in [("up", 200), ("down", 502)] {
        let resource = format!("{base}/{backend}/mcp");
        let response = client()
            .post(&resource)
            .bearer_auth(token(&auth, &resource, "mcp:tools"))
            .header("accept", "application/json, text/event-stream")
            .json(&call("anything"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{backend}");
    }
    let snapshot = snapshotter.snapshot().into_vec();
    let answers = tower_mcp_auth::metrics::GATEWAY_BACKEND_RESPONSES;
    assert_eq!(
        counter(&snapshot, answers, &[("backend", "up"), ("status", "2xx")]),
        1
    );
    assert_eq!(
        counter(
            &snapshot,
            answers,
            &[("backend", "down"), ("status", "error")]
        ),
        1
    );
    let requests = tower_mcp_auth::metrics::REQUESTS;
    assert_eq!(
        counter(
            &snapshot,
            requests,
            &[
                ("layer", "gateway"),
                ("decision", "502"),
                ("reason", "backend_unreachable")
            ]
        ),
        1
    );
}

/// The quickstart with `METRICS=1`: `/metrics` serves the Prometheus text of what the layers
/// recorded (here with this thread's recorder, as `install_recorder` would make it global).
#[tokio::test]
async fn the_quickstart_serves_prometheus_text_at_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (tp_listener, tp_addr) = listener().await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp = format!("{base}/mcp");
    let (app, third_party) = crate::quickstart::embedded_stack(
        crate::quickstart::auth_server_builder(&base, &mcp, QUICKSTART_PASSWORD),
        &mcp,
        &format!("http://{tp_addr}"),
        QUICKSTART_PASSWORD,
        None,
    )
    .unwrap();
    spawn(tp_listener, third_party);
    spawn_with_peer(listener, crate::quickstart::with_metrics(app, handle));
    let refused = client()
        .post(&mcp)
        .json(&call("whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let scraped = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = scraped.text().await.unwrap();
    assert!(
        text.contains(
            r#"mcp_auth_requests_total{layer="bearer",decision="401",reason="no_token"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn token_endpoint_issuances_errors_and_registrations_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let auth = AuthServer::builder(&base)
        .resource(format!("{base}/mcp"))
        .scopes_supported(["mcp:tools"])
        .client(
            "machine",
            "a-client-secret-of-32-characters!!",
            ["mcp:tools"],
        )
        // Users can sign in, so clients may register for the code flow.
        .dev_user("alice", "wonderland")
        .build()
        .unwrap();
    spawn_with_peer(listener, auth.router());
    let token = |secret: &'static str| {
        client()
            .post(format!("{base}/oauth/token"))
            .basic_auth("machine", Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "mcp:tools")])
            .send()
    };
    assert_eq!(
        token("a-client-secret-of-32-characters!!")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        token("a-wrong-secret-of-32-characters!!!")
            .await
            .unwrap()
            .status(),
        401
    );
    let registered = client()
        .post(format!("{base}/oauth/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1:4567/callback"],
                      "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let refused = client()
        .post(format!("{base}/oauth/register"))
        .json(&json!({"redirect_uris": ["javascript:alert(1)"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let snapshot = snapshotter.snapshot().into_vec();
    let issued = tower_mcp_auth::metrics::TOKENS_ISSUED;
    assert_eq!(
        counter(&snapshot, issued, &[("grant", "client_credentials")]),
        1
    );
    let errors = tower_mcp_auth::metrics::TOKEN_ERRORS;
    assert_eq!(
        counter(
            &snapshot,
            errors,
            &[("grant", "client_credentials"), ("error", "invalid_client")]
        ),
        1
    );
    let registrations = tower_mcp_auth::metrics::REGISTRATIONS;
    assert_eq!(
        counter(&snapshot, registrations, &[("outcome", "registered")]),
        1
    );
    assert_eq!(
        counter(
            &snapshot,
            registrations,
            &[("outcome", "invalid_redirect_uri")]
        ),
        1
    );
}

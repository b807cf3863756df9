//! What the gateway adds to a `tools/call`, over loopback HTTP to a minimal JSON backend:
//! the client straight to the backend; `McpProxy` called in process (header rewriting, the
//! backend hop, the streamed answer); and a client through the whole gateway (Origin, bearer
//! with a warm ES256 token, policy, proxy), which is two HTTP hops.
//!
//! `cargo bench --bench gateway`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tower::Service;
use tower_mcp_auth::AuthContext;
use tower_mcp_auth::gateway::{Backend, Gateway, McpProxy};
use tower_mcp_auth::policy::ToolPolicy;
use tower_mcp_auth::server::AuthServer;

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}"#;
const ANSWER: &str =
    r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"hello"}]}}"#;

async fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> String {
    use axum::serve::ListenerExt;
    let address = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn gateway_benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (backend, gateway_base, token) = runtime.block_on(async {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let backend = serve(
            bind().await.unwrap(),
            axum::Router::new().route(
                "/mcp",
                axum::routing::post(|| async { ([("content-type", "application/json")], ANSWER) }),
            ),
        )
        .await;
        let backend = format!("{backend}/mcp");
        let listener = bind().await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let policy = ToolPolicy::builder()
            .default_scopes(["mcp:tools"])
            .tool("admin_*", ["admin"])
            .build()
            .unwrap();
        let gateway = Gateway::builder(AuthServer::builder(&base))
            .backend(Backend::new("echo", &backend).policy(policy))
            .build()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"iss": gateway.auth_server().issuer(), "sub": "bench",
            "client_id": "bench", "aud": format!("{base}/echo/mcp"), "scope": "mcp:tools",
            "iat": now, "exp": now + 3600, "jti": "bench-token"});
        let token = gateway
            .auth_server()
            .signing_keys()
            .sign(&claims, "at+jwt")
            .unwrap();
        serve(listener, gateway.router()).await;
        (backend, base, token)
    });
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("gateway");
    group.measurement_time(Duration::from_secs(8));

    group.bench_function("direct_to_backend", |b| {
        b.to_async(&runtime).iter(|| async {
            let answer = client
                .post(&backend)
                .header("content-type", "application/json")
                .body(CALL)
                .send()
                .await
                .unwrap();
            answer.bytes().await.unwrap()
        })
    });

    let proxy = McpProxy::builder("echo", &backend).build().unwrap();
    let ctx = AuthContext::from_claims(
        json!({"sub": "bench", "client_id": "bench", "scope": "mcp:tools"})
            .as_object()
            .unwrap()
            .clone(),
    )
    .unwrap();
    group.bench_function("mcp_proxy_in_process", |b| {
        b.to_async(&runtime).iter(|| {
            let mut proxy = proxy.clone();
            let mut request = Request::post("http://gateway/echo/mcp")
                .header("content-type", "application/json")
                .header("authorization", "Bearer not-forwarded")
                .body(Full::new(Bytes::from_static(CALL.as_bytes())))
                .unwrap();
            request.extensions_mut().insert(ctx.clone());
            async move {
                let response = proxy.call(request).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            }
        })
    });

    let through = format!("{gateway_base}/echo/mcp");
    group.bench_function("client_through_the_gateway", |b| {
        b.to_async(&runtime).iter(|| async {
            let answer = client
                .post(&through)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(CALL)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            answer.bytes().await.unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, gateway_benches);
criterion_main!(benches);

//! ATAG cost per `tools/call`, on top of the policy layer: a tool that needs no service (the
//! pass-through every other call pays), and one whose token comes out of the encrypted vault
//! (memory store get, AES-256-GCM open, injection).
//!
//! `cargo bench --bench atag`

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use serde_json::json;
use tower::{Layer, Service, service_fn};

mod support;
use support::{per_request, ready};
use tower_mcp_auth::atag::{Atag, ExternalService, TokenSet};
use tower_mcp_auth::origin::OriginLayer;
use tower_mcp_auth::policy::ToolPolicy;
use tower_mcp_auth::server::AuthServer;
use tower_mcp_auth::{AuthContext, BearerLayer, ProtectedResource};

type Inner = tower::util::ServiceFn<
    fn(Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

fn inner() -> Inner {
    fn respond(
        _: Request<Full<Bytes>>,
    ) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
        let mut response = Response::new(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"ok"}]}}"#,
        )));
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        std::future::ready(Ok(response))
    }
    service_fn(respond as fn(_) -> _)
}

fn call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
           "params": {"name": tool, "arguments": {"owner": "octo", "limit": 20}}})
    .to_string()
}

fn request(ctx: &AuthContext, body: &str) -> Request<Full<Bytes>> {
    let mut request = Request::post("https://mcp.example.com/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    request.extensions_mut().insert(ctx.clone());
    request
}

fn atag(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let claims = json!({"sub": "alice", "scope": "mcp:tools", "client_id": "c"});
    let ctx = AuthContext::from_claims(claims.as_object().cloned().unwrap()).unwrap();
    let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
        .authorization_server("https://mcp.example.com")
        .build()
        .unwrap();
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
        .tool("github_*", ["mcp:tools"])
        .needs_service("github", ["repo"])
        .build()
        .unwrap();
    let tokens = TokenSet {
        access_token: "gho_0123456789abcdefghijklmnopqrstuvwxyz".into(),
        refresh_token: None,
        expires_at: None,
        scopes: vec!["repo".into()],
    };
    runtime
        .block_on(
            atag.vault()
                .put("alice", "github", &tokens, Duration::from_secs(3600)),
        )
        .unwrap();
    let mut group = c.benchmark_group("atag_layer");
    let mut policy_only = policy.layer(&resource).layer(inner());
    let mut with_atag = policy
        .layer(&resource)
        .layer(atag.layer(&policy).unwrap().layer(inner()));
    let plain = call("whoami");
    let github = call("github_list_repos");
    for body in [&github, &plain] {
        // Both reach the tool (a challenge would carry `isError`).
        let response = ready(with_atag.call(request(&ctx, body))).unwrap();
        let bytes = ready(http_body_util::BodyExt::collect(response.into_body()))
            .unwrap()
            .to_bytes();
        assert!(bytes.ends_with(br#""text":"ok"}]}}"#), "{bytes:?}");
    }
    group.bench_function("policy_only_plain_call", |b| {
        b.iter_custom(|iters| per_request(&mut policy_only, || request(&ctx, &plain), iters))
    });
    group.bench_function("with_atag_plain_call", |b| {
        b.iter_custom(|iters| per_request(&mut with_atag, || request(&ctx, &plain), iters))
    });
    group.bench_function("with_atag_token_from_vault", |b| {
        b.iter_custom(|iters| per_request(&mut with_atag, || request(&ctx, &github), iters))
    });
    group.finish();

    // The whole stack as the load harness runs it, in process: Origin, bearer (our own ES256
    // token, cached after the first request), policy, ATAG, against the bare inner service
    // given the same request (the bearer header included, ignored).
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = json!({"iss": auth.issuer(), "sub": "alice", "client_id": "c",
        "aud": resource.resource(), "scope": "mcp:tools", "exp": exp,
        "jti": "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"});
    let token = auth.signing_keys().sign(&claims, "at+jwt").unwrap();
    let authorized = |body: &str| {
        let mut request = request(&ctx, body);
        request.extensions_mut().clear();
        let value = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        request.headers_mut().insert("authorization", value);
        request
    };
    let mut full_stack = tower::ServiceBuilder::new()
        .layer(OriginLayer::new(&resource))
        .layer(BearerLayer::new(
            auth.validator(resource.resource()).unwrap(),
            resource.clone(),
        ))
        .layer(policy.layer(&resource))
        .layer(atag.layer(&policy).unwrap())
        .service(inner());
    assert_eq!(
        ready(full_stack.call(authorized(&plain))).unwrap().status(),
        200
    );
    let mut bare = inner();
    let mut group = c.benchmark_group("full_stack");
    group.bench_function("no_layer_baseline", |b| {
        b.iter_custom(|iters| per_request(&mut bare, || authorized(&plain), iters))
    });
    group.bench_function("tools_call_warm_token", |b| {
        b.iter_custom(|iters| per_request(&mut full_stack, || authorized(&plain), iters))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = atag
}
criterion_main!(benches);

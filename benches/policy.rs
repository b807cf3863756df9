//! Tool policy cost: rule lookup as the rule count grows, and the policy layer's added latency
//! per `tools/call` (body buffering, envelope parse, decision).
//!
//! `cargo bench --bench policy`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use serde_json::json;
use tower::{Layer, Service, service_fn};

mod support;
use support::{per_request, ready};
use tower_mcp_auth::policy::{Kind, Rule, ToolPolicy};
use tower_mcp_auth::{AuthContext, ProtectedResource};

fn ctx() -> AuthContext {
    let claims =
        json!({"sub": "alice", "scope": "mcp:tools notes:read notes:write", "client_id": "c"});
    AuthContext::from_claims(claims.as_object().cloned().unwrap()).unwrap()
}

/// `n` rules, shaped like a large real deployment: 90% exact tool names, 9% globs over tool
/// families, 1% regexes.
fn policy(n: usize) -> ToolPolicy {
    let mut builder = ToolPolicy::builder()
        .default_scopes(["mcp:tools"])
        .scope_separator(":");
    for i in 0..n {
        builder = match i % 100 {
            0 => builder
                .rule(Rule::tool_regex(format!("^rx{i}_[a-z]+_v[0-9]+$")).all_of(["notes:admin"])),
            1..=9 => builder.tool(format!("family{i}_*"), ["notes:write"]),
            _ => builder.tool(format!("tool_{i}"), ["notes:read"]),
        };
    }
    builder.build().unwrap()
}

fn lookup(c: &mut Criterion) {
    let ctx = ctx();
    let mut group = c.benchmark_group("policy_lookup");
    for n in [10usize, 1_000, 10_000] {
        let policy = policy(n);
        let exact = format!("tool_{}", (n / 2 / 100) * 100 + 50);
        let glob = format!("family{}_export", (n / 2 / 100) * 100 + 5);
        assert!(policy.permits(Kind::Tool, &exact, &ctx), "{exact}");
        assert!(policy.permits(Kind::Tool, &glob, &ctx), "{glob}");
        group.bench_with_input(BenchmarkId::new("exact_hit", n), &exact, |b, name| {
            b.iter(|| policy.decide(Kind::Tool, black_box(name), &ctx))
        });
        group.bench_with_input(BenchmarkId::new("glob_hit", n), &glob, |b, name| {
            b.iter(|| policy.decide(Kind::Tool, black_box(name), &ctx))
        });
        group.bench_with_input(
            BenchmarkId::new("no_rule_default", n),
            "whoami",
            |b, name| b.iter(|| policy.decide(Kind::Tool, black_box(name), &ctx)),
        );
    }
    group.finish();
}

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

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"tool_50","arguments":{"text":"a note of some length, as tools take","tags":["a","b","c"],"limit":20},"_meta":{"progressToken":"p-1"}}}"#;

fn request(ctx: &AuthContext) -> Request<Full<Bytes>> {
    let mut request = Request::post("https://mcp.example.com/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(CALL.as_bytes())))
        .unwrap();
    request.extensions_mut().insert(ctx.clone());
    request
}

fn layer(c: &mut Criterion) {
    let ctx = ctx();
    let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
        .authorization_server("https://auth.example.com")
        .build()
        .unwrap();
    let mut group = c.benchmark_group("policy_layer");
    let mut bare = inner();
    group.bench_function("no_layer_baseline", |b| {
        b.iter_custom(|iters| per_request(&mut bare, || request(&ctx), iters))
    });
    for n in [10usize, 10_000] {
        let mut service = policy(n).layer(&resource).layer(inner());
        assert_eq!(ready(service.call(request(&ctx))).unwrap().status(), 200);
        group.bench_function(format!("tools_call_{n}_rules"), |b| {
            b.iter_custom(|iters| per_request(&mut service, || request(&ctx), iters))
        });
    }
    // The same call with a per-subject and a per-client limit high enough never to refuse:
    // what the limiter costs on every call (two bucket lookups and checks).
    let limits = tower_mcp_auth::policy::RateLimits::new()
        .per_subject(1_000_000, std::time::Duration::from_secs(1))
        .per_client(1_000_000, std::time::Duration::from_secs(1));
    let mut limited = policy(10)
        .layer(&resource)
        .rate_limits(limits)
        .layer(inner());
    assert_eq!(ready(limited.call(request(&ctx))).unwrap().status(), 200);
    group.bench_function("tools_call_10_rules_rate_limited", |b| {
        b.iter_custom(|iters| per_request(&mut limited, || request(&ctx), iters))
    });
    group.finish();
}

/// The JSON-RPC envelope parse of a 1 KiB `tools/call` (arguments of realistic bulk, the
/// `_meta` the policy reads), the one parse the policy layer does per request.
fn envelope(c: &mut Criterion) {
    let filler = "x".repeat(800);
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "tool_50", "arguments": {"text": filler, "tags": ["a", "b", "c"], "limit": 20},
                   "_meta": {"progressToken": "p-1", "io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
    .to_string();
    assert!((1000..=1100).contains(&body.len()), "{}", body.len());
    let bytes = Bytes::from(body);
    c.bench_function("envelope_parse/tools_call_1KiB", |b| {
        b.iter(|| tower_mcp_auth::jsonrpc::parse(black_box(&bytes)).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = lookup, layer, envelope
}
criterion_main!(benches);

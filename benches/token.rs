//! The token endpoint on the memory store, and on Redis when `REDIS_URL` is set (feature
//! `redis`): authorization code exchange (PKCE, atomic redemption, ES256 signing, refresh token
//! issuance), refresh with rotation, and client_credentials. Requests go through the axum
//! router in process (no sockets), so the figures are the server's own work plus, for Redis,
//! its round trips.
//!
//! And the bearer layer's hot path (a cached token) in front of our own tokens, with revocation
//! checking off (the signing keys' plain validator) and on (`AuthServer::validator`), with
//! nothing revoked and with 10,000 other tokens revoked.
//!
//! `cargo bench --bench token` (`REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench token
//! --all-features` for the Redis figures)

use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, header};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceExt};
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::server::AuthServer;
use tower_mcp_auth::store::{MemoryStore, Store};

const BASE: &str = "http://127.0.0.1:8080";
const MCP: &str = "http://127.0.0.1:8080/mcp";
const REDIRECT: &str = "http://127.0.0.1:4567/cb";
const VERIFIER: &str = "bench-verifier-bench-verifier-bench-verifier-0123456789";

struct Bench {
    app: axum::Router,
    cookies: String,
}

async fn send(app: &axum::Router, request: Request<Body>) -> (http::response::Parts, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8_lossy(&bytes).into_owned())
}

fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn post(path: &str, body: String, cookies: &str) -> Request<Body> {
    Request::post(format!("{BASE}{path}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookies)
        .body(Body::from(body))
        .unwrap()
}

fn authorize_url() -> String {
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER));
    format!(
        "{BASE}/oauth/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("resource", MCP)
        ])
    )
}

fn add_cookies(cookies: &mut String, parts: &http::response::Parts) {
    for value in parts.headers.get_all(header::SET_COOKIE) {
        let pair = value.to_str().unwrap().split(';').next().unwrap();
        cookies.push_str(pair);
        cookies.push_str("; ");
    }
}

impl Bench {
    /// Signs in and consents once; later authorizations return a code at once.
    async fn new(store: impl Store) -> Bench {
        let auth = AuthServer::builder(BASE)
            .store(store)
            .resource(MCP)
            .scopes_supported(["mcp:tools"])
            .dev_user("demo", "demo-password")
            .public_client("app", ["http://127.0.0.1/cb"], ["mcp:tools"])
            .client(
                "job",
                "a-machine-secret-of-at-least-32-chars",
                ["mcp:tools"],
            )
            .build()
            .unwrap();
        let app = auth.router();
        let mut cookies = String::new();
        let (parts, login) = send(
            &app,
            Request::get(authorize_url()).body(Body::empty()).unwrap(),
        )
        .await;
        add_cookies(&mut cookies, &parts);
        let body = form(&[
            ("request", &field(&login, "request")),
            ("csrf", &field(&login, "csrf")),
            ("username", "demo"),
            ("password", "demo-password"),
        ]);
        let (parts, consent) = send(&app, post("/oauth/login", body, &cookies)).await;
        add_cookies(&mut cookies, &parts);
        let body = form(&[
            ("request", &field(&consent, "request")),
            ("csrf", &field(&consent, "csrf")),
            ("decision", "approve"),
        ]);
        let (parts, _) = send(&app, post("/oauth/consent", body, &cookies)).await;
        assert_eq!(parts.status, 303);
        Bench { app, cookies }
    }

    async fn code(&self) -> String {
        let request = Request::get(authorize_url())
            .header(header::COOKIE, &self.cookies)
            .body(Body::empty())
            .unwrap();
        let (parts, _) = send(&self.app, request).await;
        let location = parts.headers[header::LOCATION].to_str().unwrap();
        url::Url::parse(location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    }

    async fn exchange(&self, code: &str) -> serde_json::Value {
        let body = form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "app"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ]);
        let (parts, text) = send(&self.app, post("/oauth/token", body, "")).await;
        assert_eq!(parts.status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }
}

fn token(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bench = runtime.block_on(Bench::new(MemoryStore::default()));
    endpoint(c, &runtime, &bench, "token_endpoint");
    #[cfg(feature = "redis")]
    match std::env::var("REDIS_URL") {
        Ok(url) => {
            let store = runtime.block_on(async {
                tower_mcp_auth::store::RedisStore::builder(url)
                    .prefix(format!("bench-{}:", std::process::id()))
                    .connect()
                    .await
                    .unwrap()
            });
            let bench = runtime.block_on(Bench::new(store));
            endpoint(c, &runtime, &bench, "token_endpoint_redis");
        }
        Err(_) => eprintln!("REDIS_URL is not set: no Redis figures"),
    }
}

fn endpoint(c: &mut Criterion, runtime: &tokio::runtime::Runtime, bench: &Bench, name: &str) {
    let mut group = c.benchmark_group(name);
    group.bench_function("authorization_code", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut codes = Vec::with_capacity(iters as usize);
                for _ in 0..iters {
                    codes.push(bench.code().await);
                }
                let start = Instant::now();
                for code in &codes {
                    bench.exchange(code).await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("refresh_token", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let code = bench.code().await;
                let mut refresh = bench.exchange(&code).await["refresh_token"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let start = Instant::now();
                for _ in 0..iters {
                    let body = form(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", "app"),
                        ("refresh_token", &refresh),
                    ]);
                    let (parts, text) = send(&bench.app, post("/oauth/token", body, "")).await;
                    assert_eq!(parts.status, 200, "{text}");
                    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                    refresh = value["refresh_token"].as_str().unwrap().to_owned();
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("client_credentials", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let body = form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", "job"),
                        ("client_secret", "a-machine-secret-of-at-least-32-chars"),
                    ]);
                    let (parts, _) = send(&bench.app, post("/oauth/token", body, "")).await;
                    assert_eq!(parts.status, 200);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// A cached-token request through the bearer layer in front of `validator`, timed over
/// requests built beforehand.
fn cached_hits<V: tower_mcp_auth::validate::TokenValidator>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    validator: V,
    token: &str,
) {
    let resource = ProtectedResource::builder(MCP)
        .authorization_server(BASE)
        .build()
        .unwrap();
    let inner = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
    });
    let mut service = tower_mcp_auth::BearerLayer::new(validator, resource).layer(inner);
    let request = || {
        Request::post(MCP)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    // The first request validates and fills the cache.
    let first = runtime.block_on(service.call(request())).unwrap();
    assert_eq!(first.status(), 200);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let requests: Vec<_> = (0..iters).map(|_| request()).collect();
            runtime.block_on(async {
                let start = Instant::now();
                for request in requests {
                    std::hint::black_box(service.call(request).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
}

fn revocation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auth = AuthServer::builder(BASE)
        .resource(MCP)
        .scopes_supported(["mcp:tools"])
        .client(
            "job",
            "a-machine-secret-of-at-least-32-chars",
            ["mcp:tools"],
        )
        .build()
        .unwrap();
    let app = auth.router::<()>();
    let mint = || async {
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "job"),
            ("client_secret", "a-machine-secret-of-at-least-32-chars"),
        ]);
        let (_, text) = send(&app, post("/oauth/token", body, "")).await;
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value["access_token"].as_str().unwrap().to_owned()
    };
    let token = runtime.block_on(mint());
    let mut group = c.benchmark_group("bearer_own_tokens");
    cached_hits(
        &mut group,
        &runtime,
        "cached_revocation_off",
        auth.signing_keys().validator(BASE, MCP),
        &token,
    );
    cached_hits(
        &mut group,
        &runtime,
        "cached_revocation_on_none_revoked",
        auth.validator(MCP).unwrap(),
        &token,
    );
    runtime.block_on(async {
        for _ in 0..10_000 {
            let other = mint().await;
            let body = form(&[
                ("client_id", "job"),
                ("client_secret", "a-machine-secret-of-at-least-32-chars"),
                ("token", &other),
            ]);
            let (parts, _) = send(&app, post("/oauth/revoke", body, "")).await;
            assert_eq!(parts.status, 200);
        }
    });
    cached_hits(
        &mut group,
        &runtime,
        "cached_revocation_on_10k_revoked",
        auth.validator(MCP).unwrap(),
        &token,
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = token, revocation
}
criterion_main!(benches);

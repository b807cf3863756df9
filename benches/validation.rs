//! Token validation cost: cold signature verification per algorithm, and the bearer layer's
//! whole per-request cost when the token is cached (the hot path).
//!
//! `cargo bench --bench validation`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tower::{Layer, Service, service_fn};

mod support;
use support::{per_request, ready};
use tower_mcp_auth::bearer::AuthFailureLimit;
use tower_mcp_auth::validate::{JwtKey, JwtValidator, TokenValidator};
use tower_mcp_auth::{BearerLayer, ProtectedResource};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://auth.example.com";
const HMAC: &[u8] = b"integration-test-secret-32-bytes!";

fn token(alg: Algorithm, key: &EncodingKey, sub: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(3600);
    // A realistic payload: a typical IdP access token is 600-900 bytes.
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": RESOURCE, "sub": sub, "exp": exp.as_secs(), "iat": exp.as_secs() - 3600,
        "scope": "mcp:tools notes:read notes:write", "client_id": "https://client.example.com/oauth/metadata.json",
        "jti": "9f1c5a7e-5a52-4b7f-8a5e-0c6f1e2d3b4a", "groups": ["engineering", "mcp-users"],
        "email": "alice@corp.example", "name": "Alice Example",
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn validators() -> Vec<(&'static str, JwtValidator, String)> {
    let cases = [
        (
            "HS256",
            Algorithm::HS256,
            JwtKey::hmac(HMAC, Algorithm::HS256).unwrap(),
            EncodingKey::from_secret(HMAC),
        ),
        (
            "RS256",
            Algorithm::RS256,
            JwtKey::rsa_pem(
                include_bytes!("../tests/keys/rsa1.pub.pem"),
                Algorithm::RS256,
            )
            .unwrap(),
            EncodingKey::from_rsa_pem(include_bytes!("../tests/keys/rsa1.key.pem")).unwrap(),
        ),
        (
            "ES256",
            Algorithm::ES256,
            JwtKey::ec_pem(
                include_bytes!("../tests/keys/ec256.pub.pem"),
                Algorithm::ES256,
            )
            .unwrap(),
            EncodingKey::from_ec_pem(include_bytes!("../tests/keys/ec256.key.pem")).unwrap(),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            JwtKey::ed_pem(include_bytes!("../tests/keys/ed.pub.pem")).unwrap(),
            EncodingKey::from_ed_pem(include_bytes!("../tests/keys/ed.key.pem")).unwrap(),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, alg, key, signing)| {
            let validator = JwtValidator::builder(ISSUER, RESOURCE)
                .key(key)
                .build()
                .unwrap();
            (name, validator, token(alg, &signing, "alice"))
        })
        .collect()
}

fn cold(c: &mut Criterion) {
    let mut group = c.benchmark_group("cold_validate");
    for (name, validator, token) in validators() {
        assert!(ready(validator.validate(&token)).is_ok());
        group.bench_function(name, |b| {
            b.iter(|| ready(validator.validate(black_box(&token))).unwrap())
        });
    }
    // Our own authorization server's validator (ES256, follows key rotations).
    let keys = tower_mcp_auth::server::SigningKeys::generate().unwrap();
    let ring = keys.validator(ISSUER, RESOURCE);
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(3600);
    let claims = serde_json::json!({"iss": ISSUER, "aud": RESOURCE, "sub": "alice",
        "exp": exp.as_secs(), "scope": "mcp:tools", "client_id": "c"});
    let token = keys.sign(&claims, "at+jwt").unwrap();
    assert!(ready(ring.validate(&token)).is_ok());
    group.bench_function("ES256_signing_keys_ring", |b| {
        b.iter(|| ready(ring.validate(black_box(&token))).unwrap())
    });
    group.finish();
}

type Inner = tower::util::ServiceFn<
    fn(Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

fn inner() -> Inner {
    fn respond(
        _: Request<Full<Bytes>>,
    ) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
        std::future::ready(Ok(Response::new(Full::new(Bytes::new()))))
    }
    service_fn(respond as fn(_) -> _)
}

fn request(token: &str) -> Request<Full<Bytes>> {
    Request::post(RESOURCE)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn layer(c: &mut Criterion) {
    let resource = ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:tools"])
        .build()
        .unwrap();
    let mut group = c.benchmark_group("bearer_layer");
    for (name, validator, token) in validators() {
        if name != "RS256" && name != "ES256" {
            continue;
        }
        let mut cached = BearerLayer::new(validator.clone(), resource.clone())
            .require_scopes(["mcp:tools"])
            .layer(inner());
        // The first request validates and fills the cache; the rest are cache hits.
        assert_eq!(ready(cached.call(request(&token))).unwrap().status(), 200);
        group.bench_function(format!("cached_{name}"), |b| {
            b.iter_custom(|iters| per_request(&mut cached, || request(&token), iters))
        });
        if name == "ES256" {
            // The same hit with metrics recorded: into a no-op recorder (the facade's cost), and
            // into Prometheus' own recorder (what an operator runs).
            let noop = metrics::NoopRecorder;
            group.bench_function("cached_ES256_metrics_noop_recorder", |b| {
                b.iter_custom(|iters| {
                    metrics::with_local_recorder(&noop, || {
                        per_request(&mut cached, || request(&token), iters)
                    })
                })
            });
            let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            group.bench_function("cached_ES256_metrics_prometheus_recorder", |b| {
                b.iter_custom(|iters| {
                    metrics::with_local_recorder(&prometheus, || {
                        per_request(&mut cached, || request(&token), iters)
                    })
                })
            });
        }
        if name == "ES256" {
            // A flood of bad tokens: each one verified (401), beside the same flood once the
            // address's failure budget is spent (429 before any signature work).
            // The right key's signature over another payload: well-formed, so refusing it takes
            // the full signature check.
            let forged = {
                let key = EncodingKey::from_ec_pem(include_bytes!("../tests/keys/ec256.key.pem"))
                    .unwrap();
                let other = self::token(Algorithm::ES256, &key, "mallory");
                let signature = other.rsplit('.').next().unwrap();
                let signed = token.rsplit_once('.').unwrap().0;
                format!("{signed}.{signature}")
            };
            let mut verified = BearerLayer::new(validator.clone(), resource.clone()).layer(inner());
            assert_eq!(
                ready(verified.call(request(&forged))).unwrap().status(),
                401
            );
            group.bench_function("bad_token_ES256_verified", |b| {
                b.iter_custom(|iters| per_request(&mut verified, || request(&forged), iters))
            });
            let mut budgeted = BearerLayer::new(validator.clone(), resource.clone())
                .limit_auth_failures(AuthFailureLimit::new(1, Duration::from_secs(3600)))
                .layer(inner());
            assert_eq!(
                ready(budgeted.call(request(&forged))).unwrap().status(),
                401
            );
            assert_eq!(
                ready(budgeted.call(request(&forged))).unwrap().status(),
                429
            );
            group.bench_function("bad_token_ES256_past_failure_budget", |b| {
                b.iter_custom(|iters| per_request(&mut budgeted, || request(&forged), iters))
            });
            let mut cached_budgeted = BearerLayer::new(validator.clone(), resource.clone())
                .require_scopes(["mcp:tools"])
                .limit_auth_failures(AuthFailureLimit::new(20, Duration::from_secs(60)))
                .layer(inner());
            assert_eq!(
                ready(cached_budgeted.call(request(&token)))
                    .unwrap()
                    .status(),
                200
            );
            group.bench_function("cached_ES256_with_failure_limit", |b| {
                b.iter_custom(|iters| per_request(&mut cached_budgeted, || request(&token), iters))
            });
        }
        let mut uncached = BearerLayer::new(validator, resource.clone())
            .token_cache_capacity(0)
            .layer(inner());
        group.bench_function(format!("uncached_{name}"), |b| {
            b.iter_custom(|iters| per_request(&mut uncached, || request(&token), iters))
        });
    }
    let mut bare = inner();
    let token = validators().remove(1).2;
    group.bench_function("no_layer_baseline", |b| {
        b.iter_custom(|iters| per_request(&mut bare, || request(&token), iters))
    });
    group.finish();
}

/// The keyed MAC every cache hit computes (SipHash-1-3, 128 bits) over an 800-byte token: the
/// floor of the hot path's cost, beside a plain comparison of the token with a stored copy
/// (what the cache did before it stopped keeping copies).
fn token_mac(c: &mut Criterion) {
    use siphasher::sip128::{Hasher128, SipHasher13};
    use std::hash::Hasher;
    let (_, _, token) = validators().remove(0);
    let copy = token.clone();
    let key = [7u8; 16];
    let mut group = c.benchmark_group("token_cache");
    group.bench_function("siphash13_128_of_token", |b| {
        b.iter(|| {
            let mut hasher = SipHasher13::new_with_key(&key);
            hasher.write(black_box(token.as_bytes()));
            hasher.finish128()
        })
    });
    group.bench_function("compare_with_stored_copy", |b| {
        b.iter(|| black_box(token.as_bytes()) == black_box(copy.as_bytes()))
    });
    group.finish();
}

/// Resident memory of the process in bytes (Linux), 0 where `/proc` is not available.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Bytes of resident memory per cached token: 100,000 distinct users' tokens (the IdP-shaped
/// 800-byte token above, one subject each) validated through the layer, the resident set
/// measured before and after. Printed, not timed.
fn cache_memory(_: &mut Criterion) {
    const USERS: usize = 100_000;
    let resource = ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .build()
        .unwrap();
    let (_, validator, _) = validators().remove(0);
    let signing = EncodingKey::from_secret(HMAC);
    let user = |i: usize| request(&token(Algorithm::HS256, &signing, &format!("user-{i:06}")));
    let mut service = BearerLayer::new(validator, resource)
        .token_cache_capacity(USERS as u64)
        .layer(inner());
    // One request first: lazily built parts of the layer are not per-token memory. Each
    // request is built and dropped in turn, so only what the cache keeps stays resident.
    assert_eq!(ready(service.call(user(0))).unwrap().status(), 200);
    let before = resident_bytes();
    for i in 1..USERS {
        assert_eq!(ready(service.call(user(i))).unwrap().status(), 200);
    }
    let after = resident_bytes();
    let per_token = after.saturating_sub(before) / (USERS as u64 - 1);
    println!(
        "token_cache/memory: {per_token} bytes per cached token ({USERS} tokens, resident set growth)"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    // Memory first: later groups leave freed memory the allocator would hand back to it.
    targets = cache_memory, cold, layer, token_mac
}
criterion_main!(benches);

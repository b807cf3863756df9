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

/// DPoP (RFC 9449): verifying one proof (ES256; header, signature, claims, `ath`, replay cache),
/// the cost a DPoP request adds to the bearer layer on top of the cached token; and the whole
/// layer for a DPoP request. Each iteration gets a fresh proof (made outside the timing).
fn dpop(c: &mut Criterion) {
    use base64::Engine;
    use tower_mcp_auth::dpop::Dpop;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pem = include_bytes!("../tests/keys/ec256.key.pem");
    let signing = EncodingKey::from_ec_pem(pem).unwrap();
    // The public JWK of the key, from its SEC1 point (the DER's last 65 bytes).
    let der = {
        let text = std::str::from_utf8(include_bytes!("../tests/keys/ec256.pub.pem")).unwrap();
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    let point = &der[der.len() - 64..];
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": b64.encode(&point[..32]), "y": b64.encode(&point[32..]),
    }))
    .unwrap();
    let jkt =
        tower_mcp_auth::dpop::thumbprint(serde_json::to_value(&jwk).unwrap().as_object().unwrap())
            .unwrap();
    let (_, validator, _) = validators().remove(2);
    let mut claims: serde_json::Value = serde_json::from_slice(
        &b64.decode(
            token(Algorithm::ES256, &signing, "alice")
                .split('.')
                .nth(1)
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    claims["cnf"] = serde_json::json!({ "jkt": jkt });
    let bound = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
    let ath = b64.encode(<sha2::Sha256 as sha2::Digest>::digest(bound.as_bytes()));
    let mut counter = 0u64;
    let mut proof = move || {
        counter += 1;
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(jwk.clone());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "jti": format!("bench-{counter}"), "htm": "POST", "htu": RESOURCE, "iat": now, "ath": ath,
        });
        jsonwebtoken::encode(&header, &claims, &signing).unwrap()
    };
    let dpop = Dpop::new();
    let mut group = c.benchmark_group("dpop");
    group.bench_function("verify_proof_ES256", |b| {
        b.iter_batched(
            &mut proof,
            |p| dpop.verify(&p, "POST", RESOURCE, Some(&bound)).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    let resource = ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .build()
        .unwrap();
    let mut layer = BearerLayer::new(validator, resource).layer(inner());
    let dpop_request = |proof: String| {
        Request::post(RESOURCE)
            .header("authorization", format!("DPoP {bound}"))
            .header("dpop", proof)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(
        ready(layer.call(dpop_request(proof()))).unwrap().status(),
        200
    );
    group.bench_function("cached_ES256_dpop_request", |b| {
        b.iter_batched(
            || dpop_request(proof()),
            |r| ready(layer.call(r)).unwrap(),
            criterion::BatchSize::SmallInput,
        )
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
    targets = cache_memory, cold, layer, token_mac, dpop
}
criterion_main!(benches);

//! Revocation that reaches the bearer layer, and several replicas on one Redis (feature
//! `redis`): a client moves between replicas through the whole flow; revocations and code
//! replays on one replica are refused on the other within the documented bound; a code has one
//! winner across replicas; Redis stopping and starting under traffic opens nothing and loses
//! nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tower::ServiceBuilder;
use tower_mcp_auth::server::{AuthServer, EncryptionKeys, SigningKeys};
use tower_mcp_auth::store::{MemoryStore, RedisStore, Store};
use tower_mcp_auth::{AuthContext, ProtectedResource};

use crate::code_flow::{VERIFIER, challenge, query};
use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:4567/callback";
const PASSWORD: &str = "wonderland";

/// How long a revocation made on one replica may take to reach another: the revocation
/// log's poll interval (1 s) plus a store round trip, with room for a loaded CI machine.
const PROPAGATION_BOUND: Duration = Duration::from_secs(3);

/// One replica: the authorization server and `/mcp` (an echo of the caller, behind the bearer
/// layer with its token cache on), served on its own port; all replicas share `issuer`.
struct Replica {
    base: String,
    mcp: String,
    /// The resource URI (the issuer's `/mcp`, whichever replica serves it).
    resource: String,
    /// Calls that reached the protected service.
    served: Arc<AtomicUsize>,
}

async fn replica(
    listener: tokio::net::TcpListener,
    issuer: &str,
    store: impl Store,
    keys: SigningKeys,
) -> Replica {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mcp = format!("{issuer}/mcp");
    let auth = AuthServer::builder(issuer)
        .resource(&mcp)
        .scopes_supported(["mcp:tools"])
        .dev_user("alice", PASSWORD)
        .signing_keys(keys)
        .store(store)
        .build()
        .unwrap();
    let resource = ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .build()
        .unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let echo = tower::service_fn(move |req: http::Request<axum::body::Body>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let sub = req
                .extensions()
                .get::<AuthContext>()
                .map(|c| c.subject().to_owned());
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(json!({ "sub": sub }).to_string()),
            )))
        }
    });
    let app = axum::Router::new()
        .nest_service(
            "/mcp",
            ServiceBuilder::new()
                .layer(auth.bearer_layer(&resource).unwrap())
                .service(echo),
        )
        .merge(auth.router());
    spawn_with_peer(listener, app);
    Replica {
        mcp: format!("{base}/mcp"),
        base,
        resource: mcp,
        served,
    }
}

/// Two replicas on one Redis (each its own connection), the first one's URL as the issuer.
async fn two_replicas() -> (Replica, Replica) {
    let keys = SigningKeys::generate().unwrap();
    let store = redis_store().await;
    let (listener_a, addr_a) = listener().await;
    let (listener_b, _) = listener().await;
    let issuer = format!("http://{addr_a}");
    let a = replica(listener_a, &issuer, store.clone(), keys.clone()).await;
    let b = replica(listener_b, &issuer, store, keys).await;
    (a, b)
}

impl Replica {
    async fn register(&self) -> String {
        let response = client()
            .post(format!("{}/oauth/register", self.base))
            .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "registered");
        response.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A browser signs in and consents here; returns the authorization code.
    async fn code(&self, browser: &reqwest::Client, client_id: &str, resource: &str) -> String {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("code_challenge", &challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "s")
            .append_pair("resource", resource)
            .append_pair("scope", "mcp:tools");
        let page = browser.get(url.as_str()).send().await.unwrap();
        let back = if page.status() == 303 {
            page
        } else {
            assert_eq!(page.status(), 200, "the login page");
            let html = page.text().await.unwrap();
            sign_in_and_approve(browser, &self.base, &html, "alice", PASSWORD).await
        };
        query(back.headers()["location"].to_str().unwrap())["code"].clone()
    }

    async fn token(&self, http: &reqwest::Client, form: &[(&str, &str)]) -> reqwest::Response {
        http.post(format!("{}/oauth/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn redeem(
        &self,
        http: &reqwest::Client,
        client_id: &str,
        code: &str,
    ) -> reqwest::Response {
        self.token(
            http,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    }

    async fn refresh(&self, client_id: &str, refresh_token: &str) -> reqwest::Response {
        self.token(
            &client(),
            &[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn revoke(&self, client_id: &str, token: &str) -> reqwest::StatusCode {
        client()
            .post(format!("{}/oauth/revoke", self.base))
            .form(&[("client_id", client_id), ("token", token)])
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn call(&self, access_token: &str) -> reqwest::Response {
        client()
            .post(&self.mcp)
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
    }

    async fn status(&self, access_token: &str) -> u16 {
        self.call(access_token).await.status().as_u16()
    }

    /// Waits (up to [`PROPAGATION_BOUND`]) until `/mcp` refuses `access_token` with 401
    /// `invalid_token`; returns how long that took.
    async fn refused_within_bound(&self, access_token: &str) -> Duration {
        let started = Instant::now();
        loop {
            let response = self.call(access_token).await;
            if response.status() == 401 {
                assert!(
                    www_authenticate(&response).contains("error=\"invalid_token\""),
                    "a revoked token is an invalid_token"
                );
                return started.elapsed();
            }
            assert_eq!(response.status(), 200, "only served or refused");
            assert!(
                started.elapsed() < PROPAGATION_BOUND,
                "still accepted after {PROPAGATION_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn tokens_of(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), 200, "tokens issued");
    let body: Value = response.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

// ---- one process ----

/// One replica on the memory store, its bearer cache on (the default).
async fn single() -> Replica {
    let (listener, addr) = listener().await;
    let issuer = format!("http://{addr}");
    replica(
        listener,
        &issuer,
        MemoryStore::default(),
        SigningKeys::generate().unwrap(),
    )
    .await
}

#[tokio::test]
async fn revoked_access_token_is_refused_on_the_next_request_despite_the_cache() {
    let server = single().await;
    let client_id = server.register().await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let (access, _) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    // Twice: the second is served from the bearer layer's token cache.
    assert_eq!(server.status(&access).await, 200);
    assert_eq!(server.status(&access).await, 200);
    assert_eq!(server.revoke(&client_id, &access).await, 200);
    let served = server.served.load(Ordering::SeqCst);
    let refused = server.call(&access).await;
    assert_eq!(refused.status(), 401, "refused at once, cached or not");
    assert!(www_authenticate(&refused).contains("error=\"invalid_token\""));
    assert_eq!(
        server.served.load(Ordering::SeqCst),
        served,
        "never reached the tool"
    );
}

#[tokio::test]
async fn replayed_code_revokes_the_cached_access_token() {
    let server = single().await;
    let client_id = server.register().await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let (access, refresh) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    assert_eq!(server.status(&access).await, 200);
    let replay = server.redeem(&client(), &client_id, &code).await;
    assert_eq!(replay.status(), 400, "the replay is refused");
    assert_eq!(
        server.status(&access).await,
        401,
        "the first access token is revoked"
    );
    let refreshed = server.refresh(&client_id, &refresh).await;
    assert_eq!(refreshed.status(), 400, "and so is its refresh token");
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_cached_access_tokens_of_the_family() {
    let server = single().await;
    let client_id = server.register().await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let (first, refresh) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    let (second, next) = tokens_of(server.refresh(&client_id, &refresh).await).await;
    // The successor is used: the rotated token is dead from now on.
    let (third, _) = tokens_of(server.refresh(&client_id, &next).await).await;
    for token in [&first, &second, &third] {
        assert_eq!(server.status(token).await, 200);
    }
    let reuse = server.refresh(&client_id, &refresh).await;
    assert_eq!(reuse.status(), 400, "reuse of a rotated token");
    for token in [&first, &second, &third] {
        assert_eq!(
            server.status(token).await,
            401,
            "the whole family is revoked"
        );
    }
}

// ---- two replicas, one Redis ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moves_between_replicas_through_the_whole_flow() {
    let (a, b) = two_replicas().await;
    let resource = a.resource.clone();
    let client_id = a.register().await;
    // Signs in on B with the client A registered; redeems on A; refreshes on B.
    let code = b.code(&browser(), &client_id, &resource).await;
    let (access, refresh) = tokens_of(a.redeem(&client(), &client_id, &code).await).await;
    let (refreshed, _) = tokens_of(b.refresh(&client_id, &refresh).await).await;
    for token in [&access, &refreshed] {
        for replica in [&a, &b] {
            let response = replica.call(token).await;
            assert_eq!(
                response.status(),
                200,
                "a token of one replica is good on both"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["sub"], "alice");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_replica_is_refused_by_the_other_within_the_bound() {
    let (a, b) = two_replicas().await;
    let client_id = a.register().await;
    let code = a.code(&browser(), &client_id, &a.resource).await;
    let (access, _) = tokens_of(a.redeem(&client(), &client_id, &code).await).await;
    // Cached on A before the revocation.
    assert_eq!(a.status(&access).await, 200);
    assert_eq!(a.status(&access).await, 200);
    assert_eq!(b.revoke(&client_id, &access).await, 200);
    assert_eq!(
        b.status(&access).await,
        401,
        "at once on the replica that revoked"
    );
    let took = a.refused_within_bound(&access).await;
    eprintln!("revocation reached the other replica in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_replayed_on_one_replica_revokes_the_tokens_the_other_issued() {
    let (a, b) = two_replicas().await;
    let client_id = a.register().await;
    let code = a.code(&browser(), &client_id, &a.resource).await;
    let (access, refresh) = tokens_of(a.redeem(&client(), &client_id, &code).await).await;
    assert_eq!(a.status(&access).await, 200);
    let replay = b.redeem(&client(), &client_id, &code).await;
    assert_eq!(replay.status(), 400, "the replay is refused");
    a.refused_within_bound(&access).await;
    assert_eq!(a.refresh(&client_id, &refresh).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_redemptions_over_both_replicas_give_one_token() {
    let (a, b) = two_replicas().await;
    let client_id = a.register().await;
    let code = a.code(&browser(), &client_id, &a.resource).await;
    // HTTP/2: a thousand requests in flight on one connection per replica, not 2,000 sockets.
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let replica = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (http, client_id, code) = (http.clone(), client_id.clone(), code.clone());
            tokio::spawn(async move {
                replica
                    .redeem(&http, &client_id, &code)
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for task in tasks {
        *statuses.entry(task.await.unwrap()).or_default() += 1;
    }
    assert_eq!(
        statuses.get(&200),
        Some(&1),
        "exactly one token: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&400),
        Some(&999),
        "the rest invalid_grant: {statuses:?}"
    );
}

#[tokio::test]
async fn replicas_sharing_sealing_keys_share_the_signing_key() {
    let store = redis_store().await;
    let sealing = EncryptionKeys::new("kek-1", &[9u8; 32]).unwrap();
    let a = SigningKeys::shared(&store, &sealing).await.unwrap();
    let b = SigningKeys::shared(&store, &sealing).await.unwrap();
    assert_eq!(
        a.current_kid(),
        b.current_kid(),
        "one key for every replica"
    );
    let other = EncryptionKeys::new("kek-1", &[8u8; 32]).unwrap();
    let refused = SigningKeys::shared(&store, &other).await;
    assert!(
        refused.is_err(),
        "a replica with other sealing keys fails at start-up"
    );
}

// ---- faults ----

/// Redis stops under traffic and starts again (with its append-only file, as a production
/// Redis keeps what it acknowledged): while it is down, requests that need it get 503 with
/// `Retry-After` and nothing else; a cached token keeps working; nobody gets in without a
/// token; afterwards service resumes by itself and what was acknowledged before is all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopping_under_traffic_gives_503s_opens_nothing_and_loses_nothing() {
    let mut redis = RedisProcess::start_persistent().await;
    let store: RedisStore = RedisStore::builder(redis.url())
        .timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let (listener, addr) = listener().await;
    let issuer = format!("http://{addr}");
    let server = replica(listener, &issuer, store, SigningKeys::generate().unwrap()).await;
    let client_id = server.register().await;
    let browser = browser();
    let code = server.code(&browser, &client_id, &server.resource).await;
    let (cached, refresh) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    // A second grant whose access token this replica has never validated.
    let code = server.code(&browser, &client_id, &server.resource).await;
    let (unseen, _) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    assert_eq!(server.status(&cached).await, 200);

    // Traffic throughout the stop, the outage and the restart: what each kind of request got.
    let server = Arc::new(server);
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let traffic = {
        let (server, running) = (server.clone(), running.clone());
        let (cached, unseen) = (cached.clone(), unseen.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while running.load(Ordering::SeqCst) {
                seen.insert(("cached", server.status(&cached).await));
                seen.insert(("unseen", server.status(&unseen).await));
                let anonymous = client().post(&server.mcp).send().await.unwrap();
                seen.insert(("anonymous", anonymous.status().as_u16()));
            }
            seen
        })
    };

    redis.stop().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut outage_503s = 0;
    while Instant::now() < deadline {
        // Needs no store: the token is in the bearer cache.
        assert_eq!(
            server.status(&cached).await,
            200,
            "a cached token keeps working"
        );
        // No token: refused as always, never let through.
        let anonymous = client().post(&server.mcp).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        // A token never validated here needs the store (is it revoked?): 503, not 401, so
        // the client keeps it.
        let unseen_call = server.call(&unseen).await;
        assert_eq!(
            unseen_call.status(),
            503,
            "not a 401 that drops a good token"
        );
        // The token endpoint needs the store: 503 with Retry-After.
        let refreshed = server.refresh(&client_id, &refresh).await;
        assert_eq!(refreshed.status(), 503);
        assert!(refreshed.headers().contains_key("retry-after"));
        outage_503s += 2;
    }
    assert!(outage_503s > 0);

    redis.resume().await;
    // Service resumes without a restart of ours, and the refresh token acknowledged before
    // the fault is still good.
    let started = Instant::now();
    let refreshed = loop {
        let response = server.refresh(&client_id, &refresh).await;
        if response.status() == 200 {
            break response;
        }
        assert_eq!(response.status(), 503, "only 503s until it is back");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (fresh, _) = tokens_of(refreshed).await;
    assert_eq!(server.status(&fresh).await, 200);
    assert_eq!(
        server.status(&unseen).await,
        200,
        "the unseen token validates again"
    );
    running.store(false, Ordering::SeqCst);
    let seen = traffic.await.unwrap();
    for (kind, status) in &seen {
        let allowed: &[u16] = match *kind {
            "cached" => &[200],
            "unseen" => &[200, 503],
            _ => &[401],
        };
        assert!(allowed.contains(status), "{kind} got {status}: {seen:?}");
    }
    assert!(
        seen.contains(&("unseen", 503)),
        "the outage was seen: {seen:?}"
    );
    eprintln!("recovered {:?} after Redis came back", started.elapsed());
}

// ---- the quickstart as replicas ----

/// The quickstart's embedded stack as two replicas on one Redis (`REDIS_URL`, `SECRET_KEY`):
/// the same demo password on both, a client registered on one signs in on the other, and an
/// rmcp client calls a tool on the second with the token the first issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_as_two_replicas_on_one_redis() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let prefix = format!("quickstart-{:x}:", rand::random::<u64>());
    let secret = "a-secret-of-at-least-thirty-two-characters";
    let url = redis_url().await;
    let (first, second) = (
        crate::quickstart::Replicated::connect(&url, &prefix, secret, None)
            .await
            .unwrap(),
        crate::quickstart::Replicated::connect(&url, &prefix, secret, None)
            .await
            .unwrap(),
    );
    assert_eq!(first.password, second.password, "one demo password");
    let (listener_a, addr_a) = listener().await;
    let (listener_b, addr_b) = listener().await;
    let issuer = format!("http://{addr_a}");
    let mcp = format!("{issuer}/mcp");
    let mut bases = Vec::new();
    for (listener, addr, shared) in [(listener_a, addr_a, &first), (listener_b, addr_b, &second)] {
        let (tp_listener, tp_addr) = crate::support::listener().await;
        let (app, third_party) = crate::quickstart::embedded_stack(
            crate::quickstart::auth_server_builder(&issuer, &mcp, &shared.password),
            &mcp,
            &format!("http://{tp_addr}"),
            &shared.password,
            Some(shared),
        )
        .unwrap();
        spawn(tp_listener, third_party);
        spawn_with_peer(listener, app);
        bases.push(format!("http://{addr}"));
    }
    let at = |base: &String| Replica {
        base: base.clone(),
        mcp: format!("{base}/mcp"),
        resource: mcp.clone(),
        served: Arc::default(),
    };
    let (on_a, on_b) = (at(&bases[0]), at(&bases[1]));
    let client_id = on_a.register().await;
    // Signs in on B as demo with the shared password; the code is redeemed on A.
    let browser = browser();
    let mut authorize = url::Url::parse(&format!("{}/oauth/authorize", on_b.base)).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", &mcp)
        .append_pair("scope", "mcp:tools notes:read");
    let login = browser.get(authorize.as_str()).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let html = login.text().await.unwrap();
    let back = sign_in_and_approve(&browser, &on_b.base, &html, "demo", &second.password).await;
    let code = query(back.headers()["location"].to_str().unwrap())["code"].clone();
    let (access, _) = tokens_of(on_a.redeem(&client(), &client_id, &code).await).await;
    // An MCP session lives on one replica (sticky routing): this one is on B.
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(on_b.mcp.as_str()).auth_header(access),
    );
    let client = ().serve(transport).await.expect("initialize on B");
    let result = client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    let text = text_of(&result);
    assert!(text.contains("demo"), "{text}");
    client.cancel().await.unwrap();
}

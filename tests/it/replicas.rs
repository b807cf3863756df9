//! Several replicas on one Redis (feature `redis`): a client moves between replicas through the whole flow; revocations and code
//! replays on one replica are refused on the other within the documented bound; a code has one
//! winner across replicas; Redis stopping and starting under traffic opens nothing and loses
//! nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use tower_mcp_auth::server::{EncryptionKeys, SigningKeys};
use tower_mcp_auth::store::RedisStore;

use crate::code_flow::{VERIFIER, challenge, query};
use crate::oauth_server::*;
use crate::support::*;

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

//! The authorization code flow (feature `server`) driven like a browser and a public client:
//! authorize → dev login → consent → code → token → MCP call → refresh → replay defences.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceBuilder;
use tower_mcp_auth::server::AuthServer;
use tower_mcp_auth::{AuthContext, BearerLayer, ProtectedResource};

use crate::support::*;
use tower_mcp_auth::store::{MemoryStore, Store, StoreError};
use tower_mcp_auth::validate::BoxFuture;

/// The memory store with 5 ms of latency on every read, like a store across a network.
struct SlowStore(MemoryStore);

impl Store for SlowStore {
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: bytes::Bytes,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.put(key, value, ttl)
    }
    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: bytes::Bytes,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.0.put_if_absent(key, value, ttl)
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<bytes::Bytes>, StoreError>> {
        Box::pin(async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.0.get(key).await
        })
    }
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<bytes::Bytes>, StoreError>> {
        self.0.take(key)
    }
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.0.delete(key)
    }
    fn increment<'a>(
        &'a self,
        key: &'a str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.0.increment(key, ttl)
    }
    fn append<'a>(
        &'a self,
        log: &'a str,
        event: bytes::Bytes,
        retention: std::time::Duration,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.0.append(log, event, retention)
    }
    fn read_log<'a>(
        &'a self,
        log: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, bytes::Bytes)>, StoreError>> {
        self.0.read_log(log, after, limit)
    }
}

struct Flow {
    base: String,
    mcp: String,
    browser: reqwest::Client,
}

const REDIRECT: &str = "http://127.0.0.1:4567/callback";
pub(crate) const VERIFIER: &str = "a-verifier-of-enough-length-0123456789-abcdefghijklmnop";

pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn setup() -> Flow {
    setup_with(|b| b).await
}

async fn setup_with(
    configure: impl FnOnce(
        tower_mcp_auth::server::AuthServerBuilder,
    ) -> tower_mcp_auth::server::AuthServerBuilder,
) -> Flow {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp = format!("{base}/mcp");
    let auth = AuthServer::builder(&base)
        .resource(&mcp)
        .scopes_supported(["mcp:tools", "notes:read"])
        .dev_user("alice", "wonderland")
        // Registered without a port: loopback redirect URIs may use any port (RFC 8252).
        .public_client(
            "app",
            ["http://127.0.0.1/callback"],
            ["mcp:tools", "notes:read"],
        )
        // The tests serve client metadata documents on 127.0.0.1 over http.
        .allow_development_client_metadata();
    let auth = configure(auth).build().unwrap();
    let resource = ProtectedResource::builder(&mcp)
        .authorization_server(auth.issuer())
        .build()
        .unwrap();
    let echo = tower::service_fn(|req: http::Request<axum::body::Body>| async move {
        let ctx = req.extensions().get::<AuthContext>().cloned();
        let body = json!({"sub": ctx.map(|c| c.subject().to_owned())});
        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from(body.to_string()),
        )))
    });
    let app = axum::Router::new()
        .nest_service(
            "/mcp",
            ServiceBuilder::new()
                .layer(
                    BearerLayer::new(auth.validator(&mcp).unwrap(), resource.clone())
                        .token_cache_capacity(0),
                )
                .service(echo),
        )
        .merge(auth.router());
    spawn(listener, app);
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Flow { base, mcp, browser }
}

pub(crate) fn hidden(html: &str, name: &str) -> String {
    form_field(html, name)
}

pub(crate) fn query(location: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

impl Flow {
    fn authorize_url(&self, extra: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", self.base)).unwrap();
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in [
                ("response_type", "code"),
                ("client_id", "app"),
                ("redirect_uri", REDIRECT),
                ("code_challenge", &challenge(VERIFIER)),
                ("code_challenge_method", "S256"),
                ("state", "xyz"),
                ("resource", &self.mcp),
                ("scope", "mcp:tools"),
            ] {
                if !extra.iter().any(|(ek, _)| *ek == k) {
                    q.append_pair(k, v);
                }
            }
            for (k, v) in extra {
                if !v.is_empty() {
                    q.append_pair(k, v);
                }
            }
        }
        url.to_string()
    }

    /// Runs authorize → login → consent and returns the redirect's query.
    async fn code(&self) -> std::collections::HashMap<String, String> {
        self.code_via(self.authorize_url(&[]), "app", "127.0.0.1")
            .await
    }

    /// Runs authorize → login → consent for `url` and returns the redirect's query; the login
    /// page must name `client` and the consent page `redirect_host`.
    async fn code_via(
        &self,
        url: String,
        client: &str,
        redirect_host: &str,
    ) -> std::collections::HashMap<String, String> {
        let page = self.browser.get(url).send().await.unwrap();
        if page.status() == 303 {
            // Signed in and consented before: straight back with a code.
            return query(page.headers()["location"].to_str().unwrap());
        }
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(
            html.contains(client),
            "the login page names the client: {html}"
        );
        let form = [
            ("request", hidden(&html, "request")),
            ("csrf", hidden(&html, "csrf")),
        ];
        let consent = self
            .browser
            .post(format!("{}/oauth/login", self.base))
            .form(&[
                form[0].clone(),
                form[1].clone(),
                ("username", "alice".to_owned()),
                ("password", "wonderland".to_owned()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(consent.status(), 200);
        let html = consent.text().await.unwrap();
        assert!(
            html.contains(redirect_host),
            "the consent page names the redirect host"
        );
        let approved = answer_consent(&self.browser, &self.base, &html, "approve").await;
        assert_eq!(approved.status(), 303);
        query(approved.headers()["location"].to_str().unwrap())
    }

    async fn token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        client()
            .post(format!("{}/oauth/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn redeem(&self, code: &str) -> reqwest::Response {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "app"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("resource", &self.mcp),
        ])
        .await
    }

    /// `grant_type=refresh_token` for the public client `app`.
    async fn refresh(&self, refresh_token: String) -> reqwest::Response {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "app"),
            ("refresh_token", &refresh_token),
        ])
        .await
    }

    async fn call(&self, access_token: &str) -> reqwest::StatusCode {
        client()
            .post(&self.mcp)
            .bearer_auth(access_token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

#[tokio::test]
async fn full_flow_login_consent_code_token_call_refresh() {
    let flow = setup().await;
    let redirect = flow.code().await;
    assert_eq!(redirect["state"], "xyz");
    assert_eq!(
        redirect["iss"], flow.base,
        "RFC 9207 iss in the authorization response"
    );
    let response = flow.redeem(&redirect["code"]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let body: Value = client()
        .post(&flow.mcp)
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["sub"], "alice");

    // Refresh rotates; scope may narrow but not widen.
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let widen = flow
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "app"),
            ("refresh_token", &rt1),
            ("scope", "mcp:tools notes:read"),
        ])
        .await;
    assert_eq!(
        widen.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    let second: Value = flow
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "app"),
            ("refresh_token", &rt1),
        ])
        .await
        .json()
        .await
        .unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    // Rotation is strict by default: the rotated token presented again is a theft signal.
    let refresh = |token: String| flow.refresh(token);
    let reuse = refresh(rt1.clone()).await;
    assert_eq!(
        reuse.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(
        refresh(rt2).await.status(),
        400,
        "the whole family is revoked"
    );
    assert_eq!(
        flow.call(second["access_token"].as_str().unwrap()).await,
        401
    );
}

#[tokio::test]
async fn stolen_refresh_token_replayed_after_rotation_revokes_the_family() {
    // The attacker presents a stolen token the legitimate client already rotated, right
    // away (inside what used to be a grace window): the family dies, and the legitimate
    // client's next refresh tells it so instead of the attacker's chain living on.
    let flow = setup().await;
    let code = flow.code().await["code"].clone();
    let tokens: Value = flow.redeem(&code).await.json().await.unwrap();
    let stolen = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| flow.refresh(token);
    let legitimate: Value = refresh(stolen.clone()).await.json().await.unwrap();
    let attacker = refresh(stolen).await;
    assert_eq!(attacker.status(), 400, "the attacker gets nothing");
    let next = refresh(legitimate["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(
        next.status(),
        400,
        "the family is revoked: the theft is detected"
    );
    assert_eq!(
        flow.call(legitimate["access_token"].as_str().unwrap())
            .await,
        401
    );
}

#[tokio::test]
async fn grace_window_retry_gets_the_same_successor_and_reuse_later_still_revokes() {
    let flow = setup_with(|b| b.refresh_grace(std::time::Duration::from_secs(30))).await;
    let code = flow.code().await["code"].clone();
    let tokens: Value = flow.redeem(&code).await.json().await.unwrap();
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| flow.refresh(token);
    let second: Value = refresh(rt1.clone()).await.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    // A retry after a lost response, within the window: the same successor, a fresh access
    // token; no second chain.
    let retry = refresh(rt1.clone()).await;
    assert_eq!(retry.status(), 200);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["refresh_token"], rt2.as_str(), "the same successor");
    assert_eq!(
        flow.call(retry["access_token"].as_str().unwrap()).await,
        200
    );
    // Using the successor retires the old token; presenting it now revokes the family.
    let third = refresh(rt2).await;
    assert_eq!(third.status(), 200);
    let third: Value = third.json().await.unwrap();
    let reuse = refresh(rt1).await;
    assert_eq!(
        reuse.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let rt3 = third["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        refresh(rt3).await.status(),
        400,
        "the whole family is revoked"
    );
    assert_eq!(
        flow.call(third["access_token"].as_str().unwrap()).await,
        401
    );
}

#[tokio::test]
async fn public_client_revokes_its_refresh_token_and_the_family_dies() {
    let flow = setup().await;
    let code = flow.code().await["code"].clone();
    let tokens: Value = flow.redeem(&code).await.json().await.unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let revoked = client()
        .post(format!("{}/oauth/revoke", flow.base))
        .form(&[
            ("client_id", "app"),
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let again = flow
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "app"),
            ("refresh_token", refresh_token),
        ])
        .await;
    assert_eq!(again.status(), 400);
    assert_eq!(
        flow.call(tokens["access_token"].as_str().unwrap()).await,
        401
    );
}

#[tokio::test]
async fn login_csrf_with_an_attackers_own_request_is_refused() {
    // The attacker starts a request in their browser and makes the victim's browser submit
    // the login form with it: the request is bound to the attacker's browser cookie.
    let flow = setup().await;
    let attacker = flow
        .browser
        .get(flow.authorize_url(&[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let victim = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = victim
        .post(format!("{}/oauth/login", flow.base))
        .form(&[
            ("request", hidden(&attacker, "request")),
            ("csrf", hidden(&attacker, "csrf")),
            ("username", "alice".into()),
            ("password", "wonderland".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn repeated_authorize_parameters_are_refused() {
    let flow = setup().await;
    let url = format!("{}&client_id=other", flow.authorize_url(&[]));
    let response = flow.browser.get(url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn session_cookies_are_http_only_and_path_scoped() {
    let flow = setup().await;
    let page = flow
        .browser
        .get(flow.authorize_url(&[]))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Path=/oauth"),
        "{cookie}"
    );
}

#[tokio::test]
async fn client_names_are_escaped_on_pages() {
    let flow = setup().await;
    let reg: Value = client()
        .post(format!("{}/oauth/register", flow.base))
        .json(&json!({"client_name": "<script>alert(1)</script>", "redirect_uris": ["http://127.0.0.1/cb"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = flow.authorize_url(&[
        ("client_id", reg["client_id"].as_str().unwrap()),
        ("redirect_uri", "http://127.0.0.1:9/cb"),
    ]);
    let html = flow
        .browser
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
}

#[tokio::test]
async fn replayed_code_is_refused_and_revokes_its_tokens() {
    let flow = setup().await;
    let code = flow.code().await["code"].clone();
    let first: Value = flow.redeem(&code).await.json().await.unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(flow.call(access).await, 200);
    let replay = flow.redeem(&code).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        replay.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(
        flow.call(access).await,
        401,
        "tokens from a replayed code are revoked"
    );
}

#[tokio::test]
async fn concurrent_redemptions_have_one_winner() {
    let flow = std::sync::Arc::new(setup().await);
    let code = flow.code().await["code"].clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (flow, code) = (flow.clone(), code.clone());
            tokio::spawn(async move { flow.redeem(&code).await.status() })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += usize::from(task.await.unwrap() == 200);
    }
    assert_eq!(ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_never_fork_the_family() {
    // A store with network-like latency, so that concurrent refreshes overlap; a grace
    // window, so that they may all succeed.
    let flow = setup_with(|b| {
        b.store(SlowStore(MemoryStore::default()))
            .refresh_grace(std::time::Duration::from_secs(30))
    })
    .await;
    let redirect = flow.code().await;
    let tokens: Value = flow.redeem(&redirect["code"]).await.json().await.unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    // A client refreshing from eight places at once, within the grace window.
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let rt = rt.clone();
            let base = flow.base.clone();
            tokio::spawn(async move {
                client()
                    .post(format!("{base}/oauth/token"))
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", "app"),
                        ("refresh_token", &rt),
                    ])
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut successors = Vec::new();
    for attempt in attempts {
        let response = attempt.await.unwrap();
        assert_eq!(response.status(), 200, "all are within the grace window");
        let body: Value = response.json().await.unwrap();
        successors.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    // Every one got the same successor: exactly one chain lives on.
    successors.dedup();
    assert_eq!(successors.len(), 1, "one successor for all");
    let mut live = 0;
    for successor in successors {
        let response = flow
            .token(&[
                ("grant_type", "refresh_token"),
                ("client_id", "app"),
                ("refresh_token", &successor),
            ])
            .await;
        live += usize::from(response.status() == 200);
    }
    assert_eq!(live, 1);
}

#[tokio::test]
async fn wrong_pkce_verifier_and_mismatched_redirect_are_invalid_grant() {
    let flow = setup().await;
    let code = flow.code().await["code"].clone();
    let wrong = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "app"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", "x".repeat(50).as_str()),
        ])
        .await;
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    // The code is spent by the failed attempt: no second guess.
    assert_eq!(flow.redeem(&code).await.status(), 400);
    let code = flow.code().await["code"].clone();
    let other = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "app"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9999/callback"),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(
        other.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn authorize_errors_go_back_with_iss_or_stay_on_our_page() {
    let flow = setup().await;
    // Errors about the request itself go back to the (verified) redirect URI, with iss.
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            "invalid_request",
        ),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (
            vec![("resource", "https://elsewhere.example/mcp")],
            "invalid_target",
        ),
        (vec![("scope", "admin")], "invalid_scope"),
    ] {
        let response = flow
            .browser
            .get(flow.authorize_url(&extra))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "{extra:?}");
        let q = query(response.headers()["location"].to_str().unwrap());
        assert_eq!(q["error"], error, "{extra:?}");
        assert_eq!(q["iss"], flow.base);
        assert_eq!(q["state"], "xyz");
    }
    // An unknown client or an unregistered redirect URI: an error page, never a redirect.
    for extra in [
        vec![("client_id", "ghost")],
        vec![("redirect_uri", "https://evil.example/callback")],
        vec![("redirect_uri", "http://127.0.0.1:4567/callback/../steal")],
    ] {
        let response = flow
            .browser
            .get(flow.authorize_url(&extra))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{extra:?}");
        assert!(response.headers().get("location").is_none());
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
}

#[tokio::test]
async fn login_and_consent_forms_resist_csrf_and_wrong_passwords() {
    let flow = setup().await;
    let html = flow
        .browser
        .get(flow.authorize_url(&[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request = hidden(&html, "request");
    let login = |csrf: String, password: &'static str| {
        let (browser, base, request) = (flow.browser.clone(), flow.base.clone(), request.clone());
        async move {
            browser
                .post(format!("{base}/oauth/login"))
                .form(&[
                    ("request", request),
                    ("csrf", csrf),
                    ("username", "alice".into()),
                    ("password", password.into()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(login("forged".into(), "wonderland").await.status(), 403);
    let wrong = login(hidden(&html, "csrf"), "guess").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let ok = login(hidden(&html, "csrf"), "wonderland").await;
    assert_eq!(ok.status(), 200);
    let consent = ok.text().await.unwrap();
    // Consent without the session cookie is refused.
    let stranger = client()
        .post(format!("{}/oauth/consent", flow.base))
        .form(&[
            ("request", hidden(&consent, "request")),
            ("csrf", hidden(&consent, "csrf")),
            ("decision", "approve".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    // Denying sends access_denied back.
    let denied = answer_consent(&flow.browser, &flow.base, &consent, "deny").await;
    assert_eq!(
        query(denied.headers()["location"].to_str().unwrap())["error"],
        "access_denied"
    );
}

#[tokio::test]
async fn consent_is_remembered_per_user_and_client() {
    let flow = setup().await;
    flow.code().await;
    // Same browser session, same scopes: straight back with a code.
    let again = flow
        .browser
        .get(flow.authorize_url(&[]))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    assert!(query(again.headers()["location"].to_str().unwrap()).contains_key("code"));
    // More scopes than consented: the consent page again.
    let more = flow
        .browser
        .get(flow.authorize_url(&[("scope", "mcp:tools notes:read")]))
        .send()
        .await
        .unwrap();
    assert_eq!(more.status(), 200);
}

#[tokio::test]
async fn metadata_advertises_the_code_flow_when_users_can_log_in() {
    let flow = setup().await;
    let doc: Value = client()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            flow.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{}/oauth/authorize", flow.base)
    );
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    assert!(
        doc["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
}

#[tokio::test]
async fn dynamically_registered_public_client_runs_the_flow() {
    let flow = setup().await;
    let response = client()
        .post(format!("{}/oauth/register", flow.base))
        .json(&json!({"client_name": "Inspector", "redirect_uris": ["http://localhost:6274/oauth/callback"],
                      "token_endpoint_auth_method": "none", "application_type": "native",
                      "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let reg: Value = response.json().await.unwrap();
    assert!(
        reg.get("client_secret").is_none(),
        "public clients get no secret"
    );
    let client_id = reg["client_id"].as_str().unwrap();
    let redirect = "http://localhost:6274/oauth/callback";
    let url = flow.authorize_url(&[("client_id", client_id), ("redirect_uri", redirect)]);
    let code = flow.code_via(url, "Inspector", "localhost").await["code"].clone();
    let tokens = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(tokens.status(), 200);
}

#[tokio::test]
async fn self_registered_clients_may_ask_for_any_supported_scope_configured_ones_may_not() {
    let audit = AuditLog::default();
    let _capture = audit.capture();
    let flow =
        setup_with(|b| b.public_client("narrow", ["http://127.0.0.1/callback"], ["mcp:tools"]))
            .await;
    let wider = [("scope", "mcp:tools notes:read")];
    // A client the operator configured keeps its list as a ceiling.
    let refused = flow
        .browser
        .get(flow.authorize_url(&[wider[0], ("client_id", "narrow")]))
        .send()
        .await
        .unwrap();
    let q = query(refused.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "invalid_scope");

    // A registration's `scope` is recorded, not enforced: the client may step up to any scope
    // the server supports (it could register itself again with a wider one anyway).
    let registered: Value = client()
        .post(format!("{}/oauth/register", flow.base))
        .json(&json!({"client_name": "Stepper", "redirect_uris": [REDIRECT], "scope": "mcp:tools"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(registered["scope"], "mcp:tools");
    let client_id = registered["client_id"].as_str().unwrap();
    let url = flow.authorize_url(&[wider[0], ("client_id", client_id)]);
    let code = flow.code_via(url, "Stepper", "127.0.0.1").await["code"].clone();
    let tokens: Value = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["scope"], "mcp:tools notes:read");
    // Scopes the server does not support stay refused.
    let unsupported = flow
        .browser
        .get(flow.authorize_url(&[("scope", "mcp:tools admin"), ("client_id", client_id)]))
        .send()
        .await
        .unwrap();
    let q = query(unsupported.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "invalid_scope");

    // A client ID metadata document's `scope` is recorded the same way.
    let (host, _) = metadata_host().await;
    let document = format!("{host}/narrow.json");
    let url = flow.authorize_url(&[wider[0], ("client_id", &document)]);
    let consent = flow.browser.get(url).send().await.unwrap();
    assert_eq!(consent.status(), 200, "signed in: the consent page");
    let html = consent.text().await.unwrap();
    assert!(html.contains("<code>notes:read</code>"), "{html}");
    let approved = answer_consent(&flow.browser, &flow.base, &html, "approve").await;
    let q = query(approved.headers()["location"].to_str().unwrap());
    assert!(q.contains_key("code"), "{q:?}");

    // Every refusal is an audit event naming the client and the error.
    let log = audit.text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authorization refused"))
        .collect();
    assert!(
        refusals.iter().any(|l| l.contains("client_id=narrow")
            && l.contains("error=\"invalid_scope\"")
            && l.contains("requested_scope=\"mcp:tools notes:read\"")),
        "{log}"
    );
    assert_eq!(refusals.len(), 2, "{log}");
}

#[tokio::test]
async fn users_get_only_the_scopes_they_may_hold_and_the_narrowing_is_audited() {
    let audit = AuditLog::default();
    let _capture = audit.capture();
    // alice is in no group: she may hold mcp:tools only.
    let flow = setup_with(|b| {
        b.groups(tower_mcp_auth::policy::GroupMapping {
            scopes: [("readers".to_owned(), vec!["notes:read".to_owned()])].into(),
            ..Default::default()
        })
        .user_scopes(["mcp:tools"])
    })
    .await;
    let url = flow.authorize_url(&[("scope", "mcp:tools notes:read")]);
    let code = flow.code_via(url, "app", "127.0.0.1").await["code"].clone();
    let tokens: Value = flow.redeem(&code).await.json().await.unwrap();
    // RFC 6749 §3.3: the response says what was granted.
    assert_eq!(tokens["scope"], "mcp:tools");
    let log = audit.text();
    let narrowed = log
        .lines()
        .find(|l| l.contains("authorization narrowed"))
        .unwrap_or_else(|| panic!("no narrowing event in {log}"));
    assert!(
        narrowed.contains("user=alice")
            && narrowed.contains("requested=mcp:tools notes:read")
            && narrowed.contains("granted=mcp:tools")
            && narrowed.contains("removed=[\"notes:read\"]"),
        "{narrowed}"
    );
}

#[tokio::test]
async fn registration_refuses_dangerous_redirect_uris() {
    let flow = setup().await;
    for doc in [
        json!({"redirect_uris": ["javascript:alert(1)"]}),
        json!({"redirect_uris": ["https://app.example/cb#frag"]}),
        json!({"redirect_uris": ["http://app.example/cb"]}),
        json!({"redirect_uris": ["https://user:pw@app.example/cb"]}),
        json!({"redirect_uris": ["http://127.0.0.1:3000/cb"], "application_type": "web"}),
        json!({"redirect_uris": []}),
        json!({"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
        json!({"redirect_uris": ["https://app.example/cb"], "response_types": ["token"]}),
    ] {
        let response = client()
            .post(format!("{}/oauth/register", flow.base))
            .json(&doc)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{doc}");
    }
    let web = client()
        .post(format!("{}/oauth/register", flow.base))
        .json(
            &json!({"redirect_uris": ["https://app.example/cb"], "application_type": "web",
                      "token_endpoint_auth_method": "client_secret_basic"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(web.status(), 201);
    assert!(web.json::<Value>().await.unwrap()["client_secret"].is_string());
}

#[tokio::test]
async fn password_guessing_spends_the_sign_in_request() {
    let flow = setup().await;
    let html = flow
        .browser
        .get(flow.authorize_url(&[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let mut statuses = Vec::new();
    for guess in ["a", "b", "c", "d", "e", "wonderland"] {
        let response = flow
            .browser
            .post(format!("{}/oauth/login", flow.base))
            .form(&[
                ("request", request.as_str()),
                ("csrf", csrf.as_str()),
                ("username", "alice"),
                ("password", guess),
            ])
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    // Four wrong guesses get the form again, the fifth spends the request, and even the right
    // password is then refused on it.
    assert_eq!(statuses, [401, 401, 401, 401, 429, 400]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_password_guesses_are_all_counted() {
    let flow = setup().await;
    let html = flow
        .browser
        .get(flow.authorize_url(&[]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (request, csrf) = (hidden(&html, "request"), hidden(&html, "csrf"));
    let guesses: Vec<_> = (0..8)
        .map(|i| {
            let (browser, base) = (flow.browser.clone(), flow.base.clone());
            let (request, csrf) = (request.clone(), csrf.clone());
            tokio::spawn(async move {
                browser
                    .post(format!("{base}/oauth/login"))
                    .form(&[
                        ("request", request),
                        ("csrf", csrf),
                        ("username", "alice".into()),
                        ("password", format!("guess-{i}")),
                    ])
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for guess in guesses {
        guess.await.unwrap();
    }
    // Eight guesses at once count as eight: the request is spent, the right password too late.
    let late = flow
        .browser
        .post(format!("{}/oauth/login", flow.base))
        .form(&[
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", "alice"),
            ("password", "wonderland"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 400);
}

/// Serves client metadata documents on 127.0.0.1: `/client.json` (its own URL as client_id),
/// `/liar.json` (someone else's), `/moved.json` (a redirect). Counts fetches.
pub(crate) async fn metadata_host() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let doc = |client_id: String| {
        json!({"client_id": client_id, "client_name": "Metadata Client",
               "redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none"})
    };
    let (own, liar) = (
        doc(format!("{base}/client.json")),
        doc("https://other.example/client.json".into()),
    );
    let mut narrow = doc(format!("{base}/narrow.json"));
    narrow["scope"] = json!("mcp:tools");
    let counter = hits.clone();
    let app = axum::Router::new()
        .route(
            "/client.json",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let own = own.clone();
                async move {
                    (
                        [(http::header::CACHE_CONTROL, "max-age=600")],
                        axum::Json(own),
                    )
                }
            }),
        )
        .route(
            "/narrow.json",
            axum::routing::get(move || {
                let narrow = narrow.clone();
                async move { axum::Json(narrow) }
            }),
        )
        .route(
            "/liar.json",
            axum::routing::get(move || {
                let liar = liar.clone();
                async move { axum::Json(liar) }
            }),
        )
        .route(
            "/moved.json",
            axum::routing::get(|| async { axum::response::Redirect::temporary("/client.json") }),
        );
    spawn(listener, app);
    (base, hits)
}

#[tokio::test]
async fn client_id_metadata_document_client_runs_the_flow() {
    let flow = setup().await;
    let (host, hits) = metadata_host().await;
    let client_id = format!("{host}/client.json");
    let url = flow.authorize_url(&[("client_id", &client_id)]);
    let code = flow.code_via(url, "Metadata Client", "127.0.0.1").await["code"].clone();
    let tokens = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_eq!(tokens.status(), 200);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the document is cached"
    );
}

#[tokio::test]
async fn bad_client_metadata_documents_are_refused_without_redirecting() {
    let flow = setup().await;
    let (host, _) = metadata_host().await;
    for client_id in [
        format!("{host}/liar.json"),  // client_id differs from the URL
        format!("{host}/moved.json"), // redirects are not followed
        format!("{host}/missing.json"),
        format!("{host}/"), // no path
    ] {
        let url = flow.authorize_url(&[("client_id", &client_id)]);
        let response = flow.browser.get(url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{client_id}");
        assert!(response.headers().get("location").is_none());
    }
    // A redirect URI the document does not list.
    let url = flow.authorize_url(&[
        ("client_id", &format!("{host}/client.json")),
        ("redirect_uri", "https://evil.example/cb"),
    ]);
    assert_eq!(flow.browser.get(url).send().await.unwrap().status(), 400);
}

#[tokio::test]
async fn client_metadata_on_private_addresses_is_not_fetched_in_production_mode() {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let auth = AuthServer::builder(&base)
        .resource(format!("{base}/mcp"))
        .dev_user("alice", "wonderland")
        .build()
        .unwrap();
    spawn(listener, auth.router());
    let (host, hits) = metadata_host().await;
    let https_loopback = host.replace("http://", "https://");
    for client_id in [
        format!("{host}/client.json"),
        format!("{https_loopback}/client.json"),
        "https://10.0.0.1/c.json".to_owned(),
    ] {
        let mut url = url::Url::parse(&format!("{base}/oauth/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("response_type", "code");
        let response = client().get(url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{client_id}");
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was fetched"
    );
    let doc: Value = client()
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["client_id_metadata_document_supported"], true);
}

#[tokio::test]
async fn corrupt_refresh_record_is_unavailable_not_invalid_grant() {
    // A record that no longer decodes must not read as "no such token": a client told
    // `invalid_grant` drops its grant, though nothing was wrong with it.
    let store = std::sync::Arc::new(MemoryStore::default());
    let flow = setup_with({
        let store = store.clone();
        move |b| b.store(store)
    })
    .await;
    let code = flow.code().await["code"].clone();
    let tokens: Value = flow.redeem(&code).await.json().await.unwrap();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let key = format!(
        "pin:rt:{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(refresh_token.as_bytes()))
    );
    assert!(store.get(&key).await.unwrap().is_some(), "the record's key");
    let garbage = bytes::Bytes::from_static(b"{not json");
    store
        .put(&key, garbage.clone(), std::time::Duration::from_secs(600))
        .await
        .unwrap();
    let response = flow
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "app"),
            ("refresh_token", &refresh_token),
        ])
        .await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // Nothing was changed or spent by the refusal.
    assert_eq!(store.get(&key).await.unwrap(), Some(garbage));
}

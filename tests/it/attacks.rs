//! Attacks on the authorization server, one test each, named after the attack (SECURITY.md
//! lists them by family): token-endpoint confusion and guessing, open redirects, sign-in brute
//! force, memory exhaustion, log injection.

use serde_json::{Value, json};

use crate::code_flow::{VERIFIER, challenge};
use crate::oauth_server::*;
use crate::support::*;

/// Registers a confidential client using `method` at the token endpoint; returns its id and
/// secret.
async fn register_confidential(server: &Replica, method: &str) -> (String, String) {
    let response = client()
        .post(format!("{}/oauth/register", server.base))
        .json(&json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": method,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["client_id"].as_str().unwrap().to_owned(),
        body["client_secret"].as_str().unwrap().to_owned(),
    )
}

fn authorize_url(server: &Replica, client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&format!("{}/oauth/authorize", server.base)).unwrap();
    {
        let mut query = url.query_pairs_mut();
        let defaults = [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge(VERIFIER)),
            ("code_challenge_method", "S256"),
            ("state", "s"),
        ];
        for (k, v) in defaults {
            if !extra.iter().any(|(ek, _)| *ek == k) {
                query.append_pair(k, v);
            }
        }
        for (k, v) in extra {
            query.append_pair(k, v);
        }
    }
    url.to_string()
}

async fn oauth_error(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

// ---- the token endpoint ----

#[tokio::test]
async fn grant_type_password_from_a_public_client_is_unsupported_grant_type() {
    let server = single().await;
    let client_id = server.register().await;
    let response = server
        .token(
            &client(),
            &[
                ("grant_type", "password"),
                ("client_id", &client_id),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        oauth_error(response).await,
        (400, "unsupported_grant_type".into()),
        "the client is known: it hears what is wrong with its grant"
    );
}

#[tokio::test]
async fn client_credentials_from_a_public_client_is_unauthorized_client() {
    let server = single().await;
    let client_id = server.register().await;
    let response = server
        .token(
            &client(),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
            ],
        )
        .await;
    assert_eq!(
        oauth_error(response).await,
        (400, "unauthorized_client".into())
    );
}

#[tokio::test]
async fn client_registered_for_basic_authenticating_with_post_is_refused() {
    let server = single().await;
    let (client_id, secret) = register_confidential(&server, "client_secret_basic").await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    // The secret in the body: not the method this client registered.
    let mut posted = form.to_vec();
    posted.extend([
        ("client_id", client_id.as_str()),
        ("client_secret", &secret),
    ]);
    let refused = server.token(&client(), &posted).await;
    assert_eq!(oauth_error(refused).await, (401, "invalid_client".into()));
    // The code was not spent by the refused request: Basic redeems it.
    let accepted = client()
        .post(format!("{}/oauth/token", server.base))
        .basic_auth(&client_id, Some(&secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
}

#[tokio::test]
async fn guessing_a_client_secret_is_rate_limited() {
    let server = single().await;
    let (client_id, secret) = register_confidential(&server, "client_secret_post").await;
    let attempt = |guess: String| {
        let (server_base, client_id) = (server.base.clone(), client_id.clone());
        async move {
            client()
                .post(format!("{server_base}/oauth/token"))
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "whatever"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", guess.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..10 {
        let response = attempt(format!("guess-{i}")).await;
        assert_eq!(response.status(), 401, "guess {i}");
    }
    let limited = attempt("guess-11".into()).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // The right secret is refused too until the window ends: the limit is not an oracle.
    let right = attempt(secret).await;
    assert_eq!(right.status(), 429);
}

// ---- the authorization endpoint ----

#[tokio::test]
async fn open_redirect_through_an_error_for_an_unapproved_client_shows_a_page() {
    let server = single().await;
    // Anyone may register a client whose redirect URI is their own site.
    let response = client()
        .post(format!("{}/oauth/register", server.base))
        .json(&json!({"redirect_uris": ["https://evil.example/landing"]}))
        .send()
        .await
        .unwrap();
    let client_id = response.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = authorize_url(
        &server,
        &client_id,
        &[
            ("redirect_uri", "https://evil.example/landing"),
            ("response_type", "token"),
        ],
    );
    let page = browser().get(url).send().await.unwrap();
    assert_eq!(page.status(), 400, "a page, not a redirect");
    assert!(page.headers().get("location").is_none());
    let html = page.text().await.unwrap();
    assert!(html.contains("unsupported_response_type"), "{html}");
}

#[tokio::test]
async fn errors_still_go_back_to_a_client_the_user_approved() {
    let server = single().await;
    let client_id = server.register().await;
    let browser = browser();
    // Approved once (sign-in, consent, code).
    server.code(&browser, &client_id, &server.resource).await;
    let url = authorize_url(&server, &client_id, &[("response_type", "token")]);
    let back = browser.get(url).send().await.unwrap();
    assert_eq!(back.status(), 303);
    let location = back.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert!(
        location.contains("error=unsupported_response_type"),
        "{location}"
    );
}

#[tokio::test]
async fn memory_exhaustion_through_a_huge_state_is_refused() {
    let server = single().await;
    let client_id = server.register().await;
    let huge = "s".repeat(12 * 1024);
    let url = authorize_url(&server, &client_id, &[("state", &huge)]);
    let refused = browser().get(url).send().await.unwrap();
    assert_eq!(
        refused.status(),
        414,
        "the query is refused before anything is stored"
    );
    let long = "s".repeat(2000);
    let url = authorize_url(&server, &client_id, &[("state", &long)]);
    let refused = browser().get(url).send().await.unwrap();
    assert_eq!(refused.status(), 400, "a state past 1 KiB is refused");
}

// ---- sign-in ----

/// The login page of a fresh authorization request, and its form fields.
async fn login_page(server: &Replica, browser: &reqwest::Client, client_id: &str) -> String {
    let url = authorize_url(
        server,
        client_id,
        &[("resource", &server.resource), ("scope", "mcp:tools")],
    );
    let page = browser.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

#[tokio::test]
async fn password_guessing_across_fresh_authorization_requests_is_locked_out() {
    let server = single().await;
    let client_id = server.register().await;
    let browser = browser();
    let guess = |html: String, password: String| {
        let (browser, base) = (browser.clone(), server.base.clone());
        async move {
            browser
                .post(format!("{base}/oauth/login"))
                .form(&[
                    ("request", form_field(&html, "request")),
                    ("csrf", form_field(&html, "csrf")),
                    ("username", "alice".to_owned()),
                    ("password", password),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    // A new authorization request for every guess: the per-request limit never triggers.
    for i in 0..10 {
        let html = login_page(&server, &browser, &client_id).await;
        let response = guess(html, format!("wrong-{i}")).await;
        assert_eq!(response.status(), 401, "guess {i}");
    }
    let html = login_page(&server, &browser, &client_id).await;
    let locked = guess(html, PASSWORD.to_owned()).await;
    assert_eq!(
        locked.status(),
        429,
        "even the right password, until the window ends"
    );
    assert!(locked.headers().contains_key("retry-after"));
}

// ---- logs ----

#[tokio::test]
async fn log_injection_through_a_user_name_is_escaped() {
    let server = single().await;
    let client_id = server.register().await;
    let browser = browser();
    let audit = AuditLog::default();
    let _guard = audit.capture();
    let html = login_page(&server, &browser, &client_id).await;
    let forged = "mallory\n2026-11-30T00:00:00Z  INFO tower_mcp_auth::audit: dev login user=admin";
    browser
        .post(format!("{}/oauth/login", server.base))
        .form(&[
            ("request", form_field(&html, "request")),
            ("csrf", form_field(&html, "csrf")),
            ("username", forged.to_owned()),
            ("password", "x".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    let log = audit.text();
    assert!(log.contains("mallory\\n2026"), "{log}");
    assert!(
        !log.lines()
            .any(|line| line.starts_with("2026-11-30T00:00:00Z")),
        "no forged line: {log}"
    );
}

// ---- registration ----

async fn register_redirects(
    server: &Replica,
    redirect_uris: &[&str],
    application_type: &str,
) -> (u16, Value) {
    let response = client()
        .post(format!("{}/oauth/register", server.base))
        .json(&json!({"redirect_uris": redirect_uris, "application_type": application_type}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn wildcard_and_malformed_redirect_uris_are_refused_at_registration() {
    let server = single().await;
    for uri in [
        "https://*.example.com/cb",
        "https://exa_mple.com/cb",
        "https://-example.com/cb",
        "https://example..com/cb",
        "https://user:pass@example.com/cb",
        "https://example.com/cb#fragment",
        "http://example.com/cb",
        "javascript:alert(1)",
        "data:text/html,hi",
        "myapp:/cb",
        "/relative/cb",
    ] {
        let (status, body) = register_redirects(&server, &[uri], "native").await;
        assert_eq!(status, 400, "{uri} was registered");
        assert_eq!(body["error"], "invalid_redirect_uri", "{uri}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{uri}: a clear message"
        );
    }
}

#[tokio::test]
async fn private_use_scheme_redirects_are_for_native_apps_only() {
    let server = single().await;
    let (status, body) =
        register_redirects(&server, &["com.example.notes:/oauth/callback"], "native").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        register_redirects(&server, &["com.example.notes:/oauth/callback"], "web").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_redirect_uri"))
    );
}

// ---- OpenID Connect and bearer endpoints ----

#[tokio::test]
async fn openid_scope_published_by_discovery_is_served() {
    let server = single().await;
    let discovery = get_json(&format!("{}/.well-known/openid-configuration", server.base)).await;
    assert!(
        discovery["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("openid")),
        "{discovery}"
    );
    let client_id = server.register().await;
    let browser = browser();
    let mut url = url::Url::parse(&authorize_url(
        &server,
        &client_id,
        &[
            ("resource", &server.resource),
            ("scope", "openid mcp:tools"),
        ],
    ))
    .unwrap();
    url.set_fragment(None);
    let login = browser.get(url.as_str()).send().await.unwrap();
    assert_eq!(login.status(), 200, "openid is not refused");
    let html = login.text().await.unwrap();
    let back = sign_in_and_approve(&browser, &server.base, &html, "alice", PASSWORD).await;
    let code =
        crate::code_flow::query(back.headers()["location"].to_str().unwrap())["code"].clone();
    let tokens: Value = server
        .redeem(&client(), &client_id, &code)
        .await
        .json()
        .await
        .unwrap();
    assert!(tokens["id_token"].is_string(), "{tokens}");
}

#[tokio::test]
async fn userinfo_reads_credentials_as_the_mcp_endpoint_does() {
    let server = single().await;
    let client_id = server.register().await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let (access, _) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    let userinfo = format!("{}/oauth/userinfo", server.base);
    // The scheme is case-insensitive (RFC 7235), as at /mcp.
    let lower = client()
        .get(&userinfo)
        .header("authorization", format!("bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    // No credentials: a challenge without an error code (RFC 6750 §3.1).
    let none = client().get(&userinfo).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    // Two Authorization headers: malformed, as at /mcp.
    let two = client()
        .get(&userinfo)
        .header("authorization", format!("Bearer {access}"))
        .header("authorization", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), 400);
}

// ---- DNS rebinding ----

#[tokio::test]
async fn dns_rebinding_to_the_authorization_server_gets_421() {
    let server = single().await;
    let client_id = server.register().await;
    // The attacker's name, re-pointed at 127.0.0.1: the browser sends it as Host.
    let url = authorize_url(&server, &client_id, &[("resource", &server.resource)]);
    let rebound = browser()
        .get(url.as_str())
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 421);
    for path in ["/oauth/token", "/oauth/register"] {
        let response = client()
            .post(format!("{}{path}", server.base))
            .header("host", "127.0.0.1.attacker.example:8080")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 421, "{path}");
    }
    // The loopback names themselves are fine on a loopback issuer.
    let own = browser()
        .get(url.as_str())
        .header("host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
}

#[tokio::test]
async fn dns_rebinding_to_the_mcp_endpoint_gets_403_before_the_token_is_read() {
    let stack = start_quickstart().await;
    let token = mint_hs256(&stack.base, &stack.mcp_url, "alice", "mcp:tools");
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        "http://localhost.evil.example:8080",
    ] {
        let response = client()
            .post(&stack.mcp_url)
            .header("origin", origin)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{origin}");
        assert!(
            response.headers().get("www-authenticate").is_none(),
            "{origin}: refused before the bearer layer"
        );
    }
    // Loopback origins (the MCP Inspector on this machine) pass on to the bearer layer.
    let local = client()
        .post(&stack.mcp_url)
        .header("origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 401, "the bearer layer answers");
}

#[tokio::test]
async fn the_sign_in_page_is_not_readable_cross_origin() {
    let stack = start_quickstart().await;
    let page = client()
        .get(format!("{}/oauth/authorize?client_id=x", stack.base))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        page.headers().get("access-control-allow-origin").is_none(),
        "no CORS on the pages"
    );
    // The API endpoints browser-based clients call do allow it.
    let token = client()
        .post(format!("{}/oauth/token", stack.base))
        .header("origin", "http://localhost:6274")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert!(token.headers().get("access-control-allow-origin").is_some());
}

// ---- server-side request forgery ----

#[tokio::test]
async fn ssrf_through_metadata_document_addresses_that_embed_internal_ipv4_is_refused() {
    let server = single().await;
    let audit = AuditLog::default();
    let _guard = audit.capture();
    for host in [
        "[64:ff9b::a9fe:a9fe]",  // NAT64 of 169.254.169.254 (cloud metadata)
        "[2002:7f00:1::1]",      // 6to4 of 127.0.0.1
        "[::127.0.0.1]",         // IPv4-compatible loopback
        "[2001:0:4136:e378::1]", // Teredo
        "192.0.0.8",             // IETF protocol assignments
    ] {
        let client_id = format!("https://{host}/client.json");
        let url = authorize_url(&server, &client_id, &[("resource", &server.resource)]);
        let page = browser().get(url).send().await.unwrap();
        assert_eq!(page.status(), 400, "{host}: unknown client");
    }
    let log = audit.text();
    assert_eq!(
        log.matches("resolves to a non-public address").count(),
        5,
        "refused by the address fence, before any connection: {log}"
    );
}

// ---- cookies ----

#[tokio::test]
async fn cookie_tossing_from_a_sibling_host_is_prevented_by_the_host_prefix() {
    // An https issuer, reached here over plain HTTP on loopback with its own Host name.
    let (listener, addr) = listener().await;
    let auth = tower_mcp_auth::server::AuthServer::builder("https://mcp.example.com")
        .resource("https://mcp.example.com/mcp")
        .scopes_supported(["mcp:tools"])
        .dev_user("alice", PASSWORD)
        .public_client("app", [REDIRECT], ["mcp:tools"])
        .build()
        .unwrap();
    spawn_with_peer(listener, auth.router());
    let mut url = url::Url::parse(&format!("http://{addr}/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "app")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256");
    let page = client()
        .get(url.as_str())
        .header("host", "mcp.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cookies: Vec<&str> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(!cookies.is_empty());
    for cookie in cookies {
        assert!(cookie.starts_with("__Host-"), "{cookie}");
        assert!(
            cookie.contains("Secure") && cookie.contains("Path=/;"),
            "{cookie}"
        );
        assert!(!cookie.contains("Domain"), "{cookie}");
    }
}

// ---- memory exhaustion and eviction ----

#[tokio::test]
async fn a_flood_of_authorization_requests_cannot_evict_replay_detection() {
    use tower_mcp_auth::store::MemoryStore;
    // A small byte budget, so a few hundred requests fill it.
    let (listener, addr) = listener().await;
    let issuer = format!("http://{addr}");
    let server = replica(
        listener,
        &issuer,
        MemoryStore::with_max_bytes(256 * 1024),
        tower_mcp_auth::server::SigningKeys::generate().unwrap(),
    )
    .await;
    let client_id = server.register().await;
    let code = server.code(&browser(), &client_id, &server.resource).await;
    let (access, _) = tokens_of(server.redeem(&client(), &client_id, &code).await).await;
    // Anyone, without credentials: pending authorization requests with 1 KiB states, far
    // more than the budget holds.
    let state = "s".repeat(1000);
    for _ in 0..600 {
        let url = authorize_url(&server, &client_id, &[("state", &state)]);
        assert!(
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .status()
                .is_success()
        );
    }
    // The used-code marker survived the flood: the replay is detected and revokes the tokens.
    let replay = server.redeem(&client(), &client_id, &code).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        server.status(&access).await,
        401,
        "the replay still revokes what the code produced"
    );
}

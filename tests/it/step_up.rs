//! Step-up as spec clients meet it against the quickstart: one challenge naming every scope an
//! operation needs, the metadata listing what the policy can ask for, and rmcp's own OAuth
//! client re-authorizing with the union of its scopes (SEP-2350) as a user who may hold the new
//! scope, as one who may not, and as one who declines it.

use std::collections::BTreeSet;
use std::sync::Arc;

use jsonwebtoken::Algorithm;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthorizationManager, AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use tokio::sync::Mutex;
use tower_mcp_auth::validate::{JwtKey, JwtValidator};

use crate::quickstart;
use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:4567/callback";
const PASSWORD: &str = QUICKSTART_PASSWORD;

fn set(scopes: &str) -> BTreeSet<&str> {
    scopes.split(' ').filter(|s| !s.is_empty()).collect()
}

/// The quickstart's MCP app with a validator of HS256 test tokens (no authorization server).
async fn start_with_test_tokens() -> (String, String) {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let resource = quickstart::resource_builder(&format!("{base}/mcp"), &base)
        .build()
        .unwrap();
    let validator = JwtValidator::builder(&base, resource.resource())
        .key(JwtKey::hmac(HMAC_SECRET, Algorithm::HS256).unwrap())
        .build()
        .unwrap();
    spawn(listener, quickstart::app(resource, validator));
    (base.clone(), format!("{base}/mcp"))
}

/// The quickstart's embedded stack: its base and MCP URLs.
async fn start_embedded() -> (String, String) {
    let stack = start_quickstart().await;
    (stack.base, stack.mcp_url)
}

async fn rmcp_client_with_token(mcp_url: &str, token: String) -> RunningService<RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(mcp_url).auth_header(token),
    );
    ().serve(transport).await.expect("initialize")
}

#[tokio::test]
async fn purge_challenge_names_the_baseline_and_the_tool_scope_and_a_token_with_exactly_those_works()
 {
    let (base, mcp_url) = start_with_test_tokens().await;
    let token = |scope: &str| mint_hs256(&base, &mcp_url, "alice", scope);

    // rmcp's client with a read/write token: the policy layer's 403 names the tool's scope and
    // the bearer layer's required one, in one challenge.
    let client = rmcp_client_with_token(&mcp_url, token(quickstart::DEMO_SCOPES)).await;
    let refused = client
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .unwrap_err();
    let challenge = insufficient_scope(&refused);
    assert_eq!(
        challenge.get_required_scope(),
        Some("mcp:tools notes:admin"),
        "{}",
        challenge.www_authenticate_header
    );
    assert!(
        challenge
            .www_authenticate_header
            .contains(r#"error="insufficient_scope""#)
    );
    client.cancel().await.unwrap();

    // A client that asks for exactly the challenged scopes gets a token that works.
    let exact = token(challenge.get_required_scope().unwrap());
    let client = rmcp_client_with_token(&mcp_url, exact).await;
    let purged = client
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .expect("the challenged scopes are enough");
    assert!(text_of(&purged).contains("alice purged"), "{purged:?}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_client_that_replaces_its_scope_with_each_challenge_converges() {
    // The TypeScript SDK 1.x replaces its scope with the challenged one instead of adding it.
    // Each layer's challenge names everything the operation needs, so that client reaches a
    // working token without ever seeing the same challenge twice.
    let (base, mcp_url) = start_with_test_tokens().await;
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let post = |token: String| {
        client()
            .post(&mcp_url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize)
            .send()
    };
    // A token with the admin scope only: the bearer layer names its baseline.
    let admin_only = mint_hs256(&base, &mcp_url, "alice", quickstart::ADMIN_SCOPE);
    let response = post(admin_only).await.unwrap();
    assert_eq!(response.status(), 403);
    let first = www_authenticate(&response);
    assert!(
        first.contains(r#"scope="mcp:tools", error="insufficient_scope""#),
        "{first}"
    );
    // Replaced by exactly that: purge_all_notes names the baseline and its own scope.
    let client_ =
        rmcp_client_with_token(&mcp_url, mint_hs256(&base, &mcp_url, "alice", "mcp:tools")).await;
    let refused = client_
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .unwrap_err();
    let second = insufficient_scope(&refused);
    assert_eq!(second.get_required_scope(), Some("mcp:tools notes:admin"));
    assert_ne!(second.www_authenticate_header, first);
    client_.cancel().await.unwrap();
    // Replaced by that: it works, and initialize does too (no way back to the first challenge).
    let replaced = mint_hs256(&base, &mcp_url, "alice", "mcp:tools notes:admin");
    assert_eq!(post(replaced.clone()).await.unwrap().status(), 200);
    let client_ = rmcp_client_with_token(&mcp_url, replaced).await;
    client_
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .expect("no further challenge");
    client_.cancel().await.unwrap();
}

#[tokio::test]
async fn metadata_scopes_supported_are_the_quickstart_policy_scopes() {
    let (base, _) = start_embedded().await;
    let metadata = get_json(&format!("{base}/.well-known/oauth-protected-resource/mcp")).await;
    let listed: Vec<&str> = metadata["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // The baseline first, each scope once.
    assert_eq!(listed[0], quickstart::BASE_SCOPE);
    assert_eq!(listed.len(), listed.iter().collect::<BTreeSet<_>>().len());
    let policy = quickstart::policy().scopes();
    assert_eq!(
        listed.iter().copied().collect::<BTreeSet<_>>(),
        policy.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        policy.to_string(),
        "mcp:tools notes:admin notes:read notes:write"
    );
    // The authorization server lets clients ask for the same, and `openid` (OpenID Discovery
    // is published, and requires it).
    let as_metadata = get_json(&format!("{base}/.well-known/oauth-authorization-server")).await;
    assert_eq!(
        as_metadata["scopes_supported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect::<BTreeSet<_>>(),
        policy.iter().chain(["openid"]).collect::<BTreeSet<_>>()
    );
}

/// A self-registered rmcp OAuth client signed in as `user` with the read/write scopes the 401
/// names; returns the MCP client, its authorization manager and the person's browser.
struct SignedIn {
    client: RunningService<RoleClient, ()>,
    manager: Arc<Mutex<AuthorizationManager>>,
    browser: reqwest::Client,
    base: String,
}

async fn sign_in(user: &str) -> SignedIn {
    let (base, mcp_url) = start_embedded().await;
    let mut oauth = OAuthState::new(mcp_url.as_str(), None).await.unwrap();
    oauth
        .start_authorization(
            AuthorizationRequest::new(REDIRECT)
                .with_client_name("rmcp step-up")
                .with_scopes(quickstart::DEMO_SCOPES.split(' ')),
        )
        .await
        .expect("discovery and dynamic registration");
    let url = oauth.get_authorization_url().await.unwrap();
    let browser = browser();
    let login = browser
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let back = sign_in_and_approve(&browser, &base, &login, user, PASSWORD).await;
    oauth
        .handle_callback_url(back.headers()["location"].to_str().unwrap())
        .await
        .expect("code exchange");
    let (client, manager) = authorized_client(oauth, &mcp_url).await;
    SignedIn {
        client,
        manager,
        browser,
        base,
    }
}

/// The second round: `purge_all_notes` is refused, the client asks for the union of its scopes
/// and the challenged ones (rmcp's `request_scope_upgrade`), and the person's browser (signed
/// in already) opens the authorization URL. Returns the URL's scope and the answer.
async fn step_up(session: &SignedIn) -> (String, reqwest::Response) {
    let refused = session
        .client
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .unwrap_err();
    let challenge = insufficient_scope(&refused);
    let required = challenge.get_required_scope().unwrap().to_owned();
    assert_eq!(set(&required), set("mcp:tools notes:admin"));
    let url = session
        .manager
        .lock()
        .await
        .request_scope_upgrade(&required)
        .await
        .expect("a scope upgrade");
    let scope = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let answer = session.browser.get(&url).send().await.unwrap();
    (scope, answer)
}

/// Hands the redirect back to the client: the code exchange, with the `iss` check.
async fn finish(session: &SignedIn, redirect: &reqwest::Response) {
    let location = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    session
        .manager
        .lock()
        .await
        .exchange_code_for_token_with_issuer(
            &param("code").expect("a code"),
            &param("state").unwrap(),
            param("iss").as_deref(),
        )
        .await
        .expect("code exchange");
}

#[tokio::test]
async fn rmcp_client_steps_up_to_admin_as_demo_after_consenting_to_the_new_scope() {
    let session = sign_in("demo").await;
    let (scope, answer) = step_up(&session).await;
    assert_eq!(
        set(&scope),
        set("mcp:tools notes:read notes:write notes:admin")
    );
    // Signed in already: straight to consent, which marks only the added scope as new.
    assert_eq!(answer.status(), 200);
    let consent = answer.text().await.unwrap();
    assert!(
        consent.contains(r#"<code>notes:admin</code> <span class="new">new</span></li>"#),
        "{consent}"
    );
    for old in ["mcp:tools", "notes:read", "notes:write"] {
        assert!(
            consent.contains(&format!("<code>{old}</code></li>")),
            "{consent}"
        );
    }
    let back = answer_consent(&session.browser, &session.base, &consent, "approve").await;
    assert_eq!(back.status(), 303);
    finish(&session, &back).await;
    let purged = session
        .client
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .expect("the stepped-up token may purge");
    assert!(text_of(&purged).contains("demo purged"), "{purged:?}");
    // Asking for the same again needs no new consent.
    let (_, again) = step_up_without_refusal(&session).await;
    assert_eq!(again.status(), 303, "consent is remembered");
    session.client.cancel().await.unwrap();
}

/// Opens a new authorization for the four scopes without a refusal first.
async fn step_up_without_refusal(session: &SignedIn) -> (String, reqwest::Response) {
    let url = session
        .manager
        .lock()
        .await
        .get_authorization_url(&["mcp:tools", "notes:read", "notes:write", "notes:admin"])
        .await
        .unwrap();
    (url.clone(), session.browser.get(&url).send().await.unwrap())
}

#[tokio::test]
async fn rmcp_client_stepping_up_as_reader_gets_a_token_without_admin_and_stays_refused() {
    let session = sign_in("reader").await;
    let (scope, answer) = step_up(&session).await;
    assert!(set(&scope).contains("notes:admin"));
    // reader may not hold notes:admin: the request is narrowed to what reader may hold, which
    // reader allowed already, so the code comes back without a consent page.
    assert_eq!(answer.status(), 303);
    finish(&session, &answer).await;
    let granted = session.manager.lock().await.get_current_scopes().await;
    let refused = session
        .client
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .unwrap_err();
    assert_eq!(
        insufficient_scope(&refused).get_required_scope(),
        Some("mcp:tools notes:admin"),
        "still 403 (granted: {granted:?})"
    );
    let who = session
        .client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    assert!(
        text_of(&who).contains("subject=reader")
            && text_of(&who).contains("scopes=mcp:tools notes:read notes:write\""),
        "{who:?}"
    );
    session.client.cancel().await.unwrap();
}

#[tokio::test]
async fn declining_the_new_scope_leaves_the_old_token_working() {
    let session = sign_in("demo").await;
    let (_, answer) = step_up(&session).await;
    let consent = answer.text().await.unwrap();
    assert!(consent.contains(r#"<span class="new">new</span>"#));
    let back = answer_consent(&session.browser, &session.base, &consent, "deny").await;
    assert_eq!(back.status(), 303);
    let location = back.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("error=access_denied"), "{location}");
    // Nothing changed: the old token still works, and the new scope is still not remembered.
    let who = session
        .client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .expect("the old token works");
    assert!(text_of(&who).contains("subject=demo"), "{who:?}");
    let (_, again) = step_up_without_refusal(&session).await;
    assert_eq!(again.status(), 200, "consent is asked again");
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains(r#"<code>notes:admin</code> <span class="new">new</span></li>"#)
    );
    session.client.cancel().await.unwrap();
}

/// What the quickstart prints is true: every address answers as it says, both users sign in
/// with the printed password, the form comes prefilled with `demo`. (That `demo` steps up and
/// `reader` does not is what the rmcp tests above and the TypeScript v2 tests show.)
#[tokio::test]
async fn quickstart_banner_claims_hold() {
    let QuickstartStack {
        base,
        mcp_url,
        third_party,
    } = start_quickstart().await;
    let banner = quickstart::banner(&base, &mcp_url, &third_party, PASSWORD);
    let urls: Vec<&str> = banner
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches([',', ':', ')']))
        .collect();
    assert_eq!(urls.len(), 4, "{banner}");
    for url in urls {
        let response = client().get(url).send().await.unwrap();
        let status = response.status().as_u16();
        if url == mcp_url {
            // The MCP endpoint: the 401 that starts discovery.
            assert_eq!(status, 401);
            assert!(www_authenticate(&response).contains("resource_metadata="));
        } else if url == third_party {
            // The third party: an authorization server of its own.
            let metadata = client()
                .get(format!("{url}/.well-known/oauth-authorization-server"))
                .send()
                .await
                .unwrap();
            assert_eq!(metadata.status(), 200);
        } else {
            assert_eq!(status, 200, "{url}");
        }
    }
    for user in ["demo", "reader"] {
        assert!(banner.contains(&format!("{user} / {PASSWORD}")), "{banner}");
        // Each signs in with that password.
        let mut oauth = OAuthState::new(mcp_url.as_str(), None).await.unwrap();
        oauth
            .start_authorization(AuthorizationRequest::new(REDIRECT).with_scopes(["mcp:tools"]))
            .await
            .unwrap();
        let browser = browser();
        let login = browser
            .get(oauth.get_authorization_url().await.unwrap())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(form_field(&login, "username"), "demo", "prefilled");
        sign_in_and_approve(&browser, &base, &login, user, PASSWORD).await;
    }
    assert!(banner.contains(&format!("reader / {PASSWORD}  (may not hold notes:admin)")));
}

//! Sign-in through upstream identity providers (feature `server`): OpenID Connect against a
//! second instance of our own server, and against a hand-served provider that misbehaves on
//! purpose; GitHub against a GitHub served on loopback. Everything is real HTTP on 127.0.0.1.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use serde_json::{Value, json};
use tower_mcp_auth::AuthContext;
use tower_mcp_auth::policy::GroupMapping;
use tower_mcp_auth::server::{
    AuthServer, GitHubProvider, IdentityProvider, OidcProvider, SigningKeys,
};
use tower_mcp_auth::validate::TokenValidator;

use crate::code_flow::{VERIFIER, challenge, hidden, query};
use crate::support::*;

const APP_REDIRECT: &str = "http://127.0.0.1:4567/callback";

/// Our server, signing users in only through `provider`; groups `admins` grant `notes:admin`.
struct Downstream {
    base: String,
    mcp: String,
    auth: AuthServer,
}

async fn downstream(
    listener: tokio::net::TcpListener,
    provider: impl IdentityProvider,
) -> Downstream {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mcp = format!("{base}/mcp");
    let auth = AuthServer::builder(&base)
        .resource(&mcp)
        .scopes_supported(["mcp:tools", "notes:admin"])
        .public_client(
            "app",
            ["http://127.0.0.1/callback"],
            ["mcp:tools", "notes:admin"],
        )
        .identity_provider(provider)
        .groups(GroupMapping {
            scopes: BTreeMap::from([("admins".to_owned(), vec!["notes:admin".to_owned()])]),
            ..GroupMapping::default()
        })
        .user_scopes(["mcp:tools"])
        .build()
        .unwrap();
    spawn(listener, auth.router());
    Downstream { base, mcp, auth }
}

impl Downstream {
    fn authorize_url(&self) -> String {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", "app")
            .append_pair("redirect_uri", APP_REDIRECT)
            .append_pair("code_challenge", &challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "app-state")
            .append_pair("scope", "mcp:tools notes:admin");
        url.to_string()
    }

    /// Approves the consent page in `html` and returns the app's redirect query.
    async fn approve(&self, browser: &reqwest::Client, html: &str) -> HashMap<String, String> {
        let approved = browser
            .post(format!("{}/oauth/consent", self.base))
            .form(&[
                ("request", hidden(html, "request")),
                ("csrf", hidden(html, "csrf")),
                ("decision", "approve".into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(approved.status(), 303);
        query(approved.headers()["location"].to_str().unwrap())
    }

    /// Redeems `code` and validates the access token as the MCP server would.
    async fn redeem(&self, code: &str) -> AuthContext {
        let tokens: Value = client()
            .post(format!("{}/oauth/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", "app"),
                ("code", code),
                ("redirect_uri", APP_REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = tokens["access_token"].as_str().expect("an access token");
        self.auth
            .validator(&self.mcp)
            .unwrap()
            .validate(token)
            .await
            .unwrap()
    }
}

/// A second instance of our server as the OpenID provider: users alice (group `admins`) and
/// bob, and the downstream server registered as client `downstream`.
async fn our_server_as_idp(downstream_base: &str) -> String {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let idp = AuthServer::builder(&base)
        .resource(format!("{base}/mcp"))
        .scopes_supported(["openid", "email", "profile"])
        .dev_user_in_groups("alice", "wonderland", ["admins"])
        .dev_user("bob", "builder")
        .public_client(
            "downstream",
            [format!("{downstream_base}/oauth/callback/corp")],
            ["openid", "email", "profile"],
        )
        .build()
        .unwrap();
    spawn(listener, idp.router());
    base
}

/// Authorize at the downstream server up to the upstream provider's callback URL: the browser
/// has signed in and consented at the upstream instance.
async fn to_upstream_callback(
    down: &Downstream,
    idp: &str,
    browser: &reqwest::Client,
    user: &str,
    password: &str,
) -> String {
    let start = browser.get(down.authorize_url()).send().await.unwrap();
    assert_eq!(
        start.status(),
        303,
        "one provider and no dev login: straight to it"
    );
    let upstream = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(upstream.starts_with(&format!("{idp}/oauth/authorize?")));
    let params = query(&upstream);
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(params["nonce"].len() >= 43 && params["state"].len() >= 43);
    let login = browser.get(&upstream).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let html = login.text().await.unwrap();
    let back = sign_in_and_approve(browser, idp, &html, user, password).await;
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    assert!(callback.starts_with(&format!("{}/oauth/callback/corp?", down.base)));
    assert_eq!(query(&callback)["iss"], idp, "RFC 9207 iss from the IdP");
    callback
}

async fn corp_setup() -> (Downstream, String) {
    let (listener, addr) = listener().await;
    let idp = our_server_as_idp(&format!("http://{addr}")).await;
    let provider = OidcProvider::builder("corp", &idp, "downstream")
        .address_policy(tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback())
        .display_name("Corp SSO")
        .build()
        .unwrap();
    (downstream(listener, provider).await, idp)
}

#[tokio::test]
async fn oidc_sign_in_through_a_second_instance_of_our_server_maps_groups_to_scopes() {
    let (down, idp) = corp_setup().await;

    // The upstream instance advertises itself as an OpenID provider.
    let discovery: Value = client()
        .get(format!("{idp}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(discovery["subject_types_supported"], json!(["public"]));

    // alice is in `admins`: she gets notes:admin.
    let browser = browser();
    let callback = to_upstream_callback(&down, &idp, &browser, "alice", "wonderland").await;
    let consent = browser.get(&callback).send().await.unwrap();
    assert_eq!(consent.status(), 200);
    let html = consent.text().await.unwrap();
    assert!(html.contains("corp|alice"), "{html}");
    let back = down.approve(&browser, &html).await;
    assert_eq!(back["state"], "app-state");
    assert_eq!(back["iss"], down.base);
    let ctx = down.redeem(&back["code"]).await;
    assert_eq!(ctx.subject(), "corp|alice");
    assert!(ctx.scopes().contains("notes:admin"));
    assert!(ctx.scopes().contains("mcp:tools"));

    // bob is in no group: only the scopes every user gets, whatever the client asked.
    let browser = self::browser();
    let callback = to_upstream_callback(&down, &idp, &browser, "bob", "builder").await;
    let html = browser
        .get(&callback)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("notes:admin"),
        "consent shows only grantable scopes"
    );
    let back = down.approve(&browser, &html).await;
    let ctx = down.redeem(&back["code"]).await;
    assert_eq!(ctx.subject(), "corp|bob");
    assert_eq!(ctx.scopes().to_string(), "mcp:tools");
}

#[tokio::test]
async fn replayed_upstream_callback_is_refused() {
    let (down, idp) = corp_setup().await;
    let browser = browser();
    let callback = to_upstream_callback(&down, &idp, &browser, "alice", "wonderland").await;
    assert_eq!(browser.get(&callback).send().await.unwrap().status(), 200);
    let replay = browser.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.headers().get("location").is_none());
}

#[tokio::test]
async fn upstream_callback_carried_to_another_browser_is_refused() {
    let (down, idp) = corp_setup().await;
    let victim = browser();
    let callback = to_upstream_callback(&down, &idp, &victim, "alice", "wonderland").await;
    // Login CSRF: the attacker makes another browser open the callback of their sign-in.
    let other = browser();
    let response = other.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let session_cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("tma_session_"));
    assert!(!session_cookie, "no one is signed in by a refused callback");
    // The forged attempt did not spend the state: the real browser still completes.
    assert_eq!(victim.get(&callback).send().await.unwrap().status(), 200);
}

/// How the hand-served OpenID provider misbehaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fault {
    None,
    WrongNonce,
    WrongAudience,
    WrongIssuerInResponse,
    ForeignKey,
    UserDenies,
    WrongAzp,
    MissingIss,
}

#[derive(Clone)]
struct FakeIdp {
    base: String,
    keys: SigningKeys,
    foreign: SigningKeys,
    fault: Arc<Mutex<Fault>>,
    nonces: Arc<Mutex<HashMap<String, String>>>,
}

async fn fake_authorize(
    State(idp): State<FakeIdp>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let fault = *idp.fault.lock().unwrap();
    let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
    {
        let mut pairs = back.query_pairs_mut();
        if fault == Fault::UserDenies {
            pairs.append_pair("error", "access_denied");
        } else {
            pairs.append_pair("code", "code-1");
            idp.nonces
                .lock()
                .unwrap()
                .insert("code-1".into(), q["nonce"].clone());
        }
        pairs.append_pair("state", &q["state"]);
        let iss = if fault == Fault::WrongIssuerInResponse {
            "https://attacker.example".to_owned()
        } else {
            idp.base.clone()
        };
        // This provider promises `iss` (RFC 9207): leaving it out is refused too.
        if fault != Fault::MissingIss {
            pairs.append_pair("iss", &iss);
        }
    }
    Redirect::to(back.as_str())
}

async fn fake_token(State(idp): State<FakeIdp>, body: String) -> impl IntoResponse {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    assert!(
        form.get("code_verifier").is_some_and(|v| v.len() >= 43),
        "PKCE verifier sent upstream"
    );
    let Some(nonce) = idp.nonces.lock().unwrap().remove(&form["code"]) else {
        return (
            http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        );
    };
    let fault = *idp.fault.lock().unwrap();
    let claims = json!({
        "iss": idp.base, "sub": "u-1", "email": "user@corp.example",
        "aud": if fault == Fault::WrongAudience { "someone-else" } else { "downstream" },
        "nonce": if fault == Fault::WrongNonce { "another-nonce".to_owned() } else { nonce },
        "iat": now(), "exp": now() + 300, "groups": ["admins"],
        "azp": if fault == Fault::WrongAzp { "another-client" } else { "downstream" },
    });
    let signer = if fault == Fault::ForeignKey {
        &idp.foreign
    } else {
        &idp.keys
    };
    let id_token = signer.sign(&claims, "JWT").unwrap();
    (
        http::StatusCode::OK,
        axum::Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})),
    )
}

async fn fake_idp() -> FakeIdp {
    let (listener, addr) = listener().await;
    let idp = FakeIdp {
        base: format!("http://{addr}"),
        keys: SigningKeys::generate().unwrap(),
        foreign: SigningKeys::generate().unwrap(),
        fault: Arc::new(Mutex::new(Fault::None)),
        nonces: Arc::default(),
    };
    let discovery = json!({
        "issuer": idp.base, "authorization_endpoint": format!("{}/authorize", idp.base),
        "token_endpoint": format!("{}/token", idp.base), "jwks_uri": format!("{}/jwks", idp.base),
        "authorization_response_iss_parameter_supported": true,
    });
    let jwks = idp.keys.jwks();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        )
        .route("/authorize", axum::routing::get(fake_authorize))
        .route("/token", axum::routing::post(fake_token))
        .with_state(idp.clone());
    spawn(listener, app);
    idp
}

/// Runs the flow against the hand-served provider and returns the downstream callback's
/// response.
async fn through_fake(down: &Downstream, browser: &reqwest::Client) -> reqwest::Response {
    let start = browser.get(down.authorize_url()).send().await.unwrap();
    assert_eq!(start.status(), 303);
    let at_idp = browser
        .get(start.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(at_idp.status(), 303);
    browser
        .get(at_idp.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap()
}

async fn fake_setup() -> (Downstream, FakeIdp) {
    let idp = fake_idp().await;
    let (listener, _) = listener().await;
    let provider = OidcProvider::builder("corp", &idp.base, "downstream")
        .address_policy(tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback())
        .client_secret("downstream-secret")
        .build()
        .unwrap();
    (downstream(listener, provider).await, idp)
}

#[tokio::test]
async fn oidc_groups_claim_and_client_secret_work_with_another_provider() {
    let (down, _idp) = fake_setup().await;
    let browser = browser();
    let consent = through_fake(&down, &browser).await;
    assert_eq!(consent.status(), 200);
    let html = consent.text().await.unwrap();
    let back = down.approve(&browser, &html).await;
    let ctx = down.redeem(&back["code"]).await;
    assert_eq!(ctx.subject(), "corp|u-1");
    assert!(ctx.scopes().contains("notes:admin"));
}

#[tokio::test]
async fn forged_id_tokens_are_refused() {
    let (down, idp) = fake_setup().await;
    for fault in [
        Fault::WrongNonce,
        Fault::WrongAudience,
        Fault::ForeignKey,
        Fault::WrongAzp,
    ] {
        *idp.fault.lock().unwrap() = fault;
        let browser = browser();
        let response = through_fake(&down, &browser).await;
        assert_eq!(response.status(), 403, "{fault:?}");
        assert!(response.headers().get("location").is_none(), "{fault:?}");
        // Nobody was signed in: a new authorization asks the provider again.
        let again = browser.get(down.authorize_url()).send().await.unwrap();
        assert!(
            again.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with(&idp.base),
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn upstream_response_naming_another_issuer_is_refused() {
    let (down, idp) = fake_setup().await;
    for fault in [Fault::WrongIssuerInResponse, Fault::MissingIss] {
        *idp.fault.lock().unwrap() = fault;
        let response = through_fake(&down, &browser()).await;
        assert_eq!(response.status(), 403, "{fault:?}");
    }
}

#[tokio::test]
async fn upstream_denial_goes_back_to_the_client_as_access_denied() {
    let (down, idp) = fake_setup().await;
    *idp.fault.lock().unwrap() = Fault::UserDenies;
    let response = through_fake(&down, &browser()).await;
    assert_eq!(response.status(), 303);
    let back = query(response.headers()["location"].to_str().unwrap());
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["state"], "app-state");
    assert_eq!(back["iss"], down.base);
}

#[tokio::test]
async fn unreachable_provider_is_a_502_page_not_a_grant_error() {
    // A port nothing listens on.
    let (gone, addr) = listener().await;
    drop(gone);
    let provider = OidcProvider::builder("corp", format!("http://{addr}"), "downstream")
        .address_policy(tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback())
        .build()
        .unwrap();
    let (listener, _) = listener().await;
    let down = downstream(listener, provider).await;
    let response = browser().get(down.authorize_url()).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(response.headers().get("location").is_none());
}

/// GitHub on loopback: the OAuth App endpoints and the user API.
async fn fake_github() -> String {
    let (listener, addr) = listener().await;
    let app = axum::Router::new()
        .route(
            "/login/oauth/authorize",
            axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
                assert_eq!(q["client_id"], "Iv1.test");
                assert_eq!(q["code_challenge_method"], "S256");
                assert!(q["scope"].contains("read:org"));
                let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
                back.query_pairs_mut()
                    .append_pair("code", "gh-code")
                    .append_pair("state", &q["state"]);
                Redirect::to(back.as_str())
            }),
        )
        .route(
            "/login/oauth/access_token",
            axum::routing::post(|headers: http::HeaderMap, body: String| async move {
                let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
                let basic = headers
                    .get("authorization")
                    .is_some_and(|v| v.to_str().unwrap().starts_with("Basic "));
                // GitHub answers errors with 200 and an error object.
                if form.get("code").map(String::as_str) != Some("gh-code") || !basic {
                    return axum::Json(json!({"error": "bad_verification_code"}));
                }
                axum::Json(json!({"access_token": "gho_test", "token_type": "bearer",
                                  "scope": "read:user,read:org"}))
            }),
        )
        .route(
            "/api/v3/user",
            axum::routing::get(|headers: http::HeaderMap| async move {
                assert_eq!(headers["authorization"], "Bearer gho_test");
                axum::Json(json!({"id": 42, "login": "octocat"}))
            }),
        )
        .route(
            "/api/v3/user/orgs",
            axum::routing::get(|| async {
                axum::Json(json!([{"login": "admins"}, {"login": "octo-org"}]))
            }),
        );
    spawn(listener, app);
    format!("http://{addr}")
}

#[tokio::test]
async fn github_sign_in_uses_the_numeric_id_and_org_groups() {
    let github_base = fake_github().await;
    let github = GitHubProvider::enterprise(
        &github_base,
        format!("{github_base}/api/v3"),
        "Iv1.test",
        "gh-secret",
    )
    .unwrap()
    .address_policy(tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback())
    .unwrap()
    .org_groups(true);
    let (listener, _) = listener().await;
    let down = downstream(listener, github).await;
    let browser = browser();
    let consent = through_fake(&down, &browser).await;
    assert_eq!(consent.status(), 200);
    let html = consent.text().await.unwrap();
    assert!(html.contains("github|42"));
    let back = down.approve(&browser, &html).await;
    let ctx = down.redeem(&back["code"]).await;
    assert_eq!(ctx.subject(), "github|42");
    assert!(ctx.scopes().contains("notes:admin"), "org `admins` maps");
}

#[tokio::test]
async fn several_providers_and_dev_login_share_one_sign_in_page() {
    let idp = fake_idp().await;
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let auth = AuthServer::builder(&base)
        .resource(format!("{base}/mcp"))
        .scopes_supported(["mcp:tools", "notes:admin"])
        .public_client(
            "app",
            ["http://127.0.0.1/callback"],
            ["mcp:tools", "notes:admin"],
        )
        .dev_user("demo", "demo")
        .identity_provider(
            OidcProvider::builder("corp", &idp.base, "downstream")
                .address_policy(
                    tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                )
                .display_name("Corp <SSO>")
                .build()
                .unwrap(),
        )
        .identity_provider(GitHubProvider::new("Iv1.test", "secret").unwrap())
        .build()
        .unwrap();
    spawn(listener, auth.router());
    let down = Downstream {
        base: base.clone(),
        mcp: format!("{base}/mcp"),
        auth,
    };
    let browser = browser();
    let page = browser.get(down.authorize_url()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Sign in with Corp &lt;SSO&gt;"), "{html}");
    assert!(html.contains("Sign in with GitHub"));
    assert!(html.contains("name=\"password\""));
    // The provider button needs the form's CSRF token.
    let forged = browser
        .post(format!("{base}/oauth/upstream/corp"))
        .form(&[("request", hidden(&html, "request")), ("csrf", "x".into())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let go = browser
        .post(format!("{base}/oauth/upstream/corp"))
        .form(&[
            ("request", hidden(&html, "request")),
            ("csrf", hidden(&html, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(go.status(), 303);
    assert!(
        go.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&format!("{}/authorize?", idp.base))
    );
    let unknown = browser
        .post(format!("{base}/oauth/upstream/nope"))
        .form(&[
            ("request", hidden(&html, "request")),
            ("csrf", hidden(&html, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[test]
fn provider_configuration_is_checked() {
    assert!(
        OidcProvider::builder("bad id", "https://idp.example", "c")
            .build()
            .is_err()
    );
    assert!(
        OidcProvider::builder("corp", "http://idp.example", "c")
            .build()
            .is_err(),
        "plain http only on loopback"
    );
    let google = OidcProvider::google("id", "secret").unwrap();
    assert_eq!(google.id(), "google");
    assert_eq!(google.issuer(), Some("https://accounts.google.com"));
    // Two providers with one id, and dev users whose names could pose as upstream subjects.
    let twice = AuthServer::builder("https://mcp.example.com")
        .resource("https://mcp.example.com/mcp")
        .identity_provider(GitHubProvider::new("a", "b").unwrap())
        .identity_provider(GitHubProvider::new("c", "d").unwrap())
        .build();
    assert!(twice.is_err());
    let posing = AuthServer::builder("https://mcp.example.com")
        .resource("https://mcp.example.com/mcp")
        .dev_user("github|42", "pw")
        .build();
    assert!(posing.is_err());
    let machine_name = AuthServer::builder("https://mcp.example.com")
        .resource("https://mcp.example.com/mcp")
        .client(
            "reporting-job",
            "a-long-random-secret-of-32-bytes!",
            ["mcp:tools"],
        )
        .dev_user("reporting-job", "pw")
        .build();
    assert!(
        machine_name.is_err(),
        "a user may not pose as a machine client"
    );
}

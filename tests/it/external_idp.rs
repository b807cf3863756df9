//! Bring your own identity provider: the quickstart's resource-server half (its external
//! identity provider mode: bearer and policy layers, metadata, no authorization server of ours)
//! in front of a real OpenID provider, `oidc-provider` from npm (pinned in `tests/oidc`, run with
//! the machine's Node.js): dynamic registration, RFC 8707 resource indicators issuing RFC 9068
//! JWT access tokens (or opaque ones, introspected), PKCE, its dev login. rmcp's OAuth client and
//! the TypeScript SDK v2 client sign in there and call tools; step-up works; start-up checks
//! catch an issuer that differs from the provider's own.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::auth::{AuthorizationManager, AuthorizationRequest, OAuthState};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tower_mcp_auth::ConfigError;
use tower_mcp_auth::validate::JwksValidator;

use crate::quickstart::{self, ExternalIdp};
use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:4567/callback";

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Installs the pinned `oidc-provider` once per test run.
async fn install_provider() {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| npm_ci(oidc_dir(), &["oidc-provider/package.json"]))
        .await;
}

/// A running oidc-provider: what it printed about itself (issuer, endpoints, the introspection
/// client's credentials). It stops when dropped.
struct Idp {
    about: Value,
    _process: tokio::process::Child,
}

impl Idp {
    fn issuer(&self) -> String {
        self.about["issuer"].as_str().unwrap().to_owned()
    }

    fn get(&self, field: &str) -> String {
        self.about[field].as_str().unwrap().to_owned()
    }
}

async fn start_idp(resource: &str, opaque: bool) -> Idp {
    install_provider().await;
    // A free port: bound, read, released (the provider binds it right away).
    let port = listener().await.1.port();
    let mut process = tokio::process::Command::new("node")
        .arg(oidc_dir().join("provider.mjs"))
        .arg(port.to_string())
        .arg(resource)
        .env("OPAQUE", if opaque { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let stdout = process.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("oidc-provider starts")
        .unwrap()
        .expect("one JSON line");
    let about: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(about["ready"], true, "{about}");
    Idp {
        about,
        _process: process,
    }
}

/// The quickstart in external mode in front of a fresh oidc-provider; `configure` adjusts the
/// mode's settings. Returns the provider, the MCP endpoint and what the quickstart prints.
async fn start(
    opaque: bool,
    configure: impl FnOnce(&Idp, &mut ExternalIdp),
) -> (Idp, String, String) {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp_url = format!("{base}/mcp");
    let idp = start_idp(&mcp_url, opaque).await;
    let mut external = ExternalIdp {
        issuer: idp.issuer(),
        ..ExternalIdp::default()
    };
    configure(&idp, &mut external);
    let resource = quickstart::resource_builder(&mcp_url, &external.issuer)
        .build()
        .unwrap();
    let validator = external
        .validator(resource.resource())
        .await
        .expect("the configuration passes the start-up checks");
    let banner = external.banner(&resource);
    spawn(listener, quickstart::app(resource, validator));
    (idp, mcp_url, banner)
}

/// The person at oidc-provider's dev pages: follows its redirects, signs in as `user` when
/// asked, confirms consent, until a redirect leaves for the client. Returns that redirect and
/// which pages were shown.
async fn walk(browser: &reqwest::Client, issuer: &str, url: &str, user: &str) -> Walk {
    let mut walked = Walk::default();
    let mut next = browser.get(url);
    for _ in 0..12 {
        let response = next.send().await.unwrap();
        if response.status().is_redirection() {
            let location = response.headers()["location"].to_str().unwrap();
            // Its redirects to its own pages are bare paths.
            let location = url::Url::parse(issuer).unwrap().join(location).unwrap();
            if !location.as_str().starts_with(issuer) {
                walked.location = location.to_string();
                return walked;
            }
            next = browser.get(location);
            continue;
        }
        assert_eq!(response.status(), 200);
        let html = response.text().await.unwrap();
        let action = html
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no form in {html}"))
            .to_owned();
        next = if html.contains(r#"name="prompt" value="login""#) {
            walked.login = true;
            browser
                .post(action)
                .form(&[("prompt", "login"), ("login", user), ("password", "any")])
        } else if html.contains(r#"name="prompt" value="consent""#) {
            walked.consent = true;
            browser.post(action).form(&[("prompt", "consent")])
        } else {
            panic!("an unexpected page: {html}");
        };
    }
    panic!("no redirect back to the client");
}

#[derive(Default)]
struct Walk {
    location: String,
    login: bool,
    consent: bool,
}

/// rmcp's OAuth client, self-registered at the provider, signed in as `user` with the scopes
/// the 401 names.
struct Signed {
    client: RunningService<RoleClient, ()>,
    manager: std::sync::Arc<tokio::sync::Mutex<AuthorizationManager>>,
    browser: reqwest::Client,
}

async fn sign_in(idp: &Idp, mcp_url: &str, user: &str) -> Signed {
    let mut oauth = OAuthState::new(mcp_url, None).await.unwrap();
    oauth
        .start_authorization(
            AuthorizationRequest::new(REDIRECT)
                .with_client_name("rmcp at oidc-provider")
                .with_scopes(quickstart::DEMO_SCOPES.split(' ')),
        )
        .await
        .expect("discovery through our metadata, registration at the provider");
    let browser = browser();
    let url = oauth.get_authorization_url().await.unwrap();
    let walked = walk(&browser, &idp.issuer(), &url, user).await;
    assert!(walked.login && walked.consent);
    oauth
        .handle_callback_url(&walked.location)
        .await
        .expect("code exchange, with the provider's iss");
    let (client, manager) = authorized_client(oauth, mcp_url).await;
    Signed {
        client,
        manager,
        browser,
    }
}

#[tokio::test]
async fn rmcp_client_signs_in_at_oidc_provider_calls_tools_and_steps_up() {
    let (idp, mcp_url, banner) = start(false, |_, external| external.require_at_jwt = true).await;
    // What the quickstart says the provider must issue is what this provider issues: the
    // tokens below pass with exactly these values.
    for claim in [
        format!("iss   exactly {}", idp.issuer()),
        format!("aud   {mcp_url}"),
        "scope (or scp) from: mcp:tools notes:admin notes:read notes:write".to_owned(),
        "typed at+jwt".to_owned(),
        "not offered in this mode".to_owned(),
    ] {
        assert!(banner.contains(&claim), "{claim} in {banner}");
    }
    let signed = sign_in(&idp, &mcp_url, "demo").await;
    let mut names: Vec<String> = signed
        .client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    // No admin scope yet, and no ATAG layer in this mode: neither purge nor the third party.
    assert_eq!(names, ["add_note", "list_notes", "whoami"]);
    let who = signed
        .client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    assert!(
        text_of(&who).contains("subject=demo")
            && text_of(&who).contains("scopes=mcp:tools notes:read notes:write"),
        "{who:?}"
    );

    // Step-up at the provider: one challenge, the union asked for, consent for the new scope.
    let refused = signed
        .client
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .unwrap_err();
    let required = insufficient_scope(&refused)
        .get_required_scope()
        .unwrap()
        .to_owned();
    assert_eq!(required, "mcp:tools notes:admin");
    let url = signed
        .manager
        .lock()
        .await
        .request_scope_upgrade(&required)
        .await
        .unwrap();
    let walked = walk(&signed.browser, &idp.issuer(), &url, "demo").await;
    assert!(!walked.login && walked.consent, "signed in: consent only");
    let back = url::Url::parse(&walked.location).unwrap();
    let param = |name: &str| {
        back.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    signed
        .manager
        .lock()
        .await
        .exchange_code_for_token_with_issuer(
            &param("code").unwrap(),
            &param("state").unwrap(),
            param("iss").as_deref(),
        )
        .await
        .unwrap();
    let purged = signed
        .client
        .call_tool(CallToolRequestParams::new("purge_all_notes"))
        .await
        .expect("the provider's new token carries notes:admin");
    assert!(text_of(&purged).contains("demo purged"), "{purged:?}");
    signed.client.cancel().await.unwrap();
}

#[tokio::test]
async fn opaque_tokens_are_introspected_and_a_revoked_one_is_refused_within_the_cache_window() {
    let cache = Duration::from_secs(1);
    let (idp, mcp_url, _) = start(true, |idp, external| {
        external.introspection = Some((
            idp.get("introspection_endpoint"),
            idp.about["introspector"]["client_id"]
                .as_str()
                .unwrap()
                .to_owned(),
            idp.about["introspector"]["client_secret"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
        external.introspection_cache = Some(cache);
    })
    .await;
    let signed = sign_in(&idp, &mcp_url, "demo").await;
    let who = signed
        .client
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .expect("the opaque token is introspected");
    assert!(text_of(&who).contains("subject=demo"), "{who:?}");

    let manager = signed.manager.lock().await;
    let (client_id, _) = manager.get_credentials().await.unwrap();
    let token = manager.get_access_token().await.unwrap();
    drop(manager);
    assert_eq!(token.matches('.').count(), 0, "opaque, not a JWT");
    let revoked = client()
        .post(idp.get("revocation_endpoint"))
        .form(&[("token", token.as_str()), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    // Refused once the cached answer is older than the cache window, and for good.
    let deadline = Instant::now() + cache + Duration::from_secs(3);
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    loop {
        let response = client()
            .post(&mcp_url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize)
            .send()
            .await
            .unwrap();
        if response.status() == 401 {
            assert!(www_authenticate(&response).contains(r#"error="invalid_token""#));
            break;
        }
        assert_eq!(response.status(), 200);
        assert!(
            Instant::now() < deadline,
            "a revoked token still accepted past the cache window"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn issuer_mismatches_are_reported_at_start_up_with_both_values() {
    let idp = start_idp("http://127.0.0.1:9/mcp", false).await;
    let issuer = idp.issuer();
    let jwks = idp.get("jwks_uri");
    let check = |issuer: String| {
        let jwks = jwks.clone();
        async move {
            JwksValidator::builder(jwks, issuer, "http://127.0.0.1:9/mcp")
                .address_policy(
                    tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback(),
                )
                .build_checked()
                .await
        }
    };
    // A trailing slash: every token's `iss` would differ.
    match check(format!("{issuer}/")).await {
        Err(e @ ConfigError::ProviderMismatch { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&format!("`{issuer}/`"))
                    && message.contains(&format!("`{issuer}`"))
                    && message.contains("trailing slash"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // localhost for 127.0.0.1: the provider's discovery document names 127.0.0.1.
    let localhost = issuer.replace("127.0.0.1", "localhost");
    match check(localhost).await {
        Err(e @ ConfigError::ProviderMismatch { .. }) => {
            assert!(e.to_string().contains("localhost"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Algorithms the provider's keys do not use.
    let wrong_algorithms = JwksValidator::builder(&jwks, &issuer, "http://127.0.0.1:9/mcp")
        .address_policy(tower_mcp_auth::address::AddressPolicy::public_only().allow_loopback())
        .algorithms([Algorithm::PS512])
        .build_checked()
        .await;
    match wrong_algorithms {
        Err(e @ ConfigError::ProviderUnavailable { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("ES256") && message.contains("PS512"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Right: the keys are fetched already.
    let validator = check(issuer).await.expect("the same issuer");
    assert!(!validator.key_ids().is_empty());
}

#[tokio::test]
async fn typescript_v2_client_signs_in_at_oidc_provider_and_steps_up() {
    let (_idp, mcp_url, _) = start(false, |_, _| {}).await;
    let report = crate::ts_sdk::v2_against(&mcp_url, "stepup-demo").await;
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{report}");
    assert_eq!(rounds[0]["login"], true);
    assert_eq!(rounds[1]["login"], false);
    assert_eq!(rounds[1]["consent"], true, "consent for the new scope");
    assert!(
        report["tokenScope"]
            .as_str()
            .unwrap()
            .contains("notes:admin")
    );
    assert_eq!(report["purge"]["ok"], true, "{report}");
    assert!(report["who"].as_str().unwrap().contains("subject=demo"));
}

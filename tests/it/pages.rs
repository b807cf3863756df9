//! The sign-in, consent, error and connected pages as a person meets them: they tell the truth
//! about the client (an operator's client verified, a metadata-document client by its domain,
//! a self-registered one unverified, its name in quotes), explain scopes in words and mark new
//! ones, name the server, fit a phone, and escape everything. An operator's own template keeps
//! the CSRF protection. Screenshots in a real browser are taken by `browser.rs`.

use serde_json::{Value, json};
use tower_mcp_auth::server::{AuthServer, AuthServerBuilder};

use crate::code_flow::{VERIFIER, challenge};
use crate::support::*;

const REDIRECT: &str = "http://127.0.0.1:4567/callback";
const SERVER_NAME: &str = "Acme Notes";
/// A client name that tries to pass for another and to inject markup.
const HOSTILE_NAME: &str = "Claude Desktop <script>alert('x')</script><b onmouseover=x>";

struct Site {
    base: String,
    mcp: String,
}

async fn site_with(configure: impl FnOnce(AuthServerBuilder) -> AuthServerBuilder) -> Site {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let mcp = format!("{base}/mcp");
    let auth = AuthServer::builder(&base)
        .resource(&mcp)
        .scopes_supported(["notes:read", "notes:write"])
        .scope_description("notes:read", "Read your notes")
        // Described beside the rules that use it.
        .describe_scopes_of(
            &tower_mcp_auth::ToolPolicy::builder()
                .tool("add_note", ["notes:write"])
                .describe_scope("notes:write", "Add and change your notes")
                .build()
                .unwrap(),
        )
        .server_name(SERVER_NAME)
        .dev_user("alice", "wonderland")
        .public_client("ops-app", [REDIRECT], ["notes:read", "notes:write"])
        .allow_development_client_metadata();
    let auth = configure(auth).build().unwrap();
    spawn(listener, auth.router());
    Site { base, mcp }
}

async fn site() -> Site {
    site_with(|b| b).await
}

impl Site {
    fn authorize(&self, client_id: &str, redirect_uri: &str, scope: &str) -> String {
        let mut url = url::Url::parse(&format!("{}/oauth/authorize", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", &challenge(VERIFIER))
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", &self.mcp)
            .append_pair("scope", scope);
        url.to_string()
    }

    /// The login page, then (signing in as alice) the consent page, in `browser`.
    async fn login_and_consent(
        &self,
        browser: &reqwest::Client,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
    ) -> (String, String) {
        let login = browser
            .get(self.authorize(client_id, redirect_uri, scope))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 200);
        let login = login.text().await.unwrap();
        let consent = browser
            .post(format!("{}/oauth/login", self.base))
            .form(&[
                ("request", form_field(&login, "request")),
                ("csrf", form_field(&login, "csrf")),
                ("username", "alice".to_owned()),
                ("password", "wonderland".to_owned()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(consent.status(), 200);
        (login, consent.text().await.unwrap())
    }

    async fn register(&self, name: &str, redirect_uri: &str) -> String {
        let registered: Value = client()
            .post(format!("{}/oauth/register", self.base))
            .json(
                &json!({"client_name": name, "redirect_uris": [redirect_uri],
                          "token_endpoint_auth_method": "none"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        registered["client_id"].as_str().unwrap().to_owned()
    }
}

/// `text` as minijinja's HTML escaping writes it (slashes too).
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('/', "&#x2f;")
}

/// What every page of ours carries: a phone-sized viewport, the server's name, no script.
fn check_every_page(html: &str) {
    assert!(
        html.contains(r#"<meta name=viewport content="width=device-width,initial-scale=1">"#),
        "no viewport meta: {html}"
    );
    assert!(
        html.contains(&format!("<header>{SERVER_NAME}</header>")),
        "no server name: {html}"
    );
    assert!(html.contains("prefers-color-scheme:dark"), "no dark mode");
    assert!(!html.contains("<script"), "a script on the page: {html}");
}

#[tokio::test]
async fn a_self_registered_client_is_unverified_quoted_escaped_and_its_redirect_host_prominent() {
    let site = site().await;
    let redirect = "https://lookalike.example/oauth/callback";
    let client_id = site.register(HOSTILE_NAME, redirect).await;
    let (login, consent) = site
        .login_and_consent(&browser(), &client_id, redirect, "notes:read")
        .await;
    for html in [&login, &consent] {
        check_every_page(html);
        // The claimed name, quoted, escaped, marked unverified.
        assert!(html.contains("<b>“Claude Desktop &lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt;&lt;b onmouseover=x&gt;”</b>"), "{html}");
        assert!(
            html.contains(r#"<span class="badge unverified">Unverified</span>"#),
            "{html}"
        );
        assert!(!html.contains("Verified</span>") || html.contains("Unverified</span>"));
        assert!(
            !html.contains("<b onmouseover"),
            "markup from the name: {html}"
        );
    }
    assert!(login.contains("registered itself"), "{login}");
    // The consent page: where the browser goes, prominently, and the warning that says why.
    assert!(
        consent.contains(r#"<p class="redirect">lookalike.example</p>"#),
        "{consent}"
    );
    assert!(
        consent.contains("Anyone can register an application under any name"),
        "{consent}"
    );
    // Scopes in words, the resource named, Allow primary and Deny secondary.
    assert!(consent.contains("Read your notes"), "{consent}");
    assert!(
        consent.contains(&format!("<code>{}</code>", escaped(&site.mcp))),
        "{consent}"
    );
    assert!(consent.contains(r#"value="approve" type="submit" class="primary">Allow"#));
    assert!(consent.contains(r#"value="deny" type="submit" class="secondary">Deny"#));
}

#[tokio::test]
async fn an_operator_client_is_verified_and_new_scopes_are_marked_on_a_second_consent() {
    let site = site().await;
    let browser = browser();
    let (_, first) = site
        .login_and_consent(&browser, "ops-app", REDIRECT, "notes:read")
        .await;
    assert!(
        first.contains(r#"<b>ops-app</b><span class="badge verified">✓ Verified</span>"#),
        "{first}"
    );
    assert!(!first.contains("Unverified"));
    assert!(
        !first.contains(r#"class="new""#),
        "nothing is new the first time: {first}"
    );
    let approved = browser
        .post(format!("{}/oauth/consent", site.base))
        .form(&[
            ("request", form_field(&first, "request")),
            ("csrf", form_field(&first, "csrf")),
            ("decision", "approve".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 303);
    // Asking for more: signed in already, the consent page marks only the added scope.
    let again = browser
        .get(site.authorize("ops-app", REDIRECT, "notes:read notes:write"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let html = again.text().await.unwrap();
    check_every_page(&html);
    assert!(html.contains(r#"Add and change your notes</span><code>notes:write</code> <span class="new">new</span>"#), "{html}");
    assert!(
        html.contains(r#"Read your notes</span><code>notes:read</code></li>"#),
        "{html}"
    );
}

/// A metadata document on a loopback "domain": its name, and its home page and logo when they
/// are on that host; another host's links are dropped.
async fn metadata_documents() -> String {
    let (listener, addr) = listener().await;
    let base = format!("http://{addr}");
    let doc = |path: &str, links: (&str, &str)| {
        json!({"client_id": format!("{base}{path}"), "client_name": "Notes Desktop",
               "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
               "client_uri": links.0, "logo_uri": links.1})
    };
    let own = doc(
        "/own.json",
        (&format!("{base}/about"), &format!("{base}/logo.png")),
    );
    let foreign = doc(
        "/foreign.json",
        ("https://evil.example/", "https://evil.example/logo.png"),
    );
    let app = axum::Router::new()
        .route(
            "/own.json",
            axum::routing::get(move || std::future::ready(axum::Json(own.clone()))),
        )
        .route(
            "/foreign.json",
            axum::routing::get(move || std::future::ready(axum::Json(foreign.clone()))),
        );
    spawn(listener, app);
    base
}

#[tokio::test]
async fn a_metadata_document_client_is_shown_by_its_domain_with_its_own_links_only() {
    let site = site().await;
    let documents = metadata_documents().await;
    let host = url::Url::parse(&documents)
        .unwrap()
        .host_str()
        .unwrap()
        .to_owned();
    let browser = browser();
    let (_, consent) = site
        .login_and_consent(
            &browser,
            &format!("{documents}/own.json"),
            REDIRECT,
            "notes:read",
        )
        .await;
    check_every_page(&consent);
    assert!(
        consent.contains(&format!("<b>“Notes Desktop”</b> from <b>{host}</b>")),
        "{consent}"
    );
    assert!(
        consent.contains(&format!(
            r#"<a href="{}""#,
            escaped(&format!("{documents}/about"))
        )),
        "{consent}"
    );
    assert!(
        consent.contains(&format!(
            r#"<img src="{}" alt="">"#,
            escaped(&format!("{documents}/logo.png"))
        )),
        "{consent}"
    );
    assert!(!consent.contains("Unverified"));
    // The logo may load from that origin, nothing else does.
    let page = browser
        .get(site.authorize(
            &format!("{documents}/own.json"),
            REDIRECT,
            "notes:read notes:write",
        ))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains(&format!("img-src {documents}")), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");

    let (_, foreign) = site
        .login_and_consent(
            &browser,
            &format!("{documents}/foreign.json"),
            REDIRECT,
            "notes:read",
        )
        .await;
    assert!(
        !foreign.contains("evil.example"),
        "links off the document's host: {foreign}"
    );
    assert!(!foreign.contains("<img"), "{foreign}");
}

#[tokio::test]
async fn the_error_page_says_what_to_do_next() {
    let site = site().await;
    let page = browser()
        .get(site.authorize("no-such-client", REDIRECT, "notes:read"))
        .send()
        .await
        .unwrap();
    assert!(page.status().is_client_error());
    let html = page.text().await.unwrap();
    check_every_page(&html);
    assert!(html.contains("Go back to your application"), "{html}");
}

#[tokio::test]
async fn an_operator_consent_template_replaces_the_page_and_keeps_csrf_protection() {
    let template = r#"{% extends "base.html" %}{% block body %}<h1>Autoriser ?</h1><p class="who">{{ client.name }} ({{ client.kind }})</p><form method="post" action="{{ action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><button name="decision" value="approve">Autoriser</button></form>{% endblock %}"#;
    let site = site_with(|b| b.page_template("consent.html", template)).await;
    let redirect = "http://127.0.0.1:4567/callback";
    let client_id = site.register("<i>Tricky</i>", redirect).await;
    let browser = browser();
    let (_, consent) = site
        .login_and_consent(&browser, &client_id, redirect, "notes:read")
        .await;
    assert!(consent.contains("<h1>Autoriser ?</h1>"), "{consent}");
    assert!(
        consent.contains(r#"<p class="who">&lt;i&gt;Tricky&lt;&#x2f;i&gt; (self_registered)</p>"#),
        "escaping stays on: {consent}"
    );
    check_every_page(&consent);
    // A post without the CSRF field (a forged cross-site form) is refused and changes nothing.
    let forged = browser
        .post(format!("{}/oauth/consent", site.base))
        .form(&[
            ("request", form_field(&consent, "request")),
            ("decision", "approve".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert!(forged.status().is_client_error(), "{}", forged.status());
    assert!(forged.headers().get("location").is_none());
    // The real form still works.
    let approved = browser
        .post(format!("{}/oauth/consent", site.base))
        .form(&[
            ("request", form_field(&consent, "request")),
            ("csrf", form_field(&consent, "csrf")),
            ("decision", "approve".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 303);
    assert!(
        approved.headers()["location"]
            .to_str()
            .unwrap()
            .contains("code=")
    );
}

#[test]
fn a_broken_or_unknown_operator_template_fails_at_start_up() {
    let build = |name: &str, source: &str| {
        AuthServer::builder("http://127.0.0.1:9")
            .resource("http://127.0.0.1:9/mcp")
            .dev_user("a", "b")
            .page_template(name, source)
            .build()
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(build("consent.html", "{% if %}").contains("consent.html"));
    assert!(build("consent.htm", "hi").contains("not a page"));
    assert!(build("error.html", "{{ missing.deeply() }}").contains("error.html"));
}

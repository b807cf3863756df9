//! The real pages in a real browser: headless Chromium driven over WebDriver (a chromedriver
//! this module starts on a loopback port) against the quickstart's embedded stack. A person
//! signs in, consents and lands on the client with a code that works; connects their
//! third-party account; the pages refuse to be framed and refuse forms posted from another
//! origin. Screenshots of each page, at phone and desktop sizes, go to `target/screenshots/`.
//!
//! Needs `chromedriver` (env `CHROMEDRIVER`, else on `PATH`) and Chromium (env `CHROMIUM`,
//! else `/usr/bin/chromium`): on Debian, `apt-get install chromium chromium-driver`.
//!
//! WebDriver is spoken with fantoccini over hyper-util's plain-HTTP connector (chromedriver
//! listens on loopback, no TLS).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse};
use fantoccini::Locator;
use fantoccini::elements::Element;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::code_flow::{VERIFIER, challenge, query};
use crate::quickstart::DEMO_SCOPES;
use crate::support::*;

/// The name the test client registers under (the pages must show it).
const CLIENT_NAME: &str = "Browser Test Client";
/// How long the browser may take to reach a page.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// The login page, then the consent page, in Chromium: both name the client, the consent page
/// lists and explains the scopes and names where the browser goes next; approving lands on the
/// client's redirect URI with `code`, `iss` and `state`, and the code buys a token that works.
#[tokio::test]
async fn login_and_consent_in_chromium_return_a_working_code() {
    let stack = start_quickstart().await;
    let site = Site::start().await;
    let client_id = register(&stack.base, CLIENT_NAME, &site.callback()).await;
    let state = "browser-state-7d1c";
    let authorize = authorize_url(&stack, &client_id, &site.callback(), state);
    let mut findings = Findings::default();
    let chromium = Chromium::start().await;

    // The login page.
    chromium.goto(&authorize).await;
    let login: Value = chromium
        .execute(
            "const f = document.querySelector('form[action$=\"/oauth/login\"]');
             return {
               text: document.body.innerText,
               form: !!f,
               username: f && f.querySelector('input[name=username]') && f.querySelector('input[name=username]').value,
               password: f && f.querySelector('input[name=password]') && f.querySelector('input[name=password]').type,
               submit: !!(f && f.querySelector('button[type=submit]')),
             };",
        )
        .await;
    assert_eq!(login["form"], true, "the dev login form: {login}");
    assert_eq!(
        login["submit"], true,
        "the form has a submit button: {login}"
    );
    assert_eq!(login["username"], "demo", "prefilled with demo: {login}");
    assert_eq!(login["password"], "password", "a password field: {login}");
    let text = login["text"].as_str().unwrap_or_default();
    findings.check(
        text.contains(CLIENT_NAME),
        format!("the login page does not name the client {CLIENT_NAME:?}: {text:?}"),
    );
    chromium.screenshots("login", &mut findings).await;
    let http = browser();
    let page = http.get(&authorize).send().await.unwrap();
    assert_eq!(page.status(), 200, "the login page over HTTP");
    check_page_headers(&mut findings, "login page", page.headers());

    // Sign in (the form comes prefilled with demo): the consent page.
    chromium
        .click("form[action$=\"/oauth/login\"] button[type=submit]")
        .await;
    chromium
        .wait_for_element("button[name=decision][value=approve]")
        .await;
    let consent = chromium.body_text().await;
    findings.check(
        consent.contains(CLIENT_NAME),
        format!("the consent page does not name the client {CLIENT_NAME:?}: {consent:?}"),
    );
    findings.check(
        consent.contains("demo"),
        format!("the consent page does not name the signed-in user demo: {consent:?}"),
    );
    // The redirect host, not merely the resource URL (which is on 127.0.0.1 too).
    findings.check(
        consent.replace(&stack.mcp_url, "").contains("127.0.0.1"),
        format!("the consent page does not show the redirect host 127.0.0.1: {consent:?}"),
    );
    check_scopes_explained(&chromium, &mut findings, "consent page", DEMO_SCOPES).await;
    chromium.screenshots("consent", &mut findings).await;
    // The same page over HTTP, for its headers (as reader: demo's consent stays unanswered).
    let (_, consent_page) =
        http_to_consent(&browser(), &stack.base, &authorize, "reader", &mut findings).await;
    check_page_headers(&mut findings, "consent page", &consent_page.headers);

    // Approve: back at the client.
    chromium.click("button[name=decision][value=approve]").await;
    let landed = chromium
        .wait_for_url(|url| url.starts_with(&site.callback()))
        .await;
    let params = query(&landed);
    assert_eq!(params.get("state").map(String::as_str), Some(state));
    assert_eq!(params.get("iss"), Some(&stack.base), "RFC 9207 iss");
    assert!(!params.contains_key("error"), "{landed}");
    let code = params.get("code").expect("a code").clone();
    assert!(
        site.received().iter().any(|q| q.contains(&code)),
        "the client's server received the code: {:?}",
        site.received()
    );

    // The code is real: it buys a token for the MCP endpoint, which answers with it.
    let tokens = redeem(&stack, &client_id, &site.callback(), &code).await;
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    let access_token = tokens["access_token"].as_str().expect("an access token");
    let mcp = mcp_client(&stack.mcp_url, access_token).await;
    let who = mcp
        .call_tool(CallToolRequestParams::new("whoami"))
        .await
        .unwrap();
    assert!(text_of(&who).contains("subject=demo"), "{}", text_of(&who));
    mcp.cancel().await.unwrap();
    chromium.close().await;
    findings.assert_none();
}

/// The third-party connect flow in the browser signed in at the MCP server: the link from the
/// tool leads to the stand-in third party's login and consent, then to our "connected" page;
/// the tool then acts there as the user.
#[tokio::test]
async fn third_party_account_connects_in_chromium() {
    let stack = start_quickstart().await;
    let site = Site::start().await;
    let client_id = register(&stack.base, CLIENT_NAME, &site.callback()).await;
    let mut findings = Findings::default();
    let chromium = Chromium::start().await;
    let code = sign_in_in_chromium(&chromium, &stack, &client_id, &site).await;
    let tokens = redeem(&stack, &client_id, &site.callback(), &code).await;
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();
    let mcp = mcp_client(&stack.mcp_url, &access_token).await;
    let link = connect_link(&mcp, &stack.base).await;

    // The link, in the same (signed-in) browser: the third party's own login page.
    chromium.goto(&link).await;
    chromium
        .wait_for_url(|url| url.starts_with(&stack.third_party))
        .await;
    chromium
        .wait_for_element("form[action$=\"/oauth/login\"] button[type=submit]")
        .await;
    chromium
        .click("form[action$=\"/oauth/login\"] button[type=submit]")
        .await;
    chromium
        .wait_for_element("button[name=decision][value=approve]")
        .await;
    check_scopes_explained(
        &chromium,
        &mut findings,
        "third-party consent page",
        "profile",
    )
    .await;
    chromium.click("button[name=decision][value=approve]").await;
    let connected_url = chromium
        .wait_for_url(|url| url.starts_with(&format!("{}/atag/callback/", stack.base)))
        .await;
    let heading = chromium.text_of("h1").await;
    assert_eq!(heading, "Demo Third Party connected", "at {connected_url}");
    let text = chromium.body_text().await;
    assert!(text.contains("Return to your MCP client"), "{text}");
    // Which service, for which account here, with which scopes there.
    assert!(
        text.contains("Your Demo Third Party account is now connected for demo"),
        "{text}"
    );
    assert!(
        text.contains("At Demo Third Party, it may:\n\nprofile"),
        "{text}"
    );
    chromium.screenshots("connected", &mut findings).await;

    // The tool now acts at the third party as demo.
    let again = mcp
        .call_tool(CallToolRequestParams::new("third_party_profile"))
        .await
        .unwrap();
    let answer = text_of(&again);
    assert!(answer.contains("At the third party you are"), "{answer}");
    assert!(answer.contains("demo"), "{answer}");
    mcp.cancel().await.unwrap();

    // The same pages over HTTP for their headers (WebDriver cannot read them), as reader.
    for (page, headers) in connect_over_http(&stack, &client_id, &site, &mut findings).await {
        check_page_headers(&mut findings, &page, &headers);
    }
    chromium.close().await;
    findings.assert_none();
}

/// A page on another origin frames the login page and an error page: Chromium shows neither
/// (X-Frame-Options and `frame-ancestors 'none'`), while it renders a frameable page of a third
/// origin beside them (the check can see a frame that renders).
#[tokio::test]
async fn pages_refuse_to_be_framed_in_chromium() {
    let stack = start_quickstart().await;
    let attacker = Site::start().await;
    let elsewhere = Site::start().await;
    elsewhere.serve(
        "/frameable",
        "<!doctype html><title>frameable</title><p id=ok>a frameable page</p>",
    );
    let client_id = register(&stack.base, CLIENT_NAME, &attacker.callback()).await;
    let login = authorize_url(&stack, &client_id, &attacker.callback(), "framed");
    let error = format!("{}/oauth/authorize", stack.base);
    let framed = [
        ("login page", login.as_str()),
        ("error page", error.as_str()),
        ("frameable control", &elsewhere.url("/frameable")),
    ];
    let iframes: String = framed
        .iter()
        .map(|(_, src)| format!("<iframe src=\"{}\"></iframe>", escape(src)))
        .collect();
    attacker.serve(
        "/frame",
        &format!("<!doctype html><title>framing</title>{iframes}"),
    );
    let mut findings = Findings::default();
    let http = client();
    let page = http.get(&error).send().await.unwrap();
    assert_eq!(page.status(), 400, "an error page");
    check_page_headers(
        &mut findings,
        "error page (client_id missing)",
        page.headers(),
    );

    let chromium = Chromium::start().await;
    chromium.goto(&attacker.url("/frame")).await;
    chromium
        .execute("return new Promise(r => document.readyState === 'complete' ? r() : addEventListener('load', () => r()))")
        .await;
    let documents: Value = chromium
        .execute(
            "return Array.from(document.querySelectorAll('iframe')).map(f => {
               try { return f.contentDocument === null ? 'null' : 'readable'; }
               catch (e) { return 'throws'; }
             });",
        )
        .await;
    for (index, (name, src)) in framed.iter().enumerate() {
        let inside = chromium.frame_contents(index as u16).await;
        println!("frame {name}: {inside}");
        let rendered = inside["rendered"].as_bool().unwrap_or(false);
        if *name == "frameable control" {
            assert!(rendered, "the control frame renders: {inside}");
            continue;
        }
        findings.check(
            !rendered,
            format!("{name} ({src}) rendered inside a frame of another origin: {inside}"),
        );
        findings.check(
            documents[index] != "readable",
            format!("{name}: the framing page can read its document"),
        );
        findings.check(
            inside["password"] != true,
            format!("{name}: a password field is shown inside the frame"),
        );
    }
    chromium.close().await;
    findings.assert_none();
}

/// Forms posted from a page of another origin with the victim's cookies (the origins differ
/// by port: same site, so the cookies go along): an attacker's consent request submitted in the
/// victim's signed-in browser, and a login to the attacker's account. Both are refused with an
/// error page; no code reaches the attacker.
#[tokio::test]
async fn cross_origin_form_posts_are_refused_in_chromium() {
    let stack = start_quickstart().await;
    let site = Site::start().await;
    let attacker = Site::start().await;
    let client_id = register(&stack.base, CLIENT_NAME, &site.callback()).await;
    let evil_client = register(&stack.base, "Evil Client", &attacker.callback()).await;
    let mut findings = Findings::default();
    let chromium = Chromium::start().await;
    // The victim is signed in at the authorization server.
    sign_in_in_chromium(&chromium, &stack, &client_id, &site).await;

    // The attacker's own authorization request for their client, up to the consent page, in
    // their own browser: its form fields are what the forged post sends.
    let evil_browser = browser();
    let evil_authorize = authorize_url(&stack, &evil_client, &attacker.callback(), "evil");
    let (_, consent_page) = http_to_consent(
        &evil_browser,
        &stack.base,
        &evil_authorize,
        "reader",
        &mut findings,
    )
    .await;
    let forged_consent = auto_post(
        &format!("{}/oauth/consent", stack.base),
        &[
            ("request", &form_field(&consent_page.html, "request")),
            ("csrf", &form_field(&consent_page.html, "csrf")),
            ("decision", "approve"),
        ],
    );
    attacker.serve("/consent", &forged_consent);
    chromium.goto(&attacker.url("/consent")).await;
    let landed = chromium
        .wait_for_url(|url| !url.starts_with(&attacker.base))
        .await;
    let refusal = chromium.navigation().await;
    println!("forged consent: {landed} {refusal}");
    assert_eq!(landed, format!("{}/oauth/consent", stack.base));
    assert_eq!(refusal["status"], 403, "refused: {refusal}");
    let source = chromium.source().await;
    assert!(source.contains("Authorization failed"), "{source}");
    // The refusal is the CSRF check's, with the victim's session: the cookies went along.
    assert!(
        source.to_lowercase().contains("the form is not valid"),
        "{source}"
    );
    chromium.screenshots("error", &mut findings).await;
    assert!(
        attacker.received().is_empty(),
        "nothing reached the attacker: {:?}",
        attacker.received()
    );
    // The same refusal over HTTP for its headers: the attacker's form posted from another
    // signed-in browser.
    let victim_http = browser();
    http_to_consent(
        &victim_http,
        &stack.base,
        &authorize_url(&stack, &client_id, &site.callback(), "v"),
        "reader",
        &mut findings,
    )
    .await;
    let refused = victim_http
        .post(format!("{}/oauth/consent", stack.base))
        .form(&[
            ("request", form_field(&consent_page.html, "request")),
            ("csrf", form_field(&consent_page.html, "csrf")),
            ("decision", "approve".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    check_page_headers(
        &mut findings,
        "error page (forged consent)",
        refused.headers(),
    );

    // Login CSRF: the attacker's login request, posted with their own credentials in the
    // victim's browser.
    let login = evil_browser
        .get(&evil_authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let forged_login = auto_post(
        &format!("{}/oauth/login", stack.base),
        &[
            ("request", &form_field(&login, "request")),
            ("csrf", &form_field(&login, "csrf")),
            ("username", "reader"),
            ("password", QUICKSTART_PASSWORD),
        ],
    );
    attacker.serve("/login", &forged_login);
    chromium.goto(&attacker.url("/login")).await;
    let landed = chromium
        .wait_for_url(|url| !url.starts_with(&attacker.base))
        .await;
    let refusal = chromium.navigation().await;
    println!("forged login: {landed} {refusal}");
    assert_eq!(landed, format!("{}/oauth/login", stack.base));
    assert_eq!(refusal["status"], 403, "refused: {refusal}");
    let source = chromium.source().await;
    assert!(
        source.to_lowercase().contains("the form is not valid"),
        "{source}"
    );
    assert!(attacker.received().is_empty(), "{:?}", attacker.received());
    chromium.close().await;
    findings.assert_none();
}

// ---------------------------------------------------------------------------------------------
// What the tests check.
// ---------------------------------------------------------------------------------------------

/// Problems found on the way: a test goes on past them, to report them all at its end.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, problem: impl Into<String>) {
        if !ok {
            self.0.push(problem.into());
        }
    }

    #[track_caller]
    fn assert_none(mut self) {
        let problems = std::mem::take(&mut self.0);
        assert!(
            problems.is_empty(),
            "{} problem(s):\n- {}",
            problems.len(),
            problems.join("\n- ")
        );
    }
}

impl Drop for Findings {
    /// A test that stops at a hard assertion still shows what it found before.
    fn drop(&mut self) {
        if !self.0.is_empty() {
            eprintln!("also found:\n- {}", self.0.join("\n- "));
        }
    }
}

/// The headers every page of ours must carry: no framing, no inline script, no referrer
/// leak, never cached.
fn check_page_headers(findings: &mut Findings, page: &str, headers: &reqwest::header::HeaderMap) {
    let get = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not text)").to_owned())
    };
    let csp = get("content-security-policy").unwrap_or_default();
    let xfo = get("x-frame-options");
    let referrer = get("referrer-policy");
    let cache = get("cache-control");
    let nosniff = get("x-content-type-options");
    println!(
        "{page}: Content-Security-Policy: {csp:?}; X-Frame-Options: {xfo:?}; \
         Referrer-Policy: {referrer:?}; Cache-Control: {cache:?}; X-Content-Type-Options: {nosniff:?}"
    );
    let directives: HashMap<String, String> = csp
        .split(';')
        .filter_map(|d| {
            let d = d.trim();
            let (name, value) = d.split_once(' ').unwrap_or((d, ""));
            (!name.is_empty()).then(|| (name.to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    findings.check(
        directives.get("frame-ancestors").map(String::as_str) == Some("'none'"),
        format!("{page}: Content-Security-Policy lacks frame-ancestors 'none': {csp:?}"),
    );
    // Scripts fall under script-src, else default-src; with neither, anything runs.
    let scripts = directives
        .get("script-src")
        .or_else(|| directives.get("default-src"));
    findings.check(
        scripts.is_some_and(|s| !s.contains("'unsafe-inline'") && !s.contains('*')),
        format!("{page}: Content-Security-Policy does not forbid inline scripts: {csp:?}"),
    );
    findings.check(
        xfo.as_deref()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("DENY")),
        format!("{page}: X-Frame-Options is {xfo:?}, not DENY"),
    );
    findings.check(
        referrer.as_deref().is_some_and(|v| {
            [
                "no-referrer",
                "same-origin",
                "strict-origin",
                "strict-origin-when-cross-origin",
            ]
            .contains(&v.trim())
        }),
        format!("{page}: Referrer-Policy is {referrer:?}"),
    );
    findings.check(
        cache.as_deref().is_some_and(|v| v.contains("no-store")),
        format!("{page}: Cache-Control is {cache:?}, without no-store"),
    );
    findings.check(
        nosniff.as_deref() == Some("nosniff"),
        format!("{page}: X-Content-Type-Options is {nosniff:?}"),
    );
}

/// The consent page for the two other kinds of client, and in dark mode: an operator's client
/// with its verified mark, a client ID metadata document client shown by its domain with the
/// logo and home page it publishes there; screenshots of each.
#[tokio::test]
async fn consent_for_each_kind_of_client_in_chromium() {
    const PASSWORD: &str = QUICKSTART_PASSWORD;
    let site = Site::start().await;
    // The metadata document's host: the document, its home page and an SVG logo.
    let (doc_listener, doc_addr) = listener().await;
    let doc_base = format!("http://{doc_addr}");
    let document = json!({"client_id": format!("{doc_base}/client.json"),
        "client_name": "Notes Desktop", "redirect_uris": [site.callback()],
        "token_endpoint_auth_method": "none", "client_uri": format!("{doc_base}/"),
        "logo_uri": format!("{doc_base}/logo.svg")});
    let logo = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40"><rect width="40" height="40" rx="8" fill="#6d28d9"/><text x="20" y="27" font-size="20" text-anchor="middle" fill="#fff" font-family="sans-serif">N</text></svg>"##;
    let doc_app = axum::Router::new()
        .route(
            "/client.json",
            axum::routing::get(move || std::future::ready(axum::Json(document.clone()))),
        )
        .route(
            "/logo.svg",
            axum::routing::get(move || {
                std::future::ready(([(http::header::CONTENT_TYPE, "image/svg+xml")], logo))
            }),
        );
    spawn(doc_listener, doc_app);
    // The quickstart's stack, plus an operator-registered client and development metadata
    // documents (http on loopback).
    let (tp_listener, tp_addr) = listener().await;
    let (listener, addr) = listener().await;
    let stack = QuickstartStack {
        base: format!("http://{addr}"),
        mcp_url: format!("http://{addr}/mcp"),
        third_party: format!("http://{tp_addr}"),
    };
    let builder = crate::quickstart::auth_server_builder(&stack.base, &stack.mcp_url, PASSWORD)
        .public_client("notes-web", [site.callback()], DEMO_SCOPES.split(' '))
        .allow_development_client_metadata();
    let (app, tp_app) = crate::quickstart::embedded_stack(
        builder,
        &stack.mcp_url,
        &stack.third_party,
        PASSWORD,
        None,
    )
    .unwrap();
    spawn(tp_listener, tp_app);
    spawn_with_peer(listener, app);

    let mut findings = Findings::default();
    let chromium = Chromium::start().await;
    chromium
        .goto(&authorize_url(&stack, "notes-web", &site.callback(), "s1"))
        .await;
    chromium
        .click("form[action$=\"/oauth/login\"] button[type=submit]")
        .await;
    chromium
        .wait_for_element("button[name=decision][value=approve]")
        .await;
    let operator = chromium.body_text().await;
    findings.check(
        operator.contains("notes-web✓ Verified")
            || operator.contains("notes-web\n✓ Verified")
            || operator.contains("notes-web ✓ Verified"),
        format!("the operator's client is not marked verified: {operator:?}"),
    );
    chromium
        .screenshots("consent-operator", &mut findings)
        .await;

    let metadata_client = format!("{doc_base}/client.json");
    chromium
        .goto(&authorize_url(
            &stack,
            &metadata_client,
            &site.callback(),
            "s2",
        ))
        .await;
    chromium
        .wait_for_element("button[name=decision][value=approve]")
        .await;
    let text = chromium.body_text().await;
    findings.check(
        text.contains("“Notes Desktop” from 127.0.0.1"),
        format!("the metadata document client is not shown by its domain: {text:?}"),
    );
    let logo_loaded: Value = chromium
        .execute("const i = document.querySelector('.client img'); return !!(i && i.complete && i.naturalWidth > 0);")
        .await;
    findings.check(
        logo_loaded == true,
        "the logo on the document's own host did not load",
    );
    chromium
        .screenshots("consent-metadata", &mut findings)
        .await;
    // Dark mode: the same page as a browser set to dark shows it.
    chromium
        .cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        )
        .await;
    let background: Value = chromium
        .execute("return getComputedStyle(document.body).backgroundColor;")
        .await;
    findings.check(
        background == "rgb(13, 17, 23)",
        format!("dark mode does not darken the page: {background}"),
    );
    chromium.screenshots("consent-dark", &mut findings).await;
    findings.assert_none();
}

/// Each scope of `requested` is listed on the page shown in `chromium`, with words that say
/// what it allows (a person cannot judge `notes:write` from its name alone).
async fn check_scopes_explained(
    chromium: &Chromium,
    findings: &mut Findings,
    page: &str,
    requested: &str,
) {
    let items: Value = chromium
        .execute(
            "return Array.from(document.querySelectorAll('li')).map(li => {
               const c = li.querySelector('code');
               return [c ? c.innerText.trim() : '', li.innerText.trim()];
             });",
        )
        .await;
    let items: Vec<(String, String)> = serde_json::from_value(items).unwrap();
    for scope in requested.split(' ') {
        let Some((_, text)) = items
            .iter()
            .find(|(name, text)| name == scope || text == scope)
        else {
            findings.check(
                false,
                format!("{page}: scope {scope} is not listed: {items:?}"),
            );
            continue;
        };
        let explanation = text.replacen(scope, "", 1).replace("new", "");
        let words = explanation
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .count();
        findings.check(
            words >= 2,
            format!(
                "{page}: scope {scope} is listed without an explanation (the item reads {text:?})"
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The OAuth steps around the browser.
// ---------------------------------------------------------------------------------------------

/// Registers a public client (RFC 7591) with one redirect URI; returns its id.
async fn register(base: &str, name: &str, redirect_uri: &str) -> String {
    let response = client()
        .post(format!("{base}/oauth/register"))
        .json(&json!({
            "client_name": name,
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "registered");
    let body: Value = response.json().await.unwrap();
    body["client_id"].as_str().unwrap().to_owned()
}

/// An authorization request with PKCE S256 for the MCP endpoint, asking for the demo scopes.
fn authorize_url(
    stack: &QuickstartStack,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
) -> String {
    let mut url = url::Url::parse(&format!("{}/oauth/authorize", stack.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_challenge", &challenge(VERIFIER))
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", state)
        .append_pair("resource", &stack.mcp_url)
        .append_pair("scope", DEMO_SCOPES);
    url.into()
}

/// Exchanges a code (with the PKCE verifier) for tokens.
async fn redeem(stack: &QuickstartStack, client_id: &str, redirect_uri: &str, code: &str) -> Value {
    let response = client()
        .post(format!("{}/oauth/token", stack.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", VERIFIER),
            ("resource", &stack.mcp_url),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the code is redeemed");
    response.json().await.unwrap()
}

/// Signs demo in (the prefilled form) and approves, in Chromium; returns the code the client
/// received.
async fn sign_in_in_chromium(
    chromium: &Chromium,
    stack: &QuickstartStack,
    client_id: &str,
    site: &Site,
) -> String {
    chromium
        .goto(&authorize_url(stack, client_id, &site.callback(), "s"))
        .await;
    chromium
        .click("form[action$=\"/oauth/login\"] button[type=submit]")
        .await;
    chromium
        .wait_for_element("button[name=decision][value=approve]")
        .await;
    chromium.click("button[name=decision][value=approve]").await;
    let landed = chromium
        .wait_for_url(|url| url.starts_with(&site.callback()))
        .await;
    query(&landed)["code"].clone()
}

/// A page as an HTTP client saw it.
struct Seen {
    headers: reqwest::header::HeaderMap,
    html: String,
}

/// In the cookie-keeping `http` browser: the login page at `authorize` (on the server at
/// `base`), then the consent page after signing in as `user`.
async fn http_to_consent(
    http: &reqwest::Client,
    base: &str,
    authorize: &str,
    user: &str,
    findings: &mut Findings,
) -> (Seen, Seen) {
    let login = http.get(authorize).send().await.unwrap();
    assert_eq!(login.status(), 200, "the login page at {authorize}");
    let login = Seen {
        headers: login.headers().clone(),
        html: login.text().await.unwrap(),
    };
    let consent = http
        .post(format!("{base}/oauth/login"))
        .form(&[
            ("request", form_field(&login.html, "request")),
            ("csrf", form_field(&login.html, "csrf")),
            ("username", user.to_owned()),
            ("password", QUICKSTART_PASSWORD.to_owned()),
        ])
        .send()
        .await
        .unwrap();
    findings.check(
        consent.status() == 200,
        format!(
            "signing in as {user} at {base} answered {}",
            consent.status()
        ),
    );
    let consent = Seen {
        headers: consent.headers().clone(),
        html: consent.text().await.unwrap(),
    };
    (login, consent)
}

/// The connect flow over HTTP as reader (sign in, token, link, the third party's login and
/// consent, our callback): the pages it shows and their headers.
async fn connect_over_http(
    stack: &QuickstartStack,
    client_id: &str,
    site: &Site,
    findings: &mut Findings,
) -> Vec<(String, reqwest::header::HeaderMap)> {
    let http = browser();
    let authorize = authorize_url(stack, client_id, &site.callback(), "r");
    let (_, consent) = http_to_consent(&http, &stack.base, &authorize, "reader", findings).await;
    let back = answer_consent(&http, &stack.base, &consent.html, "approve").await;
    let code = query(back.headers()["location"].to_str().unwrap())["code"].clone();
    let tokens = redeem(stack, client_id, &site.callback(), &code).await;
    let mcp = mcp_client(&stack.mcp_url, tokens["access_token"].as_str().unwrap()).await;
    let link = connect_link(&mcp, &stack.base).await;
    mcp.cancel().await.unwrap();
    let to_third_party = http.get(&link).send().await.unwrap();
    assert_eq!(
        to_third_party.status(),
        303,
        "the link leads to the third party"
    );
    let third_party_authorize = to_third_party.headers()["location"].to_str().unwrap();
    let (tp_login, tp_consent) = http_to_consent(
        &http,
        &stack.third_party,
        third_party_authorize,
        "reader",
        findings,
    )
    .await;
    let back = answer_consent(&http, &stack.third_party, &tp_consent.html, "approve").await;
    assert_eq!(back.status(), 303, "back to our callback");
    let connected = http
        .get(back.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(connected.status(), 200, "the connected page");
    vec![
        ("third-party login page".into(), tp_login.headers),
        ("third-party consent page".into(), tp_consent.headers),
        ("connected page".into(), connected.headers().clone()),
    ]
}

type McpClient = rmcp::service::RunningService<rmcp::service::RoleClient, ()>;

/// An MCP client with a bearer token.
async fn mcp_client(mcp_url: &str, access_token: &str) -> McpClient {
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(mcp_url).auth_header(access_token),
    );
    ().serve(transport).await.expect("initialize")
}

/// The connect link `third_party_profile` answers with before the account is connected.
async fn connect_link(mcp: &McpClient, base: &str) -> String {
    let first = mcp
        .call_tool(CallToolRequestParams::new("third_party_profile"))
        .await
        .unwrap();
    assert_eq!(first.is_error, Some(true), "not connected yet");
    let text = text_of(&first);
    let start = text
        .find(&format!("{base}/atag/connect/"))
        .unwrap_or_else(|| panic!("a connect link in {text}"));
    text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\\')
        .collect()
}

/// A page that posts a form to `action` as soon as it loads.
fn auto_post(action: &str, fields: &[(&str, &str)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=hidden name=\"{}\" value=\"{}\">",
                escape(name),
                escape(value)
            )
        })
        .collect();
    format!(
        "<!doctype html><title>You won!</title><form method=post action=\"{}\">{inputs}</form>\
         <script>document.forms[0].submit()</script>",
        escape(action)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

// ---------------------------------------------------------------------------------------------
// A site of another origin: the client's redirect URI, and pages the tests write.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Site {
    base: String,
    pages: Arc<Mutex<HashMap<String, String>>>,
    /// The query strings `/callback` received.
    callbacks: Arc<Mutex<Vec<String>>>,
}

impl Site {
    async fn start() -> Site {
        let (listener, addr) = listener().await;
        let site = Site {
            base: format!("http://{addr}"),
            ..Site::default()
        };
        let app = axum::Router::new()
            .route("/callback", axum::routing::get(site_callback))
            .fallback(site_page)
            .with_state(site.clone());
        spawn(listener, app);
        site
    }

    fn callback(&self) -> String {
        self.url("/callback")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn serve(&self, path: &str, html: &str) {
        self.pages
            .lock()
            .unwrap()
            .insert(path.to_owned(), html.to_owned());
    }

    fn received(&self) -> Vec<String> {
        self.callbacks.lock().unwrap().clone()
    }
}

async fn site_callback(State(site): State<Site>, RawQuery(query): RawQuery) -> Html<&'static str> {
    site.callbacks
        .lock()
        .unwrap()
        .push(query.unwrap_or_default());
    Html("<!doctype html><title>Client</title><h1>Signed in</h1>")
}

async fn site_page(State(site): State<Site>, uri: http::Uri) -> axum::response::Response {
    match site.pages.lock().unwrap().get(uri.path()) {
        Some(html) => Html(html.clone()).into_response(),
        None => http::StatusCode::NOT_FOUND.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium over WebDriver.
// ---------------------------------------------------------------------------------------------

/// Headless Chromium behind a chromedriver of its own, one WebDriver session driven with
/// fantoccini. The helpers panic on a WebDriver error, saying where the browser was.
struct Chromium {
    client: fantoccini::Client,
    /// Declared after `client`, so dropped after it.
    _driver: Chromedriver,
}

impl Chromium {
    async fn start() -> Chromium {
        let driver = Chromedriver::start();
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = format!("--user-data-dir={}", driver.dir.join("profile").display());
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", profile],
            }),
        );
        let mut builder = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        );
        builder.capabilities(capabilities);
        let deadline = Instant::now() + PATIENCE;
        loop {
            use fantoccini::error::NewSessionError::{Failed, FailedC, Lost};
            match builder.connect(&driver.url()).await {
                Ok(client) => {
                    return Chromium {
                        client,
                        _driver: driver,
                    };
                }
                // chromedriver is not listening yet.
                Err(Failed(_) | FailedC(_) | Lost(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!(
                    "no WebDriver session with {binary} at {} (set CHROMEDRIVER and CHROMIUM, \
                     or apt-get install chromium chromium-driver): {e}",
                    driver.url()
                ),
            }
        }
    }

    /// Ends the session: Chromium quits (`Drop` then ends chromedriver).
    async fn close(self) {
        self.client.clone().close().await.unwrap();
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn current_url(&self) -> String {
        self.client.current_url().await.unwrap().into()
    }

    async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Runs `script` as a function body in the current frame (a returned promise is awaited).
    async fn execute(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    async fn body_text(&self) -> String {
        let text = self.execute("return document.body.innerText").await;
        text.as_str().unwrap_or_default().to_owned()
    }

    async fn text_of(&self, css: &str) -> String {
        self.wait_for_element(css).await.text().await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.wait_for_element(css).await.click().await.unwrap();
    }

    async fn wait_for_element(&self, css: &str) -> Element {
        let found = self.client.wait().at_most(PATIENCE);
        match found.for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!(
                "no {css} at {} ({e}): {}",
                self.current_url().await,
                self.body_text().await
            ),
        }
    }

    async fn wait_for_url(&self, arrived: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let url = self.current_url().await;
            if arrived(&url) {
                return url;
            }
            if Instant::now() > deadline {
                panic!("still at {url}: {}", self.body_text().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The HTTP status and type of the last navigation (Navigation Timing).
    async fn navigation(&self) -> Value {
        self.execute(
            "const n = performance.getEntriesByType('navigation')[0];
             return { status: n.responseStatus, type: n.type, url: n.name };",
        )
        .await
    }

    /// What the frame `index` of the page shows, from inside it.
    async fn frame_contents(&self, index: u16) -> Value {
        self.client.enter_frame(index).await.unwrap();
        let inside = self
            .client
            .execute(
                "return {
                   url: location.href,
                   password: !!document.querySelector('input[name=password]'),
                   text: document.body ? document.body.innerText.slice(0, 200) : '',
                 };",
                vec![],
            )
            .await;
        self.client.enter_parent_frame().await.unwrap();
        match inside {
            Ok(mut inside) => {
                // A refused frame holds Chrome's error document, never the page.
                let url = inside["url"].as_str().unwrap_or_default();
                inside["rendered"] = url.starts_with("http").into();
                inside
            }
            Err(e) => json!({ "rendered": false, "error": e.to_string() }),
        }
    }

    /// PNGs of the page at phone size (390x844, a mobile viewport) and desktop size (a
    /// 1280x800 window) in `target/screenshots/{name}-{phone,desktop}.png`, checking on the way
    /// that the page is laid out for the screen it is on (not zoomed out, no sideways scrolling).
    ///
    /// The phone is Chrome's mobile emulation (a DevTools command): only a mobile viewport
    /// honours `<meta name=viewport>`, a narrow desktop window never zooms out.
    async fn screenshots(&self, name: &str, findings: &mut Findings) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        for (size, width, height) in [("phone", 390, 844), ("desktop", 1280, 800)] {
            if size == "phone" {
                self.cdp(
                    "Emulation.setDeviceMetricsOverride",
                    json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true}),
                )
                .await;
            } else {
                self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
                    .await;
                self.client.set_window_size(width, height).await.unwrap();
            }
            let layout = self
                .execute(
                    "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r({
                       width: innerWidth,
                       scroll: document.documentElement.scrollWidth,
                       font: parseFloat(getComputedStyle(document.body).fontSize) * visualViewport.scale,
                       viewport: !!document.querySelector('meta[name=viewport]'),
                     }))));",
                )
                .await;
            println!("{name} at {size} size: {layout}");
            findings.check(
                layout["width"] == width,
                format!(
                    "{name} on a {size} ({width} px wide) is laid out {} px wide and shrunk to \
                     fit (body text {:.1} px on screen; <meta name=viewport> present: {})",
                    layout["width"],
                    layout["font"].as_f64().unwrap_or_default(),
                    layout["viewport"]
                ),
            );
            findings.check(
                layout["scroll"].as_u64() <= layout["width"].as_u64(),
                format!("{name} on a {size} scrolls sideways: {layout}"),
            );
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}-{size}.png")), png).unwrap();
        }
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) {
        let command = Cdp(json!({ "cmd": cmd, "params": params }));
        self.client.issue_cmd(command).await.unwrap();
    }
}

/// chromedriver's `POST /session/{id}/goog/cdp/execute`, a command fantoccini does not know.
#[derive(Debug)]
struct Cdp(Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

/// chromedriver on a free loopback port, started under `setsid`: it leads a process group that
/// Chromium joins. A shell watchdog ends that group when the test process is gone; `Drop` ends
/// it sooner.
struct Chromedriver {
    port: u16,
    /// chromedriver's pid, which is its process group's id.
    group: u32,
    watchdog: std::process::Child,
    /// The watchdog's stdout, kept open (it must never write to a closed pipe).
    _watchdog_out: std::io::BufReader<std::process::ChildStdout>,
    /// Chromium's profile and every temporary file of both (`TMPDIR`), removed at the end.
    dir: PathBuf,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tower-mcp-auth-chromium-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let script = format!(
            "TMPDIR='{dir}/tmp' setsid '{chromedriver}' --port={port} --log-level=OFF \
               >/dev/null 2>&1 & \
             server=$!; echo $server; parent=$PPID; \
             while kill -0 $parent 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 1; done; \
             kill -s TERM -- -$server 2>/dev/null; sleep 1; rm -rf '{dir}'",
            dir = dir.display()
        );
        let mut watchdog = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh");
        let mut out = std::io::BufReader::new(watchdog.stdout.take().unwrap());
        let mut pid = String::new();
        out.read_line(&mut pid).unwrap();
        Chromedriver {
            port,
            group: pid.trim().parse().expect("chromedriver's pid"),
            watchdog,
            _watchdog_out: out,
            dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // chromedriver's group (with Chromium, if its session is still open), then the watchdog.
        let _ = std::process::Command::new("kill")
            .args(["-s", "TERM", "--", &format!("-{}", self.group)])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

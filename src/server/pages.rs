//! The HTML pages (minijinja templates, every value escaped) and the strict headers they carry.
//!
//! The defaults are compiled in; an operator replaces any of them with
//! [`AuthServerBuilder::page_template`](super::AuthServerBuilder::page_template). Every page's
//! context also holds `server_name` and `title`. The contexts:
//!
//! | template | variables |
//! |---|---|
//! | `base.html` | `server_name`, `title`; blocks `body` |
//! | `login.html` | `client` (below), `resource`, `providers` (`name`, `action`), `dev`, `username`, `password`, `error`, `action`, `request`, `csrf` |
//! | `consent.html` | `client`, `user`, `resource`, `redirect_host`, `redirect_uri`, `scopes` (`name`, `description`, `new`), `added`, `action`, `request`, `csrf` |
//! | `error.html` | `message`, `hint` |
//! | `connected.html` | `service`, `user`, `scopes` (granted at the service), `client_id` |
//!
//! `client` is `{ name, id, kind, verified, domain, client_uri, logo_uri }`: `kind` is
//! `operator` (registered by the operator in code: `verified` is true), `metadata_document`
//! (a client ID metadata document fetched from `domain`, the host of its `client_id` URL;
//! `client_uri` and `logo_uri` only when on that host) or `self_registered` (dynamic
//! registration: its name is whatever it claimed). Forms must post `request` and `csrf` back
//! unchanged: the handlers refuse a form without them whatever the template renders.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::auth_server::AuthServer;
use super::clients::Client;
use super::error::no_store;
use crate::ConfigError;

/// The names of the pages an operator may replace.
pub(super) const TEMPLATE_NAMES: [&str; 5] = [
    "base.html",
    "login.html",
    "consent.html",
    "error.html",
    "connected.html",
];

const PAGE_STYLE: &str = "\
:root{color-scheme:light dark;--bg:#f4f5f7;--card:#fff;--text:#1f2328;--muted:#57606a;--line:#e3e6ea;--accent:#1f6feb;--accent-text:#fff;--warn-bg:#fff4d6;--warn:#7a4d00;--ok:#1a7f37;--new:#fde68a;--error:#b3261e}\
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#161b22;--text:#e6edf3;--muted:#9198a1;--line:#30363d;--accent:#2f81f7;--warn-bg:#3a2a00;--warn:#f2cc60;--ok:#3fb950;--new:#5a4a00;--error:#ff7b72}}\
*{box-sizing:border-box}body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:var(--bg);color:var(--text);margin:0;padding:1rem;font-size:1rem;line-height:1.5}\
header{max-width:28rem;margin:1rem auto 0;font-weight:600;color:var(--muted);font-size:.9rem;letter-spacing:.01em}\
main{background:var(--card);max-width:28rem;margin:.5rem auto 2rem;padding:1.5rem;border-radius:.75rem;border:1px solid var(--line)}\
h1{font-size:1.35rem;margin:0 0 .75rem}p{margin:.5rem 0}\
label{display:block;margin:.75rem 0 .25rem;font-weight:600}\
input{width:100%;font-size:1rem;padding:.6rem .7rem;border:1px solid var(--line);border-radius:.4rem;background:var(--card);color:var(--text)}\
button{width:100%;font-size:1rem;min-height:2.75rem;margin-top:.75rem;border-radius:.4rem;border:1px solid var(--line);background:transparent;color:var(--text);cursor:pointer}\
button.primary{background:var(--accent);border-color:var(--accent);color:var(--accent-text);font-weight:600}\
button.secondary{color:var(--muted)}\
.client{display:flex;gap:.75rem;align-items:center;margin:.25rem 0 .75rem}.client img{width:2.5rem;height:2.5rem;border-radius:.4rem}\
.badge{display:inline-block;font-size:.75rem;font-weight:600;border-radius:1rem;padding:.05rem .55rem;margin-left:.25rem;vertical-align:middle}\
.badge.unverified{background:var(--warn-bg);color:var(--warn)}.badge.verified{color:var(--ok);border:1px solid var(--ok)}\
.notice{background:var(--warn-bg);color:var(--warn);border-radius:.4rem;padding:.6rem .75rem;font-size:.9rem}\
.redirect{font-size:1.05rem;font-weight:600;overflow-wrap:anywhere}\
ul.scopes{list-style:none;padding:0;margin:.5rem 0}ul.scopes li{padding:.55rem 0;border-top:1px solid var(--line)}ul.scopes li:first-child{border-top:0}\
.what{display:block}code{font-size:.85rem;color:var(--muted);overflow-wrap:anywhere}\
.new{background:var(--new);border-radius:.2rem;padding:0 .3rem;font-size:.8rem}\
.muted{color:var(--muted);font-size:.9rem}.error{color:var(--error)}";

const BASE: &str = r#"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content="width=device-width,initial-scale=1"><title>{{ title }} · {{ server_name }}</title><style>STYLE</style></head><body><header>{{ server_name }}</header><main>{% block body %}{% endblock %}</main></body></html>"#;

/// Who the client is, as the pages say it: the mark, the quoted name, the domain.
const CLIENT: &str = r#"{% macro who(client) %}<div class="client">{% if client.logo_uri %}<img src="{{ client.logo_uri }}" alt="">{% endif %}<div>{% if client.kind == "operator" %}<b>{{ client.name }}</b><span class="badge verified">✓ Verified</span>{% elif client.kind == "metadata_document" %}<b>“{{ client.name }}”</b> from <b>{{ client.domain }}</b>{% if client.client_uri %} · <a href="{{ client.client_uri }}" rel="noreferrer noopener">{{ client.client_uri }}</a>{% endif %}{% else %}<b>“{{ client.name }}”</b><span class="badge unverified">Unverified</span>{% endif %}</div></div>{% endmacro %}"#;

const LOGIN: &str = r#"{% extends "base.html" %}{% from "client.html" import who %}{% block body %}<h1>Sign in</h1>{{ who(client) }}<p>asks to use <code>{{ resource }}</code> as you.</p>{% if client.kind == "self_registered" %}<p class="notice">This application registered itself: its name is its own claim. Continue only if you started signing in from it.</p>{% endif %}{% if error %}<p class="error">{{ error }}</p>{% endif %}{% for p in providers %}<form method="post" action="{{ p.action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><button type="submit" class="primary">Sign in with {{ p.name }}</button></form>{% endfor %}{% if dev %}<form method="post" action="{{ action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><label for="username">User name</label><input id="username" name="username" value="{{ username }}" autocomplete="username"><label for="password">Password</label><input id="password" name="password" value="{{ password }}" type="password" autocomplete="current-password"><button type="submit" class="primary">Sign in</button></form>{% endif %}{% endblock %}"#;

const CONSENT: &str = r#"{% extends "base.html" %}{% from "client.html" import who %}{% block body %}<h1>Allow access?</h1>{{ who(client) }}<p>wants to act as <b>{{ user }}</b> on <code>{{ resource }}</code>. It will be able to:</p><ul class="scopes">{% for s in scopes %}<li>{% if s.description %}<span class="what">{{ s.description }}</span>{% endif %}<code>{{ s.name }}</code>{% if s.new %} <span class="new">new</span>{% endif %}</li>{% endfor %}</ul>{% if added %}<p class="muted">Marked <span class="new">new</span>: not part of what you allowed this application before.</p>{% endif %}<p>After you answer, your browser goes to</p><p class="redirect">{{ redirect_host }}</p>{% if client.kind == "self_registered" %}<p class="notice">Anyone can register an application under any name. Allow only if you started this from the application you expect, and it lives at <b>{{ redirect_host }}</b>.</p>{% endif %}<form method="post" action="{{ action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><button name="decision" value="approve" type="submit" class="primary">Allow</button><button name="decision" value="deny" type="submit" class="secondary">Deny</button></form>{% endblock %}"#;

const ERROR: &str = r#"{% extends "base.html" %}{% block body %}<h1>{{ title }}</h1><p>{{ message }}</p>{% if hint %}<p class="muted">{{ hint }}</p>{% endif %}{% endblock %}"#;

const CONNECTED: &str = r#"{% extends "base.html" %}{% block body %}<h1>{{ service }} connected</h1><p>Your <b>{{ service }}</b> account is now connected for <b>{{ user }}</b>{% if client_id %}, for the application that asked (<code>{{ client_id }}</code>){% endif %}.</p>{% if scopes %}<p>At {{ service }}, it may:</p><ul class="scopes">{% for s in scopes %}<li><code>{{ s }}</code></li>{% endfor %}</ul>{% endif %}<p class="muted">Return to your MCP client and try again. The token is kept encrypted, and used only for your own tool calls.</p>{% endblock %}"#;

/// The page templates, and the name of the server in their header.
pub(super) struct Pages {
    env: minijinja::Environment<'static>,
    server_name: String,
}

/// The templates: minijinja escapes every value in `.html` templates, the operator's too
/// (their names end in `.html`); `overrides` replace defaults by name.
pub(super) fn pages(
    server_name: String,
    overrides: &[(String, String)],
) -> Result<Pages, ConfigError> {
    let mut env = minijinja::Environment::new();
    let defaults = [
        ("base.html", BASE.replace("STYLE", PAGE_STYLE)),
        ("client.html", CLIENT.to_owned()),
        ("login.html", LOGIN.to_owned()),
        ("consent.html", CONSENT.to_owned()),
        ("error.html", ERROR.to_owned()),
        ("connected.html", CONNECTED.to_owned()),
    ];
    for (name, source) in defaults {
        let source = overrides
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(source, |(_, s)| s.clone());
        env.add_template_owned(name, source)
            .map_err(|e| ConfigError::InvalidTemplate(format!("{name}: {e}")))?;
    }
    if let Some((name, _)) = overrides
        .iter()
        .find(|(n, _)| !TEMPLATE_NAMES.contains(&n.as_str()))
    {
        return Err(ConfigError::InvalidTemplate(format!(
            "`{name}` is not a page (pages: {})",
            TEMPLATE_NAMES.join(", ")
        )));
    }
    // Every page must render with an empty context: a template that fails on a missing
    // variable is found at start-up, not by the first person signing in.
    for name in TEMPLATE_NAMES {
        let template = env
            .get_template(name)
            .map_err(|e| ConfigError::InvalidTemplate(format!("{name}: {e}")))?;
        template
            .render(minijinja::context! { client => minijinja::context! {} })
            .map_err(|e| ConfigError::InvalidTemplate(format!("{name}: {e}")))?;
    }
    Ok(Pages { env, server_name })
}

/// How a page presents `client`: see the module docs.
pub(super) fn client_view(client: &Client) -> minijinja::Value {
    let name = client
        .name
        .clone()
        .unwrap_or_else(|| client.client_id.clone());
    if client.configured {
        return minijinja::context! {
            name, id => client.client_id, kind => "operator", verified => true,
        };
    }
    if super::cimd::is_document_id(&client.client_id) {
        let domain = url::Url::parse(&client.client_id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        return minijinja::context! {
            name, id => client.client_id, kind => "metadata_document", verified => false,
            domain, client_uri => client.client_uri, logo_uri => client.logo_uri,
        };
    }
    minijinja::context! { name, id => client.client_id, kind => "self_registered", verified => false }
}

/// A page with the strict headers every page of ours carries. `image_origin` lets the page
/// show images from that one origin (a metadata-document client's logo); nothing else loads.
pub(super) fn page(
    server: &AuthServer,
    status: StatusCode,
    template: &str,
    context: minijinja::Value,
) -> Response {
    let pages = server.pages();
    let image_origin = context
        .get_attr("client")
        .and_then(|c| c.get_attr("logo_uri"))
        .ok()
        .and_then(|logo| logo.as_str().and_then(|l| url::Url::parse(l).ok()))
        .map(|url| url.origin().ascii_serialization());
    let context = minijinja::context! { server_name => pages.server_name, ..context };
    let html = pages
        .env
        .get_template(template)
        .and_then(|t| t.render(context))
        .unwrap_or_else(|e| {
            tracing::error!(template, error = %e, "a page failed to render");
            "<!doctype html><meta name=viewport content=\"width=device-width,initial-scale=1\"><p>This page could not be shown. Go back to your application and try again.</p>".to_owned()
        });
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No form-action: Chromium applies it to the redirect after a form post, and the consent
    // form's redirect goes to the client (any origin, a custom scheme).
    let base =
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";
    let csp = match image_origin {
        Some(origin) => HeaderValue::from_str(&format!("{base}; img-src {origin}")).ok(),
        None => None,
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        csp.unwrap_or_else(|| HeaderValue::from_static(base)),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    no_store(headers);
    response
}

/// The page after a third-party account was connected (ATAG): which service, for whom, with
/// which scopes there, for which client.
#[cfg_attr(not(feature = "atag"), allow(dead_code))]
pub(crate) fn connected_page(
    server: &AuthServer,
    service: &str,
    user: &str,
    scopes: &[String],
    client_id: Option<&str>,
) -> Response {
    page(
        server,
        StatusCode::OK,
        "connected.html",
        minijinja::context! { title => format!("{service} connected"), service, user, scopes, client_id },
    )
}

/// The page for a failed exchange with another party (`party`: "The identity provider",
/// "The service"): 502 when it could not be reached, 403 with `refused` when it said no.
pub(crate) fn upstream_error_page(
    server: &AuthServer,
    error: &super::upstream::UpstreamError,
    party: &str,
    refused: &str,
) -> Response {
    match error {
        super::upstream::UpstreamError::Unavailable(_) => error_page(
            server,
            StatusCode::BAD_GATEWAY,
            &format!("{party} could not be reached. Try again in a moment."),
        ),
        super::upstream::UpstreamError::Refused(_) => {
            error_page(server, StatusCode::FORBIDDEN, refused)
        }
    }
}

/// An error shown to the person in the browser, never sent to a redirect URI we cannot trust.
pub(crate) fn error_page(server: &AuthServer, status: StatusCode, message: &str) -> Response {
    let mut message = message.to_owned();
    if let Some(first) = message.get(..1) {
        let upper = first.to_uppercase();
        message.replace_range(..1, &upper);
    }
    if !message.ends_with(['.', '!', '?']) {
        message.push('.');
    }
    page(
        server,
        status,
        "error.html",
        minijinja::context! {
            title => "Authorization failed",
            message,
            hint => "Go back to your application and start signing in again. If you did not start this, close this page: nothing was shared.",
        },
    )
}

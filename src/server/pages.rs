//! The HTML pages (minijinja templates, every value escaped) and the strict headers they carry.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::auth_server::AuthServer;
use super::error::no_store;
use crate::ConfigError;

const PAGE_STYLE: &str = "*{box-sizing:border-box}body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#f4f5f7;color:#1f2328;margin:0;padding:1rem;font-size:1rem;line-height:1.5}main{background:#fff;max-width:26rem;margin:2rem auto;padding:1.5rem;border-radius:.75rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}h1{font-size:1.35rem;margin:0 0 .75rem}label{display:block;margin:.75rem 0 .25rem;font-weight:600}input{width:100%;font-size:1rem;padding:.6rem .7rem;border:1px solid #c8ccd1;border-radius:.4rem}button{width:100%;font-size:1rem;min-height:2.75rem;margin-top:.75rem;border-radius:.4rem;border:1px solid #c8ccd1;background:#fff;cursor:pointer}button.primary{background:#1f6feb;border-color:#1f6feb;color:#fff;font-weight:600}ul.scopes{list-style:none;padding:0;margin:.5rem 0}ul.scopes li{padding:.5rem 0;border-top:1px solid #eceef1}ul.scopes li:first-child{border-top:0}.what{display:block}code{font-size:.85rem;color:#57606a;overflow-wrap:anywhere}.new{background:#fde68a;border-radius:.2rem;padding:0 .3rem;font-size:.8rem}.muted{color:#57606a;font-size:.9rem}.error{color:#b3261e}";

/// The templates: minijinja escapes every value in `.html` templates.
pub(super) fn pages() -> Result<minijinja::Environment<'static>, ConfigError> {
    let mut env = minijinja::Environment::new();
    let base = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\"><title>{{{{ title }}}}</title><style>{PAGE_STYLE}</style></head><body><main>{{% block body %}}{{% endblock %}}</main></body></html>"
    );
    let templates = [
        ("base.html", base),
        ("error.html", r#"{% extends "base.html" %}{% block body %}<h1>{{ title }}</h1><p>{{ message }}</p>{% if hint %}<p class="muted">{{ hint }}</p>{% endif %}{% endblock %}"#.to_owned()),
        ("login.html", r#"{% extends "base.html" %}{% block body %}<h1>Sign in</h1><p><b>{{ client }}</b> asks to access <code>{{ resource }}</code>.</p>{% if error %}<p class="error">{{ error }}</p>{% endif %}{% for p in providers %}<form method="post" action="{{ p.action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><button type="submit" class="primary">Sign in with {{ p.name }}</button></form>{% endfor %}{% if dev %}<form method="post" action="{{ action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><label for="username">User name</label><input id="username" name="username" value="{{ username }}" autocomplete="username"><label for="password">Password</label><input id="password" name="password" value="{{ password }}" type="password" autocomplete="current-password"><button type="submit" class="primary">Sign in</button></form>{% endif %}{% endblock %}"#.to_owned()),
        ("consent.html", r#"{% extends "base.html" %}{% block body %}<h1>Allow access?</h1><p><b>{{ client }}</b> wants to act as <b>{{ user }}</b> on <code>{{ resource }}</code>. It will be able to:</p><ul class="scopes">{% for s in scopes %}<li>{% if s.description %}<span class="what">{{ s.description }}</span>{% endif %}<code>{{ s.name }}</code>{% if s.new %} <span class="new">new</span>{% endif %}</li>{% endfor %}</ul>{% if added %}<p>Scopes marked <span class="new">new</span> were not part of what you allowed before.</p>{% endif %}<p>You will be sent back to <b>{{ redirect_host }}</b>.</p><form method="post" action="{{ action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><button name="decision" value="approve" type="submit" class="primary">Allow</button><button name="decision" value="deny" type="submit">Deny</button></form>{% endblock %}"#.to_owned()),
    ];
    for (name, source) in templates {
        env.add_template_owned(name, source)
            .map_err(|e| ConfigError::InvalidTemplate(format!("{name}: {e}")))?;
    }
    Ok(env)
}

/// A page with the strict headers every page of ours carries.
pub(super) fn page(
    server: &AuthServer,
    status: StatusCode,
    template: &str,
    context: minijinja::Value,
) -> Response {
    let html = server
        .pages()
        .get_template(template)
        .and_then(|t| t.render(context))
        .unwrap_or_else(|_| "<!doctype html><p>error</p>".to_owned());
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
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

/// A page with a title and a message.
#[cfg_attr(not(feature = "atag"), allow(dead_code))]
pub(crate) fn message_page(
    server: &AuthServer,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    page(
        server,
        status,
        "error.html",
        minijinja::context! { title, message },
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

//! The HTML pages (minijinja templates, every value escaped) and the strict headers they carry.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::auth_server::AuthServer;
use super::error::no_store;
use crate::ConfigError;

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}input,button{box-sizing:border-box;font-size:1rem;padding:.4rem;margin:.2rem 0;width:100%}code{word-break:break-all}.new{background:#fde68a;border-radius:.2rem;padding:0 .3rem;font-size:.8rem}";

/// The templates: minijinja escapes every value in `.html` templates.
pub(super) fn pages() -> Result<minijinja::Environment<'static>, ConfigError> {
    let mut env = minijinja::Environment::new();
    let base = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{{{{ title }}}}</title><style>{PAGE_STYLE}</style></head><body>{{% block body %}}{{% endblock %}}</body></html>"
    );
    let templates = [
        ("base.html", base),
        ("error.html", r#"{% extends "base.html" %}{% block body %}<h1>{{ title }}</h1><p>{{ message }}</p>{% endblock %}"#.to_owned()),
        ("login.html", r#"{% extends "base.html" %}{% block body %}<h1>Sign in</h1><p><b>{{ client }}</b> asks to access {{ resource }}.</p>{% if error %}<p style="color:#b00">{{ error }}</p>{% endif %}{% for p in providers %}<form method="post" action="{{ p.action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><button type="submit">Sign in with {{ p.name }}</button></form>{% endfor %}{% if dev %}<form method="post" action="{{ action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><label>User <input name="username" value="{{ username }}" autocomplete="username"></label><label>Password <input name="password" value="{{ password }}" type="password" autocomplete="current-password"></label><button type="submit">Sign in</button></form>{% endif %}{% endblock %}"#.to_owned()),
        ("consent.html", r#"{% extends "base.html" %}{% block body %}<h1>Allow access?</h1><p><b>{{ client }}</b> wants to act as <b>{{ user }}</b> on {{ resource }} with these scopes:</p><ul>{% for s in scopes %}<li><code>{{ s.name }}</code>{% if s.new %} <span class="new">new</span>{% endif %}</li>{% endfor %}</ul>{% if added %}<p>Scopes marked <span class="new">new</span> were not part of what you allowed before.</p>{% endif %}<p>You will be sent back to <b>{{ redirect_host }}</b>.</p><form method="post" action="{{ action }}"><input type="hidden" name="request" value="{{ request }}"><input type="hidden" name="csrf" value="{{ csrf }}"><button name="decision" value="approve" type="submit">Allow</button><button name="decision" value="deny" type="submit">Deny</button></form>{% endblock %}"#.to_owned()),
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
    page(
        server,
        status,
        "error.html",
        minijinja::context! { title => "Authorization failed", message },
    )
}

//! The authorization code flow with PKCE: `/oauth/authorize`, the dev login form, consent, and
//! the `authorization_code` and `refresh_token` grants.

// Handlers return a `Response` on both arms of their helpers' `Result`s.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth_server::{
    AuthServer, Client, no_store, oauth_error, parse_form, random_token, required, rng_failure,
};
use super::login::{Session, logged_in_user};
use crate::resource::{canonical_audience, is_loopback};
use crate::{ConfigError, Scopes};

use crate::bearer::policy::AUDIT;
/// How long a refresh may hold its token's lock (a crashed holder frees it after this).
const REFRESH_LOCK_TTL: Duration = Duration::from_secs(10);
/// How long a refresh waits for its token's lock.
const REFRESH_LOCK_WAIT: Duration = Duration::from_secs(2);
/// How long a started authorization waits for login and consent.
pub(super) const PENDING_TTL: Duration = Duration::from_secs(600);
/// How long an authorization code lives (single use).
const CODE_TTL: Duration = Duration::from_secs(60);

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
            .map_err(|e| ConfigError::InvalidPolicy(format!("template {name}: {e}")))?;
    }
    Ok(env)
}

/// A page with the strict headers every page of ours carries.
fn page(
    server: &AuthServer,
    status: StatusCode,
    template: &str,
    context: minijinja::Value,
) -> Response {
    let html = server
        .0
        .pages
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
pub(super) fn message_page(
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
pub(super) fn upstream_error_page(
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
pub(super) fn error_page(server: &AuthServer, status: StatusCode, message: &str) -> Response {
    page(
        server,
        status,
        "error.html",
        minijinja::context! { title => "Authorization failed", message },
    )
}

/// Redirect URIs: https, or http on a loopback host (RFC 8252 native apps); no fragment, no
/// credentials.
pub(super) fn check_redirect_uri(uri: &str) -> Result<url::Url, &'static str> {
    let url = url::Url::parse(uri).map_err(|_| "not an absolute URL")?;
    if url.fragment().is_some() {
        return Err("redirect URIs must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("redirect URIs must not carry credentials");
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err("plain http redirect URIs are only allowed on loopback hosts"),
        _ => Err("redirect URIs must be https (or http on loopback)"),
    }
}

/// Exact string match, except that a redirect URI registered on a loopback IP literal without a
/// port accepts any port (RFC 8252 §7.3): the rest of the string must be identical, compared
/// as written, never after URL normalization (which would fold `/x/../callback` into
/// `/callback`).
fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    for host in ["http://127.0.0.1", "http://[::1]"] {
        let Some(registered_rest) = registered.strip_prefix(host) else {
            continue;
        };
        if !registered_rest.starts_with('/') {
            return false;
        }
        let Some(port_and_rest) = requested
            .strip_prefix(host)
            .and_then(|r| r.strip_prefix(':'))
        else {
            return false;
        };
        let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
        let valid_port = (1..=5).contains(&digits)
            && port_and_rest[..digits].parse::<u16>().is_ok_and(|p| p > 0);
        return valid_port && &port_and_rest[digits..] == registered_rest;
    }
    false
}

/// An authorization request that passed validation, waiting for login and consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Pending {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) state: Option<String>,
    pub(super) code_challenge: String,
    pub(super) scope: String,
    pub(super) resource: String,
    pub(super) csrf: String,
    /// The OpenID Connect `nonce`, echoed in the id_token.
    #[serde(default)]
    pub(super) nonce: Option<String>,
    /// Digest of the browser cookie set when the request started: the login and consent forms
    /// are accepted only from that browser (no login CSRF with an attacker's own request).
    pub(super) browser: String,
}

/// What an authorization code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    scope: String,
    resource: String,
    subject: String,
    family: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// What a refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refresh {
    client_id: String,
    scope: String,
    resource: String,
    subject: String,
    family: String,
    /// When this token was first used, i.e. rotated (seconds since the epoch).
    rotated_at: Option<u64>,
    /// Whether a token issued in exchange for this one has been used: then this one is dead.
    successor_used: bool,
    /// The store key of the token this one replaced.
    parent: Option<String>,
    /// The store key of the live token issued in exchange for this one.
    child: Option<String>,
}

pub(crate) fn digest(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}

/// Sends the authorization response back to the client: code or error, `state`, and `iss`
/// (RFC 9207) in every case.
pub(super) fn redirect_back(
    server: &AuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page(server, StatusCode::BAD_REQUEST, "invalid redirect URI");
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", server.issuer());
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(url.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    no_store(response.headers_mut());
    response
}

pub(super) async fn load<T: for<'de> Deserialize<'de>>(
    server: &AuthServer,
    key: &str,
    take: bool,
) -> Result<Option<T>, Response> {
    let found = if take {
        server.0.store.take(key).await
    } else {
        server.0.store.get(key).await
    };
    match found {
        Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
        Ok(None) => Ok(None),
        Err(e) => Err(oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &e.to_string(),
        )),
    }
}

/// Spends the single-use entry under `key`, atomically (of two racing uses, one wins):
/// `Ok(false)` if it was spent already or expired.
pub(super) async fn spend(server: &AuthServer, key: &str) -> Result<bool, Response> {
    server
        .0
        .store
        .take(key)
        .await
        .map(|found| found.is_some())
        .map_err(|e| {
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            )
        })
}

pub(super) async fn save<T: Serialize>(
    server: &AuthServer,
    key: &str,
    value: &T,
    ttl: Duration,
) -> Result<(), Response> {
    let bytes = serde_json::to_vec(value).map_err(|e| {
        oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.to_string(),
        )
    })?;
    server
        .0
        .store
        .put(key, Bytes::from(bytes), ttl)
        .await
        .map_err(|e| {
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            )
        })
}

pub(super) fn session_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `GET /oauth/authorize`.
pub(super) async fn authorize(
    State(server): State<AuthServer>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    // RFC 6749 §3.1: parameters must not repeat (a repeated one is refused, not picked from).
    let params = match parse_form(query.unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(_) => return error_page(&server, StatusCode::BAD_REQUEST, "a parameter is repeated"),
    };
    // Until the client and its redirect URI are known good, errors stay on our page.
    let Some(client_id) = params.get("client_id") else {
        return error_page(&server, StatusCode::BAD_REQUEST, "client_id is missing");
    };
    let client = match server.lookup_client(client_id).await {
        Ok(Some(client)) if client.grant_types.iter().any(|g| g == "authorization_code") => client,
        Ok(_) => {
            tracing::info!(target: AUDIT, decision = "deny", %client_id, reason = "unknown client", "authorization refused");
            return error_page(&server, StatusCode::BAD_REQUEST, "unknown client");
        }
        Err(response) => return response,
    };
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri)
            if client
                .redirect_uris
                .iter()
                .any(|r| redirect_matches(r, uri)) =>
        {
            uri.clone()
        }
        Some(_) => {
            tracing::info!(target: AUDIT, decision = "deny", %client_id, reason = "redirect URI not registered", "authorization refused");
            return error_page(
                &server,
                StatusCode::BAD_REQUEST,
                "the redirect URI is not registered for this client",
            );
        }
        None => return error_page(&server, StatusCode::BAD_REQUEST, "redirect_uri is missing"),
    };
    let state = params.get("state").map(String::as_str);
    let fail = |error: &str, description: &str| {
        tracing::info!(target: AUDIT, decision = "deny", client_id = %client.client_id, error, reason = description, requested_scope = params.get("scope").map(String::as_str), "authorization refused");
        redirect_back(
            &server,
            &redirect_uri,
            state,
            &[("error", error), ("error_description", description)],
        )
    };
    if params.get("response_type").map(String::as_str) != Some("code") {
        return fail("unsupported_response_type", "response_type must be code");
    }
    let challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method").map(String::as_str),
    ) {
        (Some(c), Some("S256")) if c.len() == 43 && URL_SAFE_NO_PAD.decode(c).is_ok() => c.clone(),
        (Some(_), Some("S256")) => {
            return fail("invalid_request", "code_challenge is not a S256 challenge");
        }
        (_, Some(_)) => return fail("invalid_request", "code_challenge_method must be S256"),
        _ => {
            return fail(
                "invalid_request",
                "PKCE (code_challenge with method S256) is required",
            );
        }
    };
    let resource = match params.get("resource") {
        Some(r) => canonical_audience(r).into_owned(),
        None if server.0.resources.len() == 1 => server.0.resources[0].clone(),
        None => return fail("invalid_target", "resource is required"),
    };
    if !server.0.resources.contains(&resource) {
        return fail(
            "invalid_target",
            "this server issues no tokens for that resource",
        );
    }
    let Some(scope) = client.requested_scope(&server, params.get("scope").map(String::as_str))
    else {
        return fail("invalid_scope", "the client may not request these scopes");
    };
    let (Some(id), Some(csrf)) = (random_token(), random_token()) else {
        return rng_failure();
    };
    let existing = session_cookie(&headers, &browser_cookie_name(&server));
    let browser = match existing.or_else(random_token) {
        Some(nonce) => nonce,
        None => return rng_failure(),
    };
    let nonce = params.get("nonce").cloned();
    if nonce.as_ref().is_some_and(|n| n.len() > 256) {
        return fail("invalid_request", "nonce is too long");
    }
    let pending = Pending {
        nonce,
        browser: digest(&browser),
        client_id: client.client_id.clone(),
        redirect_uri,
        state: state.map(str::to_owned),
        code_challenge: challenge,
        scope: scope.to_string(),
        resource,
        csrf,
    };
    if let Err(response) = save(&server, &format!("authreq:{id}"), &pending, PENDING_TTL).await {
        return response;
    }
    let mut response = match logged_in_user(&server, &headers).await {
        Ok(Some(session)) => consent_or_code(&server, &id, pending, &client, &session).await,
        // One upstream provider and no other way in: straight to it.
        Ok(None) if server.0.users.is_empty() && server.0.providers.len() == 1 => {
            super::login::begin_upstream(&server, &server.0.providers[0], &id, &pending).await
        }
        Ok(None) => login_page(&server, &id, &pending, &client, None),
        Err(response) => response,
    };
    // Renewed on every request: the cookie must outlive the newest pending request (an
    // upstream sign-in can take a while).
    set_cookie(
        &server,
        &mut response,
        &browser_cookie_name(&server),
        &browser,
        PENDING_TTL,
    );
    response
}

pub(super) fn browser_cookie_name(server: &AuthServer) -> String {
    format!("{}_b", server.0.cookie_name)
}

/// Sets an `HttpOnly`, `SameSite=Lax` cookie scoped to the issuer's path, `Secure` on https.
pub(super) fn set_cookie(
    server: &AuthServer,
    response: &mut Response,
    name: &str,
    value: &str,
    ttl: Duration,
) {
    let secure = if server.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let path = server.0.urls.local_path("/oauth");
    let cookie = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        ttl.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub(super) fn login_page(
    server: &AuthServer,
    id: &str,
    pending: &Pending,
    client: &Client,
    error: Option<&str>,
) -> Response {
    let (username, password) = server.0.prefill.clone().unwrap_or_default();
    page(
        server,
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        "login.html",
        minijinja::context! {
            title => "Sign in",
            client => client.name.clone().unwrap_or_else(|| client.client_id.clone()),
            resource => pending.resource,
            action => server.0.urls.endpoint("/oauth/login"),
            dev => !server.0.users.is_empty(),
            providers => server.0.providers.iter().map(|p| minijinja::context! {
                name => p.display_name(),
                action => server.0.urls.endpoint(&format!("/oauth/upstream/{}", p.id())),
            }).collect::<Vec<_>>(),
            request => id, csrf => pending.csrf, username, password, error,
        },
    )
}

/// Checks the form's pending request and CSRF token; both are needed to act on it.
pub(super) async fn pending_from_form(
    server: &AuthServer,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(String, Pending, Client), Response> {
    let id = form.get("request").cloned().unwrap_or_default();
    let csrf = form.get("csrf").map(String::as_bytes).unwrap_or_default();
    let (pending, client) = pending_request(server, headers, &id, Some(csrf)).await?;
    Ok((id, pending, client))
}

/// The pending authorization request `id`, if this browser started it (and, for forms, the
/// CSRF token matches).
pub(super) async fn pending_request(
    server: &AuthServer,
    headers: &HeaderMap,
    id: &str,
    csrf: Option<&[u8]>,
) -> Result<(Pending, Client), Response> {
    let pending = match load::<Pending>(server, &format!("authreq:{id}"), false).await? {
        Some(p) => p,
        None => {
            return Err(error_page(
                server,
                StatusCode::BAD_REQUEST,
                "this sign-in request expired; start again from your application",
            ));
        }
    };
    let browser = session_cookie(headers, &browser_cookie_name(server))
        .map(|b| digest(&b))
        .unwrap_or_default();
    let mut ok = browser.as_bytes().ct_eq(pending.browser.as_bytes());
    if let Some(csrf) = csrf {
        ok &= csrf.ct_eq(pending.csrf.as_bytes());
    }
    if !bool::from(ok) {
        tracing::warn!(target: AUDIT, "CSRF check failed on the authorization request");
        return Err(error_page(
            server,
            StatusCode::FORBIDDEN,
            "the form is not valid; start again",
        ));
    }
    let client = match server.lookup_client(&pending.client_id).await? {
        Some(client) => client,
        None => {
            return Err(error_page(
                server,
                StatusCode::BAD_REQUEST,
                "unknown client",
            ));
        }
    };
    Ok((pending, client))
}

/// Issues the code at once if the user approved these scopes for this client before; otherwise
/// shows the consent page.
pub(super) async fn consent_or_code(
    server: &AuthServer,
    id: &str,
    mut pending: Pending,
    client: &Client,
    session: &Session,
) -> Response {
    let granted = server.user_scope(session, &pending.scope);
    if granted != pending.scope {
        // RFC 6749 §3.3: the token carries only what this user may hold, and says so.
        let (kept, asked) = (
            Scopes::from_space_separated(&granted),
            Scopes::from_space_separated(&pending.scope),
        );
        let removed: Vec<&str> = kept.missing(&asked).collect();
        tracing::info!(target: AUDIT, decision = "narrow", user = %session.subject, client_id = %client.client_id, requested = %pending.scope, granted = %granted, removed = ?removed, "authorization narrowed to the user's grants");
    }
    pending.scope = granted;
    let user = session.subject.as_str();
    let remembered = match remembered_consent(server, user, client, &pending).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let requested = Scopes::from_space_separated(&pending.scope);
    if remembered
        .as_ref()
        .is_some_and(|r| r.contains_all(requested.iter()))
    {
        // Atomic: concurrent submissions of one request issue one code.
        return match spend(server, &format!("authreq:{id}")).await {
            Ok(true) => issue_code(server, pending, session).await,
            Ok(false) => error_page(
                server,
                StatusCode::BAD_REQUEST,
                "this request was already answered",
            ),
            Err(response) => response,
        };
    }
    let redirect_host = url::Url::parse(&pending.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    page(
        server,
        StatusCode::OK,
        "consent.html",
        minijinja::context! {
            title => "Allow access?",
            client => client.name.clone().unwrap_or_else(|| client.client_id.clone()),
            user, resource => pending.resource, redirect_host,
            // Added scopes are marked: the person sees what changes since they last allowed.
            scopes => requested.iter().map(|scope| minijinja::context! {
                name => scope,
                new => remembered.as_ref().is_some_and(|r| !r.contains(scope)),
            }).collect::<Vec<_>>(),
            added => remembered.as_ref().is_some_and(|r| !r.contains_all(requested.iter())),
            action => server.0.urls.endpoint("/oauth/consent"),
            request => id, csrf => pending.csrf,
        },
    )
}

/// The scopes `user` allowed before for this client, resource and redirect URI.
async fn remembered_consent(
    server: &AuthServer,
    user: &str,
    client: &Client,
    pending: &Pending,
) -> Result<Option<Scopes>, Response> {
    let remembered = load::<String>(server, &consent_key(user, client, pending), false).await?;
    Ok(remembered.map(|s| Scopes::from_space_separated(&s)))
}

/// Consent is remembered per user, client, resource and redirect URI: a public client's code
/// is never issued silently to a redirect (a loopback port) the user did not approve.
fn consent_key(user: &str, client: &Client, pending: &Pending) -> String {
    let scope_of = format!("{}|{}", pending.resource, pending.redirect_uri);
    format!("consent:{user}:{}:{}", client.client_id, digest(&scope_of))
}

/// `POST /oauth/consent`.
pub(super) async fn consent(
    State(server): State<AuthServer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match parse_form(&body) {
        Ok(form) => form,
        Err(response) => return response,
    };
    let session = match logged_in_user(&server, &headers).await {
        Ok(Some(session)) => session,
        Ok(None) => return error_page(&server, StatusCode::UNAUTHORIZED, "sign in first"),
        Err(response) => return response,
    };
    let user = session.subject.as_str();
    let (id, mut pending, client) = match pending_from_form(&server, &headers, &form).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // Single use: a second submission of the same form finds nothing.
    match spend(&server, &format!("authreq:{id}")).await {
        Ok(true) => {}
        Ok(false) => {
            return error_page(
                &server,
                StatusCode::BAD_REQUEST,
                "this request was already answered",
            );
        }
        Err(response) => return response,
    }
    if form.get("decision").map(String::as_str) != Some("approve") {
        tracing::info!(target: AUDIT, user = %user, client_id = %client.client_id, "consent denied");
        return redirect_back(
            &server,
            &pending.redirect_uri,
            pending.state.as_deref(),
            &[
                ("error", "access_denied"),
                ("error_description", "the user denied access"),
            ],
        );
    }
    pending.scope = server.user_scope(&session, &pending.scope);
    // What was allowed before stays allowed: a narrower request later needs no new consent.
    let allowed = match remembered_consent(&server, user, &client, &pending).await {
        Ok(remembered) => remembered
            .iter()
            .flat_map(Scopes::iter)
            .chain(pending.scope.split(' '))
            .collect::<Scopes>(),
        Err(response) => return response,
    };
    if let Err(response) = save(
        &server,
        &consent_key(user, &client, &pending),
        &allowed.to_string(),
        server.0.refresh_token_ttl,
    )
    .await
    {
        return response;
    }
    tracing::info!(target: AUDIT, user = %user, client_id = %client.client_id, scope = %pending.scope, "consent given");
    issue_code(&server, pending, &session).await
}

async fn issue_code(server: &AuthServer, pending: Pending, session: &Session) -> Response {
    let (Some(code), Some(family)) = (random_token(), random_token()) else {
        return rng_failure();
    };
    let grant = Grant {
        client_id: pending.client_id,
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge,
        scope: pending.scope,
        resource: pending.resource,
        subject: session.subject.clone(),
        family,
        groups: session.groups.clone(),
        nonce: pending.nonce,
    };
    if let Err(response) = save(server, &format!("code:{}", digest(&code)), &grant, CODE_TTL).await
    {
        return response;
    }
    redirect_back(
        server,
        &pending.redirect_uri,
        pending.state.as_deref(),
        &[("code", &code)],
    )
}

/// Authenticates the client of a user grant: confidential clients with their secret, public
/// clients by `client_id` alone (PKCE or the refresh token binds the rest).
pub(super) async fn grant_client(
    server: &AuthServer,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Client, Response> {
    let has_secret =
        headers.contains_key(header::AUTHORIZATION) || form.contains_key("client_secret");
    if has_secret {
        return server
            .authenticate(headers, form)
            .await
            .map(|(client, _)| client);
    }
    let id = form
        .get("client_id")
        .ok_or_else(|| super::auth_server::invalid_client(false))?;
    match server.lookup_client(id).await? {
        Some(client) if client.secret_sha256.is_none() => Ok(client),
        _ => Err(super::auth_server::invalid_client(false)),
    }
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// `grant_type=authorization_code` and `grant_type=refresh_token`.
pub(super) async fn user_grant(
    server: &AuthServer,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Response {
    let client = match grant_client(server, headers, form).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let grant = form
        .get("grant_type")
        .map(String::as_str)
        .unwrap_or_default();
    if !client.grant_types.iter().any(|g| g == grant) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this client may not use this grant type",
        );
    }
    let result = match grant {
        "authorization_code" => exchange_code(server, &client, form).await,
        _ => refresh(server, &client, form).await,
    };
    result.unwrap_or_else(|response| response)
}

async fn exchange_code(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<Response, Response> {
    let code = required(form, "code")?;
    let key = digest(code);
    // Atomic: of two concurrent redemptions exactly one gets the grant.
    let Some(grant) = load::<Grant>(server, &format!("code:{key}"), true).await? else {
        // A code seen before is a replay: revoke what it produced.
        if let Some(family) = load::<String>(server, &format!("usedcode:{key}"), false).await? {
            revoke_family(server, &family).await?;
            tracing::warn!(target: AUDIT, client_id = %client.client_id, "authorization code replayed; its tokens are revoked");
        }
        return Err(invalid_grant(
            "the code is invalid, expired or already used",
        ));
    };
    save(
        server,
        &format!("usedcode:{key}"),
        &grant.family,
        server.0.refresh_token_ttl,
    )
    .await?;
    if grant.client_id != client.client_id {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err(invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    let verifier = form
        .get("code_verifier")
        .map(String::as_str)
        .unwrap_or_default();
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if !well_formed || !bool::from(computed.as_bytes().ct_eq(grant.code_challenge.as_bytes())) {
        return Err(invalid_grant("PKCE verification failed"));
    }
    if let Some(resource) = form.get("resource")
        && canonical_audience(resource) != grant.resource.as_str()
    {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource differs from the authorization request",
        ));
    }
    tracing::info!(target: AUDIT, client_id = %client.client_id, user = %grant.subject, "authorization code redeemed");
    server.keep_client(client).await;
    let scope = Scopes::from_space_separated(&grant.scope);
    let (mut body, _) = token_body(
        server,
        client,
        &grant.subject,
        &grant.resource,
        &scope,
        &grant.family,
        None,
    )
    .await?;
    if scope.iter().any(|s| s == "openid") {
        body["id_token"] = json!(server.mint_id_token(
            &grant.subject,
            &client.client_id,
            grant.nonce.as_deref(),
            &grant.groups,
        )?);
    }
    Ok(json_no_store(body))
}

async fn revoke_family(server: &AuthServer, family: &str) -> Result<(), Response> {
    save(
        server,
        &format!("revoked-family:{family}"),
        &true,
        server.0.refresh_token_ttl,
    )
    .await
}

async fn family_revoked(server: &AuthServer, family: &str) -> Result<bool, Response> {
    Ok(
        load::<bool>(server, &format!("revoked-family:{family}"), false)
            .await?
            .is_some(),
    )
}

/// The token response body (an access token, and a refresh token for clients allowed to
/// refresh), and the store key of that refresh token.
#[allow(clippy::too_many_arguments)]
async fn token_body(
    server: &AuthServer,
    client: &Client,
    subject: &str,
    resource: &str,
    scope: &Scopes,
    family: &str,
    parent: Option<&str>,
) -> Result<(serde_json::Value, Option<String>), Response> {
    let access_token =
        server.mint_access_token(subject, &client.client_id, resource, scope, Some(family))?;
    let mut body = json!({
        "access_token": access_token, "token_type": "Bearer",
        "expires_in": server.0.access_token_ttl.as_secs(), "scope": scope.to_string(),
    });
    if client.grant_types.iter().any(|g| g == "refresh_token") {
        let refresh_token = random_token().ok_or_else(rng_failure)?;
        let entry = Refresh {
            client_id: client.client_id.clone(),
            scope: scope.to_string(),
            resource: resource.to_owned(),
            subject: subject.to_owned(),
            family: family.to_owned(),
            rotated_at: None,
            successor_used: false,
            parent: parent.map(str::to_owned),
            child: None,
        };
        let key = format!("rt:{}", digest(&refresh_token));
        save(server, &key, &entry, server.0.refresh_token_ttl).await?;
        body["refresh_token"] = json!(refresh_token);
        return Ok((body, Some(key)));
    }
    Ok((body, None))
}

fn json_no_store(body: serde_json::Value) -> Response {
    let mut response = axum::Json(body).into_response();
    no_store(response.headers_mut());
    response
}

/// Refresh with rotation: each use returns a new refresh token, and the used one is rotated.
/// A rotated token stays usable for the grace window (a client retrying after a lost response,
/// or refreshing from two places) until its successor is first used; using it again in the
/// window replaces that successor, which dies, so a token never forks into two live chains.
/// A rotated token used after the window, or after its successor was used, is a theft signal:
/// the whole family is revoked. Scope may only narrow.
async fn refresh(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
) -> Result<Response, Response> {
    let presented = required(form, "refresh_token")?;
    let key = format!("rt:{}", digest(presented));
    // One refresh of a token at a time, across instances (the lock is in the store): two
    // concurrent uses would each mint a successor and leave two live chains.
    let lock = format!("lock:{key}");
    let acquired = crate::store::lock(
        server.0.store.as_ref(),
        &lock,
        REFRESH_LOCK_TTL,
        REFRESH_LOCK_WAIT,
    )
    .await
    .map_err(|e| {
        oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            &e.to_string(),
        )
    })?;
    if !acquired {
        // Busy is transient: never `invalid_grant`, which makes clients drop the grant.
        return Err(oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the refresh token is being used by another request; retry",
        ));
    }
    let result = refresh_locked(server, client, form, &key).await;
    let _ = server.0.store.delete(&lock).await;
    result
}

async fn refresh_locked(
    server: &AuthServer,
    client: &Client,
    form: &HashMap<String, String>,
    key: &str,
) -> Result<Response, Response> {
    let key = key.to_owned();
    let Some(mut entry) = load::<Refresh>(server, &key, false).await? else {
        return Err(invalid_grant("the refresh token is invalid or expired"));
    };
    if entry.client_id != client.client_id {
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if family_revoked(server, &entry.family).await? {
        return Err(invalid_grant("the refresh token was revoked"));
    }
    let now = super::auth_server::now();
    let grace_over = entry
        .rotated_at
        .is_some_and(|at| now.saturating_sub(at) > server.0.refresh_grace.as_secs());
    if entry.successor_used || grace_over {
        revoke_family(server, &entry.family).await?;
        tracing::warn!(target: AUDIT, client_id = %client.client_id, user = %entry.subject, "refresh token reused after rotation; family revoked");
        return Err(invalid_grant("the refresh token was already used"));
    }
    let Some(scope) =
        Scopes::from_space_separated(&entry.scope).narrow(form.get("scope").map(String::as_str))
    else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "a refresh may only narrow the scope",
        ));
    };
    if let Some(resource) = form.get("resource")
        && canonical_audience(resource) != entry.resource.as_str()
    {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "resource differs from the grant",
        ));
    }
    // Using this token retires the one it replaced, grace or not.
    if let Some(parent_key) = &entry.parent
        && let Some(mut parent) = load::<Refresh>(server, parent_key, false).await?
        && !parent.successor_used
    {
        parent.successor_used = true;
        save(server, parent_key, &parent, server.0.refresh_token_ttl).await?;
    }
    // A retry within the grace window: the successor handed out before dies.
    if let Some(child) = entry.child.take() {
        let _ = server.0.store.delete(&child).await;
    }
    let (body, child) = token_body(
        server,
        client,
        &entry.subject,
        &entry.resource,
        &scope,
        &entry.family,
        Some(&key),
    )
    .await?;
    entry.rotated_at.get_or_insert(now);
    entry.child = child;
    save(server, &key, &entry, server.0.refresh_token_ttl).await?;
    server.keep_client(client).await;
    tracing::info!(target: AUDIT, client_id = %client.client_id, user = %entry.subject, "refresh token rotated");
    Ok(json_no_store(body))
}

/// RFC 7009 for refresh tokens: revokes the token's whole family. `Ok(true)` if the token was
/// one of ours (revoked if it belongs to `client`; a foreign client's request changes nothing).
pub(super) async fn revoke_refresh_token(
    server: &AuthServer,
    client: &Client,
    token: &str,
) -> Result<bool, Response> {
    let key = format!("rt:{}", digest(token));
    let Some(entry) = load::<Refresh>(server, &key, false).await? else {
        return Ok(false);
    };
    if entry.client_id == client.client_id {
        revoke_family(server, &entry.family).await?;
        let _ = server.0.store.delete(&key).await;
        tracing::info!(target: AUDIT, client_id = %client.client_id, user = %entry.subject, "refresh token revoked");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::redirect_matches;

    #[test]
    fn loopback_port_rule_is_narrow() {
        let r = "http://127.0.0.1/callback";
        assert!(redirect_matches(r, "http://127.0.0.1:4567/callback"));
        assert!(redirect_matches("http://[::1]/cb", "http://[::1]:80/cb"));
        for bad in [
            "http://127.0.0.1:4567/x/../callback",
            "http://127.0.0.1:4567/callback/",
            "http://127.0.0.1:4567/callback?x=1",
            "http://127.0.0.1:0/callback",
            "http://127.0.0.1:99999/callback",
            "http://2130706433:4567/callback",
            "http://localhost:4567/callback",
            "http://127.0.0.1.evil.example:4567/callback",
            "http://127.0.0.1:4567@evil.example/callback",
        ] {
            assert!(!redirect_matches(r, bad), "{bad}");
        }
        // A URI registered with a port, or on `localhost`, must match exactly.
        assert!(!redirect_matches(
            "http://127.0.0.1:3000/cb",
            "http://127.0.0.1:3001/cb"
        ));
        assert!(!redirect_matches(
            "http://localhost/cb",
            "http://localhost:3001/cb"
        ));
        assert!(redirect_matches(
            "https://app.example/cb",
            "https://app.example/cb"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://APP.example/cb"
        ));
    }
}

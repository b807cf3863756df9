//! Who the user is: the login session, the dev login form, and sign-in at upstream identity
//! providers (`/oauth/upstream/{provider}` starts it, `/oauth/callback/{provider}` ends it).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth_server::AuthServer;
use super::authorize::{PENDING_TTL, Pending, pending_from_form, pending_request};
use super::clients::Client;
use super::consent::consent_or_code;
use super::cookies::{browser_cookie_name, cookie_header, session_cookie};
use super::error::{OAuthError, no_store};
use super::keyspace;
use super::pages::{error_page, page};
use super::primitives::{Form, digest, parse_form, random_token};
use super::redirect::redirect_back;
use super::storage::{forget, load, save, spend};
use super::upstream::{IdentityProvider, UpstreamError};

use crate::audit;
/// Failed passwords allowed per authorization request.
const MAX_LOGIN_ATTEMPTS: u64 = 5;
/// How long a login session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A signed-in user, as the login session remembers them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The subject of the tokens we issue: a dev user's name, or `{provider}|{subject}`.
    pub(crate) subject: String,
    /// Groups, from the dev user's configuration or the upstream provider.
    #[serde(default)]
    pub(super) groups: Vec<String>,
}

/// A user of the embedded dev login.
#[derive(Debug, Clone)]
pub(super) struct DevUser {
    pub(super) name: String,
    pub(super) password_sha256: [u8; 32],
    pub(super) groups: Vec<String>,
}

/// An upstream sign-in in progress, stored under the digest of its `state`.
#[derive(Serialize, Deserialize)]
pub(super) struct UpstreamPending {
    request: String,
    provider: String,
    kept: String,
    browser: String,
}

pub(crate) async fn logged_in_user(
    server: &AuthServer,
    headers: &HeaderMap,
) -> Result<Option<Session>, OAuthError> {
    let Some(cookie) = session_cookie(headers, &server.sign_in().cookie_name) else {
        return Ok(None);
    };
    load(server, &keyspace::session(&digest(&cookie))).await
}

/// Starts a login session and sets its cookie on `response`.
async fn start_session(server: &AuthServer, session: &Session) -> Result<HeaderValue, OAuthError> {
    let secret = random_token().ok_or_else(OAuthError::no_randomness)?;
    save(
        server,
        &keyspace::session(&digest(&secret)),
        session,
        SESSION_TTL,
    )
    .await?;
    // The session serves every path of the issuer's origin (the ATAG routes too).
    cookie_header(
        server,
        &server.sign_in().cookie_name,
        &secret,
        "/",
        SESSION_TTL,
    )
    .ok_or_else(OAuthError::no_randomness)
}

/// Signs the user in and continues the authorization request: consent, or the code.
async fn signed_in(
    server: &AuthServer,
    id: &str,
    pending: Pending,
    client: &super::clients::Client,
    session: Session,
) -> Result<Response, Response> {
    let cookie = start_session(server, &session).await?;
    // The user is signed in whatever comes next (a consent page, a code, or a refusal).
    let mut response = consent_or_code(server, id, pending, client, &session)
        .await
        .unwrap_or_else(|refusal| refusal);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Failed sign-ins allowed per user name, and per client address, in a window: a new
/// authorization request is free, so the per-request count alone would let anyone guess on.
const MAX_FAILURES_PER_USER: u64 = 10;
const MAX_FAILURES_PER_ADDRESS: u64 = 50;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// `POST /oauth/login`: the dev login.
pub(super) async fn login(
    State(server): State<AuthServer>,
    parts: http::request::Parts,
    Form(form): Form,
) -> Result<Response, Response> {
    let headers = &parts.headers;
    let (id, pending, client) = pending_from_form(&server, headers, &form).await?;
    let username = form.get("username").cloned().unwrap_or_default();
    // Counted whether the user exists or not, so the limit does not tell which names do.
    let address = server.registry().client_address.client_address(&parts);
    let mut counters = vec![(
        keyspace::login_failures_of_user(&username),
        MAX_FAILURES_PER_USER,
    )];
    // Without a known address (no `ConnectInfo`), one shared bucket would lock everyone out.
    if let Some(address) = address {
        counters.push((
            keyspace::login_failures_from(address),
            MAX_FAILURES_PER_ADDRESS,
        ));
    }
    for (key, max) in &counters {
        let failures = server
            .store()
            .get(key)
            .await
            .map_err(OAuthError::from)?
            .and_then(|n| std::str::from_utf8(&n).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        if failures >= *max {
            tracing::warn!(target: audit::TARGET, user = %crate::audit::Escaped(&username), ?address, "sign-in locked out after failed attempts");
            let mut page = error_page(
                &server,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-in attempts. Try again in 15 minutes.",
            );
            page.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(FAILURE_WINDOW.as_secs()),
            );
            return Err(page);
        }
    }
    let presented: [u8; 32] = Sha256::digest(
        form.get("password")
            .map(String::as_bytes)
            .unwrap_or_default(),
    )
    .into();
    // Every user's hash is compared, so the time taken does not tell which names exist.
    let mut found = None;
    for user in &server.sign_in().users {
        let matches = user.name.as_bytes().ct_eq(username.as_bytes())
            & presented.ct_eq(&user.password_sha256);
        if bool::from(matches) {
            found = Some(user);
        }
    }
    let Some(user) = found else {
        tracing::info!(target: audit::TARGET, user = %crate::audit::Escaped(&username), "dev login failed");
        // A sign-in request allows a few guesses, then it is spent: guessing needs a new
        // authorization request each time (and each of those a browser round trip). Counted
        // atomically, so parallel guesses are all counted.
        for (key, _) in &counters {
            server
                .store()
                .increment(key, FAILURE_WINDOW)
                .await
                .map_err(OAuthError::from)?;
        }
        let attempts = server
            .store()
            .increment(&keyspace::login_attempts(&id), PENDING_TTL)
            .await
            .map_err(OAuthError::from)?;
        if attempts >= MAX_LOGIN_ATTEMPTS {
            forget(&server, &keyspace::pending(&id)).await;
            tracing::warn!(target: audit::TARGET, user = %crate::audit::Escaped(&username), "too many failed sign-in attempts; request spent");
            return Err(error_page(
                &server,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-in attempts. Start again from your application.",
            ));
        }
        return Err(login_page(
            &server,
            &id,
            &pending,
            &client,
            Some("Wrong user name or password."),
        ));
    };
    tracing::info!(target: audit::TARGET, user = %crate::audit::Escaped(&user.name), "dev login");
    let session = Session {
        subject: user.name.clone(),
        groups: user.groups.clone(),
    };
    signed_in(&server, &id, pending, &client, session).await
}

fn upstream_failure(server: &AuthServer, error: &UpstreamError) -> Response {
    super::pages::upstream_error_page(
        server,
        error,
        "The identity provider",
        "The identity provider did not confirm who you are.",
    )
}

fn callback_uri(server: &AuthServer, provider: &str) -> String {
    server
        .urls()
        .endpoint(&format!("/oauth/callback/{provider}"))
}

/// Sends the browser to `provider` for the authorization request `id`.
pub(super) async fn begin_upstream(
    server: &AuthServer,
    provider: &Arc<dyn IdentityProvider>,
    id: &str,
    pending: &Pending,
) -> Result<Response, Response> {
    let state = random_token().ok_or_else(OAuthError::no_randomness)?;
    let start = match provider
        .start(&callback_uri(server, provider.id()), &state)
        .await
    {
        Ok(start) => start,
        Err(e) => {
            tracing::warn!(target: audit::TARGET, provider = provider.id(), error = %crate::audit::Escaped(&e), "upstream sign-in could not start");
            return Err(upstream_failure(server, &e));
        }
    };
    let record = UpstreamPending {
        request: id.to_owned(),
        provider: provider.id().to_owned(),
        kept: start.kept,
        browser: pending.browser.clone(),
    };
    save(
        server,
        &keyspace::upstream_signin(&digest(&state)),
        &record,
        PENDING_TTL,
    )
    .await?;
    let location = HeaderValue::from_str(&start.url).map_err(|_| {
        upstream_failure(
            server,
            &UpstreamError::Unavailable("bad authorization URL".into()),
        )
    })?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    no_store(response.headers_mut());
    Ok(response)
}

fn provider(server: &AuthServer, id: &str) -> Option<Arc<dyn IdentityProvider>> {
    server
        .sign_in()
        .providers
        .iter()
        .find(|p| p.id() == id)
        .cloned()
}

/// `POST /oauth/upstream/{provider}`: the sign-in button of an upstream provider.
pub(super) async fn upstream_start(
    State(server): State<AuthServer>,
    Path(provider_id): Path<String>,
    headers: HeaderMap,
    Form(form): Form,
) -> Result<Response, Response> {
    let Some(provider) = provider(&server, &provider_id) else {
        return Err(unknown_provider(&server));
    };
    let (id, pending, _) = pending_from_form(&server, &headers, &form).await?;
    begin_upstream(&server, &provider, &id, &pending).await
}

fn unknown_provider(server: &AuthServer) -> Response {
    error_page(server, StatusCode::NOT_FOUND, "unknown identity provider")
}

fn sign_in_no_longer_valid(server: &AuthServer) -> Response {
    error_page(
        server,
        StatusCode::BAD_REQUEST,
        "this sign-in is no longer valid; start again from your application",
    )
}

/// `GET /oauth/callback/{provider}`: the provider sends the browser back with a code.
pub(super) async fn upstream_callback(
    State(server): State<AuthServer>,
    Path(provider_id): Path<String>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, Response> {
    let Ok(params) = parse_form(query.unwrap_or_default().as_bytes()) else {
        return Err(error_page(
            &server,
            StatusCode::BAD_REQUEST,
            "a parameter is repeated",
        ));
    };
    let Some(state) = params.get("state") else {
        return Err(error_page(
            &server,
            StatusCode::BAD_REQUEST,
            "state is missing",
        ));
    };
    // Checked before the state is spent, so a forged callback does not cancel the real one.
    let key = keyspace::upstream_signin(&digest(state));
    let record = match load(&server, &key).await? {
        Some(record) if record.provider == provider_id => record,
        _ => {
            tracing::warn!(target: audit::TARGET, provider = %crate::audit::Escaped(&provider_id), "unknown, replayed or expired upstream callback state");
            return Err(sign_in_no_longer_valid(&server));
        }
    };
    let Some(provider) = provider(&server, &provider_id) else {
        return Err(unknown_provider(&server));
    };
    // The browser that started the sign-in must be the one finishing it: a callback URL
    // carried to another browser (login CSRF) signs no one in there.
    let browser = session_cookie(&headers, &browser_cookie_name(&server))
        .map(|b| digest(&b))
        .unwrap_or_default();
    if !bool::from(browser.as_bytes().ct_eq(record.browser.as_bytes())) {
        tracing::warn!(target: audit::TARGET, provider = %crate::audit::Escaped(&provider_id), "upstream callback from another browser");
        return Err(error_page(
            &server,
            StatusCode::FORBIDDEN,
            "this sign-in was started in another browser; start again",
        ));
    }
    // Single use, atomically: of a callback replayed or raced, one goes through.
    if !spend(&server, &key).await? {
        return Err(sign_in_no_longer_valid(&server));
    }
    // RFC 9207: a response naming another issuer is a mix-up attack; one without `iss` from
    // a provider that promised it, too.
    let mixed_up = match (params.get("iss"), provider.issuer()) {
        (Some(iss), Some(expected)) => iss != expected,
        (None, _) => provider.requires_iss(),
        (Some(_), None) => false,
    };
    if mixed_up {
        let iss = params.get("iss").map_or("-", String::as_str);
        tracing::warn!(target: audit::TARGET, provider = %crate::audit::Escaped(&provider_id), iss = %crate::audit::Escaped(&iss), "upstream response from another issuer");
        return Err(upstream_failure(
            &server,
            &UpstreamError::Refused("issuer mismatch".into()),
        ));
    }
    let (pending, client) = pending_request(&server, &headers, &record.request, None).await?;
    if let Some(error) = params.get("error") {
        tracing::info!(target: audit::TARGET, provider = %crate::audit::Escaped(&provider_id), error = %crate::audit::Escaped(&error), "upstream sign-in declined");
        return Err(redirect_back(
            &server,
            &pending.redirect_uri,
            pending.state.as_deref(),
            &[
                ("error", "access_denied"),
                (
                    "error_description",
                    "the sign-in at the identity provider did not complete",
                ),
            ],
        ));
    }
    let Some(code) = params.get("code") else {
        return Err(error_page(
            &server,
            StatusCode::BAD_REQUEST,
            "code is missing",
        ));
    };
    let user = match provider
        .finish(&callback_uri(&server, &provider_id), code, &record.kept)
        .await
    {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(target: audit::TARGET, provider = %crate::audit::Escaped(&provider_id), error = %crate::audit::Escaped(&e), "upstream sign-in failed");
            return Err(upstream_failure(&server, &e));
        }
    };
    let session = Session {
        subject: format!("{provider_id}|{}", user.subject),
        groups: user.groups,
    };
    tracing::info!(target: audit::TARGET, provider = %crate::audit::Escaped(&provider_id), user = %crate::audit::Escaped(&session.subject), name = ?user.name, "upstream sign-in");
    signed_in(&server, &record.request, pending, &client, session).await
}

pub(super) fn login_page(
    server: &AuthServer,
    id: &str,
    pending: &Pending,
    client: &Client,
    error: Option<&str>,
) -> Response {
    let (username, password) = server.sign_in().prefill.clone().unwrap_or_default();
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
            client => super::pages::client_view(client),
            resource => pending.resource,
            action => server.urls().endpoint("/oauth/login"),
            dev => !server.sign_in().users.is_empty(),
            providers => server.sign_in().providers.iter().map(|p| minijinja::context! {
                name => p.display_name(),
                action => server.urls().endpoint(&format!("/oauth/upstream/{}", p.id())),
            }).collect::<Vec<_>>(),
            request => id, csrf => pending.csrf, username, password, error,
        },
    )
}

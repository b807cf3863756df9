//! `GET /oauth/authorize`: request validation (client, redirect URI, PKCE, resource, scope)
//! and the pending request that waits for sign-in and consent.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::auth_server::AuthServer;
use super::clients::Client;
use super::consent::{approved_before, consent_or_code};
use super::cookies::{browser_cookie_name, session_cookie, set_cookie};
use super::error::OAuthError;
use super::keyspace;
use super::login::logged_in_user;
use super::login::login_page;
use super::pages::error_page;
use super::primitives::{digest, parse_form, random_token};
use super::redirect::{redirect_back, redirect_matches};
use super::storage::{load, save};
use crate::audit;
use crate::resource::canonical_audience;

/// The longest `state` kept with a pending request (it is stored until the request ends:
/// unbounded, it would be free memory for anyone).
const MAX_STATE: usize = 1024;

/// The longest query `/oauth/authorize` reads.
const MAX_QUERY: usize = 8 * 1024;

/// How long a started authorization waits for login and consent.
pub(super) const PENDING_TTL: Duration = Duration::from_secs(600);

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

/// `GET /oauth/authorize`.
pub(super) async fn authorize(
    State(server): State<AuthServer>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, Response> {
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return Err(error_page(
            &server,
            StatusCode::URI_TOO_LONG,
            "the authorization request is too large",
        ));
    }
    // RFC 6749 §3.1: parameters must not repeat (a repeated one is refused, not picked from).
    let params = parse_form(query.as_bytes())
        .map_err(|_| error_page(&server, StatusCode::BAD_REQUEST, "a parameter is repeated"))?;
    // Until the client and its redirect URI are known good, errors stay on our page.
    let Some(client_id) = params.get("client_id") else {
        return Err(error_page(
            &server,
            StatusCode::BAD_REQUEST,
            "client_id is missing",
        ));
    };
    let client = match server.lookup_client(client_id).await? {
        Some(client) if client.grant_types.iter().any(|g| g == "authorization_code") => client,
        _ => {
            tracing::info!(target: audit::TARGET, decision = "deny", client_id = %crate::audit::Escaped(&client_id), reason = "unknown client", "authorization refused");
            return Err(error_page(
                &server,
                StatusCode::BAD_REQUEST,
                "unknown client",
            ));
        }
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
            tracing::info!(target: audit::TARGET, decision = "deny", client_id = %crate::audit::Escaped(&client_id), reason = "redirect URI not registered", "authorization refused");
            return Err(error_page(
                &server,
                StatusCode::BAD_REQUEST,
                "the redirect URI is not registered for this client",
            ));
        }
        None => {
            return Err(error_page(
                &server,
                StatusCode::BAD_REQUEST,
                "redirect_uri is missing",
            ));
        }
    };
    let state = params.get("state").map(String::as_str);
    // Errors go back to the client only if the operator configured it or this person approved
    // it before; otherwise they are shown here (no open redirector for self-registered ones).
    let requested_resource = match params.get("resource") {
        Some(r) => canonical_audience(r).into_owned(),
        None => server
            .grants()
            .resources
            .first()
            .cloned()
            .unwrap_or_default(),
    };
    let trusted = client.configured
        || approved_before(
            &server,
            &headers,
            &client.client_id,
            &requested_resource,
            &redirect_uri,
        )
        .await?;
    let fail = |error: &str, description: &str| {
        tracing::info!(target: audit::TARGET, decision = "deny", client_id = %crate::audit::Escaped(&client.client_id), error, reason = description, requested_scope = params.get("scope").map(String::as_str), redirected = trusted, "authorization refused");
        if !trusted {
            return error_page(
                &server,
                StatusCode::BAD_REQUEST,
                &format!("The application's request is not valid: {description} ({error})."),
            );
        }
        redirect_back(
            &server,
            &redirect_uri,
            state,
            &[("error", error), ("error_description", description)],
        )
    };
    if state.is_some_and(|s| s.len() > MAX_STATE) {
        return Err(fail("invalid_request", "state is too long"));
    }
    if params.get("response_type").map(String::as_str) != Some("code") {
        return Err(fail(
            "unsupported_response_type",
            "response_type must be code",
        ));
    }
    let challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method").map(String::as_str),
    ) {
        (Some(c), Some("S256")) if c.len() == 43 && URL_SAFE_NO_PAD.decode(c).is_ok() => c.clone(),
        (Some(_), Some("S256")) => {
            return Err(fail(
                "invalid_request",
                "code_challenge is not a S256 challenge",
            ));
        }
        (_, Some(_)) => {
            return Err(fail(
                "invalid_request",
                "code_challenge_method must be S256",
            ));
        }
        _ => {
            return Err(fail(
                "invalid_request",
                "PKCE (code_challenge with method S256) is required",
            ));
        }
    };
    let resource = match params.get("resource") {
        Some(r) => canonical_audience(r).into_owned(),
        None if server.grants().resources.len() == 1 => server.grants().resources[0].clone(),
        None => return Err(fail("invalid_target", "resource is required")),
    };
    if !server.grants().resources.contains(&resource) {
        return Err(fail(
            "invalid_target",
            "this server issues no tokens for that resource",
        ));
    }
    let Some(scope) = client.requested_scope(&server, params.get("scope").map(String::as_str))
    else {
        return Err(fail(
            "invalid_scope",
            "the client may not request these scopes",
        ));
    };
    let (Some(id), Some(csrf)) = (random_token(), random_token()) else {
        return Err(OAuthError::no_randomness().into());
    };
    let existing = session_cookie(&headers, &browser_cookie_name(&server));
    let browser = existing
        .or_else(random_token)
        .ok_or_else(OAuthError::no_randomness)?;
    let nonce = params.get("nonce").cloned();
    if nonce.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(fail("invalid_request", "nonce is too long"));
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
    save(&server, &keyspace::pending(&id), &pending, PENDING_TTL).await?;
    let mut response = match logged_in_user(&server, &headers).await? {
        Some(session) => consent_or_code(&server, &id, pending, &client, &session).await?,
        // One upstream provider and no other way in: straight to it.
        None if server.sign_in().users.is_empty() && server.sign_in().providers.len() == 1 => {
            super::login::begin_upstream(&server, &server.sign_in().providers[0], &id, &pending)
                .await?
        }
        None => login_page(&server, &id, &pending, &client, None),
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
    Ok(response)
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
    let pending = match load(server, &keyspace::pending(id)).await? {
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
        tracing::warn!(target: audit::TARGET, "CSRF check failed on the authorization request");
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

//! The ATAG routes (feature `atag`): `/atag/connect/{service}` and `/atag/callback/{service}`
//! run a third-party OAuth flow in the browser for the user who called the tool;
//! `/atag/connections` lists and disconnects services.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::setup::Atag;
use super::{AtagState, ExternalService, Link, link_key};
use crate::server::{
    AuthServer, Key, OAuthError, UpstreamError, bearer_caller, connected_page, digest, error_page,
    load, logged_in_user, no_store, parse_form, random_token, save, spend, upstream_error_page,
};

use crate::audit;

/// A connect flow in progress, stored under the digest of its `state`.
#[derive(Serialize, Deserialize)]
struct ConnectState {
    link: Link,
    verifier: String,
}

/// The store key of a connect flow in progress (by digest of its `state`).
fn state_key(state: &str) -> Key<ConnectState> {
    Key::new("atag:state:", &digest(state))
}

/// What the browser routes start from: the service, the query, and the one parameter that
/// names the single-use record the request claims (`link` or `state`).
struct BrowserRequest {
    atag: Arc<AtagState>,
    service: ExternalService,
    params: HashMap<String, String>,
    handle: String,
}

// Browser routes answer their refusals with pages; boxing them would add an allocation to
// every refusal for no gain.
#[expect(clippy::result_large_err)]
fn browser_request(
    atag: &Atag,
    service_id: &str,
    query: Option<String>,
    handle: &str,
) -> Result<BrowserRequest, Response> {
    let server = &atag.auth;
    let atag = atag.state.clone();
    let service = atag
        .services
        .get(service_id)
        .cloned()
        .ok_or_else(|| error_page(server, StatusCode::NOT_FOUND, "unknown service"))?;
    let params = parse_form(query.unwrap_or_default().as_bytes())
        .map_err(|_| error_page(server, StatusCode::BAD_REQUEST, "a parameter is repeated"))?;
    let handle = params.get(handle).cloned().ok_or_else(|| {
        error_page(
            server,
            StatusCode::BAD_REQUEST,
            &format!("the address is incomplete ({handle} is missing)"),
        )
    })?;
    Ok(BrowserRequest {
        atag,
        service,
        params,
        handle,
    })
}

/// Takes the single-use link or flow state under `key` for `service`: refused without being
/// spent unless the browser is signed in as its user, then spent atomically. `gone` is the
/// page for one unknown, expired or already used.
async fn claim<T: serde::de::DeserializeOwned>(
    server: &AuthServer,
    headers: &HeaderMap,
    key: &Key<T>,
    service: &str,
    link_of: fn(&T) -> &Link,
    gone: &str,
) -> Result<T, Response> {
    let gone = || error_page(server, StatusCode::BAD_REQUEST, gone);
    let record = match load(server, key).await? {
        Some(record) if link_of(&record).service == service => record,
        _ => {
            tracing::warn!(target: audit::TARGET, service, "unknown, used or expired connect link or state");
            return Err(gone());
        }
    };
    same_user(server, headers, &link_of(&record).user).await?;
    match spend(server, key).await? {
        true => Ok(record),
        false => Err(gone()),
    }
}

/// The signed-in user must be the one the link or flow was made for: the phishing defence of
/// URL elicitation (someone else's link opens nothing in your browser).
async fn same_user(server: &AuthServer, headers: &HeaderMap, user: &str) -> Result<(), Response> {
    match logged_in_user(server, headers).await? {
        Some(session) if session.subject == user => Ok(()),
        Some(session) => {
            tracing::warn!(target: audit::TARGET, signed_in = %crate::audit::Escaped(&session.subject), "a connect link was opened by another user");
            Err(error_page(
                server,
                StatusCode::FORBIDDEN,
                "This link was made for another account. Sign in as the user who asked for it.",
            ))
        }
        None => Err(error_page(
            server,
            StatusCode::UNAUTHORIZED,
            "Sign in to this server in this browser first (as when you connected your MCP client), then open the link again.",
        )),
    }
}

/// `GET /atag/connect/{service}?link=…`.
pub(super) async fn connect(
    State(gateway): State<Atag>,
    Path(service_id): Path<String>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, Response> {
    let server = &gateway.auth;
    let BrowserRequest {
        atag,
        service,
        handle: link_id,
        ..
    } = browser_request(&gateway, &service_id, query, "link")?;
    let link = claim::<Link>(
        server,
        &headers,
        &link_key(&link_id),
        &service_id,
        |link| link,
        "This link has expired or was already used. Call the tool again for a new one.",
    )
    .await?;
    let state = random_token().ok_or_else(OAuthError::no_randomness)?;
    let (url, verifier) = crate::atag::authorization_url(
        &atag.http,
        &service,
        &atag.callback_uri(&service.id),
        &state,
        &link.scopes,
    )
    .map_err(|e| failure(server, &e))?;
    let record = ConnectState { link, verifier };
    save(server, &state_key(&state), &record, crate::atag::LINK_TTL).await?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    no_store(response.headers_mut());
    Ok(response)
}

fn failure(server: &AuthServer, error: &UpstreamError) -> Response {
    upstream_error_page(
        server,
        error,
        "The service",
        "The service did not grant access.",
    )
}

/// `GET /atag/callback/{service}?code=…&state=…`.
pub(super) async fn callback(
    State(gateway): State<Atag>,
    Path(service_id): Path<String>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, Response> {
    let server = &gateway.auth;
    let BrowserRequest {
        atag,
        service,
        params,
        handle: state,
    } = browser_request(&gateway, &service_id, query, "state")?;
    let record = claim::<ConnectState>(
        server,
        &headers,
        &state_key(&state),
        &service_id,
        |record| &record.link,
        "This connection attempt is no longer valid. Call the tool again for a new link.",
    )
    .await?;
    if params.contains_key("error") {
        tracing::info!(target: audit::TARGET, user = %crate::audit::Escaped(&record.link.user), service = %crate::audit::Escaped(&service_id), "third-party authorization declined");
        return Err(error_page(
            server,
            StatusCode::FORBIDDEN,
            &format!("{} did not grant access.", service.name()),
        ));
    }
    let Some(code) = params.get("code") else {
        return Err(error_page(
            server,
            StatusCode::BAD_REQUEST,
            "code is missing",
        ));
    };
    let tokens = match crate::atag::exchange(
        &atag.http,
        &service,
        &atag.callback_uri(&service.id),
        code,
        &record.verifier,
        &record.link.scopes,
    )
    .await
    {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::warn!(target: audit::TARGET, user = %crate::audit::Escaped(&record.link.user), service = %crate::audit::Escaped(&service_id), error = %crate::audit::Escaped(&e), "third-party code exchange failed");
            return Err(failure(server, &e));
        }
    };
    atag.vault
        .put(
            &record.link.user,
            &service.id,
            &tokens,
            atag.ttl_of(&tokens),
        )
        .await
        .map_err(vault_unavailable)?;
    tracing::info!(target: audit::TARGET, user = %crate::audit::Escaped(&record.link.user), client_id = ?record.link.client_id, service = %crate::audit::Escaped(&service_id), elicitation = %crate::audit::Escaped(&record.link.elicitation), "third-party account connected");
    atag.elicitation_complete(&record.link);
    Ok(connected_page(
        server,
        service.name(),
        &record.link.user,
        &tokens.scopes,
        record.link.client_id.as_deref(),
    ))
}

fn vault_unavailable(error: crate::atag::VaultError) -> OAuthError {
    OAuthError::TemporarilyUnavailable(error.to_string().into())
}

async fn bearer_user(
    server: &AuthServer,
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<String, OAuthError> {
    let caller = crate::server::CallerRequest {
        method,
        path: uri.path(),
        headers,
    };
    bearer_caller(server, caller)
        .await
        .map(|ctx| ctx.subject().to_owned())
}

/// `GET /atag/connections` (bearer token of this server): the caller's connected services.
pub(super) async fn connections(
    State(gateway): State<Atag>,
    method: http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let atag = &gateway.state;
    let user = bearer_user(&gateway.auth, &method, &uri, &headers).await?;
    let mut connected = Vec::new();
    for service in atag.services.values() {
        match atag.vault.get(&user, &service.id).await {
            Ok(Some(tokens)) => connected.push(json!({
                "service": service.id, "name": service.name(),
                "scopes": tokens.scopes, "expires_at": tokens.expires_at,
            })),
            Ok(None)
            | Err(crate::atag::VaultError::Sealed(_) | crate::atag::VaultError::Corrupt) => {}
            Err(e) => return Err(vault_unavailable(e)),
        }
    }
    connected.sort_by(|a, b| a["service"].as_str().cmp(&b["service"].as_str()));
    let mut response = axum::Json(json!({ "connections": connected })).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// `DELETE /atag/connections/{service}` (bearer token of this server): forgets the caller's
/// token at the service.
pub(super) async fn disconnect(
    State(gateway): State<Atag>,
    Path(service_id): Path<String>,
    method: http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let atag = &gateway.state;
    let user = bearer_user(&gateway.auth, &method, &uri, &headers).await?;
    if !atag.services.contains_key(&service_id) {
        return Err(OAuthError::NotFound("unknown service".into()));
    }
    atag.vault
        .delete(&user, &service_id)
        .await
        .map_err(vault_unavailable)?;
    tracing::info!(target: audit::TARGET, user = %crate::audit::Escaped(&user), service = %crate::audit::Escaped(&service_id), "third-party account disconnected");
    Ok(StatusCode::NO_CONTENT.into_response())
}

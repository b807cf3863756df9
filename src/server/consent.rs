//! Consent: remembered per user, client, resource and redirect URI; added scopes asked for
//! again; the code issued once approved.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};

use super::auth_server::AuthServer;
use super::authorize::{Pending, pending_from_form};
use super::clients::Client;
use super::code_grant::Grant;
use super::error::OAuthError;
use super::keyspace::{self, Key};
use super::login::{Session, logged_in_user};
use super::pages::{error_page, page};
use super::primitives::{Form, digest, random_token};
use super::redirect::redirect_back;
use super::storage::{load, save, spend};
use crate::Scopes;
use crate::audit;

/// How long an authorization code lives (single use).
const CODE_TTL: Duration = Duration::from_secs(60);

/// Issues the code at once if the user approved these scopes for this client before; otherwise
/// shows the consent page.
pub(super) async fn consent_or_code(
    server: &AuthServer,
    id: &str,
    mut pending: Pending,
    client: &Client,
    session: &Session,
) -> Result<Response, Response> {
    let granted = server.user_scope(session, &pending.scope);
    if granted != pending.scope {
        // RFC 6749 §3.3: the token carries only what this user may hold, and says so.
        let (kept, asked) = (
            Scopes::from_space_separated(&granted),
            Scopes::from_space_separated(&pending.scope),
        );
        let removed: Vec<&str> = kept.missing(&asked).collect();
        tracing::info!(target: audit::TARGET, decision = "narrow", user = %crate::audit::Escaped(&session.subject), client_id = %crate::audit::Escaped(&client.client_id), requested = %crate::audit::Escaped(&pending.scope), granted = %crate::audit::Escaped(&granted), removed = ?removed, "authorization narrowed to the user's grants");
    }
    pending.scope = granted;
    let user = session.subject.as_str();
    let remembered = remembered_consent(server, user, client, &pending).await?;
    let requested = Scopes::from_space_separated(&pending.scope);
    if remembered
        .as_ref()
        .is_some_and(|r| r.contains_all(requested.iter()))
    {
        // Atomic: concurrent submissions of one request issue one code.
        if !spend(server, &keyspace::pending(id)).await? {
            return Err(already_answered(server));
        }
        return issue_code(server, pending, session).await;
    }
    let redirect_host = url::Url::parse(&pending.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(page(
        server,
        StatusCode::OK,
        "consent.html",
        minijinja::context! {
            title => "Allow access?",
            client => super::pages::client_view(client),
            user, resource => pending.resource, redirect_host,
            redirect_uri => pending.redirect_uri,
            // Added scopes are marked: the person sees what changes since they last allowed.
            scopes => requested.iter().map(|scope| minijinja::context! {
                name => scope,
                description => server.sign_in().scope_descriptions.get(scope),
                new => remembered.as_ref().is_some_and(|r| !r.contains(scope)),
            }).collect::<Vec<_>>(),
            added => remembered.as_ref().is_some_and(|r| !r.contains_all(requested.iter())),
            action => server.urls().endpoint("/oauth/consent"),
            request => id, csrf => pending.csrf,
        },
    ))
}

fn already_answered(server: &AuthServer) -> Response {
    error_page(
        server,
        StatusCode::BAD_REQUEST,
        "this request was already answered",
    )
}

/// The scopes `user` allowed before for this client, resource and redirect URI.
async fn remembered_consent(
    server: &AuthServer,
    user: &str,
    client: &Client,
    pending: &Pending,
) -> Result<Option<Scopes>, OAuthError> {
    let remembered = load(server, &consent_key(user, client, pending)).await?;
    Ok(remembered.map(|s| Scopes::from_space_separated(&s)))
}

/// Consent is remembered per user, client, resource and redirect URI: a public client's code
/// is never issued silently to a redirect (a loopback port) the user did not approve.
fn consent_key(user: &str, client: &Client, pending: &Pending) -> Key<String> {
    consent_key_for(
        user,
        &client.client_id,
        &pending.resource,
        &pending.redirect_uri,
    )
}

fn consent_key_for(user: &str, client_id: &str, resource: &str, redirect_uri: &str) -> Key<String> {
    let scope_of = format!("{resource}|{redirect_uri}");
    keyspace::consent(user, client_id, &digest(&scope_of))
}

/// Whether the person in this browser approved `client` for `resource` and `redirect_uri`
/// before. Only then may an authorization error be sent back to a client that is not
/// configured by the operator: anyone can register a client whose redirect URI is their own
/// site, and an error redirect before sign-in would make us an open redirector (RFC 9700
/// §4.11.2).
pub(super) async fn approved_before(
    server: &AuthServer,
    headers: &HeaderMap,
    client_id: &str,
    resource: &str,
    redirect_uri: &str,
) -> Result<bool, OAuthError> {
    let Some(session) = logged_in_user(server, headers).await? else {
        return Ok(false);
    };
    let key = consent_key_for(&session.subject, client_id, resource, redirect_uri);
    Ok(load(server, &key).await?.is_some())
}

/// `POST /oauth/consent`.
pub(super) async fn consent(
    State(server): State<AuthServer>,
    headers: HeaderMap,
    Form(form): Form,
) -> Result<Response, Response> {
    let Some(session) = logged_in_user(&server, &headers).await? else {
        return Err(error_page(
            &server,
            StatusCode::UNAUTHORIZED,
            "sign in first",
        ));
    };
    let user = session.subject.as_str();
    let (id, mut pending, client) = pending_from_form(&server, &headers, &form).await?;
    // Single use: a second submission of the same form finds nothing.
    if !spend(&server, &keyspace::pending(&id)).await? {
        return Err(already_answered(&server));
    }
    if form.get("decision").map(String::as_str) != Some("approve") {
        tracing::info!(target: audit::TARGET, user = %crate::audit::Escaped(&user), client_id = %crate::audit::Escaped(&client.client_id), "consent denied");
        return Err(redirect_back(
            &server,
            &pending.redirect_uri,
            pending.state.as_deref(),
            &[
                ("error", "access_denied"),
                ("error_description", "the user denied access"),
            ],
        ));
    }
    pending.scope = server.user_scope(&session, &pending.scope);
    // What was allowed before stays allowed: a narrower request later needs no new consent.
    let allowed = remembered_consent(&server, user, &client, &pending)
        .await?
        .iter()
        .flat_map(Scopes::iter)
        .chain(pending.scope.split(' '))
        .collect::<Scopes>();
    save(
        &server,
        &consent_key(user, &client, &pending),
        &allowed.to_string(),
        server.grants().refresh_token_ttl,
    )
    .await?;
    tracing::info!(target: audit::TARGET, user = %crate::audit::Escaped(&user), client_id = %crate::audit::Escaped(&client.client_id), scope = %crate::audit::Escaped(&pending.scope), "consent given");
    issue_code(&server, pending, &session).await
}

async fn issue_code(
    server: &AuthServer,
    pending: Pending,
    session: &Session,
) -> Result<Response, Response> {
    let (Some(code), Some(family)) = (random_token(), random_token()) else {
        return Err(OAuthError::no_randomness().into());
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
    save(server, &keyspace::code(&digest(&code)), &grant, CODE_TTL).await?;
    Ok(redirect_back(
        server,
        &pending.redirect_uri,
        pending.state.as_deref(),
        &[("code", &code)],
    ))
}
